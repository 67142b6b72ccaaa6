"""Negative log-likelihoods of the decoder, value and gradient from one function each.

Both functions return the per-example negative log-likelihood, shape ``(B,)``, and the gradient
of its *sum over the batch* with respect to the decoder output, shape ``(B, D)``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

Array = Any


def bernoulli_nll(logits: Array, x: Array, xp: ModuleType) -> tuple[Array, Array]:
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

    Working on logits never forms :math:`\log(\sigma(\ell))`, which is ``log(0) = -inf`` once
    :math:`\sigma(\ell)` rounds to 0 or 1 (near :math:`|\ell| > 17` in float32). ``logaddexp(0, l)``
    computes softplus as ``max(l, 0) + log1p(exp(-|l|))``, finite for every finite logit.
    (``torch.nn.functional.binary_cross_entropy`` avoids the ``-inf`` differently: it clamps each
    log at -100, so on saturated outputs it differs from this exact value; on logits it equals
    ``binary_cross_entropy_with_logits``.)

    Parameters
    ----------
    logits : array, shape (B, D)
        Decoder outputs before the sigmoid.
    x : array, shape (B, D)
        Targets in [0, 1] (binary or grey-level pixel intensities).
    xp : module
        Array module.

    Returns
    -------
    nll : array, shape (B,)
        Per-example negative log-likelihood (nats).
    d_logits : array, shape (B, D)
        Gradient of ``nll.sum()`` with respect to ``logits``.
    """
    nll = (xp.logaddexp(0, logits) - x * logits).sum(axis=1)
    # sigma(l) = (tanh(l/2) + 1) / 2 is overflow-free for every l and uses only xp.
    d_logits = xp.tanh(logits * 0.5)
    d_logits += 1
    d_logits *= 0.5
    d_logits -= x
    return nll, d_logits


def gaussian_nll(mean: Array, x: Array, sigma: float, xp: ModuleType) -> tuple[Array, Array]:
    r"""Gaussian negative log-likelihood with a fixed standard deviation (the squared-error form).

    .. math::
        -\log \mathcal N(x \mid m, \sigma^2 I) = \frac{1}{2\sigma^2}\lVert x - m\rVert^2
        + \frac{D}{2}\log(2\pi\sigma^2),
        \qquad \frac{\partial}{\partial m} = \frac{m - x}{\sigma^2}

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
    diff = mean - x
    inv_var = 1.0 / (sigma * sigma)
    const = 0.5 * x.shape[1] * math.log(2 * math.pi * sigma * sigma)
    nll = 0.5 * inv_var * (diff * diff).sum(axis=1) + const
    diff *= inv_var
    return nll, diff
