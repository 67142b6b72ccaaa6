"""Negative log-likelihoods of the decoder, value and gradient from one function each.

Both functions return the per-example negative log-likelihood, shape ``(B,)``, and the gradient
of its *sum over the batch* with respect to the decoder output, shape ``(B, D)``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from .buffers import Buffers

Array = Any


def bernoulli_nll(
    logits: Array,
    x: Array,
    xp: ModuleType,
    out: Array | None = None,
    buffers: Buffers | None = None,
    grad: bool = True,
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
    (``torch.nn.functional.binary_cross_entropy`` avoids the ``-inf`` differently: it clamps each
    log at -100, so on saturated outputs it differs from this exact value; on logits it equals
    ``binary_cross_entropy_with_logits``.)

    **How it is computed.** Value and gradient share one exponential and one logarithm. With
    :math:`e = \exp(-|\ell|) \in (0, 1]` (never overflows) and :math:`u = 1 + e`,

    .. math::
        \operatorname{softplus}(\ell) - x\ell
            = \ell\,(\mathbb 1[\ell \ge 0] - x) + \log(1 + e),\qquad
        \sigma(\ell) = \frac{f}{u},\quad f = \begin{cases}1 & \ell \ge 0\\
            e & \ell < 0\end{cases} = \max(e, \mathbb 1[\ell \ge 0]).

    Every term of the first sum is :math:`\ge 0`, so nothing cancels. :math:`\log(1 + e)` is
    ``log1p(e)``, but NumPy's ``log1p`` is several times slower than its ``log``; ``log(u)``
    alone loses ``e`` when it is tiny, so it is corrected: :math:`u - 1` is exact (Sterbenz)
    and :math:`\delta = e - (u - 1)` is exactly the rounding error of :math:`1 + e`, hence
    :math:`\log(1 + e) = \log(u + \delta) = \log u + \delta / u` to within
    :math:`(\delta/u)^2`, far below one ulp. The result agrees with
    ``max(l, 0) + log1p(exp(-|l|))`` to a few ulps in float32 and float64.

    Parameters
    ----------
    logits : array, shape (B, D)
        Decoder outputs before the sigmoid.
    x : array, shape (B, D)
        Targets in [0, 1] (binary or grey-level pixel intensities).
    xp : module
        Array module.
    out : array, shape (B, D), optional
        Where to write the gradient; may be ``logits`` itself (which is then overwritten: the
        model passes its decoder output, which nothing else holds). Default: a new array.
    buffers : Buffers, optional
        Where to take the four temporaries (B, D) from instead of allocating them.
    grad : bool
        Compute the gradient; evaluation (e.g. importance-weighted log-likelihoods) needs only
        the value.

    Returns
    -------
    nll : array, shape (B,)
        Per-example negative log-likelihood (nats).
    d_logits : array, shape (B, D), or None
        Gradient of ``nll.sum()`` with respect to ``logits`` (``out`` if given); None when
        ``grad`` is false.
    """
    shape, dtype = logits.shape, logits.dtype

    def take(name: str, kind: Any = dtype) -> Array | None:  # None: numpy allocates
        return None if buffers is None else buffers.get(name, shape, kind)

    positive = xp.greater_equal(logits, 0, out=take("positive", bool))
    e = xp.abs(logits, out=take("e"))
    xp.negative(e, out=e)
    xp.exp(e, out=e)  # e = exp(-|l|)
    u = xp.add(e, 1, out=take("u"))
    value = xp.subtract(positive, x, out=take("value"), dtype=dtype)
    value *= logits  # l (1[l >= 0] - x) = max(l, 0) - x l
    scratch = xp.log(u, out=take("scratch"))
    value += scratch
    xp.subtract(u, 1, out=scratch)
    xp.subtract(e, scratch, out=scratch)  # delta = e - (u - 1), the rounding error of 1 + e
    scratch /= u
    value += scratch  # + log(u) + delta / u = log1p(e)
    nll = value.sum(axis=1)
    if not grad:
        return nll, None
    # The gradient last: out may be the logits, which are no longer needed.
    d_logits = xp.maximum(e, positive, out=out)  # f: 1 where l >= 0, e elsewhere
    d_logits /= u
    d_logits -= x
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
    diff = mean - x
    inv_var = 1.0 / (sigma * sigma)
    const = 0.5 * x.shape[1] * math.log(2 * math.pi * sigma * sigma)
    nll = 0.5 * inv_var * (diff * diff).sum(axis=1) + const
    diff *= inv_var
    return nll, diff
