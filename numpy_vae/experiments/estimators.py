r"""Two Monte Carlo estimators of the gradient of an expectation, and the experiment that
compares them: why the VAE samples ``z`` by reparameterization.

The problem. The ELBO's reconstruction term is :math:`\mathbb E_{q}[f(z)]` with
:math:`f(z) = \log p(x \mid z)` and :math:`q = \mathcal N(\mu, \operatorname{diag} e^{v})`
(``mu``, ``logvar = v``, ``sigma = exp(logvar / 2)``). Its gradient with respect to ``mu`` and
``logvar`` cannot be computed by sampling ``z ~ q`` and differentiating ``f(z)``: the samples
themselves depend on the parameters. There are two ways to turn the gradient back into an
expectation that samples can estimate.

**Reparameterization** (pathwise). Write :math:`z = \mu + \sigma \odot \epsilon` with
:math:`\epsilon \sim \mathcal N(0, I)`, which does not depend on the parameters, so the gradient
moves inside the expectation and the chain rule through ``z`` does the rest:

.. math::
    \frac{\partial}{\partial \mu_j} \mathbb E[f] = \mathbb E_\epsilon\!\left[f'(z)_j\right],
    \qquad
    \frac{\partial}{\partial v_j} \mathbb E[f]
        = \mathbb E_\epsilon\!\left[f'(z)_j\, \epsilon_j\, \tfrac12 \sigma_j\right]

since :math:`\partial z_j / \partial \mu_j = 1` and
:math:`\partial z_j / \partial v_j = \epsilon_j \partial \sigma_j / \partial v_j
= \epsilon_j \tfrac12 \sigma_j`. This is exactly :func:`numpy_vae.reparam.reparameterize_backward`
applied to ``d_z = f'(z)``, and it is what the model does.

**Score function** (REINFORCE, likelihood ratio). Differentiate the density instead of the
sample: :math:`\nabla \int q f = \int q\, (\nabla \log q)\, f`, so

.. math::
    \nabla \mathbb E_q[f] = \mathbb E_q\!\left[f(z)\, \nabla \log q(z)\right].

It needs only values of ``f``, never its derivative (it works for discrete ``z`` and for
non-differentiable ``f``). For the diagonal Gaussian,
:math:`\log q(z) = -\tfrac12 \sum_j \left[\log 2\pi + v_j + (z_j - \mu_j)^2 e^{-v_j}\right]`,
whose derivatives are

.. math::
    \frac{\partial \log q}{\partial \mu_j} = \frac{z_j - \mu_j}{\sigma_j^2}
        = \frac{\epsilon_j}{\sigma_j},
    \qquad
    \frac{\partial \log q}{\partial v_j}
        = \tfrac12\left(\frac{(z_j - \mu_j)^2}{\sigma_j^2} - 1\right)
        = \tfrac12\left(\epsilon_j^2 - 1\right).

Both scores have mean zero under ``q`` (which is why the estimator is unbiased, and why a
constant added to ``f`` changes its variance but not its mean).

**Variance.** Both are unbiased; they differ in variance. Averaging ``K`` independent samples
divides the variance by ``K`` for either, so on a log-log plot both fall with slope -1 and the
question is the offset. The score-function samples carry the size of ``f`` itself (hundreds of
nats for an image) times a zero-mean score; the reparameterization samples carry only how ``f``
changes near ``z``. Here the *variance of an estimator of a vector gradient* is the
per-coordinate variance averaged over the ``L`` coordinates,
:math:`\frac1L \sum_j \operatorname{Var}[\hat g_j]`, reported separately for ``mu`` and
``logvar``.

:func:`gradient_variance` runs the comparison; :class:`Quadratic` is a case with a closed-form
expectation, where the exact gradient is known and unbiasedness can be tested;
:class:`DecoderLogLikelihood` is the real case, ``f(z) = log p(x | z)`` of a VAE decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy

from numpy_vae.backend import get_backend
from numpy_vae.model import VAE
from numpy_vae.reparam import reparameterize, reparameterize_backward
from numpy_vae.training.progress import Progress

if TYPE_CHECKING:
    from numpy_vae.training.data import Dataset

SAMPLE_COUNTS = (1, 3, 10, 30, 100, 300, 1000)
ESTIMATORS = ("reparameterization", "score function")


class Objective(Protocol):
    """A function ``f(z)`` of a batch of latent points ``z`` (K, L)."""

    def value(self, z: numpy.ndarray) -> numpy.ndarray:
        """f at each row of ``z``, shape (K,)."""

    def gradient(self, z: numpy.ndarray) -> numpy.ndarray:
        """df/dz at each row of ``z``, shape (K, L)."""


def reparameterization_samples(
    objective: Objective, mu: numpy.ndarray, logvar: numpy.ndarray, eps: numpy.ndarray
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """One reparameterization gradient sample per row of ``eps``.

    ``z = mu + exp(logvar / 2) * eps``; the samples are ``d_mu = f'(z)`` and
    ``d_logvar = f'(z) * eps * exp(logvar / 2) / 2`` (see the module docstring), computed with
    the model's own :func:`~numpy_vae.reparam.reparameterize` and its backward.

    Parameters
    ----------
    objective : Objective
    mu, logvar : arrays, shape (L,)
    eps : array, shape (K, L)
        Standard normal noise.

    Returns
    -------
    d_mu, d_logvar : arrays, shape (K, L)
        Row k is the estimate from sample k alone; their mean is the K-sample estimate.
    """
    z, cache = reparameterize(mu, logvar, eps, numpy)
    return reparameterize_backward(objective.gradient(z), cache)


def gaussian_score(
    z: numpy.ndarray, mu: numpy.ndarray, logvar: numpy.ndarray
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Gradient of log N(z; mu, diag exp(logvar)) with respect to mu and logvar.

    ``(z - mu) / sigma^2`` and ``((z - mu)^2 / sigma^2 - 1) / 2`` (module docstring), each with
    the shape of ``z``.
    """
    var = numpy.exp(logvar)
    return (z - mu) / var, 0.5 * ((z - mu) ** 2 / var - 1)


def score_function_samples(
    objective: Objective, mu: numpy.ndarray, logvar: numpy.ndarray, eps: numpy.ndarray
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """One score-function (REINFORCE) gradient sample per row of ``eps``.

    ``d_mu = f(z) (z - mu) / sigma^2`` and ``d_logvar = f(z) ((z - mu)^2 / sigma^2 - 1) / 2``,
    the value of ``f`` times the score of ``q`` (:func:`gaussian_score`). Only values of ``f``
    are used. Same arguments and results as :func:`reparameterization_samples`.
    """
    z = mu + numpy.exp(0.5 * logvar) * eps
    f = objective.value(z)[:, None]
    score_mu, score_logvar = gaussian_score(z, mu, logvar)
    return f * score_mu, f * score_logvar


SAMPLERS: dict[str, Callable[..., tuple[numpy.ndarray, numpy.ndarray]]] = {
    "reparameterization": reparameterization_samples,
    "score function": score_function_samples,
}


@dataclass
class Quadratic:
    r"""``f(z) = -1/2 (z - c)^T A (z - c)``, A symmetric: its Gaussian expectation is exact.

    With :math:`\Sigma = \operatorname{diag}(\sigma^2)`,
    :math:`\mathbb E_q[(z-c)^T A (z-c)] = (\mu - c)^T A (\mu - c) + \operatorname{tr}(A\Sigma)`,
    so

    .. math::
        \mathbb E_q f = -\tfrac12\left[(\mu - c)^T A (\mu - c) + \sum_j A_{jj}\sigma_j^2\right],
        \quad
        \frac{\partial \mathbb E_q f}{\partial \mu} = -A(\mu - c),
        \quad
        \frac{\partial \mathbb E_q f}{\partial v_j} = -\tfrac12 A_{jj} \sigma_j^2

    (using :math:`\partial \sigma_j^2 / \partial v_j = \sigma_j^2`).
    """

    a: numpy.ndarray
    c: numpy.ndarray

    def value(self, z: numpy.ndarray) -> numpy.ndarray:
        d = z - self.c
        return -0.5 * numpy.einsum("ki,ij,kj->k", d, self.a, d)

    def gradient(self, z: numpy.ndarray) -> numpy.ndarray:
        return -(z - self.c) @ self.a

    def expectation(self, mu: numpy.ndarray, logvar: numpy.ndarray) -> float:
        """E_q f, exactly."""
        d = mu - self.c
        return float(-0.5 * (d @ self.a @ d + numpy.diag(self.a) @ numpy.exp(logvar)))

    def exact_gradient(
        self, mu: numpy.ndarray, logvar: numpy.ndarray
    ) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(dE_q f / dmu, dE_q f / dlogvar), exactly."""
        return -self.a @ (mu - self.c), -0.5 * numpy.diag(self.a) * numpy.exp(logvar)

    def reparameterization_variance(
        self, mu: numpy.ndarray, logvar: numpy.ndarray
    ) -> tuple[numpy.ndarray, numpy.ndarray]:
        r"""Exact per-coordinate variance of one reparameterization sample, (L,) each.

        ``d_mu = -A(mu - c) - A (sigma * eps)`` has covariance :math:`A \Sigma A`.
        ``d_logvar_j = -sigma_j / 2 (b_j eps_j + sum_k A_jk sigma_k eps_k eps_j)`` with
        :math:`b = A(\mu - c)`; the terms :math:`\epsilon_j`, :math:`\epsilon_j^2` and
        :math:`\epsilon_k\epsilon_j` (k != j) are uncorrelated, with variances 1, 2, 1, so
        :math:`\operatorname{Var} = \tfrac14\sigma_j^2 (b_j^2 + 2 A_{jj}^2 \sigma_j^2
        + \sum_{k \ne j} A_{jk}^2 \sigma_k^2)`.
        """
        var = numpy.exp(logvar)
        b = self.a @ (mu - self.c)
        var_mu = numpy.diag(self.a @ numpy.diag(var) @ self.a)
        cross = (self.a**2) @ var - numpy.diag(self.a) ** 2 * var  # sum over k != j
        var_logvar = 0.25 * var * (b**2 + 2 * numpy.diag(self.a) ** 2 * var + cross)
        return var_mu, var_logvar


def quadratic_case(
    latent_dim: int = 4, seed: int = 0
) -> tuple[Quadratic, numpy.ndarray, numpy.ndarray]:
    """A random quadratic objective and a posterior (mu, logvar) to test the estimators on.

    ``A`` is symmetric positive definite with eigenvalues in [0.5, 2]; the centre ``c`` lies
    about 2 standard deviations from ``mu`` per coordinate, so ``f`` is of order ``-L``, and
    ``logvar`` is uniform in [-1, 0.5].
    """
    rng = numpy.random.default_rng(seed)
    q, _ = numpy.linalg.qr(rng.standard_normal((latent_dim, latent_dim)))
    a = q @ numpy.diag(rng.uniform(0.5, 2.0, latent_dim)) @ q.T
    mu = rng.normal(0.0, 1.0, latent_dim)
    logvar = rng.uniform(-1.0, 0.5, latent_dim)
    c = mu + 2.0 * numpy.exp(logvar / 2) * rng.choice([-1.0, 1.0], latent_dim)
    return Quadratic(a=(a + a.T) / 2, c=c), mu, logvar


class DecoderLogLikelihood:
    """``f(z) = log p(x | z)`` of a VAE decoder for one image ``x``: the real objective.

    Values come from the decoder's forward pass and the model's likelihood; gradients from the
    likelihood's derivative and the decoder's backward pass (the same code that trains the
    model), keeping the part of the decoder's input gradient that belongs to ``z``.

    Parameters
    ----------
    model : VAE
        A NumPy model (float64 recommended); its decoder is used, not changed.
    x : array, shape (input_dim,)
        The image.
    y : int, optional
        Its label, for a conditional model.
    chunk : int
        Rows of ``z`` per decoder pass, which bounds the memory (chunk x input_dim arrays).
    """

    def __init__(
        self, model: VAE, x: numpy.ndarray, y: int | None = None, chunk: int = 2000
    ) -> None:
        self.model = model
        self.x = numpy.asarray(x, dtype=model.dtype).reshape(1, -1)
        self.y = y
        self.chunk = chunk
        #: Told the rows of z done so far, over all calls (set it to show progress).
        self.progress: Progress | None = None
        self.rows_done = 0

    def _done(self, rows: int) -> None:
        self.rows_done += rows
        if self.progress is not None:
            self.progress.update(self.rows_done)

    def _labels(self, n: int) -> numpy.ndarray | None:
        return None if self.y is None else numpy.full(n, self.y)

    def value(self, z: numpy.ndarray) -> numpy.ndarray:
        parts = []
        for start in range(0, len(z), self.chunk):
            rows = z[start : start + self.chunk]
            out = self.model.decoder_output(rows, self._labels(len(rows)), validate=False)
            parts.append(self.model.log_likelihood(self.x, out))
            self._done(len(rows))
        return numpy.concatenate(parts)

    def gradient(self, z: numpy.ndarray) -> numpy.ndarray:
        latent, parts = self.model.latent_dim, []
        for start in range(0, len(z), self.chunk):
            rows = z[start : start + self.chunk]
            out = self.model.decoder_output(rows, self._labels(len(rows)), validate=False)
            _, d_out = self.model.likelihood.nll(out, self.x)  # gradient of -log p
            d_in = self.model.decoder.backward(-d_out)
            parts.append(d_in[:, :latent])
            self._done(len(rows))
        return numpy.concatenate(parts)


@dataclass
class EstimatorResult:
    """What :func:`gradient_variance` measured for one estimator.

    Attributes
    ----------
    variance_mu, variance_logvar : list of float, one per sample count K
        Variance of the K-sample average, averaged over the L coordinates.
    mean_mu, mean_logvar : arrays (L,)
        Mean of all N single-sample estimates: the estimator's best estimate of the gradient.
    stderr_mu, stderr_logvar : arrays (L,)
        Their standard errors, ``std / sqrt(N)``.
    """

    variance_mu: list[float]
    variance_logvar: list[float]
    mean_mu: numpy.ndarray
    mean_logvar: numpy.ndarray
    stderr_mu: numpy.ndarray
    stderr_logvar: numpy.ndarray

    def z_scores(self, exact_mu: numpy.ndarray, exact_logvar: numpy.ndarray) -> numpy.ndarray:
        """(mean - exact) / standard error for every coordinate of mu, then of logvar."""
        return numpy.concatenate(
            [(self.mean_mu - exact_mu) / self.stderr_mu,
             (self.mean_logvar - exact_logvar) / self.stderr_logvar]
        )  # fmt: skip


@dataclass
class VarianceStudy:
    """The result of :func:`gradient_variance`."""

    sample_counts: list[int]
    samples: int
    results: dict[str, EstimatorResult]
    exact_mu: numpy.ndarray | None = None
    exact_logvar: numpy.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """Variance of the K-sample estimate per K: both estimators and their ratio."""
        r, s = (self.results[name] for name in ESTIMATORS)
        lines = [
            f"{'':>6} {'gradient w.r.t. mu':^38} {'gradient w.r.t. logvar':^38}",
            f"{'K':>6} {'reparam':>12} {'score fn':>12} {'ratio':>12} "
            f"{'reparam':>12} {'score fn':>12} {'ratio':>12}",
        ]
        for i, k in enumerate(self.sample_counts):
            lines.append(
                f"{k:>6} {r.variance_mu[i]:>12.4g} {s.variance_mu[i]:>12.4g} "
                f"{s.variance_mu[i] / r.variance_mu[i]:>12.4g} "
                f"{r.variance_logvar[i]:>12.4g} {s.variance_logvar[i]:>12.4g} "
                f"{s.variance_logvar[i] / r.variance_logvar[i]:>12.4g}"
            )
        return "\n".join(lines)

    def unbiasedness(self) -> dict[str, float]:
        """Largest |mean - exact| / standard error of each estimator (needs the exact gradient)."""
        if self.exact_mu is None or self.exact_logvar is None:
            raise ValueError("no exact gradient: unbiasedness needs a closed-form case")
        return {
            name: float(numpy.abs(res.z_scores(self.exact_mu, self.exact_logvar)).max())
            for name, res in self.results.items()
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable figures."""
        out: dict[str, Any] = {"sample_counts": self.sample_counts, "samples": self.samples}
        for name, res in self.results.items():
            out[name] = {
                "variance_mu": res.variance_mu,
                "variance_logvar": res.variance_logvar,
                "mean_mu": res.mean_mu.tolist(),
                "mean_logvar": res.mean_logvar.tolist(),
                "stderr_mu": res.stderr_mu.tolist(),
                "stderr_logvar": res.stderr_logvar.tolist(),
            }
        if self.exact_mu is not None and self.exact_logvar is not None:
            out["exact_mu"] = self.exact_mu.tolist()
            out["exact_logvar"] = self.exact_logvar.tolist()
            out["max_abs_z"] = self.unbiasedness()
        return out


def gradient_variance(
    objective: Objective,
    mu: numpy.ndarray,
    logvar: numpy.ndarray,
    sample_counts: Sequence[int] = SAMPLE_COUNTS,
    repeats: int = 100,
    seed: int = 0,
    exact: tuple[numpy.ndarray, numpy.ndarray] | None = None,
    samplers: dict[str, Callable[..., Any]] | None = None,
) -> VarianceStudy:
    """Variance of both gradient estimators of E_q[f] against the number of samples K.

    One pool of ``N = repeats * max(sample_counts)`` noise draws is made; every draw gives one
    single-sample estimate from each estimator (the same ``eps`` for both, so they see the same
    points). For each K the pool is cut into ``N // K`` disjoint blocks of K, each block's mean
    is one K-sample estimate, and the variance is the unbiased sample variance over the blocks
    (at least ``repeats`` of them), per coordinate, then averaged over the coordinates.

    Parameters
    ----------
    objective : Objective
        ``f`` with values and gradients.
    mu, logvar : arrays, shape (L,)
        The fixed posterior q.
    sample_counts : sequence of int
        The K values.
    repeats : int
        Blocks at the largest K (>= 2).
    seed : int
        Seeds the noise.
    exact : (array, array), optional
        The exact gradient (d/dmu, d/dlogvar), kept for :meth:`VarianceStudy.unbiasedness`.
    samplers : dict name -> function, optional
        The estimators, default :data:`SAMPLERS` (tests pass deliberately wrong ones).

    Returns
    -------
    VarianceStudy
    """
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 to estimate a variance, got {repeats}")
    if not sample_counts or min(sample_counts) < 1:
        raise ValueError(f"sample counts must be positive integers, got {list(sample_counts)}")
    samplers = SAMPLERS if samplers is None else samplers
    mu, logvar = numpy.asarray(mu, numpy.float64), numpy.asarray(logvar, numpy.float64)
    n = repeats * max(sample_counts)
    eps = numpy.random.default_rng(seed).standard_normal((n, mu.size))
    results = {}
    for name, sampler in samplers.items():
        d_mu, d_logvar = sampler(objective, mu, logvar, eps)
        results[name] = EstimatorResult(
            variance_mu=[_block_variance(d_mu, k) for k in sample_counts],
            variance_logvar=[_block_variance(d_logvar, k) for k in sample_counts],
            mean_mu=d_mu.mean(axis=0),
            mean_logvar=d_logvar.mean(axis=0),
            stderr_mu=d_mu.std(axis=0, ddof=1) / numpy.sqrt(n),
            stderr_logvar=d_logvar.std(axis=0, ddof=1) / numpy.sqrt(n),
        )
    return VarianceStudy(
        sample_counts=list(sample_counts),
        samples=n,
        results=results,
        exact_mu=None if exact is None else exact[0],
        exact_logvar=None if exact is None else exact[1],
    )


def _block_variance(samples: numpy.ndarray, k: int) -> float:
    """Variance of the mean of k samples, from the disjoint blocks of k rows, averaged over
    the columns."""
    blocks = samples.shape[0] // k
    means = samples[: blocks * k].reshape(blocks, k, -1).mean(axis=1)
    return float(means.var(axis=0, ddof=1).mean())


# ------------------------------------------------------------------------------ the experiment
Z_BOUND = 4.5  # see check_closed_form


def check_closed_form(
    latent_dim: int = 4, repeats: int = 100, seed: int = 0, z_bound: float = Z_BOUND
) -> tuple[VarianceStudy, bool, list[str]]:
    """Both estimators on :func:`quadratic_case`: unbiased, and reparameterization lower.

    Unbiased means every coordinate's mean over the ``N`` samples lies within ``z_bound``
    standard errors of the exact gradient. For a correct estimator each of these z-scores is
    close to standard normal (``N`` is large and the samples have finite moments), so one
    exceeds 4.5 with probability 7e-6, and any of the ``2 * 2L`` of them with about 1e-4 for
    L = 4; a wrong factor or a wrong score, on the other hand, shifts the mean by a sizeable
    part of the gradient, tens of standard errors at N = 100,000. Lower variance: the
    reparameterization estimator's variance is below half the score function's at every K.

    Returns
    -------
    study : VarianceStudy
    passed : bool
    lines : list of str
        The report printed by the script.
    """
    objective, mu, logvar = quadratic_case(latent_dim, seed)
    exact = objective.exact_gradient(mu, logvar)
    study = gradient_variance(objective, mu, logvar, repeats=repeats, seed=seed, exact=exact)
    worst = study.unbiasedness()
    r, s = (study.results[name] for name in ESTIMATORS)
    lower = all(
        2 * rv < sv
        for rv, sv in zip(
            r.variance_mu + r.variance_logvar, s.variance_mu + s.variance_logvar, strict=True
        )
    )
    unbiased = all(z <= z_bound for z in worst.values())
    passed = unbiased and lower
    fmt = lambda a: "[" + ", ".join(f"{v:+.4f}" for v in a) + "]"  # noqa: E731
    lines = [
        f"closed-form case: f(z) = -1/2 (z - c)^T A (z - c), L = {latent_dim}, "
        f"N = {study.samples:,} samples (seed {seed})",
        f"  exact    d/dmu {fmt(exact[0])}   d/dlogvar {fmt(exact[1])}",
    ]
    for name, res in study.results.items():
        lines.append(
            f"  {name:<19} mean d/dmu {fmt(res.mean_mu)}   d/dlogvar {fmt(res.mean_logvar)}"
        )
        se = numpy.concatenate([res.stderr_mu, res.stderr_logvar])
        lines.append(
            f"  {'':<19} standard error {se.min():.4f} to {se.max():.4f}; largest "
            f"|mean - exact| / standard error = {worst[name]:.2f} (bound {z_bound:g})"
        )
    lines.append(
        f"  variance at K = 1: reparameterization {r.variance_mu[0]:.4g} (mu), "
        f"{r.variance_logvar[0]:.4g} (logvar); score function {s.variance_mu[0]:.4g}, "
        f"{s.variance_logvar[0]:.4g}"
    )
    ratio = min(
        sv / rv
        for rv, sv in zip(
            r.variance_mu + r.variance_logvar, s.variance_mu + s.variance_logvar, strict=True
        )
    )
    lines.append(
        f"  {'PASS' if passed else 'FAIL'}: unbiased within {z_bound:g} standard errors: "
        f"{'yes' if unbiased else 'NO'}; reparameterization variance below half the score "
        f"function's at every K: {'yes' if lower else 'NO'} (smallest ratio {ratio:.3g})"
    )
    return study, passed, lines


def model_from_run(run_dir: str | Path) -> VAE:
    """A float64 NumPy copy of the model in a training run's checkpoint (the experiment's
    precision; :func:`numpy_vae.training.checkpoint.load_model` loads in any dtype)."""
    from numpy_vae.training.checkpoint import load_model

    return load_model(run_dir, dtype="float64")


def decoder_case(
    run_dir: Path | None,
    image: int,
    data_dir: Path,
    seed: int,
    data: Dataset | None = None,
    source: str = "the run's data",
) -> tuple[DecoderLogLikelihood, numpy.ndarray, numpy.ndarray, str]:
    """The real objective: a decoder's ``log p(x | z)`` for one image, q from its encoder.

    The model is the trained one in ``run_dir``, or else a freshly initialised 784-400-20 VAE
    (seed ``seed``); the image is test image ``image`` of ``data`` (the run's own data, named
    ``source`` in the description) if given, else MNIST test image ``image`` if MNIST is cached
    in ``data_dir``, else uniform noise in [0, 1]. Returns the objective, ``mu``, ``logvar``
    and a description.
    """
    from numpy_vae.training.data import DataError, load_mnist

    if run_dir is None:
        model = VAE(backend=get_backend("numpy", "float64"), seed=seed)
        what = f"untrained 784-400-20 VAE (seed {seed})"
    else:
        model = model_from_run(run_dir)
        what = f"trained VAE from {run_dir} (latent dim {model.latent_dim})"
    label: int | None
    if data is not None:
        if not 0 <= image < len(data.test_images):
            raise ValueError(
                f"--image must lie in [0, {len(data.test_images)}) (the test images of "
                f"{source}), got {image}"
            )
        x = data.test_images[image] / 255.0
        label = None if data.test_labels is None else int(data.test_labels[image])
        what += f", test image {image} of {source}" + ("" if label is None else f" (a {label})")
    else:
        try:
            mnist = load_mnist(data_dir, download=False, allow_pypi=False, verbose=False)
            if not 0 <= image < len(mnist.test_images):
                raise ValueError(f"--image must lie in [0, {len(mnist.test_images)}), got {image}")
            x = mnist.test_images[image] / 255.0
            label = int(mnist.test_labels[image])
            what += f", MNIST test image {image} (a {label})"
        except DataError:
            x = numpy.random.default_rng(seed).random(model.input_dim)
            label = 0
            what += f", a random image (no MNIST cached in {data_dir})"
    if model.input_dim != x.size:
        raise ValueError(f"the model takes {model.input_dim} inputs, the image has {x.size}")
    if model.n_classes and label is None:
        raise ValueError(f"the model is conditional, and {source} has no labels")
    y = label if model.n_classes else None
    mu, logvar = (a[0] for a in model.encode(x[None, :], None if y is None else numpy.array([y])))
    return DecoderLogLikelihood(model, x, y), mu, logvar, what
