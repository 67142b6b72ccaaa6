"""The multi-sample bounds (k-sample VAE, IWAE) and the encoder estimators (plain, STL, DReG).

- The plain gradient of each bound against central differences (float64, <= 1e-7), K in
  {1, 2, 5, 50}, over shapes and values.
- K = 1: the IWAE and VAE bounds are one quantity, the ELBO with a sampled KL, written here
  independently from z itself.
- STL and DReG against finite differences of the surrogates they are exact gradients of.
- Unbiasedness by Monte Carlo: DReG's mean is the plain estimator's; STL's is not for K > 1.
- Planted bugs: weights or samples paired with another example, log-mean-exp without its shift.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import numpy_vae.bounds as bounds
import numpy_vae.model as model_module
import numpy_vae.objectives as objectives
from numpy_vae import VAE, get_backend
from numpy_vae.gradcheck import assert_gradients_close, check_gradients

F64 = get_backend("numpy", "float64")
seeds = st.integers(0, 2**31 - 1)


def small_model(objective, k, estimator="reparam", seed=0, input_dim=6, hidden=5, latent=3, **kw):
    return VAE(
        input_dim,
        hidden_dims=(hidden,),
        latent_dim=latent,
        activation=kw.pop("activation", "tanh"),
        backend=F64,
        seed=seed,
        objective=objective,
        k=k,
        estimator=estimator,
        **kw,
    )


def inputs(model, batch, k, seed, binary=True):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, model.input_dim))
    if binary:
        x = (x > 0.5).astype(np.float64)
    y = rng.integers(0, model.n_classes, batch) if model.n_classes else None
    return x, y, rng.standard_normal((batch, k, model.latent_dim))


def bound_gradient_errors(model, x, y, eps):
    """Relative errors of the model's gradient against central differences of its loss."""
    model.loss(x, y, eps=eps)
    return check_gradients(
        lambda: model.loss(x, y, eps=eps, grad=False).loss, model.params, model.grads
    )


# ---------------------------------------------------------------------- the plain gradients
@settings(deadline=None, max_examples=12)
@given(
    objective=st.sampled_from(["vae", "iwae"]),
    k=st.sampled_from([1, 2, 5, 50]),
    batch=st.integers(1, 4),
    input_dim=st.integers(1, 8),
    hidden=st.integers(1, 6),
    latent=st.integers(1, 3),
    likelihood=st.sampled_from(["bernoulli", "gaussian"]),
    n_classes=st.sampled_from([0, 3]),
    seed=seeds,
)
def test_bound_gradients_match_finite_differences(
    objective, k, batch, input_dim, hidden, latent, likelihood, n_classes, seed
):
    model = small_model(
        objective,
        k,
        seed=seed,
        input_dim=input_dim,
        hidden=hidden,
        latent=latent,
        likelihood=likelihood,
        n_classes=n_classes,
    )
    x, y, eps = inputs(model, batch, k, seed, binary=likelihood == "bernoulli")
    model.loss(x, y, eps=eps)
    # A relative error means something only for gradients that are not vanishingly small.
    assume(all(np.abs(g).max() > 1e-3 for g in model.grads.values()))
    assert_gradients_close(bound_gradient_errors(model, x, y, eps))


@pytest.mark.parametrize("k", [1, 2, 5, 50])
@pytest.mark.parametrize("objective", ["vae", "iwae"])
def test_every_k_of_the_issue_on_a_two_layer_model(objective, k):
    """The four K of the issue, always run (hypothesis picks among them at random)."""
    model = VAE(
        7,
        hidden_dims=(6, 5),
        latent_dim=3,
        activation="tanh",
        backend=F64,
        seed=k,
        objective=objective,
        k=k,
    )
    x, y, eps = inputs(model, 3, k, seed=k)
    assert_gradients_close(bound_gradient_errors(model, x, y, eps))


def test_the_bounds_are_ordered_and_the_iwae_bound_is_the_log_mean_weight():
    model = small_model("iwae", 50)
    x, y, eps = inputs(model, 3, 50, seed=1)
    s = bounds.samples(model, x, eps=eps)
    log_w = s.log_w
    iwae = -model.loss(x, eps=eps, grad=False).loss
    expected = sum(math.log(np.mean(np.exp(row))) for row in log_w)
    assert iwae == pytest.approx(expected, rel=1e-13)
    model.objective = objectives.KSampleVAE(50, bounds.Reparameterized())  # the same model
    vae = -model.loss(x, eps=eps, grad=False).loss
    assert vae == pytest.approx(log_w.mean(axis=1).sum(), rel=1e-13)
    assert vae < iwae  # Jensen, per example and so in the sum


# ---------------------------------------------------------------------- K = 1
def sampled_kl_elbo(model, x, eps):
    """-ELBO with a sampled KL, written from z alone: nll(x | z) + log q(z|x) - log p(z)."""
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps[:, 0, :]
    nll = -model.log_likelihood(x, model.decoder_output(z))
    var = np.exp(logvar)
    log_q = -0.5 * ((z - mu) ** 2 / var + logvar + math.log(2 * math.pi)).sum(axis=1)
    log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(axis=1)
    return (nll + log_q - log_p).sum()


@given(seed=seeds, batch=st.integers(1, 4))
@settings(deadline=None, max_examples=10)
def test_k_1_is_the_vae_with_a_sampled_kl(seed, batch):
    iwae, vae = small_model("iwae", 1, seed=seed), small_model("vae", 1, seed=seed)
    x, _, eps = inputs(iwae, batch, 1, seed)
    a, b = iwae.loss(x, eps=eps), vae.loss(x, eps=eps)
    # The one-sample IWAE bound is the VAE bound exactly: log-mean-exp of one number is the
    # number, its softmax weight is 1.
    assert a.loss == b.loss
    for name in iwae.grads:
        np.testing.assert_array_equal(iwae.grads[name], vae.grads[name])
    # And both are the sampled-KL ELBO, whose gradient (by differences) they are.
    assert float(a.loss) == pytest.approx(sampled_kl_elbo(iwae, x, eps), rel=1e-13)
    errors = check_gradients(lambda: sampled_kl_elbo(iwae, x, eps), iwae.params, iwae.grads)
    assume(all(np.abs(g).max() > 1e-3 for g in iwae.grads.values()))
    assert_gradients_close(errors)


# ---------------------------------------------------------------------- STL and DReG
def surrogate_errors(estimator, k, seed, batch=3):
    """STL's gradient against differences of its surrogate; DReG's encoder gradient against
    its surrogate's and its decoder gradient against the IWAE bound's."""
    model = small_model("iwae", k, estimator, seed=seed)
    x, _, eps = inputs(model, batch, k, seed)
    model.loss(x, eps=eps)
    grads = {name: g.copy() for name, g in model.grads.items()}
    held = bounds.samples(model, x, eps=eps)
    mu0, logvar0 = held.mu.copy(), held.logvar.copy()
    w2 = bounds.normalized_weights(held.log_w, np) ** 2

    def surrogate():  # the loss is the negative bound, so its gradient is minus the surrogate's
        s = bounds.samples(model, x, eps=eps)
        log_joint = s.log_px + s.log_pz
        if estimator == "stl":
            return -bounds.stl_surrogate(log_joint, s.z, mu0, logvar0, np).sum()
        return -bounds.dreg_surrogate(log_joint, s.z, mu0, logvar0, w2, np).sum()

    encoder = {n: p for n, p in model.params.items() if not n.startswith("decoder")}
    decoder = {n: p for n, p in model.params.items() if n.startswith("decoder")}
    errors = check_gradients(surrogate, encoder, {n: grads[n] for n in encoder})
    if estimator == "stl":  # STL's surrogate also gives the decoder gradient
        errors |= check_gradients(surrogate, decoder, {n: grads[n] for n in decoder})
    else:
        bound_loss = lambda: model.loss(x, eps=eps, grad=False).loss  # noqa: E731
        errors |= check_gradients(bound_loss, decoder, {n: grads[n] for n in decoder})
    return errors


@pytest.mark.parametrize("k", [1, 2, 5, 50])
@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_stl_and_dreg_are_the_gradients_of_their_surrogates(estimator, k):
    assert_gradients_close(surrogate_errors(estimator, k, seed=k))


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_the_surrogate_check_tells_the_estimators_apart(estimator):
    """STL's gradient is not DReG's surrogate's, nor the reverse (so the check above can fail)."""
    other = "dreg" if estimator == "stl" else "stl"
    model = small_model("iwae", 5, other, seed=3)
    x, _, eps = inputs(model, 3, 5, seed=3)
    wrong = small_model("iwae", 5, estimator, seed=3)
    wrong.loss(x, eps=eps)
    errors = surrogate_errors(other, 5, seed=3)
    assert max(errors.values()) < 1e-7
    model.loss(x, eps=eps)
    head = "head.weight"
    assert np.abs(wrong.grads[head] - model.grads[head]).max() > 1e-3


def test_the_decoder_gradient_is_the_same_for_every_estimator():
    x, _, eps = inputs(small_model("iwae", 5), 3, 5, seed=4)
    grads = []
    for estimator in ("reparam", "stl", "dreg"):
        model = small_model("iwae", 5, estimator)
        model.loss(x, eps=eps)
        grads.append({n: g.copy() for n, g in model.grads.items() if n.startswith("decoder")})
    for other in grads[1:]:
        for name, g in grads[0].items():
            np.testing.assert_array_equal(other[name], g)


# ---------------------------------------------------------------------- unbiasedness
def per_draw_encoder_gradients(k, draws, seed=0):
    """The loss gradient in (mu, logvar) of one example, once per draw of eps, for each
    estimator on the same draws: {estimator: (draws, 2L)}."""
    out = {}
    rng = np.random.default_rng(seed)
    x = (rng.random((1, 6)) > 0.5).astype(np.float64).repeat(draws, axis=0)
    eps = rng.standard_normal((draws, k, 3))
    for estimator in ("reparam", "stl", "dreg"):
        model = small_model("iwae", k, estimator, seed=seed)
        seen = []
        backward = model.head.backward
        model.head.backward = lambda d, seen=seen, backward=backward: (
            seen.append(d.copy()) or backward(d)
        )
        model.loss(x, eps=eps)
        out[estimator] = seen[0]
    return out


def z_scores(a, b):
    """Mean over draws of ``a - b`` (paired: the same eps) in standard errors, per component."""
    diff = a - b
    return diff.mean(axis=0) / (diff.std(axis=0, ddof=1) / math.sqrt(diff.shape[0]))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_dreg_is_unbiased_for_the_iwae_encoder_gradient(k):
    g = per_draw_encoder_gradients(k, draws=40000, seed=k)
    # Six components (mu and logvar of L = 3): 4.5 standard errors fail a correct estimator
    # with probability about 4e-5.
    assert np.abs(z_scores(g["dreg"], g["reparam"])).max() < 4.5


@pytest.mark.parametrize("k", [5, 20])
def test_stl_is_biased_for_k_above_1(k):
    """Tucker et al. 2018: STL's mean is not the IWAE gradient for K > 1. By how much, on the
    same draws that show DReG unbiased (measured 2026-12-02): 28 to 80 standard errors per
    component at K = 5, 26 to 280 at K = 20; the largest bias is 2.2 (K = 5) and 8.2 (K = 20)
    times the largest entry of the true gradient. Asserted: over 10 standard errors, and a bias
    of at least half the gradient's size (a bias, not a rounding effect)."""
    g = per_draw_encoder_gradients(k, draws=40000, seed=k)
    z = np.abs(z_scores(g["stl"], g["reparam"]))
    bias = np.abs((g["stl"] - g["reparam"]).mean(axis=0))
    scale = np.abs(g["reparam"].mean(axis=0)).max()
    assert z.max() > 10, (z, bias / scale)
    assert bias.max() / scale > 0.5, bias / scale


def test_stl_is_unbiased_for_k_1():
    """For K = 1 the dropped term is the score function, whose mean is 0."""
    g = per_draw_encoder_gradients(1, draws=40000, seed=1)
    assert np.abs(z_scores(g["stl"], g["reparam"])).max() < 4.5


# ---------------------------------------------------------------------- planted bugs
def planted_pairing(monkeypatch):
    """The known public bug: sample k of example b decoded against another example's x."""

    def tiled(a, k, xp):
        return a if a is None else xp.tile(a, (k, 1))

    monkeypatch.setattr(bounds, "repeat_rows", tiled)  # x beside its samples
    monkeypatch.setattr(model_module, "repeat_rows", tiled)  # the label beside its samples


def planted_weights(monkeypatch):
    """Normalized weights taken across the batch: one example's weights on another's samples."""

    def across_examples(log_w, xp):
        e = xp.exp(log_w - log_w.max(axis=0, keepdims=True))
        return e / e.sum(axis=0, keepdims=True)

    monkeypatch.setattr(objectives, "normalized_weights", across_examples)


def check_examples_are_separate(model, x, eps):
    """A batch's loss and gradient are the sums of each example's alone (with its own noise):
    nothing of one example may reach another's bound."""
    whole = float(model.loss(x, eps=eps).loss)
    grads = {n: g.copy() for n, g in model.grads.items()}
    alone = {n: np.zeros_like(g) for n, g in grads.items()}
    total = 0.0
    for b in range(x.shape[0]):
        total += float(model.loss(x[b : b + 1], eps=eps[b : b + 1]).loss)
        for n, g in model.grads.items():
            alone[n] += g
    assert whole == pytest.approx(total, rel=1e-12)
    for n in grads:
        np.testing.assert_allclose(grads[n], alone[n], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("objective", ["vae", "iwae"])
def test_each_example_bound_uses_its_own_samples_and_weights(objective):
    model = small_model(objective, 5, seed=2)
    x, _, eps = inputs(model, 4, 5, seed=2)
    check_examples_are_separate(model, x, eps)


def test_samples_paired_with_another_example_fail(monkeypatch):
    """The pairing bug leaves the gradient consistent with its (wrong) value, so finite
    differences pass; the per-example check is what catches it."""
    model = small_model("iwae", 5, seed=2)
    x, _, eps = inputs(model, 4, 5, seed=2)
    planted_pairing(monkeypatch)
    assert_gradients_close(bound_gradient_errors(model, x, None, eps))
    with pytest.raises(AssertionError):
        check_examples_are_separate(model, x, eps)


def test_weights_taken_across_the_batch_fail_the_gradient_check(monkeypatch):
    model = small_model("iwae", 5, seed=2)
    x, y, eps = inputs(model, 3, 5, seed=2)
    assert_gradients_close(bound_gradient_errors(model, x, y, eps))  # passes unplanted
    planted_weights(monkeypatch)
    with pytest.raises(AssertionError, match="gradient check failed"):
        assert_gradients_close(bound_gradient_errors(model, x, y, eps))
    with pytest.raises(AssertionError):
        check_examples_are_separate(model, x, eps)


def exact_log_mean_exp(row):
    m = max(row)
    return m + math.log(math.fsum(math.exp(a - m) for a in row) / len(row))


def check_log_mean_exp(dtype):
    """The bound of log weights far below exp's range, against exact host arithmetic."""
    rng = np.random.default_rng(0)
    log_w = (-1000 + 5 * rng.standard_normal((4, 50))).astype(dtype)
    got = objectives.IWAE(50, bounds.Reparameterized()).bound(log_w, np)
    expected = [exact_log_mean_exp([float(a) for a in row]) for row in log_w]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps)
    w = bounds.normalized_weights(log_w, np)
    np.testing.assert_allclose(w.sum(axis=1), 1, rtol=50 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_mean_exp_is_stable_far_below_the_range_of_exp(dtype):
    check_log_mean_exp(dtype)


def test_a_missing_log_sum_exp_shift_fails(monkeypatch):
    monkeypatch.setattr(objectives, "log_mean_exp", lambda a, xp: xp.log(xp.exp(a).mean(axis=1)))
    with np.errstate(divide="ignore"), pytest.raises(AssertionError):
        check_log_mean_exp(np.float64)


# ---------------------------------------------------------------------- the boundary
def test_bad_settings_and_noise_are_named():
    with pytest.raises(ValueError, match="k > 1 needs a multi-sample objective"):
        VAE(6, hidden_dims=(5,), latent_dim=3, k=5)
    with pytest.raises(ValueError, match="estimator 'dreg' is an encoder gradient"):
        VAE(6, hidden_dims=(5,), latent_dim=3, objective="vae", estimator="dreg")
    with pytest.raises(ValueError, match="beta and free_bits act on the analytic KL"):
        VAE(6, hidden_dims=(5,), latent_dim=3, objective="iwae", k=5, beta=2.0)
    model = small_model("iwae", 5)
    x, _, eps = inputs(model, 2, 5, seed=0)
    with pytest.raises(ValueError, match=r"eps must have shape \(2, K, 3\)"):
        model.loss(x, eps=eps[:, 0, :])
    with pytest.raises(ValueError, match="kl_weight 0.5 is a weight of the elbo"):
        model.loss(x, eps=eps, kl_weight=0.5)
    assert model.noise_shape(4) == (4, 5, 3)
    parts = model.loss(x)  # eps drawn with K = k
    assert np.isfinite(parts.loss)
