"""Gradients of every variant's loss: beta, KL warm-up weight, free bits, conditional, Gaussian."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_model import check_model

from numpy_vae import VAE, get_backend
from numpy_vae.gradcheck import assert_gradients_close, check_gradients

F64 = get_backend("numpy", "float64")
seeds = st.integers(0, 2**31 - 1)


def batch(seed, n=4, d=7):
    return np.random.default_rng(seed).random((n, d))


@given(seed=seeds, beta=st.sampled_from([0.0, 0.5, 4.0]))
def test_beta_vae(seed, beta):
    check_model(
        VAE(7, hidden_dims=(6,), latent_dim=3, beta=beta, backend=F64, seed=seed),
        batch(seed),
        seed=seed,
    )


@given(seed=seeds, weight=st.floats(0.0, 1.0))
def test_kl_warmup_weight(seed, weight):
    model = VAE(7, hidden_dims=(6,), latent_dim=3, backend=F64, seed=seed)
    check_model(model, batch(seed), seed=seed, kl_weight=weight)


@given(seed=seeds, n_classes=st.integers(2, 5), hidden=st.integers(2, 6))
def test_conditional(seed, n_classes, hidden):
    model = VAE(7, hidden_dims=(hidden,), latent_dim=2, n_classes=n_classes, backend=F64, seed=seed)
    y = np.random.default_rng(seed).integers(0, n_classes, 4)
    errors = check_model(model, batch(seed), y=y, seed=seed)
    assert model.params["encoder.0.weight"].shape == (hidden, 7 + n_classes)
    assert model.params["decoder.0.weight"].shape == (hidden, 2 + n_classes)
    assert len(errors) == 8


@given(seed=seeds, sigma=st.sampled_from([0.1, 0.5, 1.0]))
def test_gaussian_likelihood(seed, sigma):
    model = VAE(
        7,
        hidden_dims=(6,),
        latent_dim=3,
        likelihood="gaussian",
        gaussian_sigma=sigma,
        backend=F64,
        seed=seed,
    )
    check_model(model, batch(seed), seed=seed)


def batch_mean_kl(model, x, eps):
    return model.loss(x, eps=eps, grad=False).kl_per_dim / x.shape[0]


@given(seed=seeds, where=st.sampled_from(["below", "between", "above"]))
def test_free_bits_around_the_threshold(seed, where):
    """Allowance set clearly below, between, or above the dimensions' batch-mean KLs."""
    model = VAE(7, hidden_dims=(6,), latent_dim=3, backend=F64, seed=seed)
    x = batch(seed)
    eps = np.random.default_rng(seed).standard_normal((4, 3))
    kl_dim = np.sort(batch_mean_kl(model, x, eps))
    lam = {"below": kl_dim[0] / 2, "between": (kl_dim[0] + kl_dim[1]) / 2,
           "above": kl_dim[-1] * 2}[where]  # fmt: skip
    model.free_bits = float(lam)
    check_model(model, x, seed=seed)


def test_free_bits_at_the_threshold_passes_the_gradient():
    """At max(lambda, KL_j) with KL_j == lambda the gradient is passed (torch.clamp's choice);
    just above lambda the dimension is clamped and its KL gradient is exactly zero."""
    model = VAE(7, hidden_dims=(6,), latent_dim=3, backend=F64, seed=5)
    x = batch(5)
    eps = np.random.default_rng(5).standard_normal((4, 3))
    kl_dim = batch_mean_kl(model, x, eps)
    j = int(np.argmin(kl_dim))

    def grads(free_bits):
        model.free_bits = free_bits
        parts = model.loss(x, eps=eps)
        return parts, {k: v.copy() for k, v in model.grads.items()}

    parts_at, at = grads(float(kl_dim[j]))
    _, unclamped = grads(0.0)
    parts_above, above = grads(float(kl_dim[j]) * (1 + 1e-9))
    # Only dimension j's KL sits at the allowance; the others are above it in every case.
    assert np.all(np.delete(kl_dim, j) > kl_dim[j])
    for name in at:
        np.testing.assert_allclose(at[name], unclamped[name], rtol=1e-12, atol=1e-15)
    # Just above: the head rows of mu_j and logvar_j get no KL gradient, only reconstruction's.
    model.free_bits = 0.0
    model.beta = 0.0
    model.loss(x, eps=eps)
    recon_only = model.grads["head.weight"].copy()
    for row in (j, 3 + j):
        np.testing.assert_allclose(above["head.weight"][row], recon_only[row], rtol=1e-12)
    assert not np.allclose(at["head.weight"][j], recon_only[j])
    assert parts_at.loss == pytest.approx(parts_above.loss, rel=1e-8)


def test_free_bits_objective_value():
    model = VAE(7, hidden_dims=(6,), latent_dim=3, backend=F64, seed=1, free_bits=0.0)
    x = batch(1)
    eps = np.random.default_rng(1).standard_normal((4, 3))
    kl_dim = batch_mean_kl(model, x, eps)
    lam = float(np.median(kl_dim))
    model.free_bits = lam
    parts = model.loss(x, eps=eps, grad=False)
    assert parts.loss == pytest.approx(parts.recon + 4 * np.maximum(kl_dim, lam).sum(), rel=1e-12)
    assert parts.kl == pytest.approx(4 * kl_dim.sum(), rel=1e-12)  # the reported KL is the true one


def test_gaussian_sample_figures_use_the_mean():
    model = VAE(7, hidden_dims=(6,), latent_dim=2, likelihood="gaussian", backend=F64, seed=0)
    z = np.zeros((1, 2))
    np.testing.assert_array_equal(model.decode(z), model.decoder_output(z))


def test_check_model_would_catch_a_missing_beta():
    """The variant checks bite: a loss that ignored beta in the gradient is caught."""
    model = VAE(7, hidden_dims=(6,), latent_dim=3, beta=4.0, backend=F64, seed=0)
    x = batch(0)
    eps = np.random.default_rng(0).standard_normal((4, 3))
    model.loss(x, eps=eps, kl_weight=1.0)  # gradient of the beta = 1 loss...
    wrong = {k: v.copy() for k, v in model.grads.items()}
    errors = check_gradients(lambda: model.loss(x, eps=eps, grad=False).loss, model.params, wrong)
    assert max(errors.values()) > 1e-2  # ...against the beta = 4 loss
    with pytest.raises(AssertionError):
        assert_gradients_close(errors)
