"""Image completion (Sohn et al. 2015): the quadrant masks, the gradients of the baseline and of
the CVAE with a learned prior, and the importance-sampled log p(hidden | visible)."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_vae import completion, get_backend, quadrants
from numpy_vae.completion import (
    CompletionBaseline,
    CompletionCVAE,
    iw_conditional_log_likelihood,
)
from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.gsnn import CompletionGSNN, CompletionHybrid
from numpy_vae.kl import gaussian_kl
from numpy_vae.layers import Linear
from numpy_vae.optim import Adam
from numpy_vae.quadrants import quadrant_join, quadrant_mask, quadrant_split
from numpy_vae.reparam import reparameterize_backward

F64 = get_backend("numpy", "float64")
seeds = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------- the quadrants
@pytest.mark.parametrize("n_given", [1, 2, 3])
def test_the_visible_and_hidden_quadrants_partition_the_image(n_given):
    mask = quadrant_mask(n_given)
    assert mask.shape == (784,) and mask.sum() == 196 * n_given
    image = np.arange(784.0)[None]
    visible, hidden = quadrant_split(image, n_given)
    assert visible.shape == (1, 196 * n_given) and hidden.shape == (1, 196 * (4 - n_given))
    # Every pixel is in exactly one of the two parts, and joining them gives the image back.
    assert sorted(np.concatenate([visible[0], hidden[0]])) == list(range(784))
    np.testing.assert_array_equal(quadrant_join(visible, hidden, n_given), image)


def test_which_quadrants_are_given():
    """Pyro's examples/cvae masks: the bottom-left; then the left half; then all but the
    bottom-right. Each set holds the one before."""
    quadrants = {
        "top_left": (slice(0, 14), slice(0, 14)), "top_right": (slice(0, 14), slice(14, 28)),
        "bottom_left": (slice(14, 28), slice(0, 14)),
        "bottom_right": (slice(14, 28), slice(14, 28)),
    }  # fmt: skip
    expected = {1: {"bottom_left"}, 2: {"bottom_left", "top_left"},
                3: {"bottom_left", "top_left", "top_right"}}  # fmt: skip
    for n_given, given_quadrants in expected.items():
        mask = quadrant_mask(n_given).reshape(28, 28)
        for name, where in quadrants.items():
            assert mask[where].all() if name in given_quadrants else not mask[where].any(), (
                n_given,
                name,
            )
    assert np.all(quadrant_mask(1) <= quadrant_mask(2)) and np.all(
        quadrant_mask(2) <= quadrant_mask(3)
    )


@pytest.mark.parametrize(
    "args,message",
    [((0, 28), "1, 2 or 3"), ((4, 28), "1, 2 or 3"), ((True, 28), "1, 2 or 3"), ((2, 7), "even")],
)
def test_bad_quadrant_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        quadrant_mask(*args)


def test_quadrant_split_refuses_images_of_another_size():
    with pytest.raises(ValueError, match=r"\(B, 784\)"):
        quadrant_split(np.zeros((2, 28, 28)), 2)


# ---------------------------------------------------------------- gradients
def min_preactivation(model):
    """Smallest |input| of any activation in the last forward pass (the ReLU kink)."""
    smallest = np.inf
    for net in model.networks().values():
        for layer, nxt in zip(net.layers[:-1], net.layers[1:], strict=True):
            if isinstance(layer, Linear) and not isinstance(nxt, Linear):
                pre = layer._x @ layer.weight.T + layer.bias
                smallest = min(smallest, np.abs(pre).min())
    return smallest


def gradient_errors(model, visible, hidden, eps=None):
    """Relative error of every parameter's gradient against central differences (float64)."""
    model.loss(visible, hidden, eps)
    errors = check_gradients(
        lambda: model.loss(visible, hidden, eps, grad=False).loss, model.params, model.grads
    )
    return errors


def completion_batch(rng, batch, visible_dim, hidden_dim, binary):
    visible = rng.random((batch, visible_dim))
    hidden = rng.random((batch, hidden_dim))
    return visible, (hidden > 0.5).astype(np.float64) if binary else hidden


sizes = {
    "batch": st.integers(1, 4), "visible_dim": st.integers(1, 5), "hidden_dim": st.integers(1, 5),
    "widths": st.lists(st.integers(1, 6), min_size=1, max_size=2).map(tuple),
    "activation": st.sampled_from(["relu", "tanh"]), "seed": seeds, "binary": st.booleans(),
}  # fmt: skip


def assume_checkable(model, loss):
    """Skip draws the checker cannot resolve to 1e-7. A central difference across a ReLU kink
    sees two slopes. And rounding limits the estimate to about 1e-11 of the loss in absolute
    terms (:mod:`numpy_vae.gradcheck`): a gradient array must not be vanishingly small, nor
    smaller than 1e-3 of the loss (weights scaled up can make the KL reach 1e9 through a prior
    log-variance near -20, beside generation gradients of order 1)."""
    assume(min_preactivation(model) > 5e-3)
    smallest = min(np.abs(g).max() for g in model.grads.values())
    assume(smallest > 1e-3 and smallest > 1e-3 * abs(float(loss)))


def assert_every_gradient_checks(model, scale, seed, batch, binary):
    """``model``'s weights scaled by ``scale``, a batch and ``eps`` drawn from ``seed``: every
    parameter's gradient against central differences (draws the checker cannot resolve are
    skipped); every network's weight and bias of every layer is checked."""
    for p in model.params.values():
        p *= scale
    rng = np.random.default_rng(seed)
    visible, hidden = completion_batch(rng, batch, model.visible_dim, model.hidden_dim, binary)
    eps = rng.standard_normal((batch, model.latent_dim))
    assume_checkable(model, model.loss(visible, hidden, eps).loss)
    errors = gradient_errors(model, visible, hidden, eps)
    assert_gradients_close(errors)
    assert {name.split(".")[0] for name in errors} == set(model.networks())
    assert len(errors) == len(model.networks()) * 2 * (len(model.widths) + 1)


@given(latent_dim=st.integers(1, 3), scale=st.sampled_from([1.0, 3.0]), **sizes)
def test_cvae_gradients_of_every_parameter(
    batch, visible_dim, hidden_dim, widths, activation, seed, binary, latent_dim, scale
):
    """All three networks; weights scaled up so that the logits and log-variances leave the
    linear regime (the KL's exp(logvar_q - logvar_p) and the prior's gradients then matter)."""
    model = CompletionCVAE(visible_dim, hidden_dim, widths, latent_dim, activation, F64, seed)
    assert set(model.networks()) == {"prior", "recognition", "generation"}
    assert_every_gradient_checks(model, scale, seed, batch, binary)


@given(**sizes)
def test_baseline_gradients_of_every_parameter(
    batch, visible_dim, hidden_dim, widths, activation, seed, binary
):
    model = CompletionBaseline(visible_dim, hidden_dim, widths, activation, F64, seed)
    visible, hidden = completion_batch(
        np.random.default_rng(seed), batch, visible_dim, hidden_dim, binary
    )
    assume_checkable(model, model.loss(visible, hidden).loss)
    errors = gradient_errors(model, visible, hidden)
    assert_gradients_close(errors)
    assert len(errors) == 2 * (len(widths) + 1)


def planted_half_missing_in_the_kl(mu_q, logvar_q, mu_p, logvar_p, xp):
    kl, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, xp)
    return kl, d_mu_q, d_logvar_q, d_mu_p, 2 * d_logvar_p


def planted_half_missing_in_the_reparameterization(d_z, cache):
    d_mu, d_logvar = reparameterize_backward(d_z, cache)
    return d_mu, 2 * d_logvar


@pytest.mark.parametrize(
    "name,planted,caught",
    [
        ("gaussian_kl", planted_half_missing_in_the_kl, "prior"),
        ("reparameterize_backward", planted_half_missing_in_the_reparameterization, "recognition"),
    ],
)
def test_the_model_gradient_check_catches_a_planted_factor(monkeypatch, name, planted, caught):
    """The CVAE's backward with a factor 2 where 1/2 belongs (in the KL's gradient in
    logvar_p, or in the reparameterization's in logvar_q): the check fails, on that network."""
    model = CompletionCVAE(4, 3, (5,), 2, "tanh", F64, seed=1)
    rng = np.random.default_rng(1)
    visible, hidden = completion_batch(rng, 3, 4, 3, True)
    eps = rng.standard_normal((3, 2))
    assert_gradients_close(gradient_errors(model, visible, hidden, eps))  # the true model passes
    monkeypatch.setattr(completion, name, planted)
    errors = gradient_errors(model, visible, hidden, eps)
    bad = {n for n, e in errors.items() if e > 1e-3}
    assert bad and {n.split(".")[0] for n in bad} == {caught}, errors
    with pytest.raises(AssertionError, match=caught):
        assert_gradients_close(errors)


def test_loss_parts_match_independent_formulas():
    model = CompletionCVAE(4, 3, (5,), 2, "relu", F64, seed=2)
    rng = np.random.default_rng(2)
    visible, hidden = completion_batch(rng, 6, 4, 3, True)
    eps = rng.standard_normal((6, 2))
    parts = model.loss(visible, hidden, eps, grad=False)
    mu_p, logvar_p = model.prior_stats(visible)
    mu_q, logvar_q = model.recognition_stats(visible, hidden)
    z = mu_q + np.exp(logvar_q / 2) * eps
    log_px = model.log_likelihood(visible, hidden, z[:, None, :])[:, 0]
    var_q, var_p = np.exp(logvar_q), np.exp(logvar_p)
    kl = 0.5 * (np.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1).sum()
    assert parts.recon == pytest.approx(-log_px.sum(), rel=1e-12)
    assert parts.kl == pytest.approx(kl, rel=1e-12)
    assert parts.loss == pytest.approx(parts.neg_elbo, rel=1e-15)


def test_adam_trains_every_model_on_a_fixed_batch():
    """The params and grads dicts fit the optimizer: 200 steps on one batch (and, with a z, one
    fixed eps) lower the loss by more than a quarter (the GSNN and the hybrid: numpy_vae.gsnn)."""
    rng = np.random.default_rng(3)
    visible, hidden = completion_batch(rng, 16, 6, 4, True)
    eps = rng.standard_normal((16, 2))
    latent = [
        cls(6, 4, (8,), 2, seed=3) for cls in (CompletionCVAE, CompletionGSNN, CompletionHybrid)
    ]
    for model, noise in [
        (CompletionBaseline(6, 4, (8,), seed=3), None),
        *[(m, eps) for m in latent],
    ]:
        adam = Adam(list(model.params.values()), list(model.grads.values()), lr=1e-2)
        first = float(model.loss(visible, hidden, noise).loss)
        for _ in range(200):
            model.loss(visible, hidden, noise)
            adam.step()
        last = float(model.loss(visible, hidden, noise, grad=False).loss)
        assert last < 0.75 * first, (type(model).__name__, first, last)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hidden": np.full((2, 3), 1.5)}, r"\[0, 1\]"),
        ({"hidden": np.zeros((3, 3))}, "rows"),
        ({"visible": np.zeros((2, 5))}, "visible_dim=4"),
        ({"eps": np.zeros((2, 3))}, "latent_dim=2"),
        ({"visible": np.full((2, 4), np.nan)}, "NaN"),
    ],
)
def test_bad_completion_inputs(kwargs, message):
    model = CompletionCVAE(4, 3, (5,), 2, backend=F64)
    args = {"visible": np.zeros((2, 4)), "hidden": np.zeros((2, 3)), "eps": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        model.loss(**args)


def test_the_baseline_has_no_noise_and_its_likelihood_is_its_loss():
    model = CompletionBaseline(4, 3, (5,), backend=F64)
    visible, hidden = completion_batch(np.random.default_rng(4), 5, 4, 3, True)
    with pytest.raises(ValueError, match="latent_dim=0"):
        model.loss(visible, hidden, eps=np.zeros((5, 1)))
    exact = model.conditional_log_likelihood(visible, hidden)
    assert model.loss(visible, hidden).loss == pytest.approx(-exact.sum(), rel=1e-14)


# ---------------------------------------------------------------- the importance-sampled CLL
def z_blind_model(seed=5):
    """A CVAE whose generation network ignores z (its weights on z are 0) and whose recognition
    network is the prior network (same weights on ``visible``, 0 on ``hidden``): then
    q(z | v, h) = p(z | v) = p(z | v, h), every weight w_s is p(h | v), and the estimate is
    exact for every S."""
    model = CompletionCVAE(3, 4, (5, 4), 2, "tanh", F64, seed)
    model.generation.layers[0].weight[:, 3:] = 0.0
    for prior_layer, layer in zip(model.prior.layers, model.recognition.layers, strict=True):
        if isinstance(layer, Linear):
            layer.weight[...] = 0.0
            layer.weight[:, : prior_layer.weight.shape[1]] = prior_layer.weight
            layer.bias[...] = prior_layer.bias
    return model


@pytest.mark.parametrize("S", [1, 7, 1000])
def test_the_estimate_is_exact_when_q_is_the_posterior(S):
    model = z_blind_model()
    visible, hidden = completion_batch(np.random.default_rng(5), 6, 3, 4, True)
    exact = model.log_likelihood(visible, hidden, np.zeros((6, 1, 2)))[:, 0]
    estimate = iw_conditional_log_likelihood(model, visible, hidden, S, np.random.default_rng(S))
    np.testing.assert_allclose(estimate, exact, rtol=0, atol=1e-12)
    # Sanity of the construction: the recognition and prior networks do agree.
    for a, b in zip(
        model.recognition_stats(visible, hidden), model.prior_stats(visible), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-15)


TINY_HIDDEN = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)  # all of {0,1}^2


def tiny_model():
    """Two hidden pixels, one latent dimension: the output space has four points and
    p(h | v) is a one-dimensional integral. The z weights of the generation network are
    scaled up so that p(h | v, z) changes strongly with z."""
    model = CompletionCVAE(3, 2, (6,), 1, "tanh", F64, seed=0)
    model.generation.layers[0].weight[:, 3:] *= 4.0
    return model


def exact_log_likelihood(model, visible, hidden, points):
    """log p(h | v) = log of the integral of p(h | v, z) N(z; mu_p, sigma_p^2) dz, by the
    trapezoidal rule in x = (z - mu_p) / sigma_p on [-12, 12] (the tails beyond hold less than
    1e-32 of the prior's mass; the rule converges exponentially fast on such integrands)."""
    x = np.linspace(-12.0, 12.0, points)
    mu_p, logvar_p = model.prior_stats(visible)
    z = mu_p[:, None, :] + np.exp(logvar_p / 2)[:, None, :] * x[None, :, None]
    log_terms = model.log_likelihood(visible, hidden, z) - 0.5 * (x * x + np.log(2 * np.pi))
    return np.logaddexp.reduce(log_terms, axis=1) + np.log(x[1] - x[0])


def test_the_exact_answer_of_the_tiny_model_is_a_distribution():
    """Over the four possible outputs, the quadrature's p(h | v) sums to 1, and it has
    converged (2001 and 4001 points agree)."""
    model = tiny_model()
    visible = np.repeat([[0.2, 0.7, 0.4]], 4, axis=0)
    log_p = exact_log_likelihood(model, visible, TINY_HIDDEN, 4001)
    np.testing.assert_allclose(
        exact_log_likelihood(model, visible, TINY_HIDDEN, 2001), log_p, atol=1e-12
    )
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)


def test_each_weight_is_an_unbiased_estimate_of_the_likelihood():
    """E_q[w] = p(h | v) for each of the four outputs: the mean of 20,000 single-sample weights
    lies within five standard errors of the exact probability."""
    model = tiny_model()
    n = 20_000
    visible = np.repeat([[0.2, 0.7, 0.4]], n, axis=0)
    for i, h in enumerate(TINY_HIDDEN):
        hidden = np.repeat(h[None], n, axis=0)
        w = np.exp(
            iw_conditional_log_likelihood(model, visible, hidden, 1, np.random.default_rng(i))
        )
        exact = np.exp(exact_log_likelihood(model, visible[:1], hidden[:1], 2001)[0])
        assert abs(w.mean() - exact) < 5 * w.std(ddof=1) / np.sqrt(n), (h, w.mean(), exact)


def test_the_estimate_rises_toward_the_truth_as_S_grows():
    """The mean of log p_S over 2,000 independent replicates, for S = 1, 3, 10, 30, 100, 1000,
    on the output whose gap at S = 1 is largest (about 0.19 nats).

    Tolerances, from the replicates' standard errors (SE, sample sd / sqrt(2000), between
    0.017 at S = 1 and 0.0004 at S = 1000): each mean is at least the previous one less
    3 SE of their difference (independent draws), so a false failure needs a 3-sigma
    fluctuation; the total rise from S = 1 to 1000 exceeds 5 SE, so the rise is real; every
    mean lies below the truth plus 3 SE (a lower bound in expectation, Jensen); and at
    S = 1000 the mean is within 3 SE + 1e-3 nats of the truth (the bias there, about
    Var(w) / (2 S p^2), is near 2e-4 nats for this model).
    """
    model = tiny_model()
    n = 2_000
    visible = np.repeat([[0.2, 0.7, 0.4]], n, axis=0)
    hidden = np.repeat(TINY_HIDDEN[1:2], n, axis=0)
    truth = exact_log_likelihood(model, visible[:1], hidden[:1], 2001)[0]
    means, errors = [], []
    for S in (1, 3, 10, 30, 100, 1000):
        log_p = iw_conditional_log_likelihood(model, visible, hidden, S, np.random.default_rng(S))
        means.append(log_p.mean())
        errors.append(log_p.std(ddof=1) / np.sqrt(n))
    means, errors = np.array(means), np.array(errors)
    steps = np.diff(means)
    assert np.all(steps > -3 * np.sqrt(errors[1:] ** 2 + errors[:-1] ** 2)), (means, errors)
    assert means[-1] - means[0] > 5 * np.hypot(errors[0], errors[-1]), means
    assert np.all(means < truth + 3 * errors), (means, truth)
    assert abs(means[-1] - truth) < 3 * errors[-1] + 1e-3, (means[-1], truth)
    assert truth - means[0] > 0.1  # the S = 1 estimate is far from the truth: the test has teeth


def test_the_estimate_is_a_lower_bound_near_the_elbo_at_S_1():
    """At S = 1 the estimate's mean is the ELBO with a sampled KL; its mean over many draws
    equals the mean negative loss (the ELBO with the closed-form KL) within 5 SE."""
    model = tiny_model()
    n = 20_000
    visible = np.repeat([[0.2, 0.7, 0.4]], n, axis=0)
    hidden = np.repeat(TINY_HIDDEN[3:4], n, axis=0)
    log_p1 = iw_conditional_log_likelihood(model, visible, hidden, 1, np.random.default_rng(9))
    model.rng = np.random.default_rng(10)
    elbo = -float(model.loss(visible, hidden, grad=False).neg_elbo) / n
    assert abs(log_p1.mean() - elbo) < 5 * log_p1.std(ddof=1) / np.sqrt(n)


def test_the_estimate_does_not_depend_on_the_chunk():
    """One example with one latent dimension draws the same numbers in the same order whatever
    the chunk, so the estimate is the same."""
    model = tiny_model()
    visible, hidden = np.array([[0.2, 0.7, 0.4]]), TINY_HIDDEN[1:2]
    whole, in_chunks = (
        iw_conditional_log_likelihood(model, visible, hidden, 250, np.random.default_rng(0), chunk)
        for chunk in (250, 50)
    )
    np.testing.assert_allclose(in_chunks, whole, rtol=1e-13)


def test_the_study_trains_and_reports_the_three_figures():
    """The MNIST study's pieces on synthetic binary images of 8 x 8 (no MNIST needed): the
    training curve falls, and the CVAE's importance-sampled negative CLL lies below its
    negative ELBO on average (a tighter bound; S = 50)."""
    from numpy_vae.experiments.completion_study import evaluate, train

    rng = np.random.default_rng(6)
    images = (rng.random((64, 64)) < np.linspace(0.1, 0.9, 64)).astype(np.float64)
    visible, hidden = quadrant_split(images, 2, side=8)
    baseline = CompletionBaseline(32, 32, (16,), backend=F64, seed=6)
    cvae = CompletionCVAE(32, 32, (16,), 3, backend=F64, seed=6)
    for model in (baseline, cvae):
        curve = train(model, visible, hidden, epochs=4, batch_size=16, lr=1e-2)
        assert curve[-1] < curve[0]
    figures = evaluate(baseline, cvae, visible, hidden, S=50)
    assert set(figures) == {"baseline_neg_cll", "cvae_neg_elbo", "cvae_neg_cll_iw50"}
    assert figures["cvae_neg_cll_iw50"] < figures["cvae_neg_elbo"]


def test_completions_come_from_the_prior_network_and_leave_no_trace():
    """``complete`` decodes z = mu_p + sigma_p eps (the prior network's draw: the hidden part
    is not known at completion time); the importance-sampled estimate draws from its own
    generator only, so the model's stays where it was."""
    model = CompletionCVAE(4, 3, (5,), 2, "tanh", F64, seed=7)
    visible, hidden = completion_batch(np.random.default_rng(7), 5, 4, 3, True)
    eps = np.random.default_rng(8).standard_normal((5, 2))
    mu_p, logvar_p = model.prior_stats(visible)
    z = mu_p + np.exp(logvar_p / 2) * eps
    expected = np.exp(model.log_likelihood(visible, np.ones((5, 3)), z[:, None, :])[:, 0])
    probabilities = model.complete(visible, eps)
    assert probabilities.shape == (5, 3) and np.all((probabilities > 0) & (probabilities < 1))
    np.testing.assert_allclose(probabilities.prod(axis=1), expected, rtol=1e-12)
    state = model.rng.bit_generator.state
    iw_conditional_log_likelihood(model, visible, hidden, 10, np.random.default_rng(0))
    assert model.rng.bit_generator.state == state
    with pytest.raises(ValueError, match="visible_dim=4"):
        model.complete(np.zeros((2, 3)))


def test_completions_check_their_noise():
    """``complete``'s ``eps`` is checked as ``loss``'s is: one row per visible row, latent_dim
    columns (a (1, L) eps would silently give every row the same z)."""
    model = CompletionCVAE(4, 3, (5,), 2, backend=F64, seed=0)
    visible = np.random.default_rng(0).random((6, 4))
    with pytest.raises(ValueError, match="eps has 1 rows, visible 6"):
        model.complete(visible, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="latent_dim"):
        model.complete(visible, np.zeros((6, 3)))
    assert model.complete(visible, np.zeros((6, 2))).shape == (6, 3)


def test_a_join_refuses_parts_of_the_wrong_widths():
    images = (np.random.default_rng(1).random((3, 16)) > 0.5).astype(np.float64)
    visible, hidden = quadrants.quadrant_split(images, 2, side=4)
    assert np.array_equal(quadrants.quadrant_join(visible, hidden, 2, side=4), images)
    with pytest.raises(ValueError, match=r"\(B, 8\) and \(B, 8\)"):
        quadrants.quadrant_join(visible[:, :4], hidden, 2, side=4)
    with pytest.raises(ValueError, match=r"\(B, 4\) and \(B, 12\)"):
        quadrants.quadrant_join(visible, hidden, 1, side=4)


def test_the_study_evaluation_leaves_the_model_generator_alone():
    from numpy_vae.experiments.completion_study import evaluate

    baseline = CompletionBaseline(4, 3, (5,), backend=F64, seed=0)
    cvae = CompletionCVAE(4, 3, (5,), 2, backend=F64, seed=0)
    visible, hidden = completion_batch(np.random.default_rng(2), 5, 4, 3, True)
    rng = cvae.rng
    first = evaluate(baseline, cvae, visible, hidden, S=3, seed=7)
    assert cvae.rng is rng and evaluate(baseline, cvae, visible, hidden, S=3, seed=7) == first
