"""The decoder's distribution p(x | z): negative log-likelihoods with their gradients.

Two functions give the value and gradient in textbook form, and two small objects wrap them for
the model, each with the same three methods:

- ``nll(out, x)``: per-example negative log-likelihood, shape ``(B,)``, and the gradient of its
  *sum over the batch* with respect to the decoder output ``out``, shape ``(B, D)``;
- ``log_prob(out, x)``: ``log p(x | z)`` per example (the value alone);
- ``mean(out)``: the mean of p(x | z), what a figure shows.

The fast path computes the Bernoulli value and gradient from one exp and a few logs per row
(:func:`numpy_vae.fast.likelihoods.bernoulli_nll_fused`), held to :func:`bernoulli_nll` by the
tests.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

Array = Any


def bernoulli_nll(
    logits: Array, x: Array, xp: ModuleType, grad: bool = True
) -> tuple[Array, Array | None]:
    r"""Bernoulli negative log-likelihood on decoder logits, stable for any logit.

    .. math::
        -\log p(x \mid \ell) = \sum_d \operatorname{softplus}(\ell_d) - x_d \ell_d,
        \qquad \frac{\partial}{\partial \ell_d} = \sigma(\ell_d) - x_d

    This is exactly the sigmoid-then-binary-cross-entropy of the usual PyTorch example: with
    :math:`p = \sigma(\ell)`, :math:`\log p = -\operatorname{softplus}(-\ell)` and
    :math:`\log(1-p) = -\operatorname{softplus}(\ell)`, and since
    :math:`\operatorname{softplus}(-\ell) = \operatorname{softplus}(\ell) - \ell`,

    .. math::
        -x\log p - (1-x)\log(1-p) = x(\operatorname{softplus}(\ell) - \ell)
        + (1-x)\operatorname{softplus}(\ell) = \operatorname{softplus}(\ell) - x\ell .

    The gradient: :math:`\frac{d}{d\ell}\operatorname{softplus}(\ell)
    = \frac{e^{\ell}}{1 + e^{\ell}} = \sigma(\ell)` and :math:`\frac{d}{d\ell} x\ell = x`, so
    each pixel contributes ``sigmoid(l) - x``: the predicted probability minus the target. (The
    sigmoid's own slope ``p (1 - p)`` cancels against the ``1 / (p (1 - p))`` of the binary
    cross-entropy, which is why a loss on logits has such a simple gradient.) Pixels and
    examples are separate terms of the sum, so the gradient is elementwise.

    Working on logits never forms :math:`\log(\sigma(\ell))`, which is ``log(0) = -inf`` once
    :math:`\sigma(\ell)` rounds to 0 or 1 (near :math:`|\ell| > 17` in float32).
    The value is evaluated as ``max(l, 0) - x l + log1p(exp(-|l|))``: ``softplus(l) = max(l, 0)
    + log(1 + exp(-|l|))``, whose exponential never overflows, and whose form keeps the large
    terms apart (``softplus(l) - l`` at ``x = 1`` would cancel).
    (``torch.nn.functional.binary_cross_entropy`` avoids the ``-inf`` differently: it clamps
    each log at -100, so on saturated outputs it differs from this exact value; on logits it
    equals ``binary_cross_entropy_with_logits``.)

    Parameters
    ----------
    logits : array, shape (B, D)
        Decoder outputs before the sigmoid.
    x : array, shape (B, D)
        Targets in [0, 1] (binary or grey-level pixel intensities).
    xp : module
        Array module.
    grad : bool
        Compute the gradient; evaluation (e.g. importance-weighted log-likelihoods) needs only
        the value.

    Returns
    -------
    nll : array, shape (B,)
        Per-example negative log-likelihood (nats).
    d_logits : array, shape (B, D), or None
        Gradient of ``nll.sum()`` with respect to ``logits``; None when ``grad`` is false.
    """
    # softplus(l) - x l = max(l, 0) - x l + log(1 + exp(-|l|)): no exp overflows, and for x = 1
    # and a large l the two large terms of softplus(l) - l never meet.
    nll = (xp.maximum(logits, 0) - x * logits + xp.log1p(xp.exp(-xp.abs(logits)))).sum(axis=1)
    if not grad:
        return nll, None
    d_logits = _expit(logits, xp) - x
    return nll, d_logits


def gaussian_nll(mean: Array, x: Array, sigma: float, xp: ModuleType) -> tuple[Array, Array]:
    r"""Gaussian negative log-likelihood with a fixed standard deviation (the squared-error form).

    .. math::
        -\log \mathcal N(x \mid m, \sigma^2 I) = \frac{1}{2\sigma^2}\lVert x - m\rVert^2
        + \frac{D}{2}\log(2\pi\sigma^2),
        \qquad \frac{\partial}{\partial m} = \frac{m - x}{\sigma^2}

    Derivation: only the first term depends on ``m``, and
    :math:`\frac{\partial}{\partial m_d} \frac{(x_d - m_d)^2}{2\sigma^2}
    = \frac{m_d - x_d}{\sigma^2}`.
    The constant is kept so that the value is a true log-density (needed for log-likelihood
    estimates); it does not change the gradient.

    Parameters
    ----------
    mean : array, shape (B, D)
        Decoder output, the mean of p(x | z).
    x : array, shape (B, D)
        Targets.
    sigma : float
        Fixed standard deviation, > 0.
    xp : module
        Array module.

    Returns
    -------
    nll : array, shape (B,)
        Per-example negative log-likelihood (nats).
    d_mean : array, shape (B, D)
        Gradient of ``nll.sum()`` with respect to ``mean``.
    """
    inv_var = 1.0 / (sigma * sigma)
    const = 0.5 * x.shape[1] * math.log(2 * math.pi * sigma * sigma)
    nll = 0.5 * inv_var * ((mean - x) * (mean - x)).sum(axis=1) + const
    d_mean = (mean - x) * inv_var
    return nll, d_mean


class Bernoulli:
    """p(x | z) = prod_d Bernoulli(x_d | sigmoid(l_d)); the decoder outputs the logits ``l``.

    Parameters
    ----------
    xp : module
        Array module.
    """

    name = "bernoulli"
    #: The data must lie in [0, 1] (checked at the input boundary, :mod:`numpy_vae.inputs`).
    unit_interval = True
    #: Its draws are binary pixels (``decode_sample``, and the MADE decoder's own inputs).
    draws_binary = True

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp

    @classmethod
    def from_config(cls, config: Any, xp: ModuleType) -> Bernoulli:
        """The likelihood a :class:`~numpy_vae.config.ModelConfig` names (no settings)."""
        return cls(xp)

    def nll(self, logits: Array, x: Array) -> tuple[Array, Array]:
        """:func:`bernoulli_nll`: ``(B,)`` values and the ``(B, D)`` gradient ``sigmoid(l) - x``."""
        return bernoulli_nll(logits, x, self.xp)

    def log_prob(self, logits: Array, x: Array) -> Array:
        """``log p(x | z)`` per example, ``(B,)``."""
        return -bernoulli_nll(logits, x, self.xp, grad=False)[0]

    def mean(self, logits: Array) -> Array:
        """Pixel probabilities ``sigmoid(l)``, ``(B, D)``."""
        return _expit(logits, self.xp)


class Gaussian:
    """p(x | z) = N(x | m, sigma^2 I) with a fixed ``sigma``; the decoder outputs the mean ``m``.

    The mean is not squashed: the Gaussian is a density on all of R, and the gradient stays
    ``(m - x) / sigma^2``.

    Parameters
    ----------
    sigma : float
        Standard deviation, > 0.
    xp : module
        Array module.
    """

    name = "gaussian"
    unit_interval = False
    draws_binary = False

    def __init__(self, sigma: float, xp: ModuleType) -> None:
        self.sigma = float(sigma)
        self.xp = xp

    @classmethod
    def from_config(cls, config: Any, xp: ModuleType) -> Gaussian:
        """The likelihood with the configuration's ``gaussian_sigma``."""
        return cls(config.gaussian_sigma, xp)

    def nll(self, mean: Array, x: Array) -> tuple[Array, Array]:
        """:func:`gaussian_nll`: ``(B,)`` values and the ``(B, D)`` gradient ``(m - x)/sigma^2``."""
        return gaussian_nll(mean, x, self.sigma, self.xp)

    def log_prob(self, mean: Array, x: Array) -> Array:
        """``log p(x | z)`` per example, ``(B,)``."""
        return -gaussian_nll(mean, x, self.sigma, self.xp)[0]

    def mean(self, mean: Array) -> Array:
        """The decoder output itself."""
        return mean


#: The likelihoods by the name a configuration gives (``ModelConfig.likelihood``); each is
#: built by its ``from_config``.
LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}


def _expit(logits: Array, xp: ModuleType) -> Array:
    """``1 / (1 + exp(-l))`` without overflow: ``exp(-|l|)`` is at most 1."""
    e = xp.exp(-xp.abs(logits))
    return xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))
