"""The compiled kernels of the fast path (numpy_vae/fast/kernels.py), each held to what it
replaces, and each check shown to catch a planted bug in a copy of the kernel.

Adam (:func:`numpy_vae.fast.kernels.adam_update`):

- against the specification's Adam for hundreds of steps, within the bound of
  ``tests/test_fast_vs_reference.py`` (``run_adam_pair``), for the real kernel; a copy that
  reads the old ``m`` in its last line (an in-place ordering bug) breaks that bound;
- bitwise against its pass form :func:`numpy_vae.fast.optim.adam_update_passes` (what device
  arrays and strided views take), flushes included;
- the flush: after a step, exactly the moments below the smallest normal number are 0, and
  the parameter moves by at most the bound of :mod:`numpy_vae.fast.optim`'s docstring,
  ``eta_t tau / eps + |step| sqrt(tau) / eps_hat`` (plus the parameter's own rounding), from
  where the unflushed kernel takes it; a flush at a higher threshold breaks that bound;
- over steps of zero gradient no subnormal number is left in ``m`` or ``v`` (the
  specification's Adam, on the same gradients, has them).

The Bernoulli value and gradient (:func:`numpy_vae.fast.kernels.bernoulli_row_sums`, inside
:func:`numpy_vae.fast.likelihoods.bernoulli_nll_fused`):

- against the specification's :func:`numpy_vae.likelihoods.bernoulli_nll`: the gradient
  bitwise, the value within ``(2 D + 16) u S`` (``tests/test_fast_vs_reference.py`` derives
  it; its hypothesis test runs the kernel on any shape and value); copies without the Sterbenz
  correction, or with ``sigmoid(-|l|)`` for every logit, break it;
- against the in-place passes that device arrays take, for K = 1 and for K samples per
  example with ``x`` broadcast: the gradient bitwise, the value within twice that bound.

ReLU (:func:`numpy_vae.fast.kernels.relu_forward`, :func:`~numpy_vae.fast.kernels.relu_backward`):
bitwise the specification's layer on any shape and value (hypothesis; -0, infinities and NaN
included) and the device passes; a forward as ``max(x, 0)`` and a backward with the slope 1 at
0 differ.

The reparameterization and KL (:func:`numpy_vae.fast.kernels.reparam_kl_forward`,
:func:`~numpy_vae.fast.kernels.reparam_kl_backward`, as
:class:`numpy_vae.fast.objectives.FastELBO` calls them after NumPy's exps): z, the KL terms and
the gradient in ``[mu | logvar]`` bitwise the specification's (:mod:`numpy_vae.reparam`,
:mod:`numpy_vae.kl`, the sum of :meth:`numpy_vae.VAE.backward`) on any shape, KL weight and free
bits' weights (hypothesis); copies that regroup the KL's sum or the path term's product differ.
(``tests/test_fast_vs_reference.py`` plants a doubled KL gradient in the step itself.)

The multi-sample weights and encoder gradient (:class:`numpy_vae.fast.objectives.FastMultiSample`):

- :func:`~numpy_vae.fast.kernels.importance_log_weights`: ``log w`` within
  ``(2 L + 8) u (|log p(x|z)| + sum_j (eps^2 + |v| + z^2 + 2 log 2 pi))`` of the
  specification's three terms (one running sum with the ``log 2 pi`` terms cancelled, against
  two pairwise sums), its shift by the row's largest bitwise; a copy without ``v`` breaks it;
- :func:`~numpy_vae.fast.kernels.softmax_rows`: the flushed weights within ``(2 K + 2) u`` of
  the specification's, relative (a running sum over K against NumPy's pairwise one); a copy
  that leaves a sample out of the sum breaks it;
- :func:`~numpy_vae.fast.kernels.weighted_encoder_gradient`: bitwise the plain estimator's
  gradient for L >= 2 (hypothesis); a copy that regroups the path product differs.

The rows kernel (:func:`numpy_vae.fast.likelihoods.bernoulli_rows_nll` and its gradient):

- :func:`~numpy_vae.fast.kernels.log1p_row_sums`: each row's sum of ``log(1 + e)`` within
  ``(3 G + c + r + 2) u`` of float64's ``log1p``, relative (hypothesis, any width); a copy that
  leaves out the pixels past the last whole group breaks it;
- :func:`~numpy_vae.fast.kernels.negative_abs_row_sums`: the bias and ``-|l|`` bitwise, the sums
  of ``|l|`` within ``(G + c + r) u``; a copy that leaves out the remainder breaks it;
- :func:`~numpy_vae.fast.kernels.weighted_sigmoid_rows`: ``w_r sigmoid(l)`` and its column sums
  bitwise NumPy's passes, within ``3 u`` of float64's; copies that take ``e / u`` as
  every logit's sigmoid, or sum before the weight, differ;
- :func:`~numpy_vae.fast.kernels.weighted_rows_x_part`: ``sum_k w~_k h_k`` and
  ``d_h -= w~_k (x W)`` bitwise NumPy's passes (H > 1); a copy that pairs each example's
  samples with another example's ``x W`` differs.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_fast_vs_reference import run_adam_pair

import numpy_vae.fast.likelihoods as fast_likelihoods
import numpy_vae.fast.optim as fast_optim
from numpy_vae import Adam
from numpy_vae.devices import strict
from numpy_vae.fast import FastAdam, kernels
from numpy_vae.fast.kernels import adam_update, bernoulli_row_sums
from numpy_vae.fast.likelihoods import bernoulli_nll_fused
from numpy_vae.likelihoods import bernoulli_nll

# The ReLU tests feed infinities on purpose: the specification's x * mask then computes
# inf * 0 = NaN, which NumPy reports as a warning; the tests compare those NaNs bitwise.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")

DTYPES = [np.float32, np.float64]


def subnormals(a):
    a = np.asarray(a)
    return int(((a != 0) & (np.abs(a) < np.finfo(a.dtype).smallest_normal)).sum())


def adam_reading_the_old_m(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, minus_scale,
                           eps_hat, tiny, largest):  # fmt: skip
    """Planted: the kernel with its last line reading ``m[i]`` before it is written."""
    zero = tiny - tiny
    for i in range(p.size):
        m_i = m[i] + one_minus_beta1 * (g[i] - m[i])
        v_i = v[i] * beta2 + (g[i] * one_minus_beta2) * g[i]
        v_i = v_i if v_i >= tiny else zero
        v[i] = v_i
        p[i] += m[i] / (np.sqrt(v_i) + eps_hat) * minus_scale
        m[i] = m_i if abs(m_i) >= tiny else zero
    return not (v <= largest).all()


def adam_flushing_at(threshold):
    """Planted: the kernel flushing its moments below ``threshold`` instead of ``tiny``."""

    def flushing(p, g, m, v, c1, b2, c2, minus_scale, eps_hat, tiny, largest):  # noqa: ARG001
        return adam_update(p, g, m, v, c1, b2, c2, minus_scale, eps_hat, p.dtype.type(threshold),
                           largest)  # fmt: skip

    return flushing


def adam_flushing_nan(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, minus_scale,
                      eps_hat, tiny, largest):  # fmt: skip
    """Planted: the kernel's flush written ``m if |m| >= tiny else 0``, which makes a NaN 0."""
    zero = tiny - tiny
    nonfinite = False
    for i in range(p.size):
        m_i = m[i] + one_minus_beta1 * (g[i] - m[i])
        v_i = v[i] * beta2 + (g[i] * one_minus_beta2) * g[i]
        m_i = m_i if abs(m_i) >= tiny else zero
        v_i = v_i if v_i >= tiny else zero
        m[i], v[i] = m_i, v_i
        p[i] += m_i / (np.sqrt(v_i) + eps_hat) * minus_scale
        nonfinite |= not v_i <= largest
    return nonfinite


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the planted kernel runs as Python
@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_flags_exactly_the_steps_whose_gradient_is_not_finite(dtype, planted):
    """The kernel's flag (the training step's health check) is set by an infinite or NaN
    gradient entry, or one whose square overflows, anywhere in the vector (also inside a
    SIMD block and in the scalar tail), and by nothing else; the NaN stays in ``m``, ``v``
    and the parameter, as the in-place passes leave it. Planted: a flush that makes NaN 0."""
    kernel = adam_flushing_nan if planted else adam_update
    big = math.sqrt(float(np.finfo(dtype).max)) * 100  # finite, its square overflows
    rng = np.random.default_rng(0)
    results = []
    for n, where in ((37, 3), (37, 36), (1000, 517)):
        for bad in (None, np.inf, -np.inf, np.nan, big):
            p, g, m, v = (rng.standard_normal(n).astype(dtype) for _ in range(4))
            v = np.abs(v)
            if bad is not None:
                g[where] = bad
            pass_arrays = [a.copy() for a in (p, g, m, v)]
            _, _, m1, v1, p1 = one_step(kernel, dtype, m, v, p, g, 10, keep=True)
            flag = one_step.flag
            scratch = np.empty_like(p)
            fast_optim.adam_update_passes(*pass_arrays, scratch, 0.9, 0.999, *one_step.scale_eps,
                               float(np.finfo(dtype).smallest_normal), np)  # fmt: skip
            after_passes = (pass_arrays[0], pass_arrays[2], pass_arrays[3])
            same = all(
                np.array_equal(a, b, equal_nan=True)
                for a, b in zip((p1, m1, v1), after_passes, strict=True)
            )
            results.append((flag == (bad is not None), same))
    if planted:
        assert not all(ok and same for ok, same in results)
    else:
        assert all(ok for ok, _ in results) and all(same for _, same in results), results


@pytest.mark.parametrize("planted", [False, True])
def test_adam_kernel_follows_the_specification_and_the_check_bites(monkeypatch, planted):
    if planted:
        monkeypatch.setattr(fast_optim, "adam_update", adam_reading_the_old_m)
        with pytest.raises(AssertionError):
            run_adam_pair(FastAdam, 3000, 30, np.float64, "dense")
    else:
        ref, fast = run_adam_pair(FastAdam, 3000, 200, np.float32, "stopping")
        assert ref.step_count == fast.step_count == 200


class Unflushed(FastAdam):
    def flush_threshold(self, dtype):
        return 0.0


def strided_pair(n, dtype, seed=0):
    """The same parameters twice: contiguous (the kernel) and as a strided view (the passes)."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    base, g_base = np.zeros((n, 2), dtype), np.zeros((n, 2), dtype)
    base[:, 0] = p0
    contiguous, g = p0.copy(), np.zeros(n, dtype)
    fast = FastAdam([contiguous], [g], lr=1e-2)
    passes = FastAdam([base[:, 0]], [g_base[:, 0]], lr=1e-2)
    assert fast._compiled == [True] and passes._compiled == [False]
    return fast, passes, g, g_base[:, 0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_equals_its_pass_form_bitwise(dtype):
    """Gradients of every scale, then zero for half the entries: 40 steps reach the flush."""
    n = 500
    fast, passes, g, g_view = strided_pair(n, dtype)
    unflushed = Unflushed([fast.params[0].copy()], [g], lr=fast.lr)  # where the flush acts
    rng = np.random.default_rng(1)
    lowest = int(math.log10(np.finfo(dtype).smallest_normal)) - 5  # -42 or -312
    flushed = 0
    for t in range(40):
        grad = rng.standard_normal(n) * 10.0 ** rng.integers(lowest, 2, n).astype(float)
        grad[: n // 2] *= t < 5
        g[...] = grad.astype(dtype)
        g_view[...] = g
        fast.step()
        passes.step()
        unflushed.step()
        flushed += subnormals(unflushed.m[0]) + subnormals(unflushed.v[0])
        for a, b in zip(
            (fast.params[0], fast.m[0], fast.v[0]),
            (passes.params[0], passes.m[0], passes.v[0]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    assert flushed > 0  # the flush was exercised: without it there are subnormals


def flush_case(dtype, step=10, n=400, seed=0):
    """Moments one step before the flush: ``m`` from 0.5 tau to 20 tau (after the step's decay by
    0.9 some fall below tau), ``v`` likewise, gradients 0, parameters 0 (so the step itself is
    the parameter, unrounded by a large value beside it)."""
    rng = np.random.default_rng(seed)
    tau = np.finfo(dtype).smallest_normal
    m = (tau * rng.uniform(0.5, 20, n) * rng.choice([-1, 1], n)).astype(dtype)
    v = (tau * rng.uniform(0.5, 3, n)).astype(dtype)
    v[::3] = 1e-6  # a large v beside a small m: only m is flushed
    m[1::3] = 1e-3  # a large m beside a small v: only v is flushed
    return m, v, np.zeros(n, dtype), np.zeros(n, dtype), step


def one_step(kernel, dtype, m, v, p, g, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, tiny=None,
             keep=False):  # fmt: skip
    """One kernel step on copies of ``m, v, p``; ``keep``: return ``(lr_t, eps_hat, m, v, p)``
    and leave the kernel's flag in ``one_step.flag`` and ``(scale, eps_hat)`` in
    ``one_step.scale_eps``."""
    m, v, p = m.copy(), v.copy(), p.copy()
    bc2 = math.sqrt(1 - b2**t)
    scale, eps_hat = lr * bc2 / (1 - b1**t), eps * bc2
    tiny = np.finfo(dtype).smallest_normal if tiny is None else tiny
    cast = np.dtype(dtype).type
    scalars = (cast(s) for s in (1 - b1, b2, 1 - b2, -scale, eps_hat, tiny))
    one_step.flag = kernel(p, g, m, v, *scalars, cast(np.finfo(dtype).max))
    one_step.scale_eps = (scale, eps_hat)
    if keep:
        return lr / (1 - b1**t), eps_hat, m, v, p
    return m, v, p, lr / (1 - b1**t), eps_hat


@pytest.mark.parametrize("planted", [None, 1e8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_flush_zeroes_exactly_the_subnormal_moments_within_the_stated_bound(dtype, planted):
    """Against the same kernel without a flush (``tiny = 0``), one step from the same state; the
    bound is the docstring's plus ``4 u`` of each side's step (its division, root, sum and
    product round). Planted: a flush below ``1e8 tau``."""
    eps = 1e-8
    m, v, p, g, t = flush_case(dtype)
    tau = float(np.finfo(dtype).smallest_normal)
    kernel = adam_update if planted is None else adam_flushing_at(planted * tau)
    m1, v1, p1, lr_t, eps_hat = one_step(kernel, dtype, m, v, p, g, t, eps=eps)
    m0, v0, p0, _, _ = one_step(adam_update, dtype, m, v, p, g, t, eps=eps, tiny=0.0)
    assert ((np.abs(m0) < tau) & (m0 != 0)).any() and ((v0 < tau) & (v0 != 0)).any()
    u = np.finfo(dtype).eps / 2
    step = np.abs(p1.astype(np.float64))  # the parameters started at 0
    bound = lr_t * tau / eps + step * math.sqrt(tau) / eps_hat
    bound += 4 * u * (np.abs(p1) + np.abs(p0))  # each side's rounding of its step
    within = np.all(np.abs(p1.astype(np.float64) - p0) <= bound)
    exact = np.array_equal(m1, np.where(np.abs(m0) < tau, 0, m0)) and np.array_equal(
        v1, np.where(v0 < tau, 0, v0)
    )
    if planted is None:
        assert exact and within
        assert subnormals(m1) == subnormals(v1) == 0
    else:
        assert not (exact and within)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_subnormal_moments_over_steps_of_zero_gradient(dtype):
    """Gradients of 1e-3 for 5 steps, then 0 for 2000 (m shrinks by 0.9 a step and is below
    float32's tau after ~800, float64's after ~6700, which only the first gradients of 1e-300
    reach here); some entries start with gradients of 1e-18 (v = 1e-39 at once in float32).
    The specification's Adam keeps subnormals; FastAdam keeps none at any step."""
    n = 64
    grads = np.full(n, 1e-3)
    grads[::4] = 1e-18 if dtype == np.float32 else 1e-160
    grads[1::4] = 1e-300 if dtype == np.float64 else 1e-3
    p_ref, g_ref = np.ones(n, dtype), np.zeros(n, dtype)
    p_fast, g_fast = np.ones(n, dtype), np.zeros(n, dtype)
    ref = Adam([p_ref], [g_ref])
    fast = FastAdam([p_fast], [g_fast])
    seen_ref = 0
    for t in range(2005):
        g_ref[...] = g_fast[...] = grads.astype(dtype) if t < 5 else 0
        ref.step()
        fast.step()
        assert subnormals(fast.m[0]) == subnormals(fast.v[0]) == 0, t
        seen_ref += subnormals(ref.m[0]) + subnormals(ref.v[0])
    assert seen_ref > 0  # the case is exercised: without the flush there are subnormals


def test_kernels_are_compiled_and_their_cost_is_reported():
    assert kernels.COMPILED
    assert adam_update.__module__ == "numpy_vae.fast.kernels"
    seconds = kernels.compile_seconds()
    assert 0 <= seconds < 120


def test_without_numba_training_runs_the_specification_and_says_so(monkeypatch, capsys):
    from test_train import synthetic_arrays

    from numpy_vae import VAE
    from numpy_vae.fast import FastVAE
    from numpy_vae.training.trainer import Dataset, TrainConfig, Trainer

    data = Dataset(**synthetic_arrays(64, 16))
    config = TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=32, eval_batch_size=16)
    monkeypatch.setattr(kernels, "COMPILED", False)
    trainer = Trainer(config, data)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "numba is not importable" in lines[0], lines
    assert trainer.config.reference and not config.reference
    assert type(trainer.model) is VAE and type(trainer.optimizer) is Adam
    assert np.isfinite(trainer.train_epoch()["train_loss"])
    monkeypatch.setattr(kernels, "COMPILED", True)
    assert isinstance(Trainer(config, data).model, FastVAE)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- Bernoulli terms
def bernoulli_row_sums_uncorrected(logits, x, e, products, nll, d_logits, grad, d_bias):
    """Planted: ``log(1 + e)`` as ``log(u)`` alone (the Sterbenz correction dropped)."""
    per_x = logits.shape[0] // x.shape[0]
    u = e + 1
    value = ((logits >= 0) - x[np.arange(logits.shape[0]) // per_x]) * logits + np.log(u)
    nll[...] = value.sum(axis=1)
    if grad:
        bernoulli_row_sums(logits, x, e, products, np.empty_like(nll), d_logits, grad, d_bias)


def bernoulli_row_sums_one_sided(logits, x, e, products, nll, d_logits, grad, d_bias):
    """Planted: ``sigmoid(l)`` as ``e / (1 + e)`` for every logit (right only for l < 0)."""
    bernoulli_row_sums(logits, x, e, products, nll, d_logits, grad, d_bias)
    d_logits[...] = e / (e + 1) - x[:: max(1, x.shape[0] // logits.shape[0])]


def bernoulli_case(dtype, seed=0):
    """Logits of every size, saturated included (l = -20: every term below u in float32)."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((6, 300)) * 10).astype(dtype)
    logits[0] = -20
    logits[1, ::3] = 0
    x = (rng.random((6, 300)) < 0.4).astype(dtype)
    x[0] = 0
    return logits, x


@pytest.mark.parametrize("planted", [None, "uncorrected", "one_sided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_kernel_follows_the_specification_and_the_check_bites(
    monkeypatch, dtype, planted
):
    from test_fast_vs_reference import assert_nll_within_bound

    if planted:
        copy = {
            "uncorrected": bernoulli_row_sums_uncorrected,
            "one_sided": bernoulli_row_sums_one_sided,
        }
        monkeypatch.setattr(fast_likelihoods, "bernoulli_row_sums", copy[planted])
    logits, x = bernoulli_case(dtype)
    ref_nll, ref_grad = bernoulli_nll(logits, x, np)
    nll, grad = bernoulli_nll_fused(logits.copy(), x, np)

    def check():
        assert_nll_within_bound(nll, ref_nll, logits, x)
        np.testing.assert_array_equal(grad, ref_grad)

    if planted is None:
        check()
    else:
        with pytest.raises(AssertionError):
            check()


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_kernel_and_the_device_passes_agree(dtype, k):
    """The gradient bitwise (the same operations in the same order); the value, whose host
    form takes logarithms of products and sums in lanes, within the bound of
    ``tests/test_fast_vs_reference.py`` of the device passes' (each within it of the
    specification's, so twice the bound)."""
    rng = np.random.default_rng(k)
    logits = (rng.standard_normal((5, k, 40)) * 12).astype(dtype)
    logits[0, 0, :3] = [0.0, -0.0, 1e4]
    x = (rng.random((5, 1, 40)) < 0.5).astype(dtype)
    if k == 1:
        logits, x = logits[:, 0], x[:, 0]
    host = bernoulli_nll_fused(logits.copy(), x, np)
    device = bernoulli_nll_fused(strict.xp.asarray(logits), strict.xp.asarray(x), strict.xp)
    np.testing.assert_array_equal(host[1], strict.to_host(device[1]))
    l64, x64 = logits.astype(np.float64), np.broadcast_to(x, logits.shape).astype(np.float64)
    magnitude = (np.logaddexp(0, l64) + np.abs(x64 * l64)).sum(axis=-1)
    bound = 2 * (2 * logits.shape[-1] + 16) * (np.finfo(dtype).eps / 2) * magnitude
    difference = np.abs(host[0].astype(np.float64) - strict.to_host(device[0]))
    assert np.all(difference <= bound)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 9), st.integers(2, 300)), seed=st.integers(0, 2**16))
def test_bernoulli_kernel_sums_the_bias_gradient_bitwise(dtype, shape, seed):
    """With ``d_bias`` (the ELBO's step: the pass sums the last layer's bias gradient), on the
    host and in the device passes: the value and the gradient bit for bit what the call
    without it gives, and ``d_bias`` bit for bit NumPy's sum of that gradient over the rows.
    (A single pixel is left to NumPy, which sums one column pairwise;
    ``tests/test_fast_vs_reference.py`` plants a slip in the sums.)"""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 12).astype(dtype)
    x = (rng.random(shape) < 0.5).astype(dtype)
    for xp, host in ((np, np.asarray), (strict.xp, strict.to_host)):
        args = (xp.asarray(logits), xp.asarray(x), xp)
        want_nll, want_d = (host(a) for a in bernoulli_nll_fused(*args))
        d_bias = xp.zeros(shape[1], dtype)
        nll, d = bernoulli_nll_fused(*args, d_bias=d_bias)
        for got, want in ((nll, want_nll), (d, want_d), (d_bias, want_d.sum(axis=0))):
            np.testing.assert_array_equal(host(got), want)


# ---------------------------------------------------------------------------- ReLU
def relu_forward_as_max(a):
    """Planted: ``max(a, 0)``, which gives +0 where the specification's ``a * 1[a > 0]`` gives
    -0 (every negative input)."""
    np.maximum(a, 0, out=a)


def relu_backward_at_zero(d, y):
    """Planted: the backward's slope read as ``1[y >= 0]``: 1 where the input was 0 or below."""
    d[...] = d * (y >= 0)


relu_values = st.one_of(
    st.floats(-5, 5, width=32),
    st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45]),
)


@pytest.mark.parametrize("planted", [None, "forward", "backward"])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 5), st.integers(1, 40)), data=st.data())
def test_relu_kernels_equal_the_specification_bitwise(monkeypatch, dtype, planted, shape, data):
    """Forward and backward through the fast layer against :class:`numpy_vae.layers.ReLU`,
    bit for bit (-0 for negative inputs, NaN kept); a forward as ``max(x, 0)`` (+0 for negative
    inputs) and a backward with the slope 1 at 0 differ (an input of -1.5, or 0, is planted
    into every batch of that check)."""
    import numpy_vae.fast.layers as fast_layers
    from numpy_vae import get_backend
    from numpy_vae.fast.layers import FastReLU
    from numpy_vae.layers import ReLU

    x = data.draw(arrays(dtype, shape, elements=relu_values.map(dtype)))
    d = data.draw(arrays(dtype, shape, elements=st.floats(-3, 3, width=32).map(dtype)))
    if planted:
        x.flat[0] = -1.5 if planted == "forward" else 0  # where the planted copy differs
        d.flat[0] = 1
        copy = {"forward": relu_forward_as_max, "backward": relu_backward_at_zero}[planted]
        monkeypatch.setattr(fast_layers, f"relu_{planted}", copy)
    spec = ReLU(get_backend("numpy", np.dtype(dtype).name))
    fast = FastReLU(spec)
    y_ref, dx_ref = spec.forward(x), spec.backward(d)
    y = fast.forward(x.copy())  # a fresh output
    buf = x.copy()
    y_in_place = fast.forward(buf, out=buf)
    dx = fast.backward(d.copy(), out=None)
    same = [
        np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
        for a, b in ((y, y_ref), (y_in_place, y_ref), (dx, dx_ref))
    ]
    if planted == "backward":  # the planted backward uses 1[y >= 0]: y = 0 at the zero input
        assert not same[2]
    elif planted == "forward":  # +0 for -1.5
        assert not same[0] and not same[1]
    else:
        assert all(same) and y_in_place is buf


def bias_after_relu(a, b):
    """Planted: the bias added after the ReLU instead of before it."""
    kernels.relu_forward(a)
    a += b


def bias_sum_before_the_mask(d, y, d_bias):
    """Planted: the bias gradient summed from the gradient before the ReLU's mask."""
    d.sum(axis=0, out=d_bias)
    kernels.relu_backward(d, y)


def tanh_bias_sum_before_the_slope(d, y, d_bias):
    """Planted: Tanh's bias gradient summed from the gradient before its slope."""
    if d_bias.size:
        d.sum(axis=0, out=d_bias)
    kernels.tanh_backward(d, y, d_bias[:0])


@pytest.mark.parametrize(
    "activation,planted",
    [("relu", None), ("relu", "forward"), ("relu", "backward"), ("tanh", None),
     ("tanh", "backward")],
)  # fmt: skip
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    widths=st.tuples(st.integers(1, 12), st.integers(2, 12), st.integers(1, 12)),
    seed=st.integers(0, 99),
)
def test_an_activation_takes_the_bias_before_it_bitwise(
    monkeypatch, dtype, activation, planted, n, widths, seed
):
    """Linear, activation, Linear through :class:`~numpy_vae.fast.layers.FastSequential`, whose
    ReLU adds the first Linear's bias and sums its gradient in its own passes (a Tanh sums it in
    its backward), against the specification's layers, bit for bit (outputs, input gradient,
    every parameter gradient). Planted: the bias added after the ReLU, the bias gradient summed
    before the ReLU's mask or the Tanh's slope. (A layer of width 1 is left to NumPy: it sums a
    single column pairwise.)"""
    import numpy_vae.fast.layers as fast_layers
    from numpy_vae import get_backend
    from numpy_vae.fast.buffers import Buffers
    from numpy_vae.fast.layers import FastSequential
    from numpy_vae.layers import Linear, ReLU, Sequential, Tanh

    backend = get_backend("numpy", np.dtype(dtype).name)
    rng = np.random.default_rng(seed)
    act = {"relu": ReLU, "tanh": Tanh}[activation]
    spec = Sequential(
        [Linear(widths[0], widths[1], backend, rng), act(backend),
         Linear(widths[1], widths[2], backend, rng)]
    )  # fmt: skip
    spec.layers[0].bias[...] = rng.standard_normal(widths[1])  # biases of both signs
    if planted:
        copy, name = {
            ("relu", "forward"): (bias_after_relu, "bias_relu_forward"),
            ("relu", "backward"): (bias_sum_before_the_mask, "relu_backward_bias_sum"),
            ("tanh", "backward"): (tanh_bias_sum_before_the_slope, "tanh_backward"),
        }[activation, planted]
        monkeypatch.setattr(fast_layers, name, copy)
    fast = FastSequential(spec)
    first = fast.layers[0]
    assert not first.sums_bias_gradient and fast.layers[1].linear is spec.layers[0]
    assert first.adds_bias == (activation == "tanh")
    narrow = Sequential([Linear(3, 1, backend, rng), act(backend)])
    assert FastSequential(narrow).layers[0].sums_bias_gradient
    x = rng.standard_normal((n, widths[0])).astype(dtype)
    d = rng.standard_normal((n, widths[2])).astype(dtype)
    y_ref = spec.forward(x)
    dx_ref = spec.backward(d)
    grads_ref = [g.copy() for g in (spec.layers[0].d_weight, spec.layers[0].d_bias,
                                    spec.layers[2].d_weight, spec.layers[2].d_bias)]  # fmt: skip
    y = fast.forward(x, Buffers(np)).copy()
    dx = fast.backward(d, Buffers(np)).copy()
    grads = [spec.layers[0].d_weight, spec.layers[0].d_bias, spec.layers[2].d_weight,
             spec.layers[2].d_bias]  # fmt: skip
    same = [np.array_equal(a, b) for a, b in zip([y, dx, *grads], [y_ref, dx_ref, *grads_ref],
                                                  strict=True)]  # fmt: skip
    linear = spec.layers[0]
    pre = x @ linear.weight.T + linear.bias  # the activation's input
    d_act = d @ spec.layers[2].weight  # the gradient of the activation's output
    after = np.maximum(x @ linear.weight.T, 0) + linear.bias  # what the planted forward makes
    if planted is None:
        assert all(same)
    elif planted == "forward" and (np.abs(after - np.maximum(pre, 0)) > 1e-3).any():
        assert not all(same)
    elif planted == "backward" and activation == "relu" and (d_act[pre <= 0] != 0).any():
        assert not all(same)  # (the mask drops those)
    elif planted == "backward" and activation == "tanh" and (d_act != 0).any():
        assert not all(same)


def test_relu_kernels_equal_the_device_passes_bitwise():
    from numpy_vae import get_backend
    from numpy_vae.fast.layers import FastReLU
    from numpy_vae.layers import ReLU

    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 30)).astype(np.float32)
    x[0, :4] = [0.0, -0.0, np.nan, -np.inf]
    d = rng.standard_normal((7, 30)).astype(np.float32)
    host = FastReLU(ReLU(get_backend("numpy", "float32")))
    device = FastReLU(ReLU(get_backend("strict", "float32")))
    got = [host.forward(x.copy()), host.backward(d.copy())]
    want = [device.forward(strict.xp.asarray(x)), device.backward(strict.xp.asarray(d))]
    for a, b in zip(got, want, strict=True):
        b = strict.to_host(b)
        assert np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))


def test_without_numba_installed_the_package_imports_and_trains_the_specification(tmp_path):
    """In a fresh process where ``import numba`` fails: the fast path imports (its kernels as
    plain Python), a training run says so in one line and trains the specification."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys; sys.modules['numba'] = None\n"
        "from test_train import synthetic_arrays\n"
        "from numpy_vae.fast import kernels\n"
        "from numpy_vae.training.trainer import Dataset, TrainConfig, Trainer\n"
        "assert not kernels.COMPILED and kernels.compile_seconds() == 0\n"
        "config = TrainConfig(hidden_dims=(8,), latent_dim=2, batch_size=32, eval_batch_size=16)\n"
        "trainer = Trainer(config, Dataset(**synthetic_arrays(64, 16)))\n"
        "assert trainer.config.reference and type(trainer.model).__name__ == 'VAE'\n"
        "print(trainer.train_epoch()['train_loss'])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("numba is not importable"), lines
    assert float(done.stdout) > 0


# --------------------------------------------------------------- the reparameterization and KL
def reparam_kl_passes(stats, eps, d_z, weight):
    """The specification: :func:`~numpy_vae.reparam.reparameterize`, the KL and the sum of the
    two paths into ``[mu | logvar]`` as :meth:`numpy_vae.VAE.backward` writes it."""
    from numpy_vae.kl import kl_standard_normal
    from numpy_vae.reparam import reparameterize, reparameterize_backward

    latent = eps.shape[1]
    mu, logvar = stats[:, :latent], stats[:, latent:]
    z, cache = reparameterize(mu, logvar, eps, np)
    kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, np)
    d_mu, d_logvar = reparameterize_backward(d_z, cache)
    return z, kl, np.concatenate([d_mu_kl * weight + d_mu, d_logvar_kl * weight + d_logvar], 1)


def reparam_kl_kernels(stats, eps, d_z, weight, forward=None, backward=None):
    """The kernels as :class:`numpy_vae.fast.objectives.FastELBO` calls them (NumPy's exps)."""
    forward = forward or kernels.reparam_kl_forward
    backward = backward or kernels.reparam_kl_backward
    latent = eps.shape[1]
    logvar = stats[:, latent:]
    sigma, var, z, kl = (np.empty_like(eps) for _ in range(4))
    np.exp(np.multiply(logvar, 0.5, out=sigma), out=sigma)
    np.exp(logvar, out=var)
    forward(stats, eps, sigma, var, z, kl)
    d_stats = np.empty_like(stats)
    weight = np.broadcast_to(np.asarray(weight, dtype=stats.dtype), (latent,))
    backward(stats, d_z, eps, sigma, var, weight, d_stats)
    return z, kl, d_stats


def reparam_kl_forward_regrouped(stats, eps, sigma, var, z, kl):
    """Planted: the KL as ``(mu^2 + (e^v - v)) - 1`` (the same sum, another grouping)."""
    latent = z.shape[1]
    mu, logvar = stats[:, :latent], stats[:, latent:]
    z[...] = mu + sigma * eps
    kl[...] = 0.5 * (mu * mu + (var - logvar) - 1)


def reparam_kl_backward_regrouped(stats, d_z, eps, sigma, var, weight, d_stats):
    """Planted: the path term as ``d_z (eps sigma) / 2`` (the same product, another grouping)."""
    latent = d_z.shape[1]
    d_stats[:, :latent] = stats[:, :latent] * weight + d_z
    d_stats[:, latent:] = 0.5 * (var - 1) * weight + d_z * (eps * sigma) * 0.5


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 24)),
    free_bits=st.booleans(),
    kl_weight=st.sampled_from([1.0, 0.3, 0.0]),
    data=st.data(),
)
def test_reparam_kl_kernels_equal_the_specification_bitwise(dtype, shape, free_bits, kl_weight,
                                                            data):  # fmt: skip
    """z, the KL terms and the gradient in ``[mu | logvar]`` bit for bit, on any shape, for a
    KL weight and for free bits' 0/1 weight per dimension (logvar in [-30, 30], mu and the
    incoming gradient up to 1e4 in size)."""
    n, latent = shape
    mu = data.draw(arrays(dtype, shape, elements=st.floats(-1e4, 1e4, width=32).map(dtype)))
    logvar = data.draw(arrays(dtype, shape, elements=st.floats(-30, 30, width=32).map(dtype)))
    eps = data.draw(arrays(dtype, shape, elements=st.floats(-6, 6, width=32).map(dtype)))
    d_z = data.draw(arrays(dtype, shape, elements=st.floats(-1e4, 1e4, width=32).map(dtype)))
    weight = kl_weight
    if free_bits:
        weight = kl_weight * data.draw(arrays(dtype, (latent,), elements=st.sampled_from([0, 1])))
    stats = np.concatenate([mu, logvar], 1)
    for got, want in zip(reparam_kl_kernels(stats, eps, d_z, weight),
                         reparam_kl_passes(stats, eps, d_z, weight), strict=True):  # fmt: skip
        assert same_bits(got, want)


@pytest.mark.parametrize("planted", ["forward", "backward"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reparam_kl_check_bites(dtype, planted):
    """A copy that regroups the KL's sum, or the path term's product, differs somewhere on a
    64 x 20 batch (the bitwise check above would catch it)."""
    rng = np.random.default_rng(0)
    stats = (rng.standard_normal((64, 40)) * 3).astype(dtype)
    eps, d_z = (rng.standard_normal((64, 20)).astype(dtype) for _ in range(2))
    copy = {"forward": reparam_kl_forward_regrouped, "backward": reparam_kl_backward_regrouped}
    got = reparam_kl_kernels(stats, eps, d_z, 1.0, **{planted: copy[planted]})
    want = reparam_kl_passes(stats, eps, d_z, 1.0)
    assert not all(same_bits(a, b) for a, b in zip(got, want, strict=True))


# ------------------------------------------------------------------ the multi-sample weights
LOG_2PI = math.log(2 * math.pi)


def log_weights_bound(log_px, eps, logvar, z):
    """|kernel - specification| for ``log w`` (the kernel's docstring):
    ``(2 L + 8) u (|log p(x|z_k)| + sum_j (eps^2 + |v| + z^2 + 2 log 2 pi))``: both round each
    term of the sums over the L latent dimensions a few times and sum them, the specification
    two sums, pairwise, the kernel one, running, with the ``log 2 pi`` terms cancelled."""
    u = np.finfo(eps.dtype).eps / 2
    e, z, v = (a.astype(np.float64) for a in (eps, z, logvar[:, None, :]))
    size = (e * e + np.abs(v) + z * z + 2 * LOG_2PI).sum(axis=-1)
    return (2 * eps.shape[-1] + 8) * u * (np.abs(log_px.astype(np.float64)) + size)


def log_weights_spec(stats, eps, log_px):
    from numpy_vae.bounds import log_posterior, log_prior

    latent = eps.shape[2]
    mu, logvar = stats[:, :latent], stats[:, latent:]
    z = mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps
    return z, log_px + log_prior(z) - log_posterior(eps, logvar)


def log_weights_without_logvar(stats, eps, z, log_px, log_w, shifted):
    """Planted: the log weights with ``log q``'s ``v`` term forgotten."""
    log_w[...] = log_px + 0.5 * (eps * eps - z * z).sum(axis=-1)
    shifted[...] = log_w - log_w.max(axis=1, keepdims=True)


def multi_sample_case(dtype, n, k, latent, seed, spread=3.0):
    rng = np.random.default_rng(seed)
    stats = np.concatenate(
        [rng.standard_normal((n, latent)) * 2, rng.uniform(-8, 3, (n, latent))], 1
    ).astype(dtype)
    eps = rng.standard_normal((n, k, latent)).astype(dtype)
    log_px = (-100 + spread * rng.standard_normal((n, k))).astype(dtype)
    return stats, eps, log_px


@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 60), st.integers(1, 50)),
    seed=st.integers(0, 2**16),
)
def test_log_weights_kernel_follows_the_specification_within_its_bound(dtype, planted, shape,
                                                                       seed):  # fmt: skip
    """``log w`` within :func:`log_weights_bound` of ``log p(x|z) + log p(z) - log q(z|x)`` on
    any B, K, L; its shift by the row's largest is the specification's subtraction on those
    values, bit for bit. A copy that forgets ``v`` in ``log q`` breaks the bound."""
    stats, eps, log_px = multi_sample_case(dtype, *shape, seed)
    z, want = log_weights_spec(stats, eps, log_px)
    log_w, shifted = np.empty_like(log_px), np.empty_like(log_px)
    kernel = log_weights_without_logvar if planted else kernels.importance_log_weights
    kernel(stats, eps, z, log_px, log_w, shifted)
    within = np.abs(log_w.astype(np.float64) - want) <= log_weights_bound(
        log_px, eps, stats[:, shape[2] :], z
    )
    if planted:
        assert not within.all()
    else:
        assert within.all()
        assert same_bits(shifted, log_w - log_w.max(axis=1, keepdims=True))


def softmax_skipping_the_last(e, tau):
    """Planted: the weights normalized by the sum of all but the last sample."""
    total = e[:, :-1].sum(axis=1, keepdims=True) if e.shape[1] > 1 else e
    w = e / total
    e[...] = np.where(w < tau, 0, w)


@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(2, 300)),
    spread=st.sampled_from([0.1, 3.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_softmax_kernel_follows_the_specification_within_its_bound(dtype, planted, shape,
                                                                   spread, seed):  # fmt: skip
    """The flushed weights within ``(2 K + 2) u`` of the specification's
    (:func:`numpy_vae.bounds.normalized_weights`, then
    :func:`numpy_vae.fast.objectives.flush_negligible_weights`), relative, from the same
    ``log w``: the two sums over K (the kernel's running, NumPy's pairwise from 8 on) are each
    within ``(K - 1) u``, the divisions within ``u``. Where one is flushed to 0 the other is 0
    or within that bound of ``tau``. Spreads of 30 nats put weights below ``tau`` in float32.
    A copy that leaves the last sample out of the sum breaks the bound."""
    from numpy_vae.bounds import normalized_weights
    from numpy_vae.fast.objectives import flush_negligible_weights

    n, k = shape
    log_w = (-100 + spread * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)
    if planted:  # the last sample the best one, so that leaving it out shows
        log_w[:, -1] = log_w.max(axis=1)
    want = flush_negligible_weights(normalized_weights(log_w, np), np).astype(np.float64)
    tau = dtype(np.finfo(dtype).tiny ** 0.5)
    e = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    (softmax_skipping_the_last if planted else kernels.softmax_rows)(e, tau)
    u = np.finfo(dtype).eps / 2
    bound = (2 * k + 2) * u * np.maximum(want, float(tau))
    within = np.abs(e - want) <= bound
    assert within.all() != planted


def encoder_gradient_passes(d_rows, w_tilde, z, eps, sigma):
    """The specification: :class:`numpy_vae.bounds.Reparameterized` as
    :meth:`numpy_vae.fast.objectives.FastMultiSample.backward` calls it, negated."""
    from numpy_vae.bounds import Reparameterized

    n, k, latent = eps.shape
    w_tilde_g = -(d_rows.reshape(n, k, latent) + w_tilde[:, :, None] * z)
    d_mu, d_logvar = Reparameterized().encoder_gradient(w_tilde_g, w_tilde, eps, sigma)
    return np.concatenate([-d_mu, -d_logvar], 1)


def encoder_gradient_regrouped(d_rows, w_tilde, z, eps, sigma, d_stats):
    """Planted: the path term as ``(g sigma) eps / 2`` (the same product, another grouping)."""
    n, k, latent = eps.shape
    g = -(d_rows.reshape(n, k, latent) + w_tilde[:, :, None] * z)
    d_stats[:, :latent] = -g.sum(axis=1)
    d_stats[:, latent:] = -(((g * sigma[:, None, :]) * eps * 0.5).sum(axis=1) + 0.5)


def encoder_gradient_case(dtype, n, k, latent, seed, kernel):
    stats, eps, _ = multi_sample_case(dtype, n, k, latent, seed)
    rng = np.random.default_rng(seed + 1)
    d_rows = rng.standard_normal((n * k, latent + 3)).astype(dtype)[:, :latent]
    w_tilde = rng.dirichlet(np.ones(k), n).astype(dtype)
    sigma = np.exp(0.5 * stats[:, latent:])
    z = stats[:, None, :latent] + sigma[:, None, :] * eps
    d_stats = np.empty_like(stats)
    kernel(d_rows, w_tilde, z, eps, sigma, d_stats)
    return same_bits(d_stats, encoder_gradient_passes(d_rows, w_tilde, z, eps, sigma))


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 60), st.integers(2, 50)),
    seed=st.integers(0, 2**16),
)
def test_encoder_gradient_kernel_equals_the_specification_bitwise(dtype, shape, seed):
    """The plain estimator's gradient in ``[mu | v]``, bit for bit, on any B, K and L >= 2
    (the kernel's docstring says why not L = 1), from a strided decoder gradient (its rows
    wider than L, as with a label appended)."""
    assert encoder_gradient_case(dtype, *shape, seed, kernels.weighted_encoder_gradient)


@pytest.mark.parametrize("dtype", DTYPES)
def test_encoder_gradient_check_bites(dtype):
    """A copy that regroups ``g sigma eps / 2`` differs somewhere on a 4 x 16 x 16 case."""
    assert not encoder_gradient_case(dtype, 4, 16, 16, 0, encoder_gradient_regrouped)


# ----------------------------------------------------------- the rows kernel's sums of logs
#: Rows of logits for the rows kernel's passes: a few rows, widths past 1,024 (16 products of
#: up to 64 factors, and a remainder), logits of every scale.
ROW_CASES = dict(
    dtype=st.sampled_from(DTYPES),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 1100)),
    scale=st.sampled_from([0.5, 5.0, 40.0]),
    seed=st.integers(0, 2**16),
)


def log1p_row_sums_skipping_the_remainder(e, products, total):
    """Planted: the pixels past the last whole group of ``products`` left out."""
    whole = e.shape[1] // products * products
    kernels.log1p_row_sums(e[:, :whole].copy(), products, total)


@pytest.mark.parametrize("planted", [False, True])
@settings(max_examples=60, deadline=None)
@given(**ROW_CASES)
def test_log1p_row_sums_within_the_bound_and_the_check_bites(planted, dtype, shape, scale, seed):
    """Each row's sum S of log(1 + e) within ``(3 G + c + r + 2) u S`` of float64's log1p
    (each of the c products' logarithms within ``(3 G + 1) u`` relative, G c + r = D, then a
    running sum of c + r non-negative logarithms), for the ``e`` given. The planted copy (the
    remainder left out) breaks it where the remainder holds a pixel of non-negligible ``e``."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    e = np.exp(-np.abs(logits))
    products = fast_likelihoods.log_products(shape[1])
    total = np.empty(shape[0], dtype)
    (log1p_row_sums_skipping_the_remainder if planted else kernels.log1p_row_sums)(
        e, products, total
    )
    u = np.finfo(dtype).eps / 2
    want = np.log1p(e.astype(np.float64)).sum(axis=1)
    group, d = shape[1] // products, shape[1]
    r = d - group * products
    bound = (3 * group + products + r + 2) * u * want
    ok = np.all(np.abs(total - want) <= bound)
    if not planted:
        assert ok
    elif np.any(np.log1p(e[:, d - r :].astype(np.float64)).sum(axis=1) > bound):
        assert not ok  # (else what the copy leaves out is within the bound)


def weighted_sigmoid_rows_passes(logits, e, w):
    """The weighted sigmoid and its column sums as NumPy passes: what the kernel claims to
    equal bit for bit."""
    sigmoid = np.maximum(e, logits >= 0) / (e + 1)
    sigmoid *= w[:, None]
    return sigmoid, sigmoid.sum(axis=0)


def weighted_sigmoid_one_sided(logits, e, w, d_bias):
    """Planted: ``e / (1 + e)`` as every logit's sigmoid (right only where l < 0)."""
    logits[...] = -1
    kernels.weighted_sigmoid_rows(logits, e, w, d_bias)


def weighted_sigmoid_summed_before_the_weight(logits, e, w, d_bias):
    """Planted: the bias gradient summed from the sigmoid before the weight."""
    kernels.weighted_sigmoid_rows(logits, e, np.ones_like(w), d_bias)
    logits *= w[:, None]


@pytest.mark.parametrize("planted", [None, "one_sided", "unweighted_sum"])
@settings(max_examples=60, deadline=None)
@given(**ROW_CASES)
def test_weighted_sigmoid_rows_bitwise_and_the_check_bites(planted, dtype, shape, scale, seed):
    """``w_r sigmoid(l)`` over the logits and its sum over the rows bit for bit NumPy's
    passes (the sigmoid's division, then the weight; the rows summed in order), and within
    ``3 u`` relative (``1 + e``, the division, the weight; plus the smallest subnormal number
    where the product underflows) of float64's ``w_r max(e, 1[l >= 0]) / (1 + e)`` for the
    ``e`` given. Planted: every logit's sigmoid taken as ``e / (1 + e)`` (wrong for l > 0),
    the sums taken before the weight."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    e = np.exp(-np.abs(logits))
    w = rng.random(shape[0]).astype(dtype) + dtype(0.25)  # (never 1: the weight shows)
    want, want_sums = weighted_sigmoid_rows_passes(logits, e, w)
    written, sums = logits.copy(), np.empty(shape[1], dtype)
    copy = {
        None: kernels.weighted_sigmoid_rows,
        "one_sided": weighted_sigmoid_one_sided,
        "unweighted_sum": weighted_sigmoid_summed_before_the_weight,
    }[planted]
    copy(written, e, w, sums)
    e64 = e.astype(np.float64)
    exact = np.maximum(e64, logits >= 0) / (1 + e64)
    same = same_bits(written, want) and same_bits(sums, want_sums)
    u, smallest = np.finfo(dtype).eps / 2, np.finfo(dtype).smallest_subnormal
    want64 = w[:, None] * exact  # (a product below the normal range rounds absolutely)
    close = np.all(np.abs(written - want64) <= 3 * u * want64 + smallest)
    if planted is None:
        assert same and close
    elif planted == "one_sided" and (logits > 0).any():
        assert not same and not close
    elif planted == "unweighted_sum":
        assert not same


def weighted_rows_x_part_passes(h, w_tilde, xw, d_h):
    """:func:`~numpy_vae.fast.kernels.weighted_rows_x_part` as NumPy's passes."""
    n, k = w_tilde.shape
    h_bar = (w_tilde[:, :, None] * h.reshape(n, k, -1)).sum(axis=1)
    d_h = d_h.copy()
    d_h.reshape(n, k, -1)[...] -= w_tilde[:, :, None] * xw[:, None, :]
    return h_bar, d_h


def weighted_rows_x_part_other_example(h, w_tilde, xw, h_bar, d_h):
    """Planted: each example's samples paired with the next example's ``x W``."""
    kernels.weighted_rows_x_part(h, w_tilde, np.roll(xw, 1, axis=0), h_bar, d_h)


@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 6), st.integers(1, 60), st.integers(2, 40)),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_weighted_rows_x_part_bitwise_and_the_check_bites(planted, dtype, shape, seed):
    """``h_bar = sum_k w~_k h_k`` and ``d_h -= w~_k (x W)`` bit for bit NumPy's passes on any
    B, K and H > 1 (NumPy sums a single column over K pairwise, where the kernel sums in
    order). Planted: each example's samples paired with another example's ``x W``."""
    n, k, width = shape
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n * k, width)).astype(dtype)
    w_tilde = rng.random((n, k)).astype(dtype)
    xw, d_h = (rng.standard_normal(s).astype(dtype) for s in ((n, width), (n * k, width)))
    want_h_bar, want_d_h = weighted_rows_x_part_passes(h, w_tilde, xw, d_h)
    h_bar = np.empty((n, width), dtype)
    copy = weighted_rows_x_part_other_example if planted else kernels.weighted_rows_x_part
    copy(h, w_tilde, xw, h_bar, d_h)
    same = same_bits(h_bar, want_h_bar) and same_bits(d_h, want_d_h)
    if not planted:
        assert same
    elif n > 1 and (xw != np.roll(xw, 1, axis=0)).any():
        assert not same


def test_log_products_keep_every_product_within_64_factors():
    """Every width up to 20,000 pixels: a multiple of 8 products, at least 16, none with more
    than 64 factors (so a float32 product of numbers in [1, 2] stays below 2^64)."""
    for d in range(1, 20_001):
        c = fast_likelihoods.log_products(d)
        assert c % 8 == 0 and c >= 16 and d // c <= 64, d


def negative_abs_row_sums_skipping_the_remainder(logits, b, products, e, sums):
    """Planted: the remainder's pixels past the last whole group left out of the sums."""
    whole = logits.shape[1] // products * products
    kernels.negative_abs_row_sums(logits, b, products, e, sums)
    sums -= np.abs(logits[:, whole:]).sum(axis=1)


@pytest.mark.parametrize("planted", [False, True])
@settings(max_examples=60, deadline=None)
@given(**ROW_CASES)
def test_negative_abs_row_sums_within_the_bound_and_the_check_bites(planted, dtype, shape, scale,
                                                                    seed):  # fmt: skip
    """The logits become ``l = logits + b`` and ``e`` ``-|l|``, bit for bit, and each row's sum
    of ``|l|`` is within ``(G + c + r) u S`` of float64's (G c + r = D pixels in c running sums,
    then the sums and the remainder added: every term non-negative). Planted: the remainder's
    pixels left out, which breaks the bound wherever they weigh more than it."""
    rng = np.random.default_rng(seed)
    before = (rng.standard_normal(shape) * scale).astype(dtype)
    b = (rng.standard_normal(shape[1]) * scale).astype(dtype)
    logits = before + b  # what the kernel makes of them, in NumPy
    products = fast_likelihoods.log_products(shape[1])
    e, sums, written = np.empty_like(logits), np.empty(shape[0], dtype), before.copy()
    kernel = negative_abs_row_sums_skipping_the_remainder if planted else None
    (kernel or kernels.negative_abs_row_sums)(written, b, products, e, sums)
    assert np.array_equal(written, logits)
    want = np.abs(logits.astype(np.float64)).sum(axis=1)
    group, d = shape[1] // products, shape[1]
    r = d - group * products
    u = np.finfo(dtype).eps / 2
    bound = (group + products + r) * u * want
    ok = np.array_equal(e, -np.abs(logits)) and np.all(np.abs(sums - want) <= bound)
    left_out = np.abs(logits[:, d - r :].astype(np.float64)).sum(axis=1)
    if not planted:
        assert ok
    elif np.any(left_out > 2 * bound):  # (else what the copy leaves out is within the bound)
        assert not ok
