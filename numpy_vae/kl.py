"""KL of the diagonal Gaussian posterior from the standard normal prior or from a second diagonal
Gaussian (a learned prior), and free bits."""

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


def gaussian_kl(
    mu_q: Array, logvar_q: Array, mu_p: Array, logvar_p: Array, xp: ModuleType
) -> tuple[Array, Array, Array, Array, Array]:
    r"""Elementwise KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) and its four gradients.

    With :math:`a = \log\sigma_q^2` (``logvar_q``), :math:`b = \log\sigma_p^2` (``logvar_p``)
    and :math:`\delta = \mu_q - \mu_p`,

    .. math::
        \mathrm{KL} = \tfrac12\left(b - a + e^{a-b} + \delta^2 e^{-b} - 1\right)

    Where it comes from: under :math:`q`, :math:`\mathbb E[\log q(z)] = -\tfrac12(\log 2\pi + a
    + 1)` and, since :math:`\mathbb E_q[(z - \mu_p)^2] = \sigma_q^2 + \delta^2`,
    :math:`\mathbb E[\log p(z)] = -\tfrac12(\log 2\pi + b + (e^{a} + \delta^2) e^{-b})`; their
    difference is the line above. The gradients, term by term:

    .. math::
        \frac{\partial \mathrm{KL}}{\partial \mu_q} = \delta e^{-b},\quad
        \frac{\partial \mathrm{KL}}{\partial \mu_p} = -\delta e^{-b},\quad
        \frac{\partial \mathrm{KL}}{\partial a} = \tfrac12\left(e^{a-b} - 1\right),\quad
        \frac{\partial \mathrm{KL}}{\partial b} = \tfrac12\left(1 - e^{a-b}
        - \delta^2 e^{-b}\right)

    (the means enter only through :math:`\delta`, so their gradients are opposite; the last is
    :math:`\partial_b` of :math:`b`, of :math:`e^{a-b}` and of :math:`\delta^2 e^{-b}`). At
    :math:`\mu_p = 0, b = 0` the value and the ``q`` gradients are :func:`kl_standard_normal`'s.
    The ratio of variances is formed as ``exp(a - b)``, not ``exp(a) / exp(b)``, which would
    overflow for large ``a`` and ``b`` whose difference is small. Each term depends on its own
    four entries only, so these are also the gradients of any weighted sum of the terms.

    Parameters
    ----------
    mu_q, logvar_q : array, shape (B, L)
        The first distribution (the recognition network's ``q(z | visible, hidden)``).
    mu_p, logvar_p : array, shape (B, L)
        The second (the prior network's ``p(z | visible)``).
    xp : module
        Array module.

    Returns
    -------
    kl : array, shape (B, L)
        KL of each example and latent dimension (nats).
    d_mu_q, d_logvar_q, d_mu_p, d_logvar_p : arrays, shape (B, L)
        The partial derivatives of each ``kl`` entry in its own four arguments.
    """
    delta = mu_q - mu_p
    ratio = xp.exp(logvar_q - logvar_p)  # sigma_q^2 / sigma_p^2
    scaled_sq = delta * delta * xp.exp(-logvar_p)  # delta^2 / sigma_p^2
    kl = 0.5 * (logvar_p - logvar_q + ratio + scaled_sq - 1)
    d_mu_q = delta * xp.exp(-logvar_p)
    d_mu_p = -d_mu_q
    d_logvar_q = 0.5 * (ratio - 1)
    d_logvar_p = 0.5 * (1 - ratio - scaled_sq)
    return kl, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p


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
