"""Closed-form KL to N(0, I) and between two diagonal Gaussians, free bits and the
reparameterization step."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.kl import free_bits, gaussian_kl, kl_standard_normal
from numpy_vae.reparam import reparameterize, reparameterize_backward

sizes = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)


@given(batch=sizes, latent=sizes, seed=seeds)
def test_kl_gradient_for_logvar_in_minus20_to_20(batch, latent, seed):
    rng = np.random.default_rng(seed)
    mu = 5 * rng.standard_normal((batch, latent))
    logvar = rng.uniform(-20, 20, (batch, latent))
    kl, d_mu, d_logvar = kl_standard_normal(mu, logvar, np)
    np.testing.assert_array_equal(d_mu, mu)
    np.testing.assert_allclose(d_logvar, (np.exp(logvar) - 1) / 2, rtol=1e-15)
    d_out = rng.standard_normal((batch, latent))
    errors = check_gradients(
        lambda: kl_standard_normal(mu, logvar, np)[0],
        {"mu": mu, "logvar": logvar},
        {"mu": d_mu * d_out, "logvar": d_logvar * d_out},
        d_out,
        # KL is quadratic in mu, so a central difference is exact for any step; a large one keeps
        # the rounding of the exp(logvar) term (up to 5e8 here) out of the mu estimate.
        h={"mu": 0.5, "logvar": 1e-4},
    )
    assert_gradients_close(errors)


@pytest.mark.parametrize("mu,logvar", [(0.0, 0.0), (1.5, -1.0), (-0.7, 2.0)])
def test_kl_value_by_numerical_integration(mu, logvar):
    q = stats.norm(mu, np.exp(logvar / 2))
    expected, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z)), -30, 30)
    kl, _, _ = kl_standard_normal(np.array([[mu]]), np.array([[logvar]]), np)
    assert kl[0, 0] == pytest.approx(expected, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_extreme_logvar_is_finite(dtype):
    logvar = np.array([[-80.0, 80.0, -20.0, 20.0]], dtype=dtype)
    mu = np.array([[1e3, -1e3, 0.0, 0.0]], dtype=dtype)
    kl, d_mu, d_logvar = kl_standard_normal(mu, logvar, np)
    assert all(np.all(np.isfinite(a)) for a in (kl, d_mu, d_logvar))


@given(batch=sizes, latent=sizes, seed=seeds)
def test_reparameterization_gradient_with_fixed_eps(batch, latent, seed):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((batch, latent))
    logvar = rng.uniform(-20, 20, (batch, latent))
    eps = rng.standard_normal((batch, latent))
    z, cache = reparameterize(mu, logvar, eps, np)
    np.testing.assert_allclose(z, mu + np.sqrt(np.exp(logvar)) * eps, rtol=1e-13, atol=1e-300)
    d_z = rng.standard_normal((batch, latent))
    d_mu, d_logvar = reparameterize_backward(d_z, cache)
    errors = check_gradients(
        lambda: reparameterize(mu, logvar, eps, np)[0],
        {"mu": mu, "logvar": logvar},
        {"mu": d_mu, "logvar": d_logvar},
        d_z,
        # z is linear in mu (exact for any step); sigma * eps reaches 1e4 here.
        h={"mu": 0.5, "logvar": 1e-4},
    )
    assert_gradients_close(errors)


def test_sampler_has_variance_exp_logvar_not_its_square(rng):
    """A gradient check cannot see exp(logvar) used as the standard deviation consistently in
    forward and backward; the distribution of z can."""
    n = 200_000
    mu = np.array([0.5, -2.0, 0.0, 3.0])
    logvar = np.array([-2.0, 1.5, 0.7, -0.5])
    eps = rng.standard_normal((n, 4))
    z, _ = reparameterize(np.broadcast_to(mu, (n, 4)), np.broadcast_to(logvar, (n, 4)), eps, np)
    var = np.exp(logvar)
    # Five standard errors: the mean's is sqrt(var / n), the variance's sqrt(2 var^2 / (n - 1)).
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - mu), 5 * np.sqrt(var / n))
    np.testing.assert_array_less(
        np.abs(z.var(axis=0, ddof=1) - var), 5 * var * np.sqrt(2 / (n - 1))
    )
    # The bug would give variance exp(2 logvar): far outside those bounds for these logvars.
    assert np.all(np.abs(np.exp(2 * logvar) - var) > 20 * var * np.sqrt(2 / (n - 1)))


def test_free_bits_value_and_gradient_weight():
    # Two examples, three dimensions; batch-mean KL per dimension = [0.2, 0.5, 1.0].
    kl = np.array([[0.1, 0.4, 1.5], [0.3, 0.6, 0.5]])
    value, weight = free_bits(kl, 0.5, np)
    assert value == pytest.approx(2 * (0.5 + 0.5 + 1.0))
    # Below the allowance: zero; at it (the kink) and above: passed, as torch.clamp(min=) does.
    np.testing.assert_array_equal(weight, [0.0, 1.0, 1.0])
    value0, weight0 = free_bits(kl, 0.0, np)
    assert value0 == pytest.approx(kl.sum())
    np.testing.assert_array_equal(weight0, [1.0, 1.0, 1.0])


# ---------------------------------------------------------------- KL between two Gaussians
def four_gaussian_arguments(rng, batch, latent, spread=6.0):
    """mu_q, logvar_q, mu_p, logvar_p (B, L), log-variances in [-spread, spread].

    At the default, variance ratios run from exp(-12) to exp(12). Wider ranges are not
    checkable to 1e-7: the KL's value then reaches 1e6 through terms that do not depend on the
    argument being differenced, and their rounding (about 1e-16 of the value over the step)
    swamps a gradient near 0 (as d/d logvar_q is where logvar_q is near logvar_p)."""
    mu_q, mu_p = 2 * rng.standard_normal((2, batch, latent))
    logvar_q, logvar_p = rng.uniform(-spread, spread, (2, batch, latent))
    return mu_q, logvar_q, mu_p, logvar_p


@given(batch=sizes, latent=sizes, seed=seeds)
def test_gaussian_kl_against_a_standard_normal_is_kl_standard_normal(batch, latent, seed):
    rng = np.random.default_rng(seed)
    mu_q, logvar_q = 5 * rng.standard_normal((batch, latent)), rng.uniform(-20, 20, (batch, latent))
    zero = np.zeros_like(mu_q)
    kl, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p = gaussian_kl(mu_q, logvar_q, zero, zero, np)
    kl0, d_mu0, d_logvar0 = kl_standard_normal(mu_q, logvar_q, np)
    np.testing.assert_allclose(kl, kl0, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(d_mu_q, d_mu0, rtol=1e-15)
    np.testing.assert_allclose(d_logvar_q, d_logvar0, rtol=1e-15)
    np.testing.assert_array_equal(d_mu_p, -d_mu_q)  # the means enter through their difference
    np.testing.assert_allclose(d_logvar_p, 0.5 * (1 - np.exp(logvar_q) - mu_q**2), rtol=1e-13)


@pytest.mark.parametrize(
    "mu_q,logvar_q,mu_p,logvar_p",
    [(0.0, 0.0, 0.0, 0.0), (1.5, -1.0, -0.5, 0.7), (-0.7, 2.0, 1.0, -1.5)],
)
def test_gaussian_kl_value_by_numerical_integration(mu_q, logvar_q, mu_p, logvar_p):
    q, p = stats.norm(mu_q, np.exp(logvar_q / 2)), stats.norm(mu_p, np.exp(logvar_p / 2))
    expected, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -40, 40)
    args = (np.array([[v]]) for v in (mu_q, logvar_q, mu_p, logvar_p))
    assert gaussian_kl(*args, np)[0][0, 0] == pytest.approx(expected, rel=1e-8, abs=1e-12)


def test_gaussian_kl_agrees_with_monte_carlo(rng):
    """KL = E_q[log q(z) - log p(z)]: the mean over 400,000 draws of z ~ q is within five
    standard errors (the sample standard deviation over sqrt(n)) of the closed form."""
    n = 400_000
    mu_q, logvar_q = np.array([0.5, -2.0, 0.0, 3.0]), np.array([-2.0, 1.5, 0.7, -0.5])
    mu_p, logvar_p = np.array([0.0, 1.0, -0.3, 2.0]), np.array([0.0, 0.5, 1.2, -1.0])
    z = mu_q + np.exp(logvar_q / 2) * rng.standard_normal((n, 4))
    log_ratio = stats.norm.logpdf(z, mu_q, np.exp(logvar_q / 2)) - stats.norm.logpdf(
        z, mu_p, np.exp(logvar_p / 2)
    )
    kl = gaussian_kl(mu_q[None], logvar_q[None], mu_p[None], logvar_p[None], np)[0][0]
    standard_error = log_ratio.std(axis=0, ddof=1) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(log_ratio.mean(axis=0) - kl), 5 * standard_error)


def check_gaussian_kl(kl_function, mu_q, logvar_q, mu_p, logvar_p, d_out):
    """Central differences of ``kl_function`` in its four arguments against its gradients."""
    _, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p = kl_function(mu_q, logvar_q, mu_p, logvar_p, np)
    return check_gradients(
        lambda: kl_function(mu_q, logvar_q, mu_p, logvar_p, np)[0],
        {"mu_q": mu_q, "logvar_q": logvar_q, "mu_p": mu_p, "logvar_p": logvar_p},
        {
            "mu_q": d_mu_q * d_out,
            "logvar_q": d_logvar_q * d_out,
            "mu_p": d_mu_p * d_out,
            "logvar_p": d_logvar_p * d_out,
        },  # fmt: skip
        d_out,
        # KL is quadratic in each mean, so a central difference is exact for any step; a large
        # one keeps the rounding of the exp(logvar_q - logvar_p) term (up to 2e5) out of it. In
        # the log-variances, 1e-3 balances the five-point stencil's O(h^4) error against that
        # rounding (worst relative error over 3,000 random draws: 2e-9).
        h={"mu_q": 0.5, "mu_p": 0.5, "logvar_q": 1e-3, "logvar_p": 1e-3},
    )


@given(batch=sizes, latent=sizes, seed=seeds)
def test_gaussian_kl_gradients_in_all_four_arguments(batch, latent, seed):
    rng = np.random.default_rng(seed)
    args = four_gaussian_arguments(rng, batch, latent)
    d_out = rng.standard_normal((batch, latent))
    assert_gradients_close(check_gaussian_kl(gaussian_kl, *args, d_out))


def test_gaussian_kl_gradient_check_catches_a_planted_error():
    """A missing factor 1/2 in d_logvar_p, and a wrong sign of d_mu_p, each fail the check."""

    def no_half(mu_q, logvar_q, mu_p, logvar_p, xp):
        kl, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, xp)
        return kl, d_mu_q, d_logvar_q, d_mu_p, 2 * d_logvar_p

    def same_sign(mu_q, logvar_q, mu_p, logvar_p, xp):
        kl, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, xp)
        return kl, d_mu_q, d_logvar_q, d_mu_q, d_logvar_p

    rng = np.random.default_rng(0)
    args = four_gaussian_arguments(rng, 3, 4, spread=2.0)
    d_out = rng.standard_normal((3, 4))
    for planted, name in [(no_half, "logvar_p"), (same_sign, "mu_p")]:
        errors = check_gaussian_kl(planted, *(a.copy() for a in args), d_out)
        assert errors[name] > 0.1, errors
        with pytest.raises(AssertionError, match=name):
            assert_gradients_close(errors)


def test_gaussian_kl_is_finite_for_large_equal_log_variances():
    """exp(logvar_q) / exp(logvar_p) would be inf / inf at 800; the ratio exp(a - b) is 1."""
    logvar = np.array([[800.0, 400.0]])
    kl, *grads = gaussian_kl(np.ones((1, 2)), logvar, np.zeros((1, 2)), logvar, np)
    assert np.all(np.isfinite(kl)) and all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(kl, 0.0, atol=1e-150)  # 1 / (2 sigma_p^2)
