"""Adam and SGD against step-by-step traces of their textbook formulas."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_vae import SGD, Adam
from numpy_vae.fast import FastAdam, FastVAE
from numpy_vae.gradcheck import relative_error


def adam_trace(p0, grads, lr, b1, b2, eps):
    """Kingma & Ba, Algorithm 1, written out as plainly as possible."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    trace = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        trace.append(p.copy())
    return trace


@given(
    seed=st.integers(0, 2**31 - 1),
    lr=st.sampled_from([1e-3, 0.1]),
    betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]),
    eps=st.sampled_from([1e-8, 1e-3, 0.1]),
)
def test_adam_follows_the_formula_step_by_step(seed, lr, betas, eps):
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [
        [rng.standard_normal(a.shape) * 10.0 ** rng.integers(-4, 2) for a in p0] for _ in range(6)
    ]
    params = [a.copy() for a in p0]
    buffers = [np.zeros_like(a) for a in p0]
    opt = Adam(params, buffers, lr=lr, betas=betas, eps=eps)
    traces = [adam_trace(p0[i], [g[i] for g in grads], lr, *betas, eps) for i in range(2)]
    for t, g in enumerate(grads):
        for buf, gi in zip(buffers, g, strict=True):
            buf[...] = gi
        opt.step()
        for i in range(2):
            assert relative_error(params[i], traces[i][t]) < 1e-13
    assert opt.step_count == 6


def test_threaded_adam_is_bitwise_the_single_threaded_one_and_follows_the_formula():
    """The update of a long vector is split over threads; every element's update depends on that
    element only, so any split gives exactly the same numbers."""
    rng = np.random.default_rng(0)
    n = 3 * FastAdam.MIN_ELEMENTS_PER_THREAD + 5  # not a multiple of anything
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) * 10.0 ** rng.integers(-4, 2, n) for _ in range(4)]
    runs = {}
    for threads in (1, 2, 3):
        p, g = p0.astype(np.float32), np.zeros(n, np.float32)
        opt = FastAdam([p], [g], lr=0.01, threads=threads)
        for gi in grads:
            g[...] = gi
            opt.step()
        runs[threads] = (p, opt.m[0], opt.v[0])
    for threads in (2, 3):
        for a, b in zip(runs[1], runs[threads], strict=True):
            np.testing.assert_array_equal(a, b)
    # And in float64 the threaded step is the textbook formula to rounding.
    p, g = p0.copy(), np.zeros(n)
    opt = FastAdam([p], [g], lr=0.01, threads=3)
    trace = adam_trace(p0, grads, 0.01, 0.9, 0.999, 1e-8)
    for gi, expected in zip(grads, trace, strict=True):
        g[...] = gi
        opt.step()
        assert relative_error(p, expected) < 1e-13


def test_adam_on_non_contiguous_arrays():
    rng = np.random.default_rng(2)
    base, g_base = rng.standard_normal((6, 8)), np.zeros((6, 8))
    p, g = base[:, ::2], g_base[:, ::2]  # views that cannot be flattened without a copy
    p0, others = p.copy(), base[:, 1::2].copy()
    opt = FastAdam([p], [g], lr=0.1, threads=2)
    grads = [rng.standard_normal(p.shape) for _ in range(3)]
    for gi, expected in zip(grads, adam_trace(p0, grads, 0.1, 0.9, 0.999, 1e-8), strict=True):
        g[...] = gi
        opt.step()
        assert relative_error(p, expected) < 1e-13
    np.testing.assert_array_equal(base[:, 1::2], others)  # the columns in between untouched


def test_adam_bias_correction_makes_first_step_lr_sized():
    """At t=1, m_hat = g and v_hat = g^2, so every parameter moves by lr * sign(g) (|g| >> eps)."""
    g = np.array([1e-3, -5.0, 200.0])
    p = np.zeros(3)
    opt = Adam([p], [g.copy()], lr=0.01)
    opt.step()
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=1e-5)
    # Without bias correction the first step would be (1 - b1) / sqrt(1 - b2) = 3.16 times as big.
    assert not np.allclose(p, -0.01 * 0.1 / math.sqrt(0.001) * np.sign(g), rtol=0.5)


def test_adam_eps_sits_outside_the_bias_corrected_root():
    """torch.optim.Adam: denominator sqrt(v)/sqrt(1-b2^t) + eps, not sqrt(v/(1-b2^t) + eps)."""
    g = np.array([1e-2])
    p = np.zeros(1)
    Adam([p], [g], lr=1.0, eps=0.1).step()
    assert p[0] == pytest.approx(-1e-2 / (1e-2 + 0.1), rel=1e-12)


def test_adam_state_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    p_a, g = rng.standard_normal(10), np.zeros(10)
    p_b = p_a.copy()
    a = Adam([p_a], [g], lr=0.01)
    for _ in range(3):
        g[...] = rng.standard_normal(10)
        a.step()
    state = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in a.state_dict().items()}
    p_b[...] = p_a
    g_b = np.zeros(10)
    b = Adam([p_b], [g_b], lr=0.01)
    b.load_state_dict(state)
    assert b.step_count == 3
    for _ in range(3):
        g[...] = g_b[...] = rng.standard_normal(10)
        a.step()
        b.step()
    np.testing.assert_array_equal(p_a, p_b)
    with pytest.raises(ValueError, match="different model"):
        Adam([np.zeros(3)], [np.zeros(3)]).load_state_dict(state)


def test_sgd_follows_the_formula():
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal(4), np.zeros(4)
    expected = p.copy()
    opt = SGD([p], [g], lr=0.05)
    for _ in range(4):
        g[...] = rng.standard_normal(4)
        expected = expected - 0.05 * g
        opt.step()
    np.testing.assert_allclose(p, expected, rtol=1e-15)
    assert opt.state_dict() == {"step": 4}


def test_optimizer_updates_model_parameters_in_place():
    model = FastVAE(10, hidden_dims=(6,), latent_dim=2, seed=0)
    before = {k: v.copy() for k, v in model.params.items()}
    opt = FastAdam([model.flat.data], [model.flat.grad])
    model.loss(np.random.default_rng(0).random((4, 10)).astype(np.float32))
    opt.step()
    for name, p in model.params.items():
        assert not np.array_equal(p, before[name]), name
        assert np.shares_memory(p, model.flat.data)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"lr": -1.0}, "learning rate"), ({"lr": 0.0}, "learning rate"),
     ({"betas": (0.9, 1.0)}, "betas"), ({"eps": -1e-8}, "eps"), ({"threads": 0}, "threads"),
     ({"threads": 1.5}, "threads")],
)  # fmt: skip
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FastAdam([np.zeros(2)], [np.zeros(2)], **kwargs)
    if "threads" not in kwargs:
        with pytest.raises(ValueError, match=message):
            Adam([np.zeros(2)], [np.zeros(2)], **kwargs)
    with pytest.raises(ValueError, match="gradient arrays"):
        SGD([np.zeros(2)], [], lr=0.1)
