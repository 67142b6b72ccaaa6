r"""The GSNN and the hybrid objective of Sohn, Lee and Yan (2015), beside their CVAE.

The CVAE (:class:`~numpy_vae.completion.CompletionCVAE`) trains its generation network on draws
of the recognition network :math:`q(z \mid v, h)`, which sees the hidden part; at completion
time z comes from the prior network :math:`p(z \mid v)` instead. The paper's Gaussian
stochastic neural network (GSNN) trains on the draws it is used with: it sets q to the prior
network, so the KL term vanishes and what is left is the reconstruction term at a draw of the
prior, per example (one draw; the paper averages L of them)

.. math:: \mathcal L_\mathrm{GSNN} = -\log p(h \mid v, z),\qquad
          z = \mu_p + \sigma_p \odot \epsilon,\quad \epsilon \sim \mathcal N(0, I).

Its mean over :math:`\epsilon`, :math:`-\mathbb E_{p(z \mid v)} \log p(h \mid v, z)`, is by
Jensen's inequality an upper bound on :math:`-\log p(h \mid v)`. The hybrid objective weighs
the two losses over one set of networks, :math:`0 \le \alpha \le 1`:

.. math:: \mathcal L_\mathrm{hybrid} = \alpha\, \mathcal L_\mathrm{CVAE}
          + (1 - \alpha)\, \mathcal L_\mathrm{GSNN}.

- :class:`CompletionGSNN`: the prior and generation networks only; :func:`gsnn_forward` and
  :func:`gsnn_backward` are its loss and gradient.
- :class:`CompletionHybrid`: the CVAE's three networks and ``alpha``.
- :func:`mc_conditional_log_likelihood`: the estimate of ``log p(hidden | visible)`` that needs
  no recognition network (the GSNN has none).
"""

from __future__ import annotations

from typing import Any

import numpy

from numpy_vae import inputs
from numpy_vae.backend import Backend
from numpy_vae.bounds import log_mean_exp
from numpy_vae.completion import CompletionCVAE, LatentCompletion, latent_draws, network
from numpy_vae.layers import Sequential
from numpy_vae.objectives import LossParts
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any


def gsnn_forward(model: LatentCompletion, visible: Array, hidden: Array, eps: Array) -> tuple:
    """``nll`` (B,), ``-log p(h_b | v_b, z_b)`` at the prior network's draw
    ``z = mu_p + exp(logvar_p / 2) eps``, and what :func:`gsnn_backward` needs:
    ``(z, d_logits, reparam_cache)``."""
    mu_p, logvar_p = model.prior_stats(visible)
    z, reparam_cache = reparameterize(mu_p, logvar_p, eps, model.xp)
    logits = model.generation.forward(model.xp.concatenate([visible, z], axis=1))
    nll, d_logits = model.likelihood.nll(logits, hidden)
    return nll, (z, d_logits, reparam_cache)


def gsnn_backward(model: LatentCompletion, cache: tuple) -> None:
    """Write the gradients of the prior and generation networks of ``sum_b nll_b``
    (:func:`gsnn_forward`), whose pass through ``[visible | z]`` the generation network must
    hold, in three steps:

    1. ``d_z``: the generation network's backward from ``d_logits = sigmoid(logits) - h``,
       keeping the columns of ``z`` in its input ``[visible | z]``.
    2. ``d_mu_p = d_z``, ``d_logvar_p = d_z * eps * sigma_p / 2``: the reparameterization, now of
       the prior's draw (:func:`~numpy_vae.reparam.reparameterize_backward`).
    3. The prior network's backward from ``[d_mu_p | d_logvar_p]``: the prior network is reached
       through z alone (there is no KL), where the CVAE's is reached through the KL alone.
    """
    _, d_logits, reparam_cache = cache
    d_z = model.generation.backward(d_logits)[:, model.visible_dim :]  # 1
    d_mu_p, d_logvar_p = reparameterize_backward(d_z, reparam_cache)  # 2
    model.prior.backward(model.xp.concatenate([d_mu_p, d_logvar_p], axis=1))  # 3


class CompletionGSNN(LatentCompletion):
    """The GSNN: the prior network p(z | visible) and the generation network
    p(hidden | visible, z), trained on draws of the prior.

    Parameters as :class:`~numpy_vae.completion.CompletionCVAE`'s; the two networks draw their
    initial weights in that order.
    """

    def __init__(self, visible_dim: int, hidden_dim: int, widths: tuple[int, ...] = (500, 500),
                 latent_dim: int = 20, activation: str = "relu",
                 backend: Backend | str | None = None, seed: int = 0) -> None:  # fmt: skip
        super().__init__(visible_dim, hidden_dim, widths, backend, seed)
        self.latent_dim = inputs.check_int("latent_dim", latent_dim, 1)
        rng, b, w = numpy.random.default_rng(seed), self.backend, self.widths
        self.prior = network((visible_dim, *w), 2 * latent_dim, activation, b, rng)
        self.generation = network((visible_dim + latent_dim, *w), hidden_dim, activation, b, rng)

    def networks(self) -> dict[str, Sequential]:
        return {"prior": self.prior, "generation": self.generation}

    def forward(self, visible: Array, hidden: Array, eps: Array | None = None,
                validate: bool = True) -> LossParts:  # fmt: skip
        """``sum_b -log p(h_b | v_b, z_b)`` at ``z_b = mu_p + exp(logvar_p / 2) eps_b`` as
        ``recon`` and ``loss``; ``kl`` is 0. ``eps`` (B, latent_dim) is drawn from
        ``self.rng`` if omitted."""
        visible, hidden, eps = inputs.completion_inputs(self, visible, hidden, eps, validate)
        nll, self._saved = gsnn_forward(self, visible, hidden, eps)
        return LossParts.of(nll, self.xp.zeros((nll.shape[0], 0), self.dtype), 0.0, 0.0)

    def backward(self) -> None:
        """Write ``self.grads`` (:func:`gsnn_backward`)."""
        gsnn_backward(self, self.take_saved())


class CompletionHybrid(CompletionCVAE):
    r"""The CVAE's networks trained on ``alpha * L_CVAE + (1 - alpha) * L_GSNN``.

    Parameters as :class:`~numpy_vae.completion.CompletionCVAE`'s (the same initial weights for
    the same seed), and ``alpha`` in [0, 1], the weight of the CVAE's loss. At ``alpha = 1``
    the loss and every gradient are the CVAE's, at ``alpha = 0`` the GSNN's (the recognition
    network's gradient is then 0), to the last bit: each term is computed as on its own, and
    ``1 x + 0 y = x`` in floating point.
    """

    def __init__(self, visible_dim: int, hidden_dim: int, widths: tuple[int, ...] = (500, 500),
                 latent_dim: int = 20, activation: str = "relu",
                 backend: Backend | str | None = None, seed: int = 0,
                 alpha: float = 0.5) -> None:  # fmt: skip
        super().__init__(visible_dim, hidden_dim, widths, latent_dim, activation, backend, seed)
        self.alpha = inputs.check_number("alpha", alpha, 0.0, 1.0)

    def forward(self, visible: Array, hidden: Array, eps: Array | None = None,
                validate: bool = True) -> LossParts:  # fmt: skip
        """``loss = alpha * (recon_q + kl) + (1 - alpha) * sum_b -log p(h_b | v_b, z_p_b)``
        with one ``eps`` for both draws, ``z_q = mu_q + sigma_q eps`` and ``z_p = mu_p +
        sigma_p eps`` (each term's mean over ``eps`` is its own whichever way the two draws are
        tied). ``recon``, ``kl`` and ``kl_per_dim`` are the CVAE term's, so that ``neg_elbo``
        is the negative ELBO."""
        visible, hidden, eps = inputs.completion_inputs(self, visible, hidden, eps, validate)
        nll_p, gsnn_cache = gsnn_forward(self, visible, hidden, eps)
        # The CVAE term's pass comes last, so that the networks hold it for its backward.
        cvae = super().forward(visible, hidden, eps, validate=False)
        self._saved = (self._saved, visible, gsnn_cache)
        a = self.alpha
        loss = a * cvae.loss + (1 - a) * nll_p.sum()
        return LossParts(loss, cvae.recon, cvae.kl, cvae.kl_per_dim, cvae.n)

    def backward(self) -> None:
        """Write ``self.grads``: the gradient of a weighted sum is the weighted sum of the
        gradients, ``alpha * grad L_CVAE + (1 - alpha) * grad L_GSNN``.

        1. The CVAE term's gradient (:meth:`CompletionCVAE.backward`), kept aside.
        2. The GSNN term does not reach the recognition network: its gradient there is 0.
        3. Each layer keeps the input of its last forward pass only: the generation network
           passes ``[visible | z_p]`` forward again, then :func:`gsnn_backward` writes the GSNN
           term's gradient of the prior and generation networks.
        4. Every gradient becomes ``alpha * (1) + (1 - alpha) * (2, 3)``.
        """
        cvae_saved, visible, gsnn_cache = self.take_saved()
        self._saved = cvae_saved
        super().backward()  # 1
        cvae_grads = {name: g.copy() for name, g in self.grads.items()}
        for g in self.recognition.gradients().values():  # 2
            g[...] = 0.0
        self.generation.forward(self.xp.concatenate([visible, gsnn_cache[0]], axis=1))  # 3
        gsnn_backward(self, gsnn_cache)
        a = self.alpha
        for name, g in self.grads.items():  # 4
            g[...] = a * cvae_grads[name] + (1 - a) * g


def mc_conditional_log_likelihood(
    model: LatentCompletion, visible: Array, hidden: Array, S: int, rng: Any, chunk: int = 100
) -> Array:
    r"""The prior-sampled (Monte Carlo) estimate of ``log p(hidden | visible)`` per example, (B,).

    .. math:: \log \tfrac1S \textstyle\sum_{s=1}^S p(h \mid v, z_s),\qquad
              z_s = \mu_p + \sigma_p \epsilon_s \sim p(z \mid v)

    Importance sampling with the prior as the proposal: each :math:`p(h \mid v, z_s)` has mean
    :math:`\int p(h \mid v, z) p(z \mid v)\, dz = p(h \mid v)`, so the estimate is a stochastic
    lower bound (Jensen) whose mean rises with S toward :math:`\log p(h \mid v)`; minus it
    overstates :math:`-\log p(h \mid v)` for every finite S. It needs no recognition network,
    but the prior does not see ``hidden``: where :math:`p(h \mid v, z)` is large on a small part
    of the prior's mass, few draws land there and the bias falls slowly with S. At S = 1 its
    mean is minus the GSNN's loss. Samples are drawn as in
    :func:`~numpy_vae.completion.iw_conditional_log_likelihood`, whose parameters it takes
    (any :class:`~numpy_vae.completion.LatentCompletion` model).
    """
    visible, hidden = inputs.completion_pair(model, visible, hidden)
    S, chunk = inputs.check_int("S", S, 1), inputs.check_int("chunk", chunk, 1)
    mu_p, logvar_p = model.prior_stats(visible)
    draws = latent_draws(model, mu_p, logvar_p, S, rng, chunk)
    log_p = [model.log_likelihood(visible, hidden, z) for _, z in draws]
    return log_mean_exp(model.xp.concatenate(log_p, axis=1), model.xp)
