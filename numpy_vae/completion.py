r"""Image completion with the conditional VAE of Sohn, Lee and Yan (2015).

Given part of an image (``visible``; :mod:`numpy_vae.quadrants` cuts MNIST digits into the
paper's quadrants), predict the rest (``hidden``). Two models of
:math:`p(\text{hidden} \mid \text{visible})`, each with forward and backward:

- :class:`CompletionBaseline`, a deterministic network: pixel logits from ``visible``,
  :math:`p(h \mid v) = \prod_d \mathrm{Bernoulli}(h_d \mid \sigma(f(v)_d))`, exact.
- :class:`CompletionCVAE`: a latent :math:`z` with a learned prior
  :math:`p(z \mid v) = \mathcal N(\mu_p, e^{b})` (the prior network), the recognition network
  :math:`q(z \mid v, h) = \mathcal N(\mu_q, e^{a})` and the generation network
  :math:`p(h \mid v, z)`. Its bound, by Jensen's inequality as for the VAE,

  .. math:: \log p(h \mid v) \ge \mathbb E_{q(z \mid v, h)}[\log p(h \mid v, z)]
            - \mathrm{KL}(q(z \mid v, h) \,\|\, p(z \mid v))

  with the KL between two diagonal Gaussians in closed form (:func:`numpy_vae.kl.gaussian_kl`).

Evaluation (:func:`iw_conditional_log_likelihood`): with :math:`z_s \sim q(z \mid v, h)`,

.. math:: \log p(h \mid v) \approx \log \tfrac1S \textstyle\sum_s
          p(h \mid v, z_s)\, p(z_s \mid v) / q(z_s \mid v, h)

whose argument of the log is unbiased: its mean is a lower bound (Jensen) rising toward
:math:`\log p(h \mid v)` with S (Burda et al. 2016), exact for every S when q is the posterior.

:class:`LatentCompletion` holds what every model with a latent z shares (the prior and the
generation network's methods); :mod:`numpy_vae.gsnn` builds the paper's GSNN and hybrid
objective on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy

from numpy_vae import inputs
from numpy_vae.backend import Backend, get_backend
from numpy_vae.bounds import log_mean_exp, log_posterior, repeat_rows
from numpy_vae.kl import gaussian_kl
from numpy_vae.layers import Linear, Sequential, mlp
from numpy_vae.likelihoods import Bernoulli
from numpy_vae.model import named_arrays
from numpy_vae.objectives import LossParts
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any
LOG_2PI = math.log(2 * math.pi)


def network(
    widths: tuple[int, ...], out: int, activation: str, backend: Backend, rng: Any
) -> Sequential:
    """An MLP through ``widths`` and a last Linear to ``out`` (no activation after it)."""
    layers = mlp(widths, activation, backend, rng).layers
    return Sequential([*layers, Linear(widths[-1], out, backend, rng)])


def log_normal(z: Array, mu: Array, logvar: Array, xp: Any) -> Array:
    """``log N(z; mu, diag exp(logvar))`` summed over the last axis."""
    diff = z - mu
    return -0.5 * (diff * diff * xp.exp(-logvar) + logvar + LOG_2PI).sum(axis=-1)


class CompletionModel:
    """What every completion model shares: sizes, backend, the Bernoulli likelihood, the generator
    ``rng`` (seeded ``seed + 1``), :meth:`loss`, and ``params`` / ``grads`` by the names
    ``"<network>.<index>.<weight or bias>"`` of :meth:`networks` (the optimizers take
    ``list(model.params.values())`` and ``list(model.grads.values())``). Subclasses define
    ``forward(visible, hidden, eps, validate)`` and ``backward()``."""

    latent_dim = 0

    def __init__(self, visible_dim: int, hidden_dim: int, widths: tuple[int, ...],
                 backend: Backend | str | None, seed: int) -> None:  # fmt: skip
        self.visible_dim = inputs.check_int("visible_dim", visible_dim, 1)
        self.hidden_dim = inputs.check_int("hidden_dim", hidden_dim, 1)
        self.widths = tuple(inputs.check_int("every width", w, 1) for w in widths)
        if not self.widths:
            raise ValueError("widths needs at least one hidden layer width")
        self.backend = get_backend() if backend is None else get_backend(backend)
        self.xp, self.dtype = self.backend.xp, self.backend.dtype
        self.likelihood = Bernoulli(self.xp)
        self.rng = self.backend.rng(inputs.check_int("seed", seed, 0) + 1)
        self._saved: Any = None

    def networks(self) -> dict[str, Sequential]:
        raise NotImplementedError

    def take_saved(self) -> Any:
        """What the last :meth:`forward` kept for :meth:`backward`, handed over once."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        saved, self._saved = self._saved, None
        return saved

    def loss(self, visible: Array, hidden: Array, eps: Array | None = None, grad: bool = True,
             validate: bool = True) -> LossParts:  # fmt: skip
        """:meth:`forward`, and with ``grad`` :meth:`backward` (which writes ``grads``)."""
        parts = self.forward(visible, hidden, eps, validate)
        if grad:
            self.backward()
        return parts

    @property
    def params(self) -> dict[str, Array]:
        return named_arrays(self.networks())

    @property
    def grads(self) -> dict[str, Array]:
        return named_arrays(self.networks(), gradients=True)


class CompletionBaseline(CompletionModel):
    """The deterministic network: logits of the hidden pixels from the visible ones.

    Parameters
    ----------
    visible_dim, hidden_dim : int
        Sizes of the given and the predicted parts.
    widths : tuple of int
        Hidden layer widths.
    activation : str
        An activation of :data:`numpy_vae.layers.ACTIVATIONS`.
    backend : Backend or str
        Array module and dtype, default NumPy float32.
    seed : int
        Seeds the initial weights.
    """

    def __init__(self, visible_dim: int, hidden_dim: int, widths: tuple[int, ...] = (500, 500),
                 activation: str = "relu", backend: Backend | str | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__(visible_dim, hidden_dim, widths, backend, seed)
        rng = numpy.random.default_rng(seed)
        self.net = network((visible_dim, *self.widths), hidden_dim, activation, self.backend, rng)

    def networks(self) -> dict[str, Sequential]:
        return {"net": self.net}

    def forward(self, visible: Array, hidden: Array, eps: Array | None = None,
                validate: bool = True) -> LossParts:  # fmt: skip
        """The negative conditional log-likelihood of a batch, ``sum_b -log p(h_b | v_b)``
        (exact: no latent variable), as ``recon``; ``kl`` is 0. There is no ``eps``."""
        visible, hidden, _ = inputs.completion_inputs(self, visible, hidden, eps, validate)
        nll, self._saved = self.likelihood.nll(self.net.forward(visible), hidden)
        return LossParts.of(nll, self.xp.zeros((nll.shape[0], 0), self.dtype), 0.0, 0.0)

    def backward(self) -> None:
        """The network's backward pass from ``d_logits = sigmoid(logits) - hidden``."""
        self.net.backward(self.take_saved())

    def conditional_log_likelihood(self, visible: Array, hidden: Array) -> Array:
        """``log p(hidden | visible)`` per example, (B,): exact."""
        visible, hidden = inputs.completion_pair(self, visible, hidden)
        return self.likelihood.log_prob(self.net.forward(visible), hidden)

    def complete(self, visible: Array) -> Array:
        """The predicted pixel probabilities, (B, hidden_dim)."""
        return self.likelihood.mean(self.net.forward(inputs.check_visible(self, visible)))


class LatentCompletion(CompletionModel):
    """What the models with a latent z share: ``p(h | v) = integral of p(h | v, z) p(z | v)
    dz`` with the prior network ``self.prior`` (outputs ``[mu_p | logvar_p]``) and the
    generation network ``self.generation`` (reads ``[visible | z]``), which subclasses build."""

    prior: Sequential
    generation: Sequential

    def prior_stats(self, visible: Array) -> tuple[Array, Array]:
        """``mu_p, logvar_p`` (B, L) of p(z | visible)."""
        stats = self.prior.forward(visible)
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def log_likelihood(self, visible: Array, hidden: Array, z: Array) -> Array:
        """``log p(hidden_b | visible_b, z_bs)`` (B, S) for ``z`` (B, S, L). Value only."""
        n, s, latent = z.shape
        rows = self.xp.concatenate([repeat_rows(visible, s, self.xp), z.reshape(n * s, latent)], 1)
        logits = self.generation.forward(rows)
        return self.likelihood.log_prob(logits, repeat_rows(hidden, s, self.xp)).reshape(n, s)

    def complete(self, visible: Array, eps: Array | None = None) -> Array:
        """Pixel probabilities of the hidden part (B, hidden_dim) for one draw
        ``z = mu_p + exp(logvar_p / 2) eps`` of the prior network per row (``eps`` from
        ``self.rng`` if omitted)."""
        visible = inputs.check_visible(self, visible)
        eps = inputs.completion_noise(self, eps, visible.shape[0])
        mu_p, logvar_p = self.prior_stats(visible)
        z = reparameterize(mu_p, logvar_p, eps, self.xp)[0]
        return self.likelihood.mean(self.generation.forward(self.xp.concatenate([visible, z], 1)))


class CompletionCVAE(LatentCompletion):
    """The CVAE: prior network p(z | visible), recognition q(z | visible, hidden) and
    generation p(hidden | visible, z) (the generation network reads ``[visible | z]``).

    Parameters as :class:`CompletionBaseline`'s, and ``latent_dim``, the size of z. The three
    networks draw their initial weights in that order.
    """

    def __init__(self, visible_dim: int, hidden_dim: int, widths: tuple[int, ...] = (500, 500),
                 latent_dim: int = 20, activation: str = "relu",
                 backend: Backend | str | None = None, seed: int = 0) -> None:  # fmt: skip
        super().__init__(visible_dim, hidden_dim, widths, backend, seed)
        self.latent_dim = inputs.check_int("latent_dim", latent_dim, 1)
        rng, two_l, b, w = numpy.random.default_rng(seed), 2 * latent_dim, self.backend, self.widths
        self.prior = network((visible_dim, *w), two_l, activation, b, rng)
        self.recognition = network((visible_dim + hidden_dim, *w), two_l, activation, b, rng)
        self.generation = network((visible_dim + latent_dim, *w), hidden_dim, activation, b, rng)

    def networks(self) -> dict[str, Sequential]:
        return {"prior": self.prior, "recognition": self.recognition, "generation": self.generation}

    def forward(self, visible: Array, hidden: Array, eps: Array | None = None,
                validate: bool = True) -> LossParts:  # fmt: skip
        """The negative ELBO of a batch: ``recon = sum_b -log p(h_b | v_b, z_b)`` at
        ``z_b = mu_q + exp(logvar_q / 2) eps_b`` and ``kl = sum_b KL(q(z | v_b, h_b) ||
        p(z | v_b))``; ``eps`` (B, latent_dim) is drawn from ``self.rng`` if omitted."""
        visible, hidden, eps = inputs.completion_inputs(self, visible, hidden, eps, validate)
        mu_p, logvar_p = self.prior_stats(visible)
        mu_q, logvar_q = self.recognition_stats(visible, hidden)
        z, reparam_cache = reparameterize(mu_q, logvar_q, eps, self.xp)
        logits = self.generation.forward(self.xp.concatenate([visible, z], axis=1))
        recon, d_logits = self.likelihood.nll(logits, hidden)
        kl, *kl_grads = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, self.xp)
        self._saved = (d_logits, reparam_cache, kl_grads)
        return LossParts.of(recon, kl, kl.sum(), 1.0)

    def backward(self) -> None:
        """Write ``self.grads``, the gradient of the last :meth:`forward`'s loss
        ``sum_b [nll(h_b, logits_b) + sum_j KL_bj]``, in five steps:

        1. ``d_z``: the generation network's backward from ``d_logits = sigmoid(logits) - h``,
           keeping the columns of ``z`` in its input ``[visible | z]`` (``visible`` is data).
        2. ``d_mu_q = d_z``, ``d_logvar_q = d_z * eps * sigma_q / 2``: the reparameterization.
        3. ``mu_q`` and ``logvar_q`` reach the loss through the KL too; the two paths add:
           ``+ (mu_q - mu_p) exp(-logvar_p)`` and ``+ (exp(logvar_q - logvar_p) - 1) / 2``.
        4. The recognition network's backward from ``[d_mu_q | d_logvar_q]``.
        5. The prior network is reached through the KL only: its backward from
           ``d_mu_p = -(mu_q - mu_p) exp(-logvar_p)`` and ``d_logvar_p = (1 - exp(logvar_q -
           logvar_p) - (mu_q - mu_p)^2 exp(-logvar_p)) / 2`` (:func:`~numpy_vae.kl.gaussian_kl`).
        """
        d_logits, reparam_cache, kl_grads = self.take_saved()
        d_mu_q_kl, d_logvar_q_kl, d_mu_p, d_logvar_p = kl_grads
        d_z = self.generation.backward(d_logits)[:, self.visible_dim :]  # 1
        d_mu_q, d_logvar_q = reparameterize_backward(d_z, reparam_cache)  # 2
        d_mu_q, d_logvar_q = d_mu_q + d_mu_q_kl, d_logvar_q + d_logvar_q_kl  # 3
        self.recognition.backward(self.xp.concatenate([d_mu_q, d_logvar_q], axis=1))  # 4
        self.prior.backward(self.xp.concatenate([d_mu_p, d_logvar_p], axis=1))  # 5

    def recognition_stats(self, visible: Array, hidden: Array) -> tuple[Array, Array]:
        """``mu_q, logvar_q`` (B, L) of q(z | visible, hidden)."""
        stats = self.recognition.forward(self.xp.concatenate([visible, hidden], axis=1))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]


def latent_draws(
    model: LatentCompletion, mu: Array, logvar: Array, S: int, rng: Any, chunk: int
) -> Iterator[tuple[Array, Array]]:
    """``S`` draws ``z = mu + exp(logvar / 2) eps`` per row of ``mu``, ``logvar`` (B, L),
    ``chunk`` at a time: ``(eps, z)``, each (B, c, L), with ``eps`` from
    ``rng.standard_normal(shape, dtype=)``."""
    n, latent = mu.shape
    for start in range(0, S, chunk):
        eps = rng.standard_normal((n, min(chunk, S - start), latent), dtype=model.dtype)
        yield eps, reparameterize(mu[:, None, :], logvar[:, None, :], eps, model.xp)[0]


def iw_conditional_log_likelihood(
    model: CompletionCVAE, visible: Array, hidden: Array, S: int, rng: Any, chunk: int = 100
) -> Array:
    r"""The importance-sampled estimate of ``log p(hidden | visible)`` per example, (B,).

    .. math:: \log \tfrac1S \textstyle\sum_{s=1}^S \exp(\log w_s),\quad
              \log w_s = \log p(h \mid v, z_s) + \log p(z_s \mid v) - \log q(z_s \mid v, h),
              \quad z_s = \mu_q + \sigma_q \epsilon_s

    Each :math:`w_s` has mean :math:`\int p(h \mid v, z) p(z \mid v)\, dz = p(h \mid v)`, so the
    estimate is a stochastic lower bound (Jensen) whose mean rises with S. Samples are drawn
    ``chunk`` at a time from ``rng`` (``standard_normal(shape, dtype=)``), with ``log q`` at
    the reparameterized sample computed from ``eps`` (:func:`numpy_vae.bounds.log_posterior`).

    Parameters
    ----------
    model : CompletionCVAE
    visible, hidden : arrays (B, visible_dim), (B, hidden_dim)
    S : int
        Importance samples per example, >= 1.
    rng : generator
        Draws the samples (the model's own ``rng`` is left as it was).
    chunk : int
        Samples per pass (bounds the memory: B * chunk rows through the generation network).
    """
    visible, hidden = inputs.completion_pair(model, visible, hidden)
    S, chunk = inputs.check_int("S", S, 1), inputs.check_int("chunk", chunk, 1)
    xp = model.xp
    mu_p, logvar_p = model.prior_stats(visible)
    mu_q, logvar_q = model.recognition_stats(visible, hidden)
    log_w = []
    for eps, z in latent_draws(model, mu_q, logvar_q, S, rng, chunk):
        log_pz = log_normal(z, mu_p[:, None, :], logvar_p[:, None, :], xp)
        log_w.append(
            model.log_likelihood(visible, hidden, z) + log_pz - log_posterior(eps, logvar_q)
        )
    return log_mean_exp(xp.concatenate(log_w, axis=1), xp)
