"""KL of the diagonal Gaussian posterior from the standard normal prior, and free bits."""

from __future__ import annotations

from types import ModuleType
from typing import Any

Array = Any


def kl_standard_normal(mu: Array, logvar: Array, xp: ModuleType) -> tuple[Array, Array, Array]:
    r"""Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) and its gradients, closed form.

    .. math::
        \mathrm{KL}_{ij} = \tfrac12\left(\mu_{ij}^2 + e^{v_{ij}} - v_{ij} - 1\right),\qquad
        \frac{\partial \mathrm{KL}_{ij}}{\partial \mu_{ij}} = \mu_{ij},\qquad
        \frac{\partial \mathrm{KL}_{ij}}{\partial v_{ij}} = \tfrac12\left(e^{v_{ij}} - 1\right)

    with :math:`v = \log\sigma^2` (``logvar``). Where the closed form comes from: for one latent
    dimension, :math:`\log q(z) = -\tfrac12[\log 2\pi + v + (z-\mu)^2/\sigma^2]` and
    :math:`\log p(z) = -\tfrac12[\log 2\pi + z^2]`; under :math:`q`,
    :math:`\mathbb E[(z-\mu)^2] = \sigma^2` and :math:`\mathbb E[z^2] = \mu^2 + \sigma^2`, so
    :math:`\mathrm{KL} = \mathbb E_q[\log q - \log p]
    = \tfrac12(-v - 1 + \mu^2 + \sigma^2)`. The derivatives follow term by term, using
    :math:`\partial e^{v} / \partial v = e^{v}`. Each term depends on its own ``(mu, logvar)``
    entry only, so these are also the gradients of any weighted sum of the terms, scaled by the
    weight.

    Parameters
    ----------
    mu, logvar : array, shape (B, L)
        Posterior means and log-variances.
    xp : module
        Array module.

    Returns
    -------
    kl : array, shape (B, L)
        KL of each example and latent dimension (nats); ``kl.sum(axis=1)`` is the per-example KL.
    d_mu : array, shape (B, L)
    d_logvar : array, shape (B, L)
    """
    var = xp.exp(logvar)
    kl = 0.5 * (mu * mu + var - logvar - 1)
    d_mu = mu
    d_logvar = 0.5 * (var - 1)
    return kl, d_mu, d_logvar


def free_bits(kl: Array, free_nats: float, xp: ModuleType) -> tuple[Array, Array]:
    r"""Free-bits KL objective (Kingma et al. 2016) and the per-dimension gradient weight.

    With :math:`\overline{\mathrm{KL}}_j = \frac1B \sum_i \mathrm{KL}_{ij}` the batch-mean KL of
    latent dimension :math:`j`, the objective is

    .. math::
        B \sum_j \max(\lambda, \overline{\mathrm{KL}}_j),\qquad
        \frac{\partial}{\partial \mathrm{KL}_{ij}} = \mathbb 1[\overline{\mathrm{KL}}_j \ge \lambda]

    so a dimension below its allowance gets exactly zero gradient from the KL term. At the kink
    :math:`\overline{\mathrm{KL}}_j = \lambda` the gradient is passed (``torch.clamp(kl, min=lam)``
    does the same). The factor B keeps the objective on the same per-batch sum scale as the plain
    KL (which it equals whenever every dimension is above the allowance).

    Parameters
    ----------
    kl : array, shape (B, L)
        Elementwise KL from :func:`kl_standard_normal`.
    free_nats : float
        Allowance :math:`\lambda` in nats per latent dimension, >= 0.
    xp : module
        Array module.

    Returns
    -------
    value : 0-d array
        The free-bits KL objective.
    weight : array, shape (L,)
        1 for dimensions whose KL is at or above the allowance, 0 for clamped ones.
    """
    batch = kl.shape[0]
    kl_dim = kl.mean(axis=0)
    weight = (kl_dim >= free_nats).astype(kl.dtype)
    value = batch * xp.maximum(kl_dim, free_nats).sum()
    return value, weight


def weighted_kl(
    kl: Array, free_nats: float, kl_weight: float, xp: ModuleType
) -> tuple[Array, Array | float]:
    """The loss's KL term and the weight of its gradient in each ``KL_ij``: the summed KL and
    ``kl_weight``, or with free bits (``free_nats > 0``) :func:`free_bits`'s value and
    ``kl_weight`` times its 0/1 weight of each latent dimension."""
    if free_nats > 0:
        value, weight = free_bits(kl, free_nats, xp)
        return value, kl_weight * weight
    return kl.sum(), kl_weight
