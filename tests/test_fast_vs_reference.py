"""The fast path computes what the specification computes: the bounds, stated and tested.

The specification is ``numpy_vae/{likelihoods,layers,model,optim}.py`` in textbook form; the fast
path (``numpy_vae/fast/``) is what training runs. The bounds, with ``u`` the unit roundoff of the
dtype (``2**-24`` in float32, ``2**-53`` in float64):

- Layers, KL, reparameterization, the head and the two paths into ``mu``/``logvar``: the fast
  path keeps the specification's order of operations, so these are **bitwise equal**.
- Bernoulli, per example: the fast kernel forms ``max(l, 0) - x l`` and a Sterbenz-corrected
  ``log(1 + e)`` where the specification forms ``logaddexp(0, l) - x l``. Each of the D terms is
  within a few ``u`` of its magnitude ``|softplus(l)| + |x l|`` in both, and a sum of D terms
  adds at most ``D u`` of the sum of magnitudes, so ``|fast - ref| <= (D + 8) u S`` with
  ``S = sum_d (softplus(l_d) + |x_d l_d|)``.
- Bernoulli gradient, per entry: ``sigmoid(l) - x`` from ``f / u`` against ``1 / (1 + e)`` or
  ``e / (1 + e)``: at most 4 ``u`` apart (both are in [-1, 1]).
- The whole model, one step: loss within the Bernoulli bound summed over the batch; every
  gradient array within ``64 u`` of its largest entry (the Bernoulli gradient's few-``u``
  differences, carried linearly through the decoder's and encoder's products).
- Adam, T steps on the same gradients: the fast update rounds ``m``, ``v`` and the step in
  another order. Each step's rounding errors are a few ``u`` of the terms' magnitudes, and an
  error in ``m`` decays like ``beta1^k``, one in ``v`` like ``beta2^k``. With ``|m|`` the
  first moment of ``|g|`` (what ``m`` would be without cancellation), ``m`` is within
  ``10 * 4 u |m|`` (``1/(1-beta1) = 10`` steps' worth) and ``v`` within ``1000 * 4 u v``
  (``v`` sums squares: nothing cancels); an update is then within ``(10 + 500 + 8) u`` of its
  magnitude ``lr |m|_hat / (sqrt(v_hat) + eps)``, and the parameters differ by at most the sum
  over steps: ``|fast - ref| <= 518 u * sum_t lr |m|_hat_t / (sqrt(v_hat_t) + eps)``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from numpy_vae import VAE, Adam, check_gradients, get_backend
from numpy_vae.fast import FastAdam, FastVAE
from numpy_vae.fast.likelihoods import bernoulli_nll_fused
from numpy_vae.likelihoods import bernoulli_nll

DTYPES = [np.float32, np.float64]
VARIANTS = {
    "default": {},
    "beta": {"beta": 4.0},
    "free_bits": {"free_bits": 0.05},
    "conditional": {"n_classes": 4},
    "gaussian": {"likelihood": "gaussian", "gaussian_sigma": 0.7},
    "deep_tanh": {"hidden_dims": (8, 6), "activation": "tanh"},
    "leaky_relu": {"activation": "leaky_relu"},
    "sigmoid": {"activation": "sigmoid"},
}


def unit_roundoff(dtype):
    return np.finfo(dtype).eps / 2


# ------------------------------------------------------------------ the Bernoulli kernel
logit_values = st.one_of(
    st.floats(-30, 30), st.sampled_from([0.0, -0.0, 1e4, -1e4, 88.0, -88.0, 1e-30, -1e-30])
)


@settings(max_examples=200, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 40)),
    data=st.data(),
)
def test_fused_bernoulli_matches_the_textbook_form(dtype, shape, data):
    logits = data.draw(arrays(dtype, shape, elements=logit_values.map(lambda v: dtype(v))))
    x = data.draw(arrays(dtype, shape, elements=st.sampled_from([0.0, 1.0, 0.25, 0.5, 0.7])))
    ref_nll, ref_grad = bernoulli_nll(logits, x, np)
    fast_nll, fast_grad = bernoulli_nll_fused(logits.copy(), x, np)
    u = unit_roundoff(dtype)
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    magnitude = (np.logaddexp(0, l64) + np.abs(x64 * l64)).sum(axis=1)
    bound = (shape[1] + 8) * u * magnitude
    assert np.all(np.abs(fast_nll.astype(np.float64) - ref_nll) <= bound)
    assert np.max(np.abs(fast_grad.astype(np.float64) - ref_grad)) <= 4 * u
    assert fast_nll.dtype == ref_nll.dtype == dtype and fast_grad.dtype == dtype


def test_fused_bernoulli_in_place_and_into_buffers_gives_the_same_numbers():
    from numpy_vae.fast.buffers import Buffers

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((7, 50)) * 20).astype(np.float32)
    x = (rng.random((7, 50)) < 0.4).astype(np.float32)
    fresh = bernoulli_nll_fused(logits, x, np)
    out = logits.copy()
    into = bernoulli_nll_fused(out, x, np, out=out, buffers=Buffers(np))
    np.testing.assert_array_equal(fresh[0], into[0])
    np.testing.assert_array_equal(fresh[1], into[1])
    assert into[1] is out


def exact_bernoulli_nll(logits, x):
    """The oracle: ``max(l, 0) - x l + log1p(exp(-|l|))`` in float64, a sum of terms >= 0
    (``x`` in [0, 1]), so nothing cancels."""
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    return (np.maximum(l64, 0) - x64 * l64 + np.log1p(np.exp(-np.abs(l64)))).sum(axis=1)


def uncorrected_kernel(logits, x):
    """The fused kernel without its Sterbenz correction: ``log(1 + e)`` as ``log(u)``."""
    e = np.exp(-np.abs(logits))
    return ((logits >= 0) - x) * logits + np.log(1 + e)


@settings(max_examples=100, deadline=None)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 784)), data=st.data())
def test_fused_bernoulli_is_accurate_where_the_textbook_form_cancels(shape, data):
    """Where ``x = 1`` and the logits are large, ``softplus(l) - x l`` cancels; the fused form
    sums terms >= 0 and stays within ``(D + 8) u`` of the value itself (float32)."""
    logits = data.draw(arrays(np.float32, shape, elements=st.floats(0, 60, width=32)))
    x = np.ones(shape, np.float32)
    exact = exact_bernoulli_nll(logits, x)
    fast, _ = bernoulli_nll_fused(logits.copy(), x, np)
    u = unit_roundoff(np.float32)
    assert np.all(np.abs(fast - exact) <= (shape[1] + 8) * u * exact)


def test_the_accuracy_bound_bites():
    """Plant the uncorrected kernel: at l = 20 its ``log(1 + e)`` rounds to 0 and the bound
    of the test above fails."""
    logits = np.full((1, 784), 20.0, np.float32)
    x = np.ones_like(logits)
    exact = exact_bernoulli_nll(logits, x)
    wrong = uncorrected_kernel(logits, x).sum(axis=1)
    assert np.all(np.abs(wrong - exact) > (784 + 8) * unit_roundoff(np.float32) * exact)


# ------------------------------------------------------------------ the whole model
def twins(variant, dtype, seed, input_dim=12):
    backend = get_backend("numpy", np.dtype(dtype).name)
    kwargs = {"hidden_dims": (8,), "latent_dim": 3, **VARIANTS[variant]}
    ref = VAE(input_dim, backend=backend, seed=seed, **kwargs)
    fast = FastVAE(input_dim, backend=backend, seed=seed, **kwargs)
    return ref, fast


def batch(model, seed, n=5):
    rng = np.random.default_rng(seed)
    if model.likelihood.name == "gaussian":
        x = rng.normal(0.5, 0.5, (n, model.input_dim))
    else:
        x = rng.random((n, model.input_dim))
    eps = rng.standard_normal((n, model.latent_dim))
    y = rng.integers(0, model.n_classes, n) if model.n_classes else None
    return x.astype(model.dtype), y, eps.astype(model.dtype)


@settings(max_examples=40, deadline=None)
@given(
    variant=st.sampled_from(list(VARIANTS)),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
    logit_shift=st.sampled_from([0.0, 30.0, -30.0, 1e4]),
    logvar=st.floats(-20, 20),
)
def test_one_step_of_every_variant_matches(variant, dtype, seed, logit_shift, logvar):
    ref, fast = twins(variant, dtype, seed)
    for model in (ref, fast):
        # Extreme values where they matter: logits far into saturation, any logvar in [-20, 20].
        model.params["decoder.2.bias" if variant != "deep_tanh" else "decoder.4.bias"][::2] += (
            logit_shift
        )
        latent = model.latent_dim
        model.params["head.weight"][latent:] = 0
        model.params["head.bias"][latent:] = logvar
    x, y, eps = batch(ref, seed)
    w = 0.3
    r = ref.loss(x, y, eps=eps, kl_weight=w)
    f = fast.loss(x, y, eps=eps, kl_weight=w)
    u = unit_roundoff(dtype)
    if ref.likelihood.name == "gaussian":
        assert float(f.loss) == float(r.loss)
    else:
        logits = ref.decoder_output(_z(ref, x, y, eps), y)
        l64, x64 = logits.astype(np.float64), x.astype(np.float64)
        magnitude = (np.logaddexp(0, l64) + np.abs(x64 * l64)).sum()
        assert abs(float(f.loss) - float(r.loss)) <= (x.shape[1] + 8) * u * magnitude
    for name in ("kl", "kl_per_dim"):
        np.testing.assert_array_equal(getattr(f, name), getattr(r, name))
    assert set(fast.grads) == set(ref.grads)
    for name, g in ref.grads.items():
        scale = max(float(np.abs(g).max()), float(np.abs(fast.grads[name]).max()))
        assert np.max(np.abs(fast.grads[name] - g)) <= 64 * u * scale, name


def _z(model, x, y, eps):
    mu, logvar = model.encode(x, y)
    return mu + np.exp(0.5 * logvar) * eps


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_finite_differences_on_the_fast_path(variant):
    """The fast path's own gradients against central differences of its own loss (float64)."""
    _, fast = twins(variant, np.float64, seed=3)
    x, y, eps = batch(fast, seed=3)
    fast.loss(x, y, eps=eps, kl_weight=0.7)
    grads = {k: v.copy() for k, v in fast.grads.items()}
    errors = check_gradients(
        lambda: fast.loss(x, y, eps=eps, kl_weight=0.7, grad=False).loss, fast.params, grads
    )
    assert max(errors.values()) <= 1e-7, errors


def test_a_fast_path_bug_is_caught(monkeypatch):
    """Plant a wrong factor in the fast path's KL route (d_logvar of the two paths doubled):
    the one-step comparison must fail while the specification is untouched."""
    import numpy_vae.fast.model as fast_model

    original = fast_model.kl_standard_normal

    def doubled(mu, logvar, xp):
        kl, d_mu, d_logvar = original(mu, logvar, xp)
        return kl, d_mu, 2 * d_logvar

    monkeypatch.setattr(fast_model, "kl_standard_normal", doubled)
    ref, fast = twins("default", np.float64, seed=0)
    x, y, eps = batch(ref, seed=0)
    ref.loss(x, y, eps=eps)
    fast.loss(x, y, eps=eps)
    worst = max(np.max(np.abs(fast.grads[k] - g)) / np.abs(g).max() for k, g in ref.grads.items())
    assert worst > 1e-3


# ------------------------------------------------------------------ Adam
@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_adam_follows_the_textbook_adam_for_hundreds_of_steps(dtype):
    rng = np.random.default_rng(0)
    n, steps, lr, (b1, b2) = 5000, 300, 1e-3, (0.9, 0.999)
    p0 = rng.standard_normal(n).astype(dtype)
    p_ref, g_ref = p0.copy(), np.zeros(n, dtype)
    p_fast, g_fast = p0.copy(), np.zeros(n, dtype)
    ref, fast = Adam([p_ref], [g_ref], lr=lr), FastAdam([p_fast], [g_fast], lr=lr, threads=2)
    m_abs = np.zeros(n)  # m with |g| for g: the magnitude its rounding errors scale with
    step_magnitude = np.zeros(n)  # sum over steps of lr m_abs_hat / (sqrt(v_hat) + eps)
    for t in range(1, steps + 1):
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 2, n)).astype(dtype)
        g_ref[...] = g
        g_fast[...] = g
        ref.step()
        fast.step()
        m_abs = b1 * m_abs + (1 - b1) * np.abs(g.astype(np.float64))
        v_hat = ref.v[0].astype(np.float64) / (1 - b2**t)
        step_magnitude += lr * m_abs / (1 - b1**t) / (np.sqrt(v_hat) + 1e-8)
    u = unit_roundoff(dtype)
    assert np.all(np.abs(fast.m[0].astype(np.float64) - ref.m[0]) <= 10 * 4 * u * m_abs)
    assert np.all(np.abs(p_fast.astype(np.float64) - p_ref) <= 518 * u * step_magnitude)
    assert ref.step_count == fast.step_count == steps


def test_the_adam_bound_bites():
    """A fast Adam without bias correction of v (a real slip) is far outside the bound."""
    rng = np.random.default_rng(1)
    p_ref, g_ref = rng.standard_normal(100), np.zeros(100)
    p_bad = p_ref.copy()
    ref = Adam([p_ref], [g_ref], lr=1e-3)
    m, v, m_abs, magnitude = (np.zeros(100) for _ in range(4))
    for t in range(1, 51):
        g = rng.standard_normal(100)
        g_ref[...] = g
        ref.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p_bad -= 1e-3 / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)  # v not bias-corrected
        m_abs = 0.9 * m_abs + 0.1 * np.abs(g)
        magnitude += 1e-3 * m_abs / (1 - 0.9**t) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    assert np.any(np.abs(p_bad - p_ref) > 518 * unit_roundoff(np.float64) * magnitude)
