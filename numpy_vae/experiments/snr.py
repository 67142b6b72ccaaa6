r"""The signal-to-noise ratio of the IWAE gradient against the number of samples K: why a tighter
bound can train the inference network worse (Rainforth et al. 2018), and the DReG estimator
meant to fix it (Tucker et al. 2018).

The quantity. For one fixed minibatch, a gradient estimator is a random vector ``Delta`` (the
randomness is ``eps`` alone). The signal-to-noise ratio of parameter j is

.. math:: \mathrm{SNR}_j = |\mathbb E[\Delta_j]| \,/\, \sqrt{\operatorname{Var}[\Delta_j]},

estimated from ``M`` independent draws of ``eps`` by ``|mean| / std`` (``ddof=1``), and
summarized per network by the mean over its parameters (the median is kept as well). A
parameter whose gradient is exactly 0 in every draw has no SNR and is left out.

The claim. With the plain reparameterized gradient of the IWAE bound :math:`\mathcal L_K`
(:mod:`numpy_vae.bounds`), Rainforth et al. show that as K grows

- generative parameters ``theta``: :math:`\mathbb E[\Delta] \to \nabla_\theta \log p(x)`, a
  constant, while the standard deviation falls like :math:`1/\sqrt K`: SNR rises like
  :math:`\sqrt K`;
- inference parameters ``phi``: :math:`\log p(x)` does not depend on q, so
  :math:`\mathbb E[\Delta] = \nabla_\phi \mathcal L_K = O(1/K)`, while the standard deviation
  falls only like :math:`1/\sqrt K`: SNR *falls* like :math:`1/\sqrt K`.

DReG replaces the weights ``w~_k`` by ``w~_k^2`` (about ``1/K`` smaller each), so each of its K
terms is of order :math:`1/K^2`: its standard deviation falls like :math:`K^{-3/2}` while its
mean (the same :math:`O(1/K)` gradient: DReG is unbiased) falls like :math:`1/K`, and its SNR
does not fall (asymptotically it rises like :math:`\sqrt K`). STL (``w~_k``, no score term) is
biased for K > 1; it is measured too. The decoder's gradient is the same for every estimator
(they differ only in the encoder's), so the generative network has one curve.

The slopes. Each curve is summarized by the least-squares slope of ``log SNR`` on ``log K``
(-1/2, +1/2 and >= 0 asymptotically). Its standard error comes from a bootstrap over the draws:
the M draws at each K are resampled with replacement, the SNRs and the slope recomputed, and the
standard deviation of the slopes over the replicates is the standard error of the Monte Carlo
noise. The rates are limits: they need K large against the spread of the importance weights.
Near the closed form's optimum the slopes over K = 1 to 1000 lie between 0 and the limits, with
the limits' signs; farther from it (perturbation 0.05) or on a trained VAE, DReG's SNR can fall
over that range too, and the plain estimator's falls far more slowly than 1/sqrt(K).

The floor. If a parameter's true mean gradient is 0, ``|mean| / std`` is about
``|N(0, 1)| / sqrt(M)``, whose mean is :math:`\sqrt{2 / (\pi M)}` (0.025 at M = 1000): an
estimated SNR near that floor is mostly the noise of the mean, and it flattens a falling curve.
The table marks such values.

Two cases:

- :class:`GaussianCase`, the linear-Gaussian model of Rainforth et al.'s first experiment, whose
  gradients are written out in closed form;
- :class:`NetworkCase`, a VAE (a training run's, or a small one trained here), through the fast
  path's training step (:class:`numpy_vae.fast.FastVAE`, the specification's numbers to
  rounding), one draw of ``eps`` per call.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy

from numpy_vae.backend import get_backend
from numpy_vae.bounds import (
    ESTIMATORS,
    log_mean_exp,
    log_posterior,
    log_prior,
    normalized_weights,
)
from numpy_vae.fast import FastVAE
from numpy_vae.model import VAE

if TYPE_CHECKING:
    from numpy_vae.training.data import Dataset

SAMPLE_COUNTS = (1, 3, 10, 30, 100, 300, 1000)
#: The estimators the study compares by default (``stl`` may be added).
DEFAULT_ESTIMATORS = ("reparam", "dreg")
NETWORKS = ("inference", "generative")
#: Bootstrap replicates for the slopes' standard errors.
BOOTSTRAP = 200
#: A summary SNR below this many times the floor is marked as mostly noise.
FLOOR_MARGIN = 3.0
#: The Gaussian case's noise values drawn at once, and worked on at once: 1 MB blocks stay in
#: cache (measured with two estimators: 66-85 ns per value at 2^17, 79-92 at 2^15, 123 at 2^20).
DRAW_ELEMENTS, CHUNK_ELEMENTS = 2**22, 2**17


# -------------------------------------------------------------------------------- statistics
def snr(draws: numpy.ndarray) -> numpy.ndarray:
    """``|mean| / std`` of each column of ``draws`` (M, P); NaN where every draw is equal."""
    mean = draws.mean(axis=0)
    std = draws.std(axis=0, ddof=1)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        return numpy.where(std > 0, numpy.abs(mean) / std, numpy.nan)


def snr_floor(draws: int) -> float:
    r"""The mean of ``|mean| / std`` over ``draws`` draws of a gradient whose true mean is 0:
    :math:`\sqrt{2/(\pi M)}` (the mean of a half-normal, scaled by the standard error)."""
    return math.sqrt(2.0 / (math.pi * draws))


def bootstrap_snr(
    draws: numpy.ndarray, replicates: int, rng: numpy.random.Generator
) -> numpy.ndarray:
    """The mean-over-parameters SNR of ``replicates`` bootstrap resamples of the rows of
    ``draws`` (M, P), shape (replicates,).

    A resample is a row of multinomial counts ``c`` (summing to M), so its mean and second
    moment are the matrix products ``c @ draws / M`` and ``c @ draws**2 / M``: every replicate
    at the cost of two products, without copying the draws.
    """
    m = draws.shape[0]
    counts = rng.multinomial(m, numpy.full(m, 1.0 / m), size=replicates).astype(draws.dtype)
    mean = counts @ draws / m
    var = (counts @ (draws * draws) / m - mean * mean) * (m / (m - 1))
    with numpy.errstate(divide="ignore", invalid="ignore"):
        ratio = numpy.where(var > 0, numpy.abs(mean) / numpy.sqrt(numpy.maximum(var, 0)), numpy.nan)
    return numpy.nanmean(ratio, axis=1)


def fit_slope(k: Sequence[float], values: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through ``(log K, log value)``: (slope, intercept, the slope's standard
    error from the residuals, NaN with fewer than three points)."""
    x, y = numpy.log(numpy.asarray(k, float)), numpy.log(numpy.asarray(values, float))
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    if len(x) < 3:
        return slope, intercept, math.nan
    residual = y - intercept - slope * x
    return slope, intercept, math.sqrt(float(residual @ residual) / (len(x) - 2) / sxx)


# ----------------------------------------------------------------------------- the two cases
class Case:
    """What the study draws gradients from. A case gives ``noise_shape(k)``, the shape of one
    draw of ``eps``, and ``gradients(eps, estimators)`` of C draws at once (per estimator, per
    layer, one row per draw); :meth:`draw_gradients` draws them, :meth:`draws_per_call` at a
    time."""

    def noise_shape(self, k: int) -> tuple[int, int, int]:
        raise NotImplementedError

    def gradients(
        self, eps: numpy.ndarray, estimators: Sequence[str]
    ) -> dict[str, dict[str, numpy.ndarray]]:
        raise NotImplementedError

    def draws_per_call(self, k: int) -> int:
        """Draws per :meth:`gradients` call (one, unless a case stacks them)."""
        return 1

    def draw_gradients(
        self,
        k: int,
        draws: int,
        estimators: Sequence[str],
        rng: numpy.random.Generator,
        done: Callable[[int], None] | None = None,
    ) -> dict[str, dict[str, numpy.ndarray]]:
        """:meth:`gradients` for ``draws`` draws of ``eps`` from ``rng``, made
        :meth:`draws_per_call` at a time; ``done(n)`` is told the draws of each call."""
        chunk = self.draws_per_call(k)
        parts = []
        for start in range(0, draws, chunk):
            count = min(chunk, draws - start)
            noise = rng.standard_normal((count, *self.noise_shape(k)))
            parts.append(self.gradients(noise, estimators))
            if done is not None:
                done(count)
        return {
            e: {name: numpy.concatenate([p[e][name] for p in parts]) for name in parts[0][e]}
            for e in estimators
        }


@dataclass
class GaussianCase(Case):
    r"""The linear-Gaussian model of Rainforth et al. (2018), with its gradients in closed form.

    Model and inference network, in D dimensions::

        p_theta(z)   = N(z; theta, I),      p(x|z) = N(x; z, I)
        q_phi(z|x)   = N(z; A x + b, (2/3) I),          phi = (A, b)

    so that :math:`p_\theta(x) = \mathcal N(x; \theta, 2I)` and the posterior is
    :math:`\mathcal N((x + \theta)/2, I/2)`. The optimum is ``A = I/2``, ``b = theta/2`` (the
    posterior mean) and ``theta`` the mean of the data: with q centred on the posterior for every
    x, the distribution of the weights does not depend on theta, so every bound is largest in
    theta where log p(x) is; and q and the posterior are both symmetric about the posterior
    mean, so that mean is a stationary point of the IWAE bound in phi for every K. q's variance
    2/3 is fixed and is not the posterior's 1/2, so the importance weights are never all equal.

    The gradients per draw, with ``mu = A x + b``, ``sigma^2 = 2/3``, ``z_k = mu + sigma eps_k``,
    for each example of the minibatch (then summed over it)::

        log w_k = log N(x; z_k, I) + log N(z_k; theta, I) - log q(z_k|x)
        g_k     = d/dz [log p(x|z) + log p(z)] at z_k = (x - z_k) + (theta - z_k)
        dL/dtheta = sum_k w~_k (z_k - theta)    (theta is in p(z) only; z_k does not move with it)
        dL/dmu    = ESTIMATORS[estimator]().encoder_gradient(w~ g, w~, eps, sigma)[0]
        dL/db     = dL/dmu,      dL/dA = dL/dmu x^T   (the chain rule through mu = A x + b)

    ``w~ = normalized_weights(log w)`` and the estimators of :data:`numpy_vae.bounds.ESTIMATORS`
    are the model's own; q's ``logvar`` is not a parameter here, so the estimator's
    ``d_logvar`` is dropped. Why this is exact: every density is Gaussian and written out, so with
    ``eps`` fixed each estimator is an explicit function of ``(theta, A, b)`` and the lines above
    are its derivatives by the chain rule, with no network and no approximation; the only
    randomness is ``eps`` (the tests check them against finite differences of the bound and of
    the DReG surrogate). As K grows, the mean of ``dL/dtheta`` tends to ``sum_n (x_n - theta) /
    2``, the gradient of ``log p_theta(x)``.

    Attributes
    ----------
    theta : array (D,)
    a : array (D, D)
    b : array (D,)
    x : array (B, D)
        The fixed minibatch.
    """

    theta: numpy.ndarray
    a: numpy.ndarray
    b: numpy.ndarray
    x: numpy.ndarray
    description: str = "linear-Gaussian model"

    #: q's fixed variance.
    VARIANCE = 2.0 / 3.0
    #: Which parameters belong to which network (the layers of :meth:`gradients`).
    networks = {"inference": ("A", "b"), "generative": ("theta",)}

    @classmethod
    def rainforth(
        cls,
        dim: int = 20,
        n_data: int = 1024,
        batch: int = 64,
        perturbation: float = 0.02,
        seed: int = 0,
    ) -> GaussianCase:
        """The study point: ``theta_true ~ N(0, I)``, ``n_data`` points ``x_n ~ N(theta_true,
        2I)``, the optimum ``(A, b, theta) = (I/2, theta/2, mean x)`` plus ``N(0,
        perturbation^2)`` noise on every parameter (near the optimum, where the inference
        network's gradient is small), and the first ``batch`` points as the minibatch."""
        if not 1 <= batch <= n_data:
            raise ValueError(f"batch must lie in [1, {n_data}], got {batch}")
        rng = numpy.random.default_rng(seed)
        theta_true = rng.standard_normal(dim)
        data = theta_true + math.sqrt(2.0) * rng.standard_normal((n_data, dim))
        theta = data.mean(axis=0)
        noise = lambda *shape: perturbation * rng.standard_normal(shape)  # noqa: E731
        return cls(
            theta=theta + noise(dim),
            a=0.5 * numpy.eye(dim) + noise(dim, dim),
            b=theta / 2 + noise(dim),
            x=data[:batch],
            description=(
                f"linear-Gaussian model of Rainforth et al. 2018, D = {dim}, minibatch of "
                f"{batch} of {n_data} points, parameters the optimum + N(0, {perturbation:g}^2) "
                f"(seed {seed})"
            ),
        )

    @property
    def dim(self) -> int:
        return self.theta.size

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def noise_shape(self, k: int) -> tuple[int, int, int]:
        """The shape of one draw of ``eps``: (B, K, D)."""
        return (self.batch, k, self.dim)

    def _samples(self, eps: numpy.ndarray, x: numpy.ndarray) -> dict[str, numpy.ndarray]:
        """``mu``, ``sigma``, ``z`` and ``log w`` of rows ``eps`` (R, K, D) beside their
        examples ``x`` (R, D): any rows, from any draws (the bounds' functions work per row)."""
        mu = x @ self.a.T + self.b
        logvar = numpy.full_like(mu, math.log(self.VARIANCE))
        sigma = numpy.exp(0.5 * logvar)
        z = mu[:, None, :] + sigma[:, None, :] * eps
        log_w = (
            log_prior(x[:, None, :] - z) + log_prior(z - self.theta) - log_posterior(eps, logvar)
        )
        return {"sigma": sigma, "z": z, "log_w": log_w}

    def iwae_bound(self, eps: numpy.ndarray) -> float:
        """The IWAE bound's estimate summed over the minibatch, for one draw ``eps`` (B, K, D)."""
        return float(log_mean_exp(self._samples(eps, self.x)["log_w"], numpy).sum())

    def _row_gradients(
        self, eps: numpy.ndarray, x: numpy.ndarray, estimators: Sequence[str]
    ) -> tuple[numpy.ndarray, dict[str, numpy.ndarray]]:
        """``dL/dtheta`` and each estimator's ``dL/dmu`` of every row, (R, D) each."""
        s = self._samples(eps, x)
        w_tilde = normalized_weights(s["log_w"], numpy)  # (R, K)
        z = s["z"]
        wz = (w_tilde[:, :, None] * z).sum(axis=1)
        d_theta = wz - self.theta  # sum_k w~_k (z_k - theta), as sum_k w~_k = 1
        # w~_k g_k, with g_k = (x - z_k) + (theta - z_k)
        w_tilde_g = w_tilde[:, :, None] * (x[:, None, :] + self.theta - 2.0 * z)
        d_mu = {
            e: ESTIMATORS[e]().encoder_gradient(w_tilde_g, w_tilde, eps, s["sigma"])[0]
            for e in estimators
        }
        return d_theta, d_mu

    def gradients(
        self, eps: numpy.ndarray, estimators: Sequence[str]
    ) -> dict[str, dict[str, numpy.ndarray]]:
        """Every estimator's gradient of the bound for each draw of ``eps`` (C, B, K, D).

        Returns
        -------
        dict estimator -> {"A": (C, D*D), "b": (C, D), "theta": (C, D)}
            One row per draw, summed over the minibatch. ``theta``'s rows are the same array for
            every estimator (the estimators differ in the encoder only).
        """
        c, n, k, d = eps.shape
        # Draws and examples as one axis of rows (row c B + n: draw c, example n), worked in
        # blocks small enough to stay in cache: the arithmetic is a few passes over each block.
        rows, x = eps.reshape(c * n, k, d), numpy.tile(self.x, (c, 1))
        block = max(1, CHUNK_ELEMENTS // (k * d))
        parts = [
            self._row_gradients(rows[i : i + block], x[i : i + block], estimators)
            for i in range(0, c * n, block)
        ]
        d_theta = numpy.concatenate([p[0] for p in parts]).reshape(c, n, d).sum(axis=1)
        out = {}
        for e in estimators:
            d_mu = numpy.concatenate([p[1][e] for p in parts]).reshape(c, n, d)
            d_a = numpy.einsum("cnj,ni->cji", d_mu, self.x)  # dL/dA_ji = sum_n dL/dmu_nj x_ni
            out[e] = {"A": d_a.reshape(c, d * d), "b": d_mu.sum(axis=1), "theta": d_theta}
        return out

    def draws_per_call(self, k: int) -> int:
        """Draws per :meth:`gradients` call: about :data:`DRAW_ELEMENTS` noise values."""
        return max(1, DRAW_ELEMENTS // (self.batch * k * self.dim))


class NetworkCase(Case):
    """A VAE's IWAE gradients on a fixed minibatch, through the model's own training step.

    Each draw is one call of :meth:`numpy_vae.fast.FastVAE.loss` with ``eps`` (B, K, L) per
    estimator (the same ``eps`` for all), one float64 model per estimator holding the given
    model's parameters. The inference network is ``encoder.*`` and ``head.*``, the generative
    network ``decoder.*``. The draws are not stacked along the batch axis as the Gaussian case's
    are: the model's gradients are sums over its batch, so that would give the sum of M
    gradients, not M of them. A call costs a fixed overhead plus its matrix products, which
    dominate from K of about 30 on (the study's ``seconds_per_k`` show it).

    A large model has too many parameters to keep M draws of each, so each network's SNR is
    over at most ``max_params`` of its entries, drawn uniformly at random (once, from ``seed``):
    the mean over a uniform sample estimates the mean over the network. The inference
    network's entries are drawn from those whose gradient is nonzero in a pilot draw (K = 1):
    with x fixed, the others (the weights of a pixel that is 0 in the whole minibatch, of a
    unit dead for all of it) are 0 in every draw and have no SNR. A decoder unit may be off for
    one z and on for another, so the generative network's entries are drawn from all of them.

    Parameters
    ----------
    model : VAE
        Any objective; its parameters are used, its own objective and ``k`` are not (the study
        is of the IWAE bound with the K of each draw).
    x : array (B, input_dim)
        The minibatch, as the model takes it.
    y : int array (B,), optional
        Labels, for a conditional model.
    max_params : int
        Entries per network whose draws are kept.
    seed : int
        Draws the entries, and the pilot's noise.
    description : str
        What the model and the minibatch are.
    """

    networks: dict[str, tuple[str, ...]]

    def __init__(
        self,
        model: VAE,
        x: numpy.ndarray,
        y: numpy.ndarray | None = None,
        max_params: int = 2000,
        seed: int = 0,
        description: str = "",
    ) -> None:
        self.backend = get_backend("numpy", "float64")
        self.state = model.state_dict()
        # The IWAE bound has no separate KL term, so beta and free bits do not apply to it.
        self.config = replace(model.hparams, objective="iwae", k=1, beta=1.0, free_bits=0.0)
        self.input_dim, self.seed = model.input_dim, model.seed
        self.x = numpy.asarray(x, dtype=numpy.float64)
        self.y = None if y is None else numpy.asarray(y)
        self.description = description or f"{model.input_dim}-input VAE"
        self._models: dict[str, FastVAE] = {}
        names = list(self.state)
        self.networks = {
            "inference": tuple(n for n in names if not n.startswith("decoder.")),
            "generative": tuple(n for n in names if n.startswith("decoder.")),
        }
        rng = numpy.random.default_rng((seed, 2))
        pilot = self._model("reparam")
        eps = rng.standard_normal((self.batch, 1, self.config.latent_dim))
        pilot.loss(self.x, self.y, eps=eps)
        grads = {n: self.backend.to_host(g).reshape(-1) for n, g in pilot.grads.items()}
        self.tracked: dict[str, numpy.ndarray] = {}
        for network, layers in self.networks.items():
            if network == "inference":
                eligible = [numpy.flatnonzero(grads[n]) for n in layers]
            else:
                eligible = [numpy.arange(grads[n].size) for n in layers]
            sizes = numpy.array([e.size for e in eligible])
            total = int(sizes.sum())
            chosen = numpy.sort(rng.choice(total, size=min(max_params, total), replace=False))
            offsets = numpy.concatenate([[0], numpy.cumsum(sizes)])
            for name, entries, lo, hi in zip(
                layers, eligible, offsets[:-1], offsets[1:], strict=True
            ):
                picked = chosen[(chosen >= lo) & (chosen < hi)] - lo
                self.tracked[name] = entries[picked]

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def noise_shape(self, k: int) -> tuple[int, int, int]:
        """The shape of one draw of ``eps``: (B, K, L)."""
        return (self.batch, k, self.config.latent_dim)

    def _model(self, estimator: str) -> FastVAE:
        """The float64 model of one estimator, made on first use."""
        if estimator not in self._models:
            model = FastVAE(
                self.input_dim,
                config=replace(self.config, estimator=estimator),
                backend=self.backend,
                seed=self.seed,
            )
            model.load_state_dict(self.state)
            self._models[estimator] = model
        return self._models[estimator]

    def gradients(
        self, eps: numpy.ndarray, estimators: Sequence[str]
    ) -> dict[str, dict[str, numpy.ndarray]]:
        """The tracked entries of every estimator's gradient of the bound (the model's loss is
        its negative), one row per draw of ``eps`` (C, B, K, L).

        Returns
        -------
        dict estimator -> {layer name: (C, entries)}
            The decoder's rows are the first estimator's for all (they are the same).
        """
        first = estimators[0]
        rows: dict[str, dict[str, list]] = {e: {n: [] for n in self.tracked} for e in estimators}
        for draw in eps:
            for e in estimators:
                model = self._model(e)
                model.loss(self.x, self.y, eps=draw, validate=False)
                for name, index in self.tracked.items():
                    if e == first or not name.startswith("decoder."):
                        rows[e][name].append(-model.grads[name].reshape(-1)[index])
        out = {e: {n: numpy.array(r) for n, r in rows[e].items() if r} for e in estimators}
        for e in estimators[1:]:
            out[e].update({n: out[first][n] for n in self.networks["generative"]})
        return out


# ------------------------------------------------------------------- the trained model's case
#: The small model trained when no run is given: its settings, and how much data it sees.
SMALL_MODEL = {"hidden_dims": (200,), "latent_dim": 10, "objective": "iwae", "k": 5}
SMALL_TRAIN, SMALL_TEST = 10_000, 1_000


def synthetic_binary_images(n: int, dim: int = 784, seed: int = 0) -> numpy.ndarray:
    """``n`` binary images (uint8, 0 or 255) with structure a VAE can learn, for when MNIST is
    not cached: ten random prototypes (7 x 7 blocks scaled up to a square image, or random
    patterns for a ``dim`` that is not a square of a multiple of 7), each image one of them
    with 5% of its pixels flipped."""
    rng = numpy.random.default_rng((seed, 3))
    side = math.isqrt(dim)
    if side * side == dim and side % 7 == 0:
        blocks = rng.random((10, 7, 7)) < 0.4
        cell = numpy.ones((side // 7, side // 7), bool)
        prototypes = numpy.stack([numpy.kron(b, cell) for b in blocks]).reshape(10, dim)
    else:
        prototypes = rng.random((10, dim)) < 0.4
    images = prototypes[rng.integers(0, 10, n)] ^ (rng.random((n, dim)) < 0.05)
    return images.astype(numpy.uint8) * 255


def study_images(data_dir: Path, n_train: int, n_test: int, dim: int, seed: int) -> tuple[Any, str]:
    """MNIST's first ``n_train`` training and ``n_test`` test images and labels if MNIST is
    cached in ``data_dir`` (and ``dim`` is 784), else :func:`synthetic_binary_images` without
    labels; and what they are."""
    from numpy_vae.training.data import DataError, load_mnist

    if dim == 784:
        try:
            mnist = load_mnist(data_dir, download=False, allow_pypi=False, verbose=False)
        except DataError:
            pass
        else:
            return (
                (mnist.train_images[:n_train], mnist.train_labels[:n_train],
                 mnist.test_images[:n_test], mnist.test_labels[:n_test]),
                "MNIST",
            )  # fmt: skip
    pixels = synthetic_binary_images(n_train + n_test, dim, seed)
    return (
        (pixels[:n_train], None, pixels[n_train:], None),
        f"synthetic binary images (no MNIST cached in {data_dir})",
    )


def train_small_model(
    data_dir: Path, seed: int = 0, epochs: int = 5, log: Callable[[str], None] | None = None
) -> tuple[VAE, str]:
    """A small VAE (:data:`SMALL_MODEL`) trained here on :data:`SMALL_TRAIN` images (about a
    minute), for when no run is given; returns it in float64 and what it is."""
    from numpy_vae.training.data import Dataset
    from numpy_vae.training.trainer import TrainConfig, Trainer

    (train, _, test, _), source = study_images(data_dir, SMALL_TRAIN, SMALL_TEST, 784, seed)
    config = TrainConfig(
        **SMALL_MODEL, epochs=epochs, batch_size=100, binarize="dynamic", seed=seed
    )
    trainer = Trainer(
        config, Dataset(numpy.ascontiguousarray(train), None, numpy.ascontiguousarray(test), None)
    )
    for _ in range(epochs):
        metrics = trainer.train_epoch()
        if log is not None:
            log(
                f"  trained epoch {metrics['epoch']}/{epochs}: test negative ELBO "
                f"{metrics['test_neg_elbo']:.2f}"
            )
    model = VAE(
        784, config=config.model_config(), backend=get_backend("numpy", "float64"), seed=seed
    )
    model.load_state_dict(trainer.model.state_dict())
    hidden = "-".join(str(h) for h in config.hidden_dims)
    what = (
        f"a 784-{hidden}-{config.latent_dim} VAE trained here for {epochs} epochs (IWAE, k = "
        f"{config.k}) on {len(train):,} {source}"
    )
    return model, what


def network_case(
    run_dir: Path | None,
    data_dir: Path,
    batch: int = 4,
    seed: int = 0,
    max_params: int = 2000,
    epochs: int = 5,
    log: Callable[[str], None] | None = None,
    data: Dataset | None = None,
    source: str = "the run's data",
) -> NetworkCase:
    """The trained model of ``run_dir`` (:func:`numpy_vae.experiments.estimators.model_from_run`),
    or a small one trained here (:func:`train_small_model`), on a minibatch of the first
    ``batch`` test images: of ``data`` (the run's own data, named ``source`` in the
    description) if given, else MNIST if cached, else synthetic; binarized once (seed ``seed``)
    as the run was trained (dynamically for the small model), or grey levels for a run trained
    on them. ``data`` needs ``run_dir``: the small model is trained on MNIST or synthetic
    images."""
    from numpy_vae.experiments.estimators import model_from_run
    from numpy_vae.training.data import binarize, scale_images

    if run_dir is None:
        if data is not None:
            raise ValueError("network_case: data is the run's own, and there is no run_dir")
        model, what = train_small_model(data_dir, seed, epochs, log)
        mode = "dynamic"
    else:
        model = model_from_run(run_dir)
        try:
            mode = json.loads((Path(run_dir) / "config.json").read_text()).get("binarize", "none")
        except (OSError, ValueError, AttributeError):
            mode = "none"
        hidden = "-".join(str(h) for h in model.hparams.hidden_dims)
        what = (
            f"the {model.hparams.objective} model of {run_dir} ({model.input_dim}-{hidden}-"
            f"{model.latent_dim}, k = {model.hparams.k})"
        )
    if data is not None:
        if batch > len(data.test_images):
            raise ValueError(
                f"--batch-size {batch}: {source} has {len(data.test_images)} test images"
            )
        if data.test_images.shape[1] != model.input_dim:
            raise ValueError(
                f"the model takes {model.input_dim} inputs, the images of {source} have "
                f"{data.test_images.shape[1]}"
            )
        test = data.test_images[:batch]
        labels = None if data.test_labels is None else data.test_labels[:batch]
        if model.n_classes and labels is None:
            raise ValueError(f"the model is conditional, and {source} has no labels")
    else:
        (_, _, test, labels), source = study_images(data_dir, 0, batch, model.input_dim, seed)
        if model.n_classes and labels is None:
            raise ValueError(
                f"the model is conditional and needs labelled MNIST, not in {data_dir}"
            )
    x = binarize(
        scale_images(test, numpy, numpy.float64), mode, numpy.random.default_rng((seed, 4))
    )
    what += f"; minibatch: the first {batch} test images of {source}"
    what += "" if mode == "none" else f", binarized ({mode}, once)"
    y = labels if model.n_classes else None
    return NetworkCase(model, x, y, max_params=max_params, seed=seed, description=what)


# ------------------------------------------------------------------------------- the study
@dataclass
class Curve:
    """One network's SNR under one estimator, against K.

    Attributes
    ----------
    snr : list of float, one per K
        The mean over the network's parameters of ``|mean| / std`` over the draws.
    median : list of float
        The median over the parameters.
    layers : dict name -> list of float
        The mean over each layer's parameters.
    bootstrap : array (replicates, len(K))
        ``snr`` of each bootstrap resample of the draws (independent across K).
    parameters : int
        How many parameters the summaries are over (those with a nonzero spread at every K).
    fitted : list of int
        The K the line was fitted over: those whose ``snr`` is at least :data:`FLOOR_MARGIN`
        times the floor (all of them if fewer than two are).
    slope, intercept : float
        The least-squares line through ``(log K, log snr)`` at the fitted K.
    slope_se : float
        The standard deviation of the slope over the bootstrap replicates: the Monte Carlo
        standard error of ``slope``.
    slope_fit_se : float
        The slope's standard error from the line's residuals: how far the points lie from a
        power law, not how noisy they are.
    """

    snr: list[float]
    median: list[float]
    layers: dict[str, list[float]]
    bootstrap: numpy.ndarray
    parameters: int
    fitted: list[int] = field(default_factory=list)
    slope: float = math.nan
    intercept: float = math.nan
    slope_se: float = math.nan
    slope_fit_se: float = math.nan

    def fit(self, sample_counts: Sequence[int], floor: float) -> None:
        """Fit the line and its standard errors over the K above ``FLOOR_MARGIN * floor``.

        Near the floor an estimated SNR is mostly the noise of the mean, which would bend a
        falling curve flat; those points are shown but not fitted.
        """
        above = [i for i, v in enumerate(self.snr) if v >= FLOOR_MARGIN * floor]
        use = above if len(above) >= 2 else list(range(len(self.snr)))
        k = [sample_counts[i] for i in use]
        self.fitted = k
        self.slope, self.intercept, self.slope_fit_se = fit_slope(k, [self.snr[i] for i in use])
        slopes = [fit_slope(k, row[use])[0] for row in self.bootstrap]
        self.slope_se = float(numpy.std(slopes, ddof=1))

    def to_json(self) -> dict[str, Any]:
        return {
            "snr": self.snr,
            "median": self.median,
            "layers": self.layers,
            "parameters": self.parameters,
            "fitted_sample_counts": self.fitted,
            "slope": self.slope,
            "slope_se": self.slope_se,
            "slope_fit_se": self.slope_fit_se,
            "intercept": self.intercept,
        }


def curve_key(network: str, estimator: str | None = None) -> str:
    """``inference/dreg``, or ``generative`` (one curve for every estimator)."""
    return network if estimator is None else f"{network}/{estimator}"


@dataclass
class SNRStudy:
    """The result of :func:`snr_study`: every curve, keyed by :func:`curve_key`."""

    case: str
    sample_counts: list[int]
    draws: int
    batch: int
    estimators: list[str]
    curves: dict[str, Curve]
    seconds: float = 0.0
    seconds_per_k: list[float] = field(default_factory=list)

    @property
    def floor(self) -> float:
        """:func:`snr_floor` of the draws."""
        return snr_floor(self.draws)

    def columns(self) -> list[tuple[str, str]]:
        """(heading, curve key) of every curve, the inference network's first."""
        cols = [(f"inf {e}", curve_key("inference", e)) for e in self.estimators]
        return [*cols, ("generative", curve_key("generative"))]

    def table(self) -> str:
        """SNR per K of every curve, then each curve's slope, its standard error and the K it
        was fitted over."""
        cols = self.columns()
        width = max(14, *(len(h) + 2 for h, _ in cols))
        low = FLOOR_MARGIN * self.floor

        def row(label: str, cells: Sequence[str]) -> str:
            return f"{label:>6}" + "".join(c.rjust(width) for c in cells)

        lines = [row("K", [h + " " for h, _ in cols])]
        for i, k in enumerate(self.sample_counts):
            values = [self.curves[key].snr[i] for _, key in cols]
            lines.append(row(str(k), [f"{v:.4g}{'*' if v < low else ' '}" for v in values]))
        curves = [self.curves[key] for _, key in cols]
        lines.append(row("slope", [f"{c.slope:+.3f} " for c in curves]))
        lines.append(row("+-", [f"{c.slope_se:.3f} " for c in curves]))
        lines.append(row("fit K", [self._fitted(c) + " " for c in curves]))
        lines.append(
            f"slope: least squares on log SNR against log K over the K shown; +-: its bootstrap "
            f"standard error over the draws; * below {FLOOR_MARGIN:g} x the noise floor "
            f"sqrt(2/(pi M)) = {self.floor:.3g} (M = {self.draws}): mostly the noise of the "
            "mean, not fitted unless fewer than two points lie above it."
        )
        return "\n".join(lines)

    def _fitted(self, curve: Curve) -> str:
        """The K a curve was fitted over: ``3-1000``, or ``4 of 7`` if not a run of them."""
        first = self.sample_counts.index(curve.fitted[0])
        if self.sample_counts[first : first + len(curve.fitted)] == curve.fitted:
            return f"{curve.fitted[0]}-{curve.fitted[-1]}"
        return f"{len(curve.fitted)} of {len(self.sample_counts)}"

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable figures."""
        return {
            "case": self.case,
            "sample_counts": self.sample_counts,
            "draws": self.draws,
            "batch": self.batch,
            "estimators": self.estimators,
            "floor": self.floor,
            "seconds": self.seconds,
            "seconds_per_k": self.seconds_per_k,
            "curves": {key: c.to_json() for key, c in self.curves.items()},
        }


def _curve(
    layers: dict[str, numpy.ndarray], replicates: int, rng: numpy.random.Generator
) -> tuple[float, float, dict[str, float], numpy.ndarray, int]:
    """The summaries of one network at one K, from its layers' draws (M, p) each."""
    draws = numpy.concatenate(list(layers.values()), axis=1)
    keep = draws.std(axis=0) > 0  # a gradient that is 0 in every draw has no SNR
    draws = draws[:, keep]
    per_parameter = snr(draws)
    by_layer = {
        name: float(numpy.nanmean(snr(d))) if numpy.any(d.std(axis=0) > 0) else math.nan
        for name, d in layers.items()
    }
    boot = bootstrap_snr(draws, replicates, rng)
    return (
        float(per_parameter.mean()),
        float(numpy.median(per_parameter)),
        by_layer,
        boot,
        int(keep.sum()),
    )


def snr_study(
    case: Any,
    sample_counts: Sequence[int] = SAMPLE_COUNTS,
    draws: int = 1000,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    seed: int = 0,
    replicates: int = BOOTSTRAP,
    done: Callable[[int], None] | None = None,
) -> SNRStudy:
    """The SNR of every estimator's gradient against K, for a case's fixed minibatch.

    Parameters
    ----------
    case : GaussianCase or NetworkCase
        Gives ``draw_gradients(k, draws, estimators, rng, done)`` (per estimator, per layer,
        one row per draw), ``networks`` (network -> layers), ``batch`` and ``description``.
    sample_counts : sequence of int
        The values of K (at least two).
    draws : int
        M, independent draws of ``eps`` at each K (>= 2); every estimator sees the same draws.
    estimators : sequence of str
        From :data:`numpy_vae.bounds.ESTIMATORS`.
    seed : int
        Seeds the noise (one stream per K, so a K's draws do not depend on the others) and the
        bootstrap.
    replicates : int
        Bootstrap replicates for the slopes' standard errors (>= 2).
    done : callable, optional
        Told the work done after each chunk, in draws times K (what a draw costs grows with
        K), for a progress display: ``draws * sum(sample_counts)`` in all.

    Returns
    -------
    SNRStudy
    """

    if draws < 2 or replicates < 2:
        raise ValueError(f"draws and replicates must be >= 2, got {draws} and {replicates}")
    if len(sample_counts) < 2 or min(sample_counts) < 1:
        raise ValueError(f"give at least two positive sample counts, got {list(sample_counts)}")
    if not estimators:
        raise ValueError("give at least one estimator")
    start = time.perf_counter()
    boot_rng = numpy.random.default_rng((seed, 1))
    points: dict[str, list[tuple]] = {}
    seconds = []
    for k in sample_counts:
        began = time.perf_counter()
        # Progress in draws times K: what a draw costs grows with K.
        tick = None if done is None else (lambda n, k=k: done(n * k))
        grads = case.draw_gradients(
            k, draws, estimators, numpy.random.default_rng((seed, 0, k)), tick
        )
        wanted = [(curve_key("inference", e), e, "inference") for e in estimators]
        wanted.append((curve_key("generative"), estimators[0], "generative"))
        for key, e, network in wanted:
            layers = {name: grads[e][name] for name in case.networks[network]}
            points.setdefault(key, []).append(_curve(layers, replicates, boot_rng))
        seconds.append(time.perf_counter() - began)
    curves = {}
    for key, rows in points.items():
        curve = Curve(
            snr=[r[0] for r in rows],
            median=[r[1] for r in rows],
            layers={name: [r[2][name] for r in rows] for name in rows[0][2]},
            bootstrap=numpy.stack([r[3] for r in rows], axis=1),
            parameters=min(r[4] for r in rows),
        )
        curve.fit(sample_counts, snr_floor(draws))
        curves[key] = curve
    return SNRStudy(
        case=case.description,
        sample_counts=list(sample_counts),
        draws=draws,
        batch=case.batch,
        estimators=list(estimators),
        curves=curves,
        seconds=time.perf_counter() - start,
        seconds_per_k=seconds,
    )


#: What the theory says of each curve as K grows (the sign the check asks for, the limit).
EXPECTED = {
    "inference/reparam": ("< 0", -0.5),
    "inference/dreg": (">= 0", 0.5),
    "generative": ("> 0", 0.5),
}


def check_signs(study: SNRStudy, z: float = 3.0) -> tuple[bool, list[str]]:
    """Whether the slopes have the signs of :data:`EXPECTED`, each by ``z`` standard errors.

    The plain estimator's inference slope must be below 0 and the generative slope above 0
    by ``z`` bootstrap standard errors; DReG's inference slope may not be below 0 by more than
    ``z`` of them (it is flat or rising; its limit is +1/2). For a slope whose true value sits
    exactly on the boundary the estimate is close to normal, so ``z = 3`` fails it wrongly with
    probability 0.13%; the slopes measured lie tens of standard errors from 0.

    Returns
    -------
    passed : bool
    lines : list of str
        One per curve checked, then the verdict.
    """
    lines, passed = [], True
    for key, (sign, limit) in EXPECTED.items():
        curve = study.curves.get(key)
        if curve is None:
            continue
        if sign == "< 0":
            ok = curve.slope + z * curve.slope_se < 0
        elif sign == "> 0":
            ok = curve.slope - z * curve.slope_se > 0
        else:
            ok = curve.slope + z * curve.slope_se >= 0
        passed &= ok
        lines.append(
            f"  {key:<18} slope {curve.slope:+.3f} +- {curve.slope_se:.3f}: {sign} by {z:g} "
            f"standard errors {'yes' if ok else 'NO'} (limit as K grows {limit:+g})"
        )
    lines.append(f"  {'PASS' if passed else 'FAIL'}: the slopes have the signs the theory gives")
    return passed, lines


# ------------------------------------------------------------------------------- the figure
COLORS = {"reparam": "tab:red", "dreg": "tab:blue", "stl": "tab:green", "generative": "black"}


def plot_snr(panels: Sequence[tuple[str, SNRStudy]], path: str | os.PathLike[str]) -> None:
    """SNR against K, log-log, one panel per (title, study): every curve, its fitted line
    over the fitted K (dashed), the limits' slopes -1/2 and +1/2 from the first point of the
    plain inference and the generative curve (dotted), and the level below which a point is
    mostly noise (grey).

    Written atomically (:func:`numpy_vae.training.plots.save_figure`): a temporary file beside
    ``path``, renamed over it, so nothing half-written and nothing outside its folder.
    """
    from matplotlib.figure import Figure

    from numpy_vae.training.plots import save_figure

    fig = Figure(figsize=(5.2 * len(panels), 4.6), dpi=100)
    for i, (title, study) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        k = numpy.asarray(study.sample_counts, float)
        for heading, key in study.columns():
            curve = study.curves[key]
            color = COLORS[key.split("/")[-1]]
            label = f"{heading} ({curve.slope:+.3f} ± {curve.slope_se:.3f})"
            ax.loglog(k, curve.snr, "o-", color=color, label=label)
            fitted = numpy.asarray(curve.fitted, float)
            ax.loglog(fitted, numpy.exp(curve.intercept) * fitted**curve.slope, "--", color=color,
                      alpha=0.5)  # fmt: skip
            if key in ("inference/reparam", "generative"):
                limit = EXPECTED[key][1]
                ax.loglog(k, curve.snr[0] * (k / k[0]) ** limit, ":", color=color, alpha=0.6)
        ax.axhspan(1e-9, FLOOR_MARGIN * study.floor, color="0.85", zorder=0)
        ax.set_ylim(bottom=min(0.5 * study.floor, *(min(c.snr) for c in study.curves.values())))
        ax.set_title(f"{title}\nM = {study.draws} draws, minibatch of {study.batch}",
                     fontsize="medium")  # fmt: skip
        ax.set_xlabel("samples K")
        ax.set_ylabel("SNR, mean over the parameters")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small", title="network, estimator (slope ± s.e.)",
                  title_fontsize="small")  # fmt: skip
    fig.suptitle(
        "Signal-to-noise ratio of the IWAE gradient (dashed: the fits; dotted: slopes -1/2 "
        f"and +1/2; grey: below {FLOOR_MARGIN:g} x the noise floor, mostly noise)",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure(fig, path)
