r"""Compiled loops of the fast path: each kernel is its formula as one loop over the elements.

A kernel reads every input element once, computes its whole formula in registers and writes
every output element once, where NumPy would run a pass over memory per operation. They are
compiled by numba (``@njit(cache=True)``: the machine code is kept under ``__pycache__`` and
reused by the next process, so only the first run after an edit pays for compilation;
:func:`compile_seconds` says how much). ``nogil=True`` lets :mod:`numpy_vae.fast.parallel` run
a kernel on disjoint slices in several threads.

Kernels take NumPy arrays only; a device array (CuPy) takes the in-place passes beside each
caller, which compute the same operations in the same order (tested bitwise).
Without numba the kernels are the same functions run by the Python interpreter (correct, and
hundreds of times slower): :data:`COMPILED` says which, and training then runs the
specification instead (:class:`numpy_vae.training.trainer.Trainer`).

Every scalar argument is cast to the arrays' dtype by the caller, so that a float32 kernel
computes in float32 as NumPy does under NEP 50 (a Python float would make numba compute in
float64). No ``fastmath``: each operation rounds as IEEE says, in the order written, so a
kernel gives the same bits as the NumPy passes that write out the same operations.

Left to NumPy, measured: its ``exp`` (a SIMD loop; numba has no SVML here, so a compiled loop
calls the scalar ``expf``, 0.22 ms for a 128 x 784 float32 batch against NumPy's 0.04 ms on the
AVX-512 machine) and the sums that are its own order (pairwise). The Bernoulli value and
gradient written as one loop with ``exp`` and ``log1p`` took 1.10 ms per batch, against 0.41
ms for NumPy's 16 passes; so :func:`bernoulli_row_sums` takes ``exp`` from NumPy and, instead
of a logarithm per pixel, takes the logarithms of a few products per row, whose factors and
whose running sums grow side by side in SIMD registers (a sum in ``c`` lanes is a fixed order
too, and the tests bound it).
"""

from __future__ import annotations

import time
from typing import Any

import numpy
from numpy import log1p, sqrt  # typed per dtype by numba: float32 in, float32 out

try:
    import numba
except ImportError:  # the kernels run as plain Python; training runs the specification
    numba = None

#: Whether the kernels are compiled (numba imports); if not, they run as plain Python loops.
COMPILED = numba is not None

Array = Any


def kernel(function: Any) -> Any:
    """``function`` compiled, or as it is without numba.

    ``error_model="numpy"``: a float division by 0 gives inf or NaN as in NumPy, where numba's
    default raises ZeroDivisionError, and the check that needs keeps a loop from being
    vectorized (measured: Adam's pass over 650k float32 numbers took 1.06 ms with it, 0.39 ms
    without, on 256-bit SIMD registers)."""
    if numba is None:
        return function
    return numba.njit(cache=True, nogil=True, error_model="numpy")(function)


@kernel
def adam_update(
    p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, minus_scale, eps_hat, tiny, largest
):  # noqa: ANN001, ANN201, E501
    r"""Adam's step on matching 1-D arrays, in place, in one pass; moments below ``tiny`` flushed.
    Returns whether an entry of ``v`` is not finite afterwards (above ``largest``, or NaN).

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m),\quad
        v \leftarrow \beta_2 v + ((1-\beta_2) g) g,\quad
        \theta \leftarrow \theta + \frac{m}{\sqrt v + \hat\epsilon}\,(-s)

    and then ``m = 0`` where ``|m| < tiny``, ``v = 0`` where ``v < tiny`` (before the update
    reads them). :class:`numpy_vae.fast.optim.FastAdam` gives ``s``, :math:`\hat\epsilon`,
    the scalars cast to the arrays' dtype, ``tiny`` (the dtype's smallest normal number,
    or 0 for no flush) and ``largest`` (its largest finite number); its docstring bounds what
    the flush changes. The flag is the training step's health check: :math:`v` is not finite
    exactly where :math:`g` is not, or where :math:`(1-\beta_2) g^2` overflows (a parameter
    that would then stop moving). It costs nothing beside the pass (an ``or`` of each SIMD
    lane's comparisons; an integer count instead took the loop from 8 to 4 lanes, 0.46 ms
    against 0.35 ms over the default model's 650k float32 numbers), where a sum of
    :math:`g \cdot g` before the step took a pass of its own (0.1 ms in training). The flush
    keeps a NaN (``NaN < tiny`` is False), so that a NaN gradient shows in ``v``.
    """
    zero = tiny - tiny  # 0 in the arrays' dtype (a literal 0 would make numba use float64)
    nonfinite = False
    for i in range(p.size):
        m_i = m[i] + one_minus_beta1 * (g[i] - m[i])
        v_i = v[i] * beta2 + (g[i] * one_minus_beta2) * g[i]
        m_i = zero if abs(m_i) < tiny else m_i  # (a NaN stays: NaN < tiny is False)
        v_i = zero if v_i < tiny else v_i
        m[i] = m_i
        v[i] = v_i
        p[i] += m_i / (sqrt(v_i) + eps_hat) * minus_scale
        nonfinite |= not v_i <= largest  # (NaN <= largest is False)
    return nonfinite


@kernel
def bernoulli_row_sums(logits, x, e, products, nll, d_logits, grad, d_bias):  # noqa: ANN001, ANN201
    r"""The Bernoulli negative log-likelihood of each row of logits and, with ``grad``, its
    gradient, in one pass, given :math:`e = \exp(-|\ell|)` (NumPy's SIMD exp):

    .. math::
        \sum_d \operatorname{softplus}(\ell_d) - x_d\ell_d
            = \sum_d (\mathbb 1[\ell_d \ge 0] - x_d)\,\ell_d
                + \sum_d \log(1 + e_d),\qquad
        \sigma(\ell) - x = \frac{f}{u} - x,\quad u = 1 + e,\quad
        f = \begin{cases}1 & \ell \ge 0\\ e & \ell < 0\end{cases}

    (:func:`numpy_vae.fast.likelihoods.bernoulli_nll_fused` derives both.) The logarithms are
    taken as :func:`log1p_row_sums` takes them, of ``c = products`` products per row, and the
    linear terms are summed in ``c`` running sums beside them, so that every sum grows in SIMD
    registers. ``logits``, ``e`` and ``d_logits`` are (R, D), ``nll`` (R,); ``x`` is (R / K,
    D), row ``r`` of the logits paired with row ``r // K`` of ``x`` (K samples per example).
    The gradient is the specification's operations in its order (the same bits). ``d_logits``
    may not be ``logits``: LLVM would then take the loop's scalar form. With ``grad`` and a
    ``d_bias`` of length D (length 0: none), the gradient's column sums
    :math:`\sum_r (\sigma(\ell_{rd}) - x_d)`, the last layer's bias gradient, summed over the
    rows in order, as :func:`relu_backward_bias_sum` sums (the same bits as NumPy's).
    """
    rows, d = logits.shape
    per_x = rows // x.shape[0]
    group = d // products
    one = e.dtype.type(1)
    zero = one - one
    linear = numpy.empty(products, e.dtype)
    excess = numpy.empty(products, e.dtype)
    sums = grad and d_bias.size > 0
    for i in range(d_bias.size):
        d_bias[i] = zero
    for r in range(rows):
        xr = r // per_x
        for j in range(products):
            linear[j] = zero
            excess[j] = zero
        for g in range(group):
            for j in range(products):
                i = g * products + j
                logit, x_i, e_i = logits[r, i], x[xr, i], e[r, i]
                positive = one if logit >= zero else zero
                linear[j] += (positive - x_i) * logit
                excess[j] += e_i + excess[j] * e_i
                if grad:
                    f = one if logit >= zero else e_i
                    d_logits[r, i] = f / (e_i + one) - x_i
        s = zero
        for j in range(products):
            s += linear[j] + log1p(excess[j])
        for i in range(group * products, d):
            logit, x_i, e_i = logits[r, i], x[xr, i], e[r, i]
            positive = one if logit >= zero else zero
            s += (positive - x_i) * logit + log1p(e_i)
            if grad:
                f = one if logit >= zero else e_i
                d_logits[r, i] = f / (e_i + one) - x_i
        nll[r] = s
        if sums:
            for i in range(d):
                d_bias[i] += d_logits[r, i]


@kernel
def relu_forward(a):  # noqa: ANN001, ANN201
    r"""ReLU in place on a 2-D array, in one pass: :math:`a \leftarrow a \cdot \mathbb 1[a > 0]`.

    The product with 1 or 0 (rather than ``max(a, 0)``) is the specification's ``x * mask``,
    bit for bit: -0 for a negative ``a``, NaN kept. The output is positive exactly where the
    input was, so :func:`relu_backward` reads its slope from the output and no mask is kept.
    """
    one = a.dtype.type(1)
    zero = one - one
    for r in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[r, j] = a[r, j] * (one if a[r, j] > zero else zero)


@kernel
def relu_backward(d, y):  # noqa: ANN001, ANN201
    r"""ReLU's backward in place on ``d``, from the layer's output ``y`` (2-D, not overlapping
    ``d``): :math:`\partial L / \partial x = d \cdot \mathbb 1[y > 0]`."""
    one = d.dtype.type(1)
    zero = one - one
    for r in range(d.shape[0]):
        for j in range(d.shape[1]):
            d[r, j] = d[r, j] * (one if y[r, j] > zero else zero)


@kernel
def bias_relu_forward(a, b):  # noqa: ANN001, ANN201
    r"""The bias of the Linear layer before a ReLU and the ReLU, in place, in one pass:
    :math:`a \leftarrow (a + b) \cdot \mathbb 1[a + b > 0]`, with ``b`` added to every row
    (:func:`relu_forward` after NumPy's ``a += b``, the same operations)."""
    one = a.dtype.type(1)
    zero = one - one
    for r in range(a.shape[0]):
        for j in range(a.shape[1]):
            y = a[r, j] + b[j]
            a[r, j] = y * (one if y > zero else zero)


@kernel
def relu_backward_bias_sum(d, y, d_bias):  # noqa: ANN001, ANN201
    r""":func:`relu_backward` and the bias gradient of the Linear layer before it, in one pass:
    :math:`d \leftarrow d \cdot \mathbb 1[y > 0]`, then
    :math:`\partial L / \partial b_j = \sum_r d_{rj}`, summed over the rows in order, as
    NumPy sums a C-ordered array over its first axis (the same bits: one row after another
    into the sums, each row's entries side by side)."""
    one = d.dtype.type(1)
    zero = one - one
    for j in range(d.shape[1]):
        d_bias[j] = zero
    for r in range(d.shape[0]):
        for j in range(d.shape[1]):
            d[r, j] = d[r, j] * (one if y[r, j] > zero else zero)
            d_bias[j] += d[r, j]


@kernel
def tanh_backward(d, y, d_bias):  # noqa: ANN001, ANN201
    r"""Tanh's backward in place on ``d``, from the layer's output ``y``:
    :math:`d \leftarrow d \cdot (1 - y^2)` (the specification's ``d_out * (1 - y * y)``, the
    same operations), and with ``d_bias`` of length > 0 the bias gradient of the Linear layer
    before it, :math:`\sum_r d_{rj}` summed over the rows in order, as
    :func:`relu_backward_bias_sum` sums (one pass where NumPy takes three and a sum).
    """
    one = d.dtype.type(1)
    zero = one - one
    for j in range(d_bias.size):
        d_bias[j] = zero
    for r in range(d.shape[0]):
        for j in range(d.shape[1]):
            d[r, j] = d[r, j] * (one - y[r, j] * y[r, j])
        if d_bias.size:
            for j in range(d.shape[1]):
                d_bias[j] += d[r, j]


@kernel
def reparam_kl_forward(stats, eps, sigma, var, z, kl):  # noqa: ANN001, ANN201
    r"""The reparameterized sample and the KL terms, in one pass, given
    :math:`\sigma = \exp(\tfrac12 v)` and :math:`e^{v}` (NumPy's SIMD passes):

    .. math::
        z = \mu + \sigma \odot \epsilon,\qquad
        \mathrm{KL} = \tfrac12\left(\mu^2 + e^{v} - v - 1\right)

    ``stats`` is the head's output ``[mu | v]`` (B, 2L), ``v = logvar``; ``eps``, ``sigma``,
    ``var``, ``z`` and ``kl`` are (B, L). The operations and their order are those of
    :func:`numpy_vae.reparam.reparameterize` and :func:`numpy_vae.kl.kl_standard_normal`.
    """
    rows, latent = z.shape
    half = var.dtype.type(0.5)
    one = var.dtype.type(1)
    for r in range(rows):
        for j in range(latent):
            mu, logvar = stats[r, j], stats[r, latent + j]
            z[r, j] = mu + sigma[r, j] * eps[r, j]
            kl[r, j] = half * (mu * mu + var[r, j] - logvar - one)


@kernel
def reparam_kl_backward(stats, d_z, eps, sigma, var, weight, d_stats):  # noqa: ANN001, ANN201
    r"""The gradient in ``[mu | v]`` of the decoder's path through ``z`` and of the weighted KL,
    in one pass:

    .. math::
        \frac{\partial L}{\partial \mu} = w\,\mu + \frac{\partial L}{\partial z},\qquad
        \frac{\partial L}{\partial v} = w\,\tfrac12\left(e^{v} - 1\right)
            + \frac{\partial L}{\partial z} \odot \epsilon \odot \sigma \cdot \tfrac12

    ``weight`` (L,) is the KL term's weight ``w`` of each latent dimension
    (:func:`numpy_vae.kl.weighted_kl`); ``d_z``, ``eps``, ``sigma`` and ``var`` are (B, L),
    ``stats`` and ``d_stats`` (B, 2L). The order is that of
    :func:`numpy_vae.reparam.reparameterize_backward` and :meth:`numpy_vae.VAE.backward`.
    """
    rows, latent = d_z.shape
    half = var.dtype.type(0.5)
    one = var.dtype.type(1)
    for r in range(rows):
        for j in range(latent):
            w = weight[j]
            d_z_j = d_z[r, j]
            d_stats[r, j] = stats[r, j] * w + d_z_j
            path = d_z_j * eps[r, j] * sigma[r, j] * half
            d_stats[r, latent + j] = half * (var[r, j] - one) * w + path


@kernel
def importance_log_weights(stats, eps, z, log_px, log_w, shifted):  # noqa: ANN001, ANN201
    r"""The samples' log weights and their shift by each example's largest, in one pass:

    .. math::
        \log w_k = \log p(x \mid z_k) + \tfrac12 \textstyle\sum_j
            \left(\epsilon_{kj}^2 + v_j - z_{kj}^2\right),\qquad
        s_k = \log w_k - \max_j \log w_j

    the specification's ``log p(x|z) + log p(z) - log q(z|x)`` with the two ``log 2 pi`` terms
    cancelled before rounding (:func:`numpy_vae.bounds.log_prior`,
    :func:`~numpy_vae.bounds.log_posterior`) and the sum over the L latent dimensions a running
    one: within the bound of ``tests/test_kernels.py``. ``s`` is the exponent of
    :func:`numpy_vae.bounds.normalized_weights` (a row with a NaN is NaN). ``stats`` is
    ``[mu | v]`` (B, 2L); ``eps`` and ``z`` (B, K, L); ``log_px``, ``log_w``, ``shifted`` (B, K).
    """
    rows, samples, latent = eps.shape
    half = stats.dtype.type(0.5)
    for b in range(rows):
        for k in range(samples):
            total = half - half
            for j in range(latent):
                e, z_j = eps[b, k, j], z[b, k, j]
                total += e * e + stats[b, latent + j] - z_j * z_j
            log_w[b, k] = log_px[b, k] + half * total
        m = log_w[b, 0]
        for k in range(1, samples):
            m = log_w[b, k] if log_w[b, k] > m or log_w[b, k] != log_w[b, k] else m
            if m != m:
                break
        for k in range(samples):
            shifted[b, k] = log_w[b, k] - m


@kernel
def softmax_rows(e, tau):  # noqa: ANN001, ANN201
    r"""The normalized weights in place from :math:`e_k = \exp(\log w_k - \max_j \log w_j)`
    (NumPy's exp), those below ``tau`` set to 0:

    .. math:: \tilde w_k = \frac{e_k}{\sum_j e_j},\qquad
              \tilde w_k \leftarrow 0 \text{ where } \tilde w_k < \tau

    (:func:`numpy_vae.fast.objectives.flush_negligible_weights` gives ``tau`` and what the
    flush changes). The sum over the K samples is a running one (NumPy's is pairwise from 8
    samples on): within ``(2 K + 2) u`` of the specification's weight, relative.
    """
    zero = tau - tau
    for b in range(e.shape[0]):
        total = zero
        for k in range(e.shape[1]):
            total += e[b, k]
        for k in range(e.shape[1]):
            w = e[b, k] / total
            e[b, k] = zero if w < tau else w


@kernel
def weighted_encoder_gradient(d_rows, w_tilde, z, eps, sigma, d_stats):  # noqa: ANN001, ANN201
    r"""The plain reparameterized estimator's gradient of minus the bound in ``[mu | v]``:

    .. math::
        -\frac{\partial L}{\partial \mu} = -\sum_k \tilde w_k g_k,\qquad
        -\frac{\partial L}{\partial v} = -\Bigl(\sum_k \tilde w_k g_k \odot
            \tfrac12 \sigma \odot \epsilon_k + \tfrac12\Bigr),\qquad
        \tilde w_k g_k = -(d_k + \tilde w_k z_k)

    with :math:`d_k` the decoder's backward in ``z_k`` (``d_rows`` (B K, at least L), the
    weights already on its rows); :class:`numpy_vae.bounds.Reparameterized` and
    :meth:`numpy_vae.fast.objectives.FastMultiSample.backward`, bit for bit for L >= 2: the
    sums run over k in order, from the first term, as NumPy's sum over a (B, K, L) array's
    middle axis does (for L = 1 that axis is contiguous and NumPy sums it pairwise from 8
    samples on, so the caller takes the passes there).
    ``w_tilde`` (B, K), ``z`` and ``eps`` (B, K, L), ``sigma`` (B, L), ``d_stats`` (B, 2L).
    """
    rows, samples, latent = eps.shape
    half = sigma.dtype.type(0.5)
    for b in range(rows):
        w = w_tilde[b, 0]
        for j in range(latent):  # the first sample's terms start both sums
            g = -(d_rows[b * samples, j] + w * z[b, 0, j])
            d_stats[b, j] = g
            d_stats[b, latent + j] = g * (half * sigma[b, j] * eps[b, 0, j])
        for k in range(1, samples):
            w = w_tilde[b, k]
            for j in range(latent):
                g = -(d_rows[b * samples + k, j] + w * z[b, k, j])
                d_stats[b, j] += g
                d_stats[b, latent + j] += g * (half * sigma[b, j] * eps[b, k, j])
        for j in range(latent):
            d_stats[b, j] = -d_stats[b, j]
            d_stats[b, latent + j] = -(d_stats[b, latent + j] + half)


@kernel
def negative_abs_row_sums(logits, b, products, e, sums):  # noqa: ANN001, ANN201
    r"""The last layer's bias, :math:`\ell \leftarrow \ell + b` (added to every row of
    ``logits``, in place), then :math:`e = -|\ell|` and each row's :math:`\sum_d |\ell_d|`, in
    one pass:

    .. math::
        \sum_d |\ell_d| = \sum_{j < c} \sum_{g < G} |\ell_{gc + j}|
            + \sum_{d \ge G c} |\ell_d|

    in ``c = products`` running sums a stride of ``c`` apart, side by side in SIMD registers
    as :func:`log1p_row_sums` forms its products (a fixed order: within :math:`(G + c + r) u`
    of the row's sum, relative, with ``r`` the remainder's pixels; every term is
    non-negative). The rows kernel's four NumPy passes (the bias's ``+=``, ``abs``, ``sum``,
    ``negative``) in one: ``e`` is ``exp``'s argument. ``logits`` and ``e`` (R, D), ``b`` (D,),
    ``sums`` (R,); ``e`` may not be ``logits`` (LLVM would then take the loop's scalar form).
    """
    rows, d = logits.shape
    group = d // products
    zero = e.dtype.type(0)
    lanes = numpy.empty(products, e.dtype)
    for r in range(rows):
        for j in range(products):
            lanes[j] = zero
        for g in range(group):
            for j in range(products):
                i = g * products + j
                logit = logits[r, i] + b[i]
                logits[r, i] = logit
                magnitude = abs(logit)
                lanes[j] += magnitude
                e[r, i] = -magnitude
        s = zero
        for j in range(products):
            s += lanes[j]
        for i in range(group * products, d):
            logit = logits[r, i] + b[i]
            logits[r, i] = logit
            magnitude = abs(logit)
            s += magnitude
            e[r, i] = -magnitude
        sums[r] = s


@kernel
def log1p_row_sums(e, products, total):  # noqa: ANN001, ANN201
    r"""Each row's :math:`\sum_d \log(1 + e_d)` from the logarithms of a few products, given
    :math:`e = \exp(-|\ell|)` (NumPy's SIMD exp):

    .. math::
        \sum_d \log(1 + e_d) = \sum_{j < c} \log\bigl(1 + q_j\bigr)
            + \sum_{d \ge G c} \log(1 + e_d),\qquad
        1 + q_j = \prod_{g < G} (1 + e_{gc + j})

    with ``c = products`` and :math:`G = \lfloor D / c \rfloor` factors per product, taken a
    stride of ``c`` apart, so that the ``c`` products grow side by side in SIMD registers; a
    row's D logarithms become ``c`` plus the remainder's. Each product is carried as its excess
    over 1, :math:`q \leftarrow q + e + q e` (three non-negative terms: nothing cancels, and a
    tiny :math:`e` is kept where :math:`1 + e` would round it away), and :math:`\log(1 + q)` is
    ``log1p``: each logarithm within :math:`(3G + 1)\,u_r` of its value, relative. The
    caller keeps ``G <= 64`` (a product is then at most :math:`2^{64}`, far inside float32).
    ``e`` is (R, D), ``total`` (R,).
    """
    rows, d = e.shape
    group = d // products
    one = e.dtype.type(1)
    zero = one - one
    excess = numpy.empty(products, e.dtype)
    for r in range(rows):
        for j in range(products):
            excess[j] = zero
        for g in range(group):
            for j in range(products):
                e_i = e[r, g * products + j]
                excess[j] += e_i + excess[j] * e_i
        s = zero
        for j in range(products):
            s += log1p(excess[j])
        for i in range(group * products, d):
            s += log1p(e[r, i])
        total[r] = s


@kernel
def weighted_sigmoid_rows(logits, e, w, d_bias):  # noqa: ANN001, ANN201
    r"""Each row's sigmoid times its weight, over the logits, and the column sums:

    .. math::
        \ell_{rd} \leftarrow w_r\,\sigma(\ell_{rd}),\quad
        \sigma(\ell) = \frac{\max(e, \mathbb 1[\ell \ge 0])}{1 + e},\qquad
        \partial L / \partial b_d = \sum_r w_r\,\sigma(\ell_{rd})

    given :math:`e = \exp(-|\ell|)`: the multi-sample rows kernel's output gradient without
    its :math:`-w_r x` part (:func:`numpy_vae.fast.likelihoods.bernoulli_rows_gradient`). The
    sigmoid is :func:`bernoulli_row_sums`' and is multiplied by the weight after its division,
    as NumPy's ``sigmoid *= w[:, None]`` would (the same bits); the sums run over the rows in
    order, as :func:`relu_backward_bias_sum` sums. One pass where NumPy takes the sigmoid's
    passes, a broadcast product and a sum over the (R, D) array. ``logits`` and ``e`` (R, D),
    ``w`` (R,), ``d_bias`` (D,).
    """
    rows, d = logits.shape
    one = e.dtype.type(1)
    zero = one - one
    for i in range(d):
        d_bias[i] = zero
    for r in range(rows):
        w_r = w[r]
        for i in range(d):
            e_i = e[r, i]
            d_i = w_r * ((one if logits[r, i] >= zero else e_i) / (e_i + one))
            logits[r, i] = d_i
            d_bias[i] += d_i


@kernel
def weighted_rows_x_part(h, w_tilde, xw, h_bar, d_h):  # noqa: ANN001, ANN201
    r"""What the multi-sample rows kernel's output gradient's :math:`-\tilde w_{bk} x_b` part
    needs beside the products: the weighted sum of each example's K inputs of the last layer,
    and that part's path into them,

    .. math::
        \bar h_b = \sum_k \tilde w_{bk}\, h_{bk},\qquad
        \partial L / \partial h_{bk} \mathrel{-}= \tilde w_{bk}\, (x_b W)

    (:meth:`numpy_vae.fast.objectives.FastMultiSample.backward` derives both), with the
    products rounded before they are added and the sum over k in order: the same bits as
    NumPy's ``(w_tilde[:, :, None] * h).sum(axis=1)`` and ``d_h -= w_tilde[:, :, None] *
    xw[:, None, :]`` for H > 1 (a single column NumPy sums pairwise), in one pass where those
    take four and two temporaries. ``h`` and ``d_h`` (B K, H), rows example-major;
    ``w_tilde`` (B, K); ``xw`` and ``h_bar`` (B, H).
    """
    n, k = w_tilde.shape
    zero = h.dtype.type(0)
    for b in range(n):
        for j in range(h.shape[1]):
            h_bar[b, j] = zero
        for s in range(k):
            w = w_tilde[b, s]
            r = b * k + s
            for j in range(h.shape[1]):
                h_bar[b, j] += w * h[r, j]
                d_h[r, j] -= w * xw[b, j]


#: The kernels, each with example arguments of each dtype (see :func:`compile_seconds`).
def _examples() -> list[tuple[Any, tuple]]:
    out = []
    for dtype in (numpy.float32, numpy.float64):
        a = [numpy.zeros(1, dtype) for _ in range(4)]
        scalars = [dtype(s) for s in (0.1, 0.999, 0.001, -1e-3, 1e-8, 1e-38, 1e38)]
        out.append((adam_update, (*a, *scalars)))
        b = [numpy.zeros((1, 1), dtype) for _ in range(6)]
        out.append((bernoulli_row_sums, (b[0], b[1], b[2], 1, a[0], b[3], True, a[1])))
        out.append((relu_forward, (b[0],)))
        out.append((relu_backward, (b[0], b[1])))
        out.append((bias_relu_forward, (b[0], a[0])))
        out.append((relu_backward_bias_sum, (b[0], b[1], a[0])))
        out.append((tanh_backward, (b[0], b[1], a[0])))
        out.append((reparam_kl_forward, tuple(b[:6])))
        out.append((reparam_kl_backward, (*b[:5], a[0], b[5])))
        c = [numpy.zeros((1, 1, 1), dtype) for _ in range(2)]
        out.append((importance_log_weights, (b[0], c[0], c[1], b[1], b[2], b[3])))
        out.append((softmax_rows, (b[0], scalars[5])))
        out.append((weighted_encoder_gradient, (b[0], b[1], c[0], c[1], b[2], b[3])))
        out.append((log1p_row_sums, (b[0], 1, a[0])))
        out.append((weighted_sigmoid_rows, (b[0], b[1], a[0], a[1])))
        out.append((weighted_rows_x_part, (b[0], b[1], b[2], b[3], b[4])))
        out.append((negative_abs_row_sums, (b[0], a[1], 1, b[1], a[0])))
    return out


def compile_seconds() -> float:
    """Seconds spent making every kernel ready for float32 and float64 arrays: compiling them,
    or (the usual case, ``cache=True``) loading the machine code an earlier run cached. Calls
    each kernel once on one-element arrays; 0 without numba."""
    if numba is None:
        return 0.0
    start = time.perf_counter()
    for function, args in _examples():
        function(*args)
    return time.perf_counter() - start
