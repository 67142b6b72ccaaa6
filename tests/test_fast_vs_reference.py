"""The fast path computes what the specification computes: the bounds, stated and tested.

The specification is ``numpy_vae/{likelihoods,layers,model,optim}.py`` in textbook form; the fast
path (``numpy_vae/fast/``) is what training runs. With ``u`` the unit roundoff of the dtype
(``2**-24`` in float32, ``2**-53`` in float64):

- **Bitwise equal**: every gradient of the model and the KL terms, for every variant. The
  layers, the head, the reparameterization and the two paths into ``mu``/``logvar`` keep the
  specification's order of operations, and the fused Bernoulli gradient ``f / (1 + e)`` is the
  specification's ``1 / (1 + e)`` (for ``l >= 0``) or ``e / (1 + e)`` (for ``l < 0``) exactly.
- **The Bernoulli value**, per example. The fast kernel forms ``(1[l >= 0] - x) l`` and a
  Sterbenz-corrected ``log(1 + e)``, the specification ``max(l, 0) - x l + log1p(e)``: on both
  sides each of the D terms is within ``8 u`` of ``softplus(l) + |x l|``, and each side's sum of
  D terms adds at most ``D u`` of the summed magnitudes, so
  ``|fast - ref| <= (2 D + 16) u S`` with ``S = sum_d (softplus(l_d) + |x_d l_d|)``.
- **Adam**, step by step on the same gradients. ``v`` is bitwise equal (the same operations in
  the same order). ``m`` is rounded in another order (``m + (1 - b1)(g - m)`` against
  ``b1 m + (1 - b1) g``): each step adds at most ``4 u (|m| + |g|)`` and earlier differences
  shrink by ``b1``, so ``|dm_t| <= e_t`` with ``e_t = b1 e_(t-1) + 4 u (|m_(t-1)| + |g_t|)``.
  An update ``s m / (sqrt(v) + eps_hat)`` then differs by at most
  ``lr_t (e_t + 8 u |m_t|) / (sqrt(v_hat_t) + eps)`` (``lr_t = lr / (1 - b1^t)``), and the
  parameters by the sum of those plus ``2 u |p|`` per step. The test tracks this bound as it
  goes, on dense gradients and on gradients that stop (a dead unit: ``m`` decays while its
  rounding error is of the size of the past gradients).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from numpy_vae import VAE, Adam, check_gradients, get_backend
from numpy_vae.fast import FastAdam, FastVAE
from numpy_vae.fast.likelihoods import bernoulli_nll_fused
from numpy_vae.gradcheck import relative_error
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
    "made": {"decoder": "made", "made_hidden": (9,)},
    "made_deep_tanh_direct": {
        "decoder": "made",
        "made_hidden": (9, 7),
        "made_direct": True,
        "activation": "tanh",
    },
    "made_conditional_without_z": {
        "decoder": "made",
        "made_hidden": (9,),
        "n_classes": 3,
        "made_z": False,
    },
}


def unit_roundoff(dtype):
    return np.finfo(dtype).eps / 2


# ------------------------------------------------------------------ the Bernoulli kernel
def assert_nll_within_bound(fast, ref, logits, x):
    """The per-example bound of the module docstring."""
    u = unit_roundoff(logits.dtype)
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    magnitude = (np.logaddexp(0, l64) + np.abs(x64 * l64)).sum(axis=1)
    bound = (2 * logits.shape[1] + 16) * u * magnitude
    assert np.all(np.abs(fast.astype(np.float64) - ref) <= bound), np.abs(fast - ref) / bound


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
    assert fast_nll.dtype == ref_nll.dtype == dtype and fast_grad.dtype == dtype
    assert_nll_within_bound(fast_nll, ref_nll, logits, x)
    np.testing.assert_array_equal(fast_grad, ref_grad)


def test_the_nll_bound_bites():
    """The fused kernel without its Sterbenz correction (``log(1 + e)`` as ``log(u)``) drops
    ``e`` where it is below ``u``: at l = -20, x = 0 every term is lost, outside the bound."""
    logits = np.full((1, 784), -20.0, np.float32)
    x = np.zeros_like(logits)
    ref, _ = bernoulli_nll(logits, x, np)
    e = np.exp(-np.abs(logits))
    uncorrected = (((logits >= 0) - x) * logits + np.log(1 + e)).sum(axis=1)
    assert float(uncorrected[0]) == 0.0 < float(ref[0])
    with pytest.raises(AssertionError):
        assert_nll_within_bound(uncorrected, ref, logits, x)


def test_fused_bernoulli_in_place_and_into_buffers_gives_the_same_numbers():
    from numpy_vae.fast.buffers import Buffers

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((7, 50)) * 20).astype(np.float32)
    x = (rng.random((7, 50)) < 0.4).astype(np.float32)
    fresh = bernoulli_nll_fused(logits, x, np)
    out = np.empty_like(logits)
    into = bernoulli_nll_fused(logits, x, np, out=out, buffers=Buffers(np))
    over = logits.copy()  # out = logits: the compiled pass writes into a buffer instead
    buffers = Buffers(np)
    over_logits = bernoulli_nll_fused(over, x, np, out=over, buffers=buffers)
    for nll, grad in (into, over_logits):
        np.testing.assert_array_equal(fresh[0], nll)
        np.testing.assert_array_equal(fresh[1], grad)
    assert into[1] is out
    assert over_logits[1].base is buffers._arrays["d"]


@settings(max_examples=100, deadline=None)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 784)), data=st.data())
def test_both_forms_are_accurate_where_the_terms_are_tiny(shape, data):
    """At x = 1 and a large logit (and x = 0 and a very negative one) the value is a sum of
    tiny ``log1p(exp(-|l|))`` terms; both forms keep them, within ``(D + 8) u`` of the value."""
    logits = data.draw(arrays(np.float32, shape, elements=st.floats(0, 60, width=32)))
    x = np.ones(shape, np.float32)
    l64 = logits.astype(np.float64)
    exact = np.log1p(np.exp(-l64)).sum(axis=1)
    bound = (shape[1] + 8) * unit_roundoff(np.float32) * exact
    for nll in (bernoulli_nll(logits, x, np)[0], bernoulli_nll_fused(logits.copy(), x, np)[0]):
        assert np.all(np.abs(nll - exact) <= bound)


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
    elif model.decoder.binary_pixels:  # binary pixels only
        x = (rng.random((n, model.input_dim)) < 0.5).astype(np.float64)
    else:
        x = rng.random((n, model.input_dim))
    eps = rng.standard_normal((n, model.latent_dim))
    y = rng.integers(0, model.n_classes, n) if model.n_classes else None
    return x.astype(model.dtype), y, eps.astype(model.dtype)


def assert_one_step_matches(ref, fast, x, y, eps, w=0.3):
    r = ref.loss(x, y, eps=eps, kl_weight=w)
    f = fast.loss(x, y, eps=eps, kl_weight=w)
    assert set(fast.grads) == set(ref.grads)
    for name, g in ref.grads.items():
        np.testing.assert_array_equal(fast.grads[name], g, err_msg=name)
    for name in ("kl", "kl_per_dim"):
        np.testing.assert_array_equal(getattr(f, name), getattr(r, name))
    if ref.likelihood.name == "gaussian":  # the specification's own kernel on both paths
        assert float(f.loss) == float(r.loss)
    else:
        mu, logvar = ref.encode(x, y)
        logits = ref.decoder_output(mu + np.exp(0.5 * logvar) * eps, y, x=x)
        recon_ref = bernoulli_nll(logits, x, np)[0].sum(keepdims=True)
        recon_fast = np.asarray(f.recon, np.float64).reshape(1)
        # The batch sum: the per-example bound, over the batch's B x D terms.
        assert_nll_within_bound(recon_fast, recon_ref, logits.reshape(1, -1), x.reshape(1, -1))
        u = unit_roundoff(x.dtype)
        assert abs(float(f.loss) - float(r.loss)) <= abs(float(f.recon) - float(r.recon)) + (
            4 * u * (abs(float(r.loss)) + abs(float(r.recon)))
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    logit_shift=st.sampled_from([0.0, 30.0, -30.0, 1e4]),
    logvar=st.floats(-20, 20),
)
def test_one_step_of_every_variant_matches(variant, dtype, seed, logit_shift, logvar):
    ref, fast = twins(variant, dtype, seed)
    last = [n for n in ref.params if n.startswith("decoder") and n.endswith("bias")][-1]
    for model in (ref, fast):
        # Extreme values where they matter: logits far into saturation, any logvar in [-20, 20].
        model.params[last][::2] += logit_shift
        model.params["head.weight"][model.latent_dim :] = 0
        model.params["head.bias"][model.latent_dim :] = logvar
    assert_one_step_matches(ref, fast, *batch(ref, seed))


def test_the_one_step_comparison_bites(monkeypatch):
    """Plant a wrong factor in the fast path's KL route (its d_logvar doubled, in the kernel)."""
    import numpy_vae.fast.objectives as fast_objectives

    original = fast_objectives.reparam_kl_backward

    def doubled(stats, d_z, eps, sigma, var, weight, d_stats):
        original(stats, d_z, eps, sigma, var, weight, d_stats)
        latent = d_z.shape[1]
        d_stats[:, latent:] += 0.5 * (var - 1) * weight

    monkeypatch.setattr(fast_objectives, "reparam_kl_backward", doubled)
    ref, fast = twins("default", np.float64, seed=0)
    with pytest.raises(AssertionError, match="encoder.0.weight"):
        assert_one_step_matches(ref, fast, *batch(ref, seed=0))


def test_the_one_step_comparison_bites_on_the_last_bias(monkeypatch):
    """Plant a slip in the Bernoulli pass's sum of the last bias's gradient (the ELBO's pass
    sums it, not the layer): its last row left out."""
    import numpy_vae.fast.likelihoods as fast_likelihoods

    original = fast_likelihoods.bernoulli_row_sums

    def short(logits, x, e, products, nll, d_logits, grad, d_bias):
        original(logits, x, e, products, nll, d_logits, grad, d_bias)
        if d_bias.size:
            d_bias -= d_logits[-1]

    monkeypatch.setattr(fast_likelihoods, "bernoulli_row_sums", short)
    ref, fast = twins("default", np.float64, seed=0)
    last = [name for name in ref.params if name.startswith("decoder")][-1]
    with pytest.raises(AssertionError, match=last.replace(".", r"\.")):
        assert_one_step_matches(ref, fast, *batch(ref, seed=0))


def test_a_forward_alone_leaves_the_gradients_as_they_were():
    """The ELBO's Bernoulli pass sums the last bias's gradient during the forward pass, into a
    buffer that backward copies to the layer: a loss without its gradient (an evaluation)
    between a step and the reading of its gradients changes none of them. Planted: the sums
    written straight into the layer's gradient, which that evaluation then overwrites."""
    ref, fast = twins("default", np.float64, seed=0)
    x, y, eps = batch(ref, seed=0)
    fast.loss(x, y, eps=eps)
    grads = {name: g.copy() for name, g in fast.grads.items()}
    other_x, other_y, other_eps = batch(ref, seed=1)
    fast.loss(other_x, other_y, eps=other_eps, grad=False)
    for name, g in grads.items():
        np.testing.assert_array_equal(fast.grads[name], g, err_msg=name)
    last = [name for name in fast.params if name.startswith("decoder")][-1]
    fast.buffers["loss"]._arrays["d_bias"] = fast.grads[last]  # planted: no buffer of its own
    fast.loss(x, y, eps=eps)
    fast.loss(other_x, other_y, eps=other_eps, grad=False)
    assert not np.array_equal(fast.grads[last], grads[last])


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


# ------------------------------------------------------------------ Adam
def adam_gradients(n, steps, dtype, kind, rng):
    """Dense gradients of mixed scales, or ones that stop after 3 steps for half the entries."""
    for t in range(steps):
        g = rng.standard_normal(n) * 10.0 ** rng.integers(-4, 2, n)
        if kind == "stopping" and t >= 3:
            g[: n // 2] = 0
        yield g.astype(dtype)


def run_adam_pair(fast_cls, n, steps, dtype, kind, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Both optimizers on the same gradients; asserts the module docstring's bounds each step."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(dtype)
    p_ref, g_ref, p_fast, g_fast = p0.copy(), np.zeros(n, dtype), p0.copy(), np.zeros(n, dtype)
    ref = Adam([p_ref], [g_ref], lr=lr, betas=(b1, b2), eps=eps)
    fast = fast_cls([p_fast], [g_fast], lr=lr, betas=(b1, b2), eps=eps, threads=2)
    u = unit_roundoff(dtype)
    e_m, e_p = np.zeros(n), np.zeros(n)
    for t, g in enumerate(adam_gradients(n, steps, dtype, kind, rng), start=1):
        m_before = ref.m[0].astype(np.float64)
        g_ref[...] = g
        g_fast[...] = g
        ref.step()
        fast.step()
        np.testing.assert_array_equal(fast.v[0], ref.v[0])
        e_m = b1 * e_m + 4 * u * (np.abs(m_before) + np.abs(g.astype(np.float64)))
        assert np.all(np.abs(fast.m[0].astype(np.float64) - ref.m[0]) <= e_m), t
        v_hat = ref.v[0].astype(np.float64) / (1 - b2**t)
        m_now = np.abs(ref.m[0].astype(np.float64))
        e_p += lr / (1 - b1**t) * (e_m + 8 * u * m_now) / (np.sqrt(v_hat) + eps)
        e_p += 2 * u * np.abs(p_ref.astype(np.float64))
        assert np.all(np.abs(p_fast.astype(np.float64) - p_ref) <= e_p), t
    return ref, fast


@pytest.mark.parametrize("kind", ["dense", "stopping"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_adam_follows_the_textbook_adam_for_hundreds_of_steps(dtype, kind):
    n = 2 * FastAdam.MIN_ELEMENTS_PER_THREAD + 5  # long enough for two threads to split it
    ref, fast = run_adam_pair(FastAdam, n, 300, dtype, kind)
    assert ref.step_count == fast.step_count == 300


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_adam_gives_the_same_bits_for_any_thread_count(dtype):
    """Threads only change which slice the kernel works on: a vector of 1001 numbers in 2 or 3
    threads (ranges that are not multiples of 16 at the end) is bitwise the one-thread update."""
    n, steps = 1001, 20
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = list(adam_gradients(n, steps, dtype, "stopping", rng))
    runs = []
    for threads in (1, 2, 3):
        p, g = p0.copy(), np.zeros(n, dtype)
        opt = FastAdam([p], [g], lr=1e-2, threads=threads)
        opt.MIN_ELEMENTS_PER_THREAD = 100  # so that three threads do split 1001 numbers
        for grad in grads:
            g[...] = grad
            opt.step()
        runs.append((p, opt.m[0], opt.v[0]))
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_adam_bound_bites():
    """A fast Adam that forgets to bias-correct ``eps`` (``eps_hat = eps``) is caught."""
    import numpy_vae.fast.optim as fast_optim

    class Planted(FastAdam):
        def step(self):
            eps = self.eps
            self.eps = eps / np.sqrt(1 - self.betas[1] ** (self.step_count + 1))
            try:
                super().step()
            finally:
                self.eps = eps

    assert fast_optim.FastAdam is FastAdam
    with pytest.raises(AssertionError):
        run_adam_pair(Planted, 1000, 50, np.float64, "stopping", eps=1e-3)


# ---------------------------------------------------------------------- the k-sample evaluation
def sample_log_likelihood_pair(dtype, seed=0, n=3, k=7, conditional=False):
    backend = get_backend("numpy", dtype)
    kw = dict(activation="tanh", backend=backend, seed=seed, n_classes=4 if conditional else 0)
    spec, fast = (
        VAE(30, hidden_dims=(9, 8), latent_dim=4, **kw),
        FastVAE(30, hidden_dims=(9, 8), latent_dim=4, **kw),
    )
    rng = np.random.default_rng(seed)
    for layer in (spec.decoder.layers[-1], fast.decoder.layers[-1]):
        layer.bias[...] = np.linspace(-12, 12, 30)  # saturated logits on both sides
    x = (rng.random((n, 30)) > 0.5).astype(dtype)
    z = (3 * rng.standard_normal((n, k, 4))).astype(dtype)
    y = rng.integers(0, 4, n) if conditional else None
    return spec, fast, x, z, y


def sample_log_likelihood_bound(model, x, z, y):
    """(D + H + 16) u times the sum of the magnitudes the two orders round (every product
    x_d W_dj h_j and W_dj h_j, every x_d b_d and b_d, every softplus(l_d): the fast kernel
    forms sum_d x_d l_d and sum_d l_d as dots over H, and max(l, 0) as (l + |l|) / 2), plus
    (D + 64) u for its logarithms of products of up to 64 factors in [1, 2] (each within
    (3 G + 1) u, relative, of its value)."""
    n, k, latent = z.shape
    rows = z.reshape(n * k, latent).astype(np.float64)
    if y is not None:
        rows = np.concatenate([rows, np.eye(4)[np.repeat(y, k)]], axis=1)
    h = rows
    for layer in model.decoder.layers[:-1]:
        h = layer.forward(h.astype(model.dtype)).astype(np.float64)
    last = model.decoder.layers[-1]
    w, b = last.weight.astype(np.float64), last.bias.astype(np.float64)
    logits = h @ w.T + b
    x_rows = np.repeat(x.astype(np.float64), k, axis=0)
    magnitude = (np.abs(x_rows) @ np.abs(w) * np.abs(h)).sum(axis=1)
    magnitude += (np.abs(h) @ np.abs(w).T).sum(axis=1) + np.abs(b).sum()
    magnitude += np.abs(x_rows) @ np.abs(b) + np.logaddexp(0, logits).sum(axis=1)
    u = np.finfo(model.dtype).eps / 2
    d, hidden = w.shape
    return ((d + hidden + 16) * u * magnitude + (d + 64) * u).reshape(n, k)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sample_log_likelihood_matches_the_specification(dtype, conditional):
    spec, fast, x, z, y = sample_log_likelihood_pair(dtype, conditional=conditional)
    want = spec.sample_log_likelihood(x, z, y).astype(np.float64)
    got = fast.sample_log_likelihood(x, z, y).astype(np.float64)
    assert np.all(np.abs(got - want) <= sample_log_likelihood_bound(spec, x, z, y))


def test_sample_log_likelihood_bound_bites():
    """Planted: the ``x . b`` term of ``sum_d x_d l_d`` forgotten (what the kernel would return
    without its line ``xl += x @ b``)."""
    spec, fast, x, z, y = sample_log_likelihood_pair("float64")
    real = fast.sample_log_likelihood(x, z, y)
    planted = real - (x @ fast.decoder.layers[-1].bias)[:, None]
    want = spec.sample_log_likelihood(x, z, y)
    bound = sample_log_likelihood_bound(spec, x, z, y)
    assert np.all(np.abs(real - want) <= bound)
    assert not np.all(np.abs(planted - want) <= bound)


# ---------------------------------------------------------------------- the multi-sample step
SAMPLED = [
    dict(activation="tanh", estimator="reparam"),
    dict(activation="relu", estimator="dreg"),
    dict(activation="tanh", estimator="stl", n_classes=3),
    dict(activation="leaky_relu", estimator="reparam", likelihood="gaussian"),
    dict(activation="tanh", estimator="reparam", decoder="made", made_hidden=(9,)),
    dict(
        activation="relu",
        estimator="stl",
        decoder="made",
        made_hidden=(9, 7),
        made_direct=True,
        n_classes=3,
    ),  # fmt: skip
]


def sampled_pair(dtype, variant, k=5, n=6, seed=0, objective="iwae"):
    kw = dict(variant, backend=get_backend("numpy", dtype), objective=objective, k=k, seed=seed)
    if objective == "vae":
        kw["estimator"] = "reparam"
    spec, fast = (
        VAE(30, hidden_dims=(9, 8), latent_dim=4, **kw),
        FastVAE(30, hidden_dims=(9, 8), latent_dim=4, **kw),
    )
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 30)) > 0.5).astype(dtype)
    y = rng.integers(0, 3, n) if variant.get("n_classes") else None
    eps = rng.standard_normal((n, k, 4)).astype(dtype)
    return spec, fast, x, y, eps


def sampled_errors(spec, fast, x, y, eps):
    a, b = spec.loss(x, y, eps=eps), fast.loss(x, y, eps=eps)
    loss = abs(float(a.loss) - float(b.loss)) / abs(float(a.loss))
    return loss, {name: relative_error(spec.grads[name], fast.grads[name]) for name in spec.grads}


def sampled_kernels(variant):
    """The Bernoulli kernels a variant's step can take: both for the MLP decoder, the
    broadcast one for MADE (the rows kernel needs the MLP's last layer); the Gaussian
    likelihood has a single path."""
    if variant.get("likelihood") == "gaussian":
        return ["rows"]
    return ["broadcast"] if variant.get("decoder") == "made" else ["rows", "broadcast"]


SAMPLED_KERNELS = [
    pytest.param(variant, kernel, id="-".join(map(str, [*variant.values(), kernel])))
    for variant in SAMPLED
    for kernel in sampled_kernels(variant)
]


@pytest.mark.parametrize("objective", ["vae", "iwae"])
@pytest.mark.parametrize(("variant", "kernel"), SAMPLED_KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fast_multi_sample_step_matches_the_specification(dtype, variant, objective, kernel):
    """Bound, per gradient array, relative to its largest entry: 8 (B K + D + H) u. The fast
    Bernoulli rows kernel never repeats x: it applies the ``- c_k x_b`` part of the output
    gradient per example (``dW -= x^T sum_k c_k h_k``, ...), so each entry is the same terms
    summed in another grouping, sums of at most B K + D + H terms. The loss: 8 D u relative
    (its softplus sum is formed from logarithms of products and (sum l + sum |l|) / 2). The
    broadcast kernel (the ELBO's, below ``rows_kernel_min_k`` samples) is held to the same."""
    spec, fast, x, y, eps = sampled_pair(dtype, variant, objective=objective)
    fast.objective.rows_kernel_min_k = 1 if kernel == "rows" else 10**9
    n, k = eps.shape[:2]
    u = np.finfo(dtype).eps / 2
    for _ in range(2):  # the second step runs on buffers the first one made
        loss, grads = sampled_errors(spec, fast, x, y, eps)
        assert loss <= 8 * 30 * u
        bound = 8 * (n * k + 30 + 9) * u
        assert max(grads.values()) <= bound, grads


def test_the_multi_sample_bound_bites(monkeypatch):
    """Planted: the rows kernel's last-layer bias gradient without its ``- sum_b x_b`` part."""
    spec, fast, x, y, eps = sampled_pair("float64", SAMPLED[0])
    fast.objective.rows_kernel_min_k = 1
    bias = fast.decoder.layers[-1].d_bias
    real_backward = fast.objective.backward
    x_sum = x.sum(axis=0)

    def planted(model):
        real_backward(model)
        bias[...] += x_sum

    monkeypatch.setattr(fast.objective, "backward", planted)
    _, grads = sampled_errors(spec, fast, x, y, eps)
    assert grads["decoder.4.bias"] > 8 * (30 + 30 + 9) * np.finfo("float64").eps


def test_the_multi_sample_bound_bites_on_the_broadcast_kernel(monkeypatch):
    """Planted: the known public bug in the broadcast kernel, each example's pixels paired
    with another example's samples."""
    import numpy_vae.fast.objectives as fast_objectives

    real = fast_objectives.bernoulli_nll_fused

    def swapped(logits, x, xp, out, buffers):
        return real(logits, x[::-1], xp, out, buffers)

    monkeypatch.setattr(fast_objectives, "bernoulli_nll_fused", swapped)
    spec, fast, x, y, eps = sampled_pair("float64", SAMPLED[0])
    fast.objective.rows_kernel_min_k = 10**9
    _, grads = sampled_errors(spec, fast, x, y, eps)
    assert max(grads.values()) > 8 * (30 + 30 + 9) * np.finfo("float64").eps


def test_the_made_multi_sample_step_is_the_fast_one(monkeypatch):
    """The MADE decoder's multi-sample step runs through the fast path, not the
    specification's objective (which would pass the comparison above trivially)."""
    spec, fast, x, y, eps = sampled_pair("float64", SAMPLED[4])

    def refuse(*args, **kwargs):
        raise AssertionError("the specification's multi-sample step ran")

    monkeypatch.setattr(fast.objective.spec, "forward", refuse)
    monkeypatch.setattr(fast.objective.spec, "backward", refuse)
    fast.loss(x, y, eps=eps)


def test_the_multi_sample_bound_bites_on_the_made_rows(monkeypatch):
    """Planted: the MADE decoder's K rows per example built by tiling x (example b's pixels
    beside another example's samples) instead of repeating each example K times."""
    import numpy_vae.fast.objectives as fast_objectives

    spec, fast, x, y, eps = sampled_pair("float64", SAMPLED[4])
    real = fast.fast_decoder.forward

    def tiled(context, x_rows, buffers):
        n, k = eps.shape[:2]
        return real(context, np.tile(x_rows[::k], (k, 1)), buffers)

    monkeypatch.setattr(fast.fast_decoder, "forward", tiled)
    assert fast_objectives.FastMLPDecoder is not type(fast.fast_decoder)  # the MADE path runs
    _, grads = sampled_errors(spec, fast, x, y, eps)
    assert max(grads.values()) > 8 * (30 + 30 + 9) * np.finfo("float64").eps


@pytest.mark.parametrize("dtype", DTYPES)
def test_flush_negligible_weights_zeroes_exactly_the_weights_below_sqrt_tiny(dtype):
    """Below tau = sqrt(tiny) to 0, tau and above untouched, NaN kept (a diverged step must
    stay visible), and float64's tau is its own (1e-100 survives there)."""
    from numpy_vae.fast.objectives import flush_negligible_weights

    tau = np.sqrt(np.finfo(dtype).tiny).astype(dtype)
    below, above = np.nextafter(tau, dtype(0)), np.nextafter(tau, dtype(1))
    c = np.array([[below, tau, above, 0.5], [np.nan, np.nan, np.nan, np.nan]], dtype=dtype)
    out = flush_negligible_weights(c.copy(), np)
    np.testing.assert_array_equal(out[0], [0, tau, above, 0.5])
    assert np.isnan(out[1]).all()
    small = np.array([[1e-100, 1.0]], dtype=dtype)
    kept = dtype == np.float64  # float32 holds 1e-100 as 0 already; float64's tau is 1.5e-154
    assert (flush_negligible_weights(small, np)[0, 0] != 0) == kept


def subnormals(a):
    """How many entries of ``a`` are subnormal (nonzero, below the dtype's smallest normal)."""
    a = np.asarray(a)
    return int(((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)).sum())


def spread_weights_pair():
    """A float32 IWAE pair whose decoder's last weights are scaled up 40 times, so that the
    samples' log w spread over hundreds of nats and some weights fall below sqrt(tiny)."""
    spec, fast, x, y, eps = sampled_pair("float32", SAMPLED[0], k=20)
    for model in (spec, fast):
        model.decoder.layers[-1].weight[...] *= 40
    return spec, fast, x, y, eps


@pytest.mark.parametrize("kernel", ["rows", "broadcast"])
def test_negligible_weights_make_no_subnormal_gradients(kernel):
    """``flush_negligible_weights``: the specification's weights and output gradient hold
    subnormal numbers here (the precondition: the case is exercised); the fast step's output
    gradient and every backward array hold none, and its gradients stay within the
    multi-sample bound (zeroed weights below 1.1e-19 move no float32 sum)."""
    spec, fast, x, y, eps = spread_weights_pair()
    fast.objective.rows_kernel_min_k = 1 if kernel == "rows" else 10**9
    spec.loss(x, y, eps=eps, grad=False)
    d_logits, w_tilde = spec.objective._saved[:2]
    tau = np.sqrt(np.finfo(np.float32).tiny)
    assert ((w_tilde > 0) & (w_tilde < tau)).sum() > 0
    assert subnormals(d_logits) > 0
    spec.objective._saved = None

    fast.loss(x, y, eps=eps, grad=False)
    d_out = fast.objective._cache[1]  # after backward: w~_k sigmoid(l), the output gradient
    fast.objective.backward(fast)
    assert subnormals(d_out) == 0
    for name, array in fast.buffers["decoder"]._arrays.items():
        assert subnormals(array) == 0, name

    n, k = eps.shape[:2]
    loss, grads = sampled_errors(spec, fast, x, y, eps)
    assert loss <= 8 * 30 * unit_roundoff(np.float32)
    assert max(grads.values()) <= 8 * (n * k + 30 + 9) * unit_roundoff(np.float32), grads


def test_the_subnormal_check_bites(monkeypatch):
    """Planted: the fast step without the flush (neither the softmax kernel's nor the device
    path's); its output gradient then holds subnormals."""
    import numpy_vae.fast.objectives as fast_objectives
    from numpy_vae.fast.kernels import softmax_rows

    monkeypatch.setattr(fast_objectives, "flush_negligible_weights", lambda w_tilde, xp: w_tilde)
    monkeypatch.setattr(fast_objectives, "softmax_rows", lambda e, tau: softmax_rows(e, tau - tau))
    _, fast, x, y, eps = spread_weights_pair()
    fast.loss(x, y, eps=eps, grad=False)
    d_out = fast.objective._cache[1]
    fast.objective.backward(fast)
    assert subnormals(d_out) > 0
