"""Importance-weighted log-likelihood and active units."""

import numpy as np
import pytest
from scipy import integrate
from scipy.special import log_expit

from numpy_vae import VAE, get_backend
from numpy_vae.training.evaluate import active_units, iw_log_likelihood, posterior_means

F64 = get_backend("numpy", "float64")


def tiny_model(latent=1, seed=0, **kwargs):
    model = VAE(
        6, hidden_dims=(5,), latent_dim=latent, activation="tanh", backend=F64, seed=seed, **kwargs
    )
    for p in model.params.values():
        p *= 2.0  # a posterior that is not the prior, a decoder that is not flat
    return model


def test_k1_is_an_unbiased_estimate_of_the_elbo():
    model = tiny_model(latent=2)
    x = (np.random.default_rng(0).random((1, 6)) > 0.5).astype(np.float64)
    n = 40_000
    iw1 = iw_log_likelihood(model, np.repeat(x, n, axis=0), k=1, rng=np.random.default_rng(1))
    # The ELBO with the KL in closed form, its expectation over z estimated on other draws.
    parts_per_example = []
    rng = np.random.default_rng(2)
    xs = np.repeat(x, n, axis=0)
    eps = rng.standard_normal((n, 2))
    model.loss(xs, eps=eps, grad=False)
    mu, logvar = model.encode(x)
    kl = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum()
    z = mu + np.exp(0.5 * logvar) * eps
    log_px_z = model.log_likelihood(xs, model.decoder_output(z))
    parts_per_example = log_px_z - kl
    diff = iw1.mean() - parts_per_example.mean()
    se = np.sqrt(iw1.var() / n + parts_per_example.var() / n)
    assert abs(diff) < 5 * se, (diff, se)


def test_estimate_grows_with_k_in_expectation():
    model = tiny_model(latent=2)
    x = (np.random.default_rng(3).random((1, 6)) > 0.5).astype(np.float64)
    reps = 2000
    xs = np.repeat(x, reps, axis=0)
    means = []
    for k in (1, 5, 50):
        est = iw_log_likelihood(model, xs, k=k, rng=np.random.default_rng(k))
        means.append((est.mean(), est.std() / np.sqrt(reps)))
    for (m_small, se_small), (m_big, se_big) in zip(means[:-1], means[1:], strict=True):
        assert m_big > m_small - 3 * np.hypot(se_small, se_big)
    assert means[-1][0] - means[0][0] > 5 * np.hypot(means[0][1], means[-1][1])  # it does grow


def exact_log_px(model, x):
    """log p(x) = log int p(x|z) N(z; 0, 1) dz by quadrature over the 1-D latent."""

    def integrand(z):
        logits = model.decoder_output(np.array([[z]]))
        log_px_z = (x * log_expit(logits) + (1 - x) * log_expit(-logits)).sum()
        return np.exp(log_px_z - 0.5 * z * z) / np.sqrt(2 * np.pi)

    value, _ = integrate.quad(integrand, -12, 12, limit=400, epsabs=0, epsrel=1e-12)
    return np.log(value)


@pytest.mark.parametrize("seed", [0, 1])
def test_converges_to_exact_log_likelihood_with_1d_latent(seed):
    model = tiny_model(latent=1, seed=seed)
    x = (np.random.default_rng(seed).random((1, 6)) > 0.5).astype(np.float64)
    exact = exact_log_px(model, x)
    errors = []
    for k in (1, 100, 10_000, 200_000):
        est = iw_log_likelihood(model, np.repeat(x, 4, axis=0), k=k, rng=np.random.default_rng(k))
        errors.append(abs(est.mean() - exact))
    # The bias shrinks like 1/K: from tenths of a nat at K=1 to about 1e-4 at K=200,000.
    assert errors[-1] < 1e-3, (errors, exact)
    assert errors[0] > errors[1] > errors[3], errors


def test_batching_does_not_change_the_estimate():
    """Different pass sizes split the same noise stream differently only if the code is wrong:
    with one example per pass and all samples in one pass, the draws line up."""
    model = tiny_model(latent=2)
    x = np.random.default_rng(0).random((5, 6))
    a = iw_log_likelihood(model, x, k=7, rng=np.random.default_rng(9), max_rows=7, encode_batch=2)
    b = iw_log_likelihood(model, x, k=7, rng=np.random.default_rng(9), max_rows=7, encode_batch=5)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    c = iw_log_likelihood(model, x, k=7, rng=np.random.default_rng(9), max_rows=3)  # split k
    assert np.all(np.isfinite(c)) and c.shape == (5,)
    np.testing.assert_allclose(c, a, atol=2.0)  # same quantity, different noise


def test_conditional_and_gaussian_models():
    cvae = tiny_model(latent=2, n_classes=3)
    x = np.random.default_rng(0).random((4, 6))
    est = iw_log_likelihood(cvae, x, np.array([0, 1, 2, 0]), k=10, rng=np.random.default_rng(0))
    assert est.shape == (4,) and np.all(np.isfinite(est))
    gauss = tiny_model(latent=2, likelihood="gaussian", gaussian_sigma=0.5)
    assert np.all(np.isfinite(iw_log_likelihood(gauss, x, k=10, rng=np.random.default_rng(0))))
    with pytest.raises(ValueError, match="positive integer"):
        iw_log_likelihood(gauss, x, k=0)


def test_active_units():
    rng = np.random.default_rng(0)
    mu = np.stack([rng.normal(0, 1, 500), rng.normal(0, 0.05, 500), np.zeros(500)], axis=1)
    count, variance = active_units(mu)
    assert count == 1
    np.testing.assert_allclose(variance, mu.var(axis=0))
    model = tiny_model(latent=2)
    x = rng.random((30, 6))
    np.testing.assert_allclose(posterior_means(model, x, batch=7), model.encode(x)[0])


def test_test_subset_is_random_once_and_the_whole_set_is_not_copied():
    from numpy_vae.training.evaluate import test_subset

    x = np.arange(50.0).reshape(25, 2)
    index, rows = test_subset(x, 10, np)
    assert len(set(index)) == 10 and np.all(np.diff(index) > 0)  # distinct, in order
    assert np.array_equal(rows, x[index])
    assert not np.array_equal(index, np.arange(10))  # not the first ten
    assert np.array_equal(test_subset(x, 10, np)[0], index)  # the same draw every time
    for n in (None, 25, 40):
        index, rows = test_subset(x, n, np)
        assert rows is x and np.array_equal(index, np.arange(25))
