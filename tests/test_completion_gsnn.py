"""The GSNN and the hybrid objective of Sohn et al. (2015): the gradient of every parameter
against central differences, the hybrid's two ends (the CVAE at alpha = 1, the GSNN at
alpha = 0, to the last bit), planted bugs the checks catch, and the prior-sampled estimate of
log p(hidden | visible)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_completion import (
    TINY_HIDDEN,
    assert_every_gradient_checks,
    completion_batch,
    exact_log_likelihood,
    gradient_errors,
    sizes,
    z_blind_model,
)

from numpy_vae import get_backend, gsnn
from numpy_vae.completion import CompletionCVAE, iw_conditional_log_likelihood
from numpy_vae.gradcheck import assert_gradients_close
from numpy_vae.gsnn import CompletionGSNN, CompletionHybrid, mc_conditional_log_likelihood
from numpy_vae.optim import Adam
from numpy_vae.reparam import reparameterize_backward

F64 = get_backend("numpy", "float64")


# ---------------------------------------------------------------- gradients
@given(latent_dim=st.integers(1, 3), scale=st.sampled_from([1.0, 3.0]), **sizes)
def test_gsnn_gradients_of_every_parameter(
    batch, visible_dim, hidden_dim, widths, activation, seed, binary, latent_dim, scale
):
    model = CompletionGSNN(visible_dim, hidden_dim, widths, latent_dim, activation, F64, seed)
    assert set(model.networks()) == {"prior", "generation"}
    assert_every_gradient_checks(model, scale, seed, batch, binary)


@given(
    latent_dim=st.integers(1, 3),
    scale=st.sampled_from([1.0, 3.0]),
    alpha=st.floats(0.1, 0.9),
    **sizes,
)
def test_hybrid_gradients_of_every_parameter(
    batch, visible_dim, hidden_dim, widths, activation, seed, binary, latent_dim, scale, alpha
):
    """All three networks at a weight strictly between 0 and 1 (at 0 the recognition network's
    gradient is 0, which the checker cannot resolve relatively; the ends are checked bitwise
    below)."""
    model = CompletionHybrid(
        visible_dim, hidden_dim, widths, latent_dim, activation, F64, seed, alpha=alpha
    )
    assert set(model.networks()) == {"prior", "recognition", "generation"}
    assert_every_gradient_checks(model, scale, seed, batch, binary)


def small_batch(seed=1, batch=3, visible_dim=4, hidden_dim=3, latent_dim=2):
    rng = np.random.default_rng(seed)
    visible, hidden = completion_batch(rng, batch, visible_dim, hidden_dim, True)
    return visible, hidden, rng.standard_normal((batch, latent_dim))


def planted_factor_2(d_z, cache):
    d_mu, d_logvar = reparameterize_backward(d_z, cache)
    return d_mu, 2 * d_logvar


@pytest.mark.parametrize("cls", [CompletionGSNN, CompletionHybrid])
def test_the_check_catches_a_factor_2_in_the_prior_draws_backward(monkeypatch, cls):
    """The GSNN term's reparameterization with a factor 2 where 1/2 belongs: the prior
    network's gradients fail the check, the others pass (the hybrid's CVAE term keeps the right
    one: it is completion.py's)."""
    model = cls(4, 3, (5,), 2, "tanh", F64, seed=1)
    visible, hidden, eps = small_batch()
    assert_gradients_close(gradient_errors(model, visible, hidden, eps))  # the true model passes
    monkeypatch.setattr(gsnn, "reparameterize_backward", planted_factor_2)
    errors = gradient_errors(model, visible, hidden, eps)
    bad = {n.split(".")[0] for n, e in errors.items() if e > 1e-3}
    assert bad == {"prior"}, errors
    with pytest.raises(AssertionError, match="prior"):
        assert_gradients_close(errors)


def backward_with_alpha_swapped(right):
    """The hybrid's backward as written, run with the weights of its two terms exchanged (the
    forward keeps the right ones)."""

    def planted(self):
        self.alpha = 1 - self.alpha
        try:
            right(self)
        finally:
            self.alpha = 1 - self.alpha

    return planted


def backward_without_the_second_pass(right):
    """The hybrid's backward without passing [visible | z_p] through the generation network
    again: the GSNN term's backward then runs on the CVAE term's pass."""

    def planted(self):
        forward = self.generation.forward
        self.generation.forward = lambda x: None
        try:
            right(self)
        finally:
            self.generation.forward = forward

    return planted


@pytest.mark.parametrize(
    "planted,caught",
    [
        (backward_with_alpha_swapped, {"prior", "recognition", "generation"}),
        (backward_without_the_second_pass, {"prior", "generation"}),
    ],
)
def test_the_check_catches_a_wrong_hybrid_backward(monkeypatch, planted, caught):
    """alpha = 0.3: exchanged weights put 0.7 where 0.3 belongs on every network; a backward
    through the wrong pass breaks the networks the GSNN term reaches."""
    model = CompletionHybrid(4, 3, (5,), 2, "tanh", F64, seed=1, alpha=0.3)
    visible, hidden, eps = small_batch()
    assert_gradients_close(gradient_errors(model, visible, hidden, eps))
    monkeypatch.setattr(CompletionHybrid, "backward", planted(CompletionHybrid.backward))
    errors = gradient_errors(model, visible, hidden, eps)
    bad = {n.split(".")[0] for n, e in errors.items() if e > 1e-3}
    assert bad == caught, errors
    with pytest.raises(AssertionError):
        assert_gradients_close(errors)


# ---------------------------------------------------------------- the hybrid's two ends
def assert_same(model, other, visible, hidden, eps):
    """The same loss (and parts) and the same gradient of every parameter ``other`` has, bit
    for bit."""
    parts, theirs = model.loss(visible, hidden, eps), other.loss(visible, hidden, eps)
    assert float(parts.loss) == float(theirs.loss)
    for name, g in other.grads.items():
        np.testing.assert_array_equal(model.grads[name], g, err_msg=name)
    return parts, theirs


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_the_hybrid_at_alpha_1_is_the_cvae(activation):
    """The same seed builds the same weights; then the loss, its parts, every gradient and 20
    Adam steps agree to the last bit."""
    hybrid = CompletionHybrid(6, 5, (7, 4), 3, activation, F64, seed=4, alpha=1.0)
    cvae = CompletionCVAE(6, 5, (7, 4), 3, activation, F64, seed=4)
    visible, hidden, eps = small_batch(4, 8, 6, 5, 3)
    parts, theirs = assert_same(hybrid, cvae, visible, hidden, eps)
    assert (parts.recon, parts.kl) == (theirs.recon, theirs.kl)
    np.testing.assert_array_equal(parts.kl_per_dim, theirs.kl_per_dim)
    adams = [Adam(list(m.params.values()), list(m.grads.values()), lr=1e-2) for m in (hybrid, cvae)]
    for _ in range(20):
        for model, adam in zip((hybrid, cvae), adams, strict=True):
            model.loss(visible, hidden, eps)
            adam.step()
    for name, p in cvae.params.items():
        np.testing.assert_array_equal(hybrid.params[name], p, err_msg=name)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_the_hybrid_at_alpha_0_is_the_gsnn(activation):
    """With the GSNN's weights copied into the hybrid's prior and generation networks: the same
    loss and gradients to the last bit, and no gradient in the recognition network."""
    hybrid = CompletionHybrid(6, 5, (7, 4), 3, activation, F64, seed=4, alpha=0.0)
    gsnn_model = CompletionGSNN(6, 5, (7, 4), 3, activation, F64, seed=4)
    for name, p in gsnn_model.params.items():
        p[...] = hybrid.params[name]
    visible, hidden, eps = small_batch(4, 8, 6, 5, 3)
    assert_same(hybrid, gsnn_model, visible, hidden, eps)
    for name, g in hybrid.grads.items():
        if name.startswith("recognition."):
            assert not g.any(), name


def test_the_hybrid_loss_is_the_weighted_sum_of_the_two():
    """Between the ends: alpha times the CVAE's loss plus 1 - alpha times the GSNN's, each
    computed by its own model with the same weights and eps; recon and kl are the CVAE's."""
    alpha = 0.35
    hybrid = CompletionHybrid(6, 5, (7,), 3, "tanh", F64, seed=5, alpha=alpha)
    cvae = CompletionCVAE(6, 5, (7,), 3, "tanh", F64, seed=5)
    gsnn_model = CompletionGSNN(6, 5, (7,), 3, "tanh", F64, seed=5)
    for name, p in gsnn_model.params.items():
        p[...] = hybrid.params[name]
    visible, hidden, eps = small_batch(5, 6, 6, 5, 3)
    parts = hybrid.loss(visible, hidden, eps, grad=False)
    elbo = cvae.loss(visible, hidden, eps, grad=False)
    gsnn_loss = gsnn_model.loss(visible, hidden, eps, grad=False).loss
    assert float(parts.loss) == pytest.approx(alpha * elbo.loss + (1 - alpha) * gsnn_loss, 1e-14)
    assert (parts.recon, parts.kl) == (elbo.recon, elbo.kl)


def test_one_eps_drives_both_draws_of_the_hybrid():
    """Without eps the hybrid draws one (B, L) array from its generator, as the CVAE does."""
    hybrid = CompletionHybrid(6, 5, (7,), 3, "tanh", F64, seed=6, alpha=0.5)
    visible, hidden, _ = small_batch(6, 4, 6, 5, 3)
    state = hybrid.rng.bit_generator.state
    drawn = hybrid.loss(visible, hidden, grad=False).loss
    hybrid.rng.bit_generator.state = state
    eps = hybrid.rng.standard_normal((4, 3))
    assert float(hybrid.loss(visible, hidden, eps, grad=False).loss) == float(drawn)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_the_hybrid_refuses_a_weight_outside_0_1(alpha):
    with pytest.raises(ValueError, match=r"alpha must be a finite number in \[0, 1\]"):
        CompletionHybrid(4, 3, (5,), 2, alpha=alpha)


def test_the_gsnn_loss_is_minus_log_p_at_the_prior_draw():
    model = CompletionGSNN(4, 3, (5,), 2, "relu", F64, seed=2)
    visible, hidden, eps = small_batch(2, 6)
    parts = model.loss(visible, hidden, eps, grad=False)
    mu_p, logvar_p = model.prior_stats(visible)
    z = mu_p + np.exp(logvar_p / 2) * eps
    log_p = model.log_likelihood(visible, hidden, z[:, None, :])[:, 0]
    assert float(parts.loss) == pytest.approx(-log_p.sum(), rel=1e-13)
    assert parts.recon == parts.loss and parts.kl == 0 and parts.kl_per_dim.shape == (0,)
    assert set(model.networks()) == {"prior", "generation"}


# ---------------------------------------------------------------- the prior-sampled estimate
def tiny_gsnn():
    """Two hidden pixels and one latent dimension, as test_completion's tiny CVAE: the exact
    p(h | v) is a one-dimensional integral over the prior."""
    model = CompletionGSNN(3, 2, (6,), 1, "tanh", F64, seed=0)
    model.generation.layers[0].weight[:, 3:] *= 4.0
    return model


@pytest.mark.parametrize("S", [1, 7, 300])
def test_the_prior_sampled_estimate_is_exact_when_z_does_not_matter(S):
    model = CompletionGSNN(3, 4, (5, 4), 2, "tanh", F64, seed=5)
    model.generation.layers[0].weight[:, 3:] = 0.0
    visible, hidden = completion_batch(np.random.default_rng(5), 6, 3, 4, True)
    exact = model.log_likelihood(visible, hidden, np.zeros((6, 1, 2)))[:, 0]
    estimate = mc_conditional_log_likelihood(model, visible, hidden, S, np.random.default_rng(S))
    np.testing.assert_allclose(estimate, exact, rtol=0, atol=1e-12)


def test_each_prior_draw_is_an_unbiased_estimate_of_the_likelihood():
    """E_p[p(h | v, z)] = p(h | v) for each of the four outputs (20,000 draws, within five
    standard errors); at S = 1 the estimate's mean is minus the GSNN's mean loss."""
    model = tiny_gsnn()
    n = 20_000
    visible = np.repeat([[0.2, 0.7, 0.4]], n, axis=0)
    for i, h in enumerate(TINY_HIDDEN):
        hidden = np.repeat(h[None], n, axis=0)
        log_p1 = mc_conditional_log_likelihood(model, visible, hidden, 1, np.random.default_rng(i))
        w = np.exp(log_p1)
        exact = np.exp(exact_log_likelihood(model, visible[:1], hidden[:1], 2001)[0])
        assert abs(w.mean() - exact) < 5 * w.std(ddof=1) / np.sqrt(n), (h, w.mean(), exact)
        model.rng = np.random.default_rng(100 + i)
        loss = float(model.loss(visible, hidden, grad=False).loss) / n
        assert abs(-log_p1.mean() - loss) < 5 * log_p1.std(ddof=1) / np.sqrt(n)


def test_the_prior_sampled_estimate_rises_toward_the_truth_as_S_grows():
    """Means of 2,000 replicates for S = 1, 10, 100, 1000 on the output whose gap is largest
    (about 0.09 nats at S = 1):
    each at least the previous less 3 SE, the rise real (> 5 SE), each below the truth plus
    3 SE, and at S = 1000 within 3 SE + 2e-3 nats of the truth."""
    model = tiny_gsnn()
    n = 2_000
    visible = np.repeat([[0.2, 0.7, 0.4]], n, axis=0)
    hidden = np.repeat(TINY_HIDDEN[:1], n, axis=0)
    truth = exact_log_likelihood(model, visible[:1], hidden[:1], 2001)[0]
    means, errors = [], []
    for S in (1, 10, 100, 1000):
        log_p = mc_conditional_log_likelihood(model, visible, hidden, S, np.random.default_rng(S))
        means.append(log_p.mean())
        errors.append(log_p.std(ddof=1) / np.sqrt(n))
    means, errors = np.array(means), np.array(errors)
    assert np.all(np.diff(means) > -3 * np.sqrt(errors[1:] ** 2 + errors[:-1] ** 2)), means
    assert means[-1] - means[0] > 5 * np.hypot(errors[0], errors[-1]), means
    assert np.all(means < truth + 3 * errors), (means, truth)
    assert abs(means[-1] - truth) < 3 * errors[-1] + 2e-3, (means[-1], truth)
    assert truth - means[0] > 0.05  # the S = 1 estimate is far from the truth: the test has teeth


def test_the_hybrid_has_both_estimates_and_they_agree_on_a_z_blind_model():
    """The prior-sampled and the importance-sampled estimates of one model estimate the same
    log p(h | v): both exact, so equal, where z does not matter and q is the prior
    (test_completion's z-blind CVAE, its weights in a hybrid); the model's generator is
    untouched."""
    model = CompletionHybrid(3, 4, (5, 4), 2, "tanh", F64, seed=7)
    for name, p in z_blind_model(seed=7).params.items():
        model.params[name][...] = p
    visible, hidden = completion_batch(np.random.default_rng(7), 5, 3, 4, True)
    state = model.rng.bit_generator.state
    mc = mc_conditional_log_likelihood(model, visible, hidden, 50, np.random.default_rng(0))
    iw = iw_conditional_log_likelihood(model, visible, hidden, 50, np.random.default_rng(1))
    np.testing.assert_allclose(mc, iw, rtol=0, atol=1e-12)
    assert model.rng.bit_generator.state == state
