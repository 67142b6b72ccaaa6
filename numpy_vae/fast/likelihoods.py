"""The Bernoulli likelihood's value and gradient fused: one exp, a few logs, no allocations.

Measured on the default model (batch 128 x 784 pixels, float32): 0.8 ms per batch as 16 NumPy
passes, against 3.4 ms for the textbook ``logaddexp``/``expit`` form of
:func:`numpy_vae.likelihoods.bernoulli_nll` (about 1.2 s of a 4.2 s epoch). NumPy arrays now
take three NumPy passes (``abs``, ``negative``, ``exp``) and one compiled pass for the rest
and the last layer's bias gradient (:func:`numpy_vae.fast.kernels.bernoulli_row_sums`),
which takes 16 logarithms of products per 784-pixel row instead of 784: the gradient is the
same operations in the same order, so the same bits; the value is within the bound the tests
state.

:func:`bernoulli_rows_nll` is the multi-sample objectives' form (K decoder rows per example,
``x`` never repeated), used by the training step and by the k-sample evaluation alike;
:func:`bernoulli_rows_gradient` is its gradient, taken once the samples' weights are known.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.kernels import (
    bernoulli_row_sums,
    log1p_row_sums,
    negative_abs_row_sums,
    weighted_sigmoid_rows,
)

Array = Any


def log_products(d: int) -> int:
    """How many products the compiled Bernoulli passes form per row of ``d`` pixels to take
    their logarithms (:func:`~numpy_vae.fast.kernels.bernoulli_row_sums`,
    :func:`~numpy_vae.fast.kernels.log1p_row_sums`): a multiple of 8 (a 256-bit register of
    float32), at least 16, and enough that no product has more than 64 factors in [1, 2] (at
    most 2^64, far inside float32's range). 784 pixels: 16 products of 49 factors. Measured
    on a (5000, 784) float32 array, one thread (AMD EPYC, AVX2): 1.3 ms for the rows pass
    (2.6 ms with the sigmoid) at 16 products, against 1.8 (10.8) ms at 12 products of 64 and
    6.9 ms for NumPy's add and 64-factor products."""
    at_least = max(16, -(-d // 64))  # ceil(d / 64) products keep each at 64 factors or fewer
    return -(-at_least // 8) * 8


def bernoulli_nll_fused(
    logits: Array,
    x: Array,
    xp: ModuleType,
    out: Array | None = None,
    buffers: Buffers | None = None,
    grad: bool = True,
    d_bias: Array | None = None,
) -> tuple[Array, Array | None]:
    r"""The Bernoulli negative log-likelihood and its gradient from one ``exp``.

    Computes what :func:`numpy_vae.likelihoods.bernoulli_nll` computes (the derivation is
    there), ``softplus(l) - x l`` and ``sigmoid(l) - x``, to within a few ulps
    (``tests/test_fast_vs_reference.py`` states the bound), in place and without allocations.

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
    :math:`(\delta/u)^2`, far below one ulp. On the host the row's logarithms are taken of
    products (:func:`~numpy_vae.fast.kernels.bernoulli_row_sums`, :math:`\sum_d \log u_d =
    \log \prod_d u_d` in a few products); device arrays take ``log(u)`` per pixel and NumPy's
    row sums. Either agrees with ``max(l, 0) + log1p(exp(-|l|))`` summed over the row within
    the bound of ``tests/test_fast_vs_reference.py``.

    Takes and returns what :func:`numpy_vae.likelihoods.bernoulli_nll` does (``logits``, ``x``,
    ``xp``, ``grad``; ``nll`` of shape (B,), ``d_logits`` of shape (B, D) or None), and:

    ``out``, an array shaped like ``logits`` to write the gradient into; the in-place passes
    (device arrays) may write it over ``logits`` itself, but the compiled pass (NumPy arrays)
    writes into a buffer of its own where ``out`` overlaps ``logits`` or is strided: a loop
    that writes over what it reads is not vectorized (measured: 0.18 ms against 0.08 ms for a
    128 x 784 float32 batch). So callers take the gradient from the return value.
    ``buffers``, a :class:`Buffers` to take the temporaries shaped like ``logits`` from.
    ``logits`` may also be (B, K, D) with ``x`` (B, 1, D), broadcast against each example's K
    rows (the multi-sample step); ``nll`` is then (B, K): the sum runs over the
    last axis.

    ``d_bias`` (D,), with ``grad``: the gradient's sums over the rows go there, the last
    layer's bias gradient (on the host in the gradient's own pass, summed in order, as NumPy
    sums over the first axis: the same bits, without a pass of their own).
    """
    shape, dtype = logits.shape, logits.dtype
    width = shape[-1]

    def take(name: str, kind: Any = dtype) -> Array | None:  # None: numpy allocates
        return None if buffers is None else buffers.get(name, shape, kind)

    e = xp.abs(logits, out=take("e"))
    xp.negative(e, out=e)
    xp.exp(e, out=e)  # e = exp(-|l|)
    if xp is numpy:  # the rest in one compiled pass (the gradient in the same operations)
        d_logits = e if out is None or not grad else out  # e: not written without grad
        if grad and (out is None or overlaps_or_strided(out, logits)):
            d_logits = xp.empty_like(logits) if buffers is None else take("d")
        nll = xp.empty(shape[:-1], dtype=dtype)
        rows = [a.reshape(-1, width) for a in (logits, x.astype(dtype, copy=False), e)]
        sums = d_bias if grad and d_bias is not None else e[:0].reshape(-1)  # length 0: none
        bernoulli_row_sums(*rows, log_products(width), nll.reshape(-1),
                           d_logits.reshape(-1, width), grad, sums)  # fmt: skip
        return nll, d_logits if grad else None
    # Device arrays (no compiled loop takes them): the same operations in in-place passes.
    u = xp.add(e, 1, out=take("u"))
    positive = xp.greater_equal(logits, 0, out=take("positive", bool))
    value = xp.subtract(positive, x, out=take("value"), dtype=dtype)
    value *= logits  # l (1[l >= 0] - x) = max(l, 0) - x l
    scratch = xp.log(u, out=take("scratch"))
    value += scratch
    xp.subtract(u, 1, out=scratch)
    xp.subtract(e, scratch, out=scratch)  # delta = e - (u - 1), the rounding error of 1 + e
    scratch /= u
    value += scratch  # + log(u) + delta / u = log1p(e)
    nll = value.sum(axis=-1)
    if not grad:
        return nll, None
    # The gradient last: out may be the logits, which are no longer needed.
    d_logits = xp.maximum(e, positive, out=out)  # f: 1 where l >= 0, e elsewhere
    d_logits /= u
    d_logits -= x
    if d_bias is not None:
        d_logits.reshape(-1, width).sum(axis=0, out=d_bias)
    return nll, d_logits


def overlaps_or_strided(out: Array, logits: Array) -> bool:
    """Whether the compiled pass cannot write into ``out``: it may share memory with
    ``logits``, or is not C-contiguous (its reshape to rows would be a copy)."""
    return not out.flags.c_contiguous or numpy.may_share_memory(out, logits)


def bernoulli_rows_nll(
    logits: Array,
    h: Array,
    x: Array,
    w: Array,
    b: Array,
    k: int,
    xp: ModuleType,
    buffers: Buffers | None = None,
    grad: bool = True,
) -> tuple[Array, Array, Array]:
    r"""The Bernoulli ``-log p(x_b | z_bk)`` of K decoder rows per example, (B K,), without
    repeating ``x`` K times. Also returns ``x W`` (B, H) and, with ``grad``, ``e = exp(-|l|)``
    (B K, D), which the gradient takes (:func:`bernoulli_rows_gradient`; without ``grad`` that
    array is scratch).

    ``logits`` (B K, D) is ``h W^T`` of the last layer without its bias ``b``, which this adds
    (on the host in its first compiled pass; ``h`` is the layer's input,
    (B K, H), rows example-major), so that afterwards it holds ``l = h W^T + b`` (with
    ``grad``; without it, the logits may be used as scratch); ``x`` is (B, D).
    ``-log p = sum_d softplus(l_d) - sum_d x_d l_d``, and:

    - ``sum_d x_d l_d = (x W) . h + x . b``: an H-wide dot per sample instead of a pass over D;
    - ``sum_d softplus(l_d) = (sum_d l_d + sum_d |l_d|) / 2 + sum_d log(1 + e_d)`` with
      ``e = exp(-|l|)`` (``max(l, 0) = (l + |l|) / 2``) and ``sum_d l_d = h . (sum_d W_d) +
      sum_d b_d``, another H-wide dot; the logs are taken of products of up to 64
      factors (:func:`~numpy_vae.fast.kernels.log1p_row_sums`; device arrays:
      :func:`sum_of_logs`).

    Passes over the (B K, D) logits on the host: a compiled pass for the bias, ``-|l|`` and
    the sums of ``|l|`` (:func:`~numpy_vae.fast.kernels.negative_abs_row_sums`), NumPy's exp,
    and one compiled pass for the sums of logs (the specification's value and gradient take
    about twenty; the gradient is one more pass, once the samples' weights are known).
    ``buffers`` gives the (B K, D) temporaries.
    """
    n, shape = x.shape[0], logits.shape

    def take(name: str, kind: Any = logits.dtype) -> Array | None:
        return None if buffers is None else buffers.get(name, shape, kind)

    xw = x @ w
    # (x_b W) . h_bk for every sample: one matrix-vector product per example (BLAS), where
    # the broadcast product and its sum took 7 times as long (20 x 50 x 200 float32, one thread)
    xl = xp.matmul(h.reshape(n, k, -1), xw[:, :, None])[:, :, 0]
    xl += (x @ b)[:, None]
    sum_l = h @ w.sum(axis=0) + b.sum()
    if xp is numpy:  # the bias, -|l| and the rows' sums of |l| in one compiled pass
        # (into an array of its own: a loop that writes over what it reads is not vectorized)
        e = xp.empty_like(logits) if buffers is None else take("e")
        sum_abs = xp.empty(shape[0], dtype=logits.dtype)
        negative_abs_row_sums(logits, b, log_products(shape[1]), e, sum_abs)
    else:  # without the gradient the logits are not needed again: e is written over them
        logits += b
        e = xp.abs(logits, out=take("e") if grad else logits)
        sum_abs = e.sum(axis=1)
        xp.negative(e, out=e)
    xp.exp(e, out=e)
    if xp is numpy:  # the sums of logs in one compiled pass
        log1p_sums = xp.empty(shape[0], dtype=logits.dtype)
        log1p_row_sums(e, log_products(shape[1]), log1p_sums)
    else:
        u = xp.add(e, 1, out=take("u") if grad else e)  # in [1, 2]
        log1p_sums = sum_of_logs(u, xp)
    return 0.5 * (sum_l + sum_abs) + log1p_sums - xl.reshape(n * k), xw, e


def bernoulli_rows_gradient(
    logits: Array,
    e: Array,
    w_tilde: Array,
    d_bias: Array,
    xp: ModuleType,
    buffers: Buffers | None = None,
) -> Array:
    r"""The first part of the multi-sample output gradient, ``w~_r sigmoid(l_r)``, over
    ``logits`` (returned), and its sum over the rows into ``d_bias``: the last layer's bias
    gradient but for its ``- sum_b (sum_k w~_bk) x_b`` part, which the caller subtracts (as
    it applies the ``- w~_bk x_b`` part of the gradient to the products,
    :meth:`~numpy_vae.fast.objectives.FastMultiSample.backward`).

    ``logits`` and ``e`` are what :func:`bernoulli_rows_nll` left, ``l`` and ``exp(-|l|)``
    (B K, D); ``w_tilde`` the samples' weights (B, K). ``sigmoid(l) = max(e, 1[l >= 0]) / (1
    + e)`` shares ``e``. On the host one compiled pass
    (:func:`~numpy_vae.fast.kernels.weighted_sigmoid_rows`); device arrays take the same
    operations as NumPy passes, with ``buffers`` for their temporaries.
    """
    if xp is numpy:
        weighted_sigmoid_rows(logits, e, w_tilde.reshape(-1), d_bias)
        return logits

    def take(name: str, kind: Any = logits.dtype) -> Array | None:
        return None if buffers is None else buffers.get(name, logits.shape, kind)

    positive = xp.greater_equal(logits, 0, out=take("positive", bool))
    u = xp.add(e, 1, out=take("u"))
    xp.maximum(e, positive, out=logits)
    logits /= u
    logits *= w_tilde.reshape(-1, 1)
    logits.sum(axis=0, out=d_bias)
    return logits


def sum_of_logs(u: Array, xp: ModuleType, group: int = 64) -> Array:
    """``sum_d log(u_d)`` per row for ``u`` in [1, 2]: the log of products of ``group``
    entries (at most 2^64, far inside float32's range), so the row's 784 logarithms become 13.
    Each product rounds ``group - 1`` times, a relative error of at most ``(group - 1) u``:
    an absolute error of that much in each group's log."""
    rows, d = u.shape
    whole = (d // group) * group
    total = xp.log(u[:, :whole].reshape(rows, -1, group).prod(axis=2)).sum(axis=1)
    if whole < d:
        total += xp.log(u[:, whole:].prod(axis=1))
    return total
