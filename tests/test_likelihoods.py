"""Bernoulli and Gaussian negative log-likelihoods: values, gradients, stability."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import log_expit

from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.likelihoods import bernoulli_nll, gaussian_nll

sizes = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)


def targets(rng, shape, binary):
    return (rng.random(shape) < 0.5).astype(np.float64) if binary else rng.random(shape)


@given(
    batch=sizes,
    dim=sizes,
    seed=seeds,
    scale=st.sampled_from([0.1, 3.0, 30.0, 1e3]),
    binary=st.booleans(),
)
def test_bernoulli_value_matches_sigmoid_bce(batch, dim, seed, scale, binary):
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((batch, dim))
    x = targets(rng, (batch, dim), binary)
    nll, _ = bernoulli_nll(logits, x, np)
    # The seed's sigmoid-then-BCE, with the logs computed stably by scipy (an independent route).
    expected = -(x * log_expit(logits) + (1 - x) * log_expit(-logits)).sum(axis=1)
    np.testing.assert_allclose(nll, expected, rtol=1e-12, atol=1e-12)


@given(
    n=st.integers(1, 30),
    seed=seeds,
    scale=st.sampled_from([0.1, 3.0, 30.0, 1e3]),
    binary=st.booleans(),
)
def test_bernoulli_gradient(n, seed, scale, binary):
    rng = np.random.default_rng(seed)
    # One element per row: a perturbed logit changes only its own output, so the central
    # difference is not swamped by the rounding of a large row sum (logits reach 1e3 here).
    logits = scale * rng.standard_normal((n, 1))
    x = targets(rng, (n, 1), binary)
    _, d_logits = bernoulli_nll(logits, x, np)
    assume(np.abs(d_logits).max() > 1e-2)
    errors = check_gradients(
        lambda: bernoulli_nll(logits, x, np)[0], {"logits": logits}, {"logits": d_logits}
    )
    assert_gradients_close(errors)
    with np.errstate(over="ignore"):  # exp(-l) = inf for l < -709 gives sigmoid(l) = 0, rightly
        sigmoid = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(d_logits, sigmoid - x, rtol=1e-12, atol=1e-15)


@given(batch=sizes, dim=sizes, seed=seeds)
def test_bernoulli_gradient_of_row_sums(batch, dim, seed):
    rng = np.random.default_rng(seed)
    logits = 2 * rng.standard_normal((batch, dim))
    x = rng.random((batch, dim))
    d_out = rng.standard_normal(batch)
    _, d_logits = bernoulli_nll(logits, x, np)
    errors = check_gradients(
        lambda: bernoulli_nll(logits, x, np)[0],
        {"logits": logits},
        {"logits": d_logits * d_out[:, None]},
        d_out,
    )
    assert_gradients_close(errors)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_extreme_logits_are_finite(dtype):
    logits = np.array([[-1e4, 1e4, -1e4, 1e4, 0.0]], dtype=dtype)
    x = np.array([[0.0, 1.0, 1.0, 0.0, 0.5]], dtype=dtype)
    nll, d_logits = bernoulli_nll(logits, x, np)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(d_logits))
    # Confidently right costs nothing; confidently wrong costs |logit| nats.
    assert nll[0] == pytest.approx(2e4 + np.log(2), rel=1e-6)
    np.testing.assert_allclose(d_logits, [[0, 0, -1, 1, 0]], atol=1e-7)


@given(batch=sizes, dim=sizes, seed=seeds, sigma=st.floats(0.05, 5.0))
def test_gaussian(batch, dim, seed, sigma):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((batch, dim))
    x = rng.random((batch, dim))
    nll, d_mean = gaussian_nll(mean, x, sigma, np)
    # Value: the log-density of N(mean, sigma^2 I), written out independently.
    log_density = -0.5 * ((x - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(nll, -log_density.sum(axis=1), rtol=1e-12)
    d_out = rng.standard_normal(batch)
    errors = check_gradients(
        lambda: gaussian_nll(mean, x, sigma, np)[0],
        {"mean": mean},
        {"mean": d_mean * d_out[:, None]},
        d_out,
    )
    assert_gradients_close(errors)
