"""The MADE decoder: masked gradients, the autoregressive property, the sampler, exact log p(x).

The gradient checks are central differences in float64 at 1e-7; the autoregressive and
bitwise checks are exact; the sampler and the IW estimate's rise are statistical, with fixed
seeds and stated margins. Each names the bug it bites on (planted, they fail).
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_vae import VAE, get_backend
from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.layers import MaskedLinear
from numpy_vae.made import MADEDecoder, degrees, made_masks
from numpy_vae.training.evaluate import iw_log_likelihood

F64 = get_backend("numpy", "float64")
seeds = st.integers(0, 2**31 - 1)
widths = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)


# ---------------------------------------------------------------- the masked layer
@given(batch=st.integers(1, 5), n_in=st.integers(1, 6), n_out=st.integers(1, 6), seed=seeds)
def test_masked_linear_gradients_and_masked_weight_gradient(batch, n_in, n_out, seed):
    """dW, db, dx against central differences; dW is exactly 0 where the mask is.

    Planted: ``d_weight = d_out^T x`` without the mask fails the difference check (the
    difference of a masked entry is 0) and the exact-zero assertion.
    """
    rng = np.random.default_rng(seed)
    mask = (rng.random((n_out, n_in)) < 0.6).astype(np.float64)
    layer = MaskedLinear(mask, F64, rng)
    layer.weight[...] = rng.standard_normal(layer.weight.shape)  # masked entries non-zero too
    x = rng.standard_normal((batch, n_in))
    d_out = rng.standard_normal((batch, n_out))
    layer.forward(x)
    d_x = layer.backward(d_out)
    grads = {"x": d_x, "weight": layer.d_weight.copy(), "bias": layer.d_bias.copy()}
    errors = check_gradients(
        lambda: layer.forward(x), {"x": x, "weight": layer.weight, "bias": layer.bias}, grads, d_out
    )
    assert_gradients_close(errors)
    assert np.all(grads["weight"][mask == 0] == 0)
    # The masked entries do not touch the output at all.
    before = layer.forward(x)
    layer.weight[mask == 0] += 5.0
    assert np.array_equal(layer.forward(x), before)


def test_masked_linear_starts_with_masked_entries_at_zero_and_adam_keeps_them():
    from numpy_vae.optim import Adam

    rng = np.random.default_rng(0)
    mask = np.tril(np.ones((4, 4)), -1)
    layer = MaskedLinear(mask, F64, rng)
    assert np.all(layer.weight[mask == 0] == 0) and np.all(layer.weight[mask == 1] != 0)
    adam = Adam([layer.weight], [layer.d_weight], lr=0.1)
    for _ in range(3):
        layer.forward(rng.standard_normal((3, 4)))
        layer.backward(rng.standard_normal((3, 4)))
        adam.step()
    assert np.all(layer.weight[mask == 0] == 0)


# ---------------------------------------------------------------- degrees and masks
@given(d=st.integers(2, 40), hidden=widths)
def test_degrees_and_masks_follow_germain_et_al(d, hidden):
    """Hidden degrees lie in 1..D-1, spread evenly; the masks are the paper's inequalities, and
    their product (which input can reach which output) is strictly lower triangular."""
    hidden_masks, output, direct = made_masks(d, hidden)
    reach = np.eye(d)
    for width, mask in zip(hidden, hidden_masks, strict=True):
        m = degrees(width, d)
        assert m.min() >= 1 and m.max() <= d - 1 and m[0] == 1
        counts = np.bincount(m, minlength=d)[1:]
        assert counts.max() - counts.min() <= 1 or width < d - 1
        reach = (mask @ reach > 0).astype(float)
    reach = (output @ reach > 0).astype(float)
    assert not np.any(np.triu(reach))  # output d reaches no input >= d
    assert np.array_equal(direct, np.tril(np.ones((d, d)), -1))


def test_made_needs_two_pixels():
    with pytest.raises(ValueError, match="at least 2 inputs"):
        made_masks(1, (4,))


# ---------------------------------------------------------------- the autoregressive property
def made(input_dim, hidden, context_dim=3, direct=False, made_z=True, seed=0, act="tanh"):
    rng = np.random.default_rng(seed)
    return MADEDecoder(input_dim, context_dim, hidden, act, F64, rng, direct, made_z)


@given(d=st.integers(2, 12), hidden=widths, direct=st.booleans(), seed=seeds)
def test_autoregressive_jacobian_has_exact_zeros(d, hidden, direct, seed):
    """``d logit_i / d x_j`` is exactly 0 for every j >= i (backward pass, one output at a
    time), and changing any pixel >= i leaves logit i bitwise unchanged.

    Planted: the output mask with ``>=`` instead of ``>`` (pixel d sees itself) fails both.
    """
    rng = np.random.default_rng(seed)
    net = made(d, hidden, direct=direct, seed=seed, act="relu")
    for layer in net.named_layers():  # random weights everywhere, masked entries included
        layer[1].weight[...] = rng.standard_normal(layer[1].weight.shape)
    x = (rng.random((1, d)) < 0.5).astype(np.float64)
    c = rng.standard_normal((1, 3))
    jacobian = np.empty((d, d))
    for i in range(d):
        net.forward(c, x)
        d_logits = np.zeros((1, d))
        d_logits[0, i] = 1.0
        net.backward(d_logits)
        jacobian[i] = net.d_x[0]
    assert np.all(np.triu(jacobian) == 0)
    base = net.forward(c, x)
    for j in range(d):
        flipped = x.copy()
        flipped[0, j:] = rng.standard_normal(d - j) * 3  # any values, not only 0/1
        assert np.array_equal(net.forward(c, flipped)[0, : j + 1], base[0, : j + 1])


def test_autoregressive_jacobian_is_not_trivially_zero():
    """The test above could pass on a network that sees nothing: here every allowed entry of
    the Jacobian below the diagonal is non-zero through the hidden layer alone (no direct
    connection; 7 units cover every degree 1..5), so it fails on masks that drop a connection
    the ordering allows.

    Planted: the hidden mask with ``>`` for ``>=`` (logit d loses pixel d - 1), or an output
    mask of zeros, fail here.
    """
    rng = np.random.default_rng(3)
    net = made(6, (7,), direct=False, seed=3)
    x = rng.standard_normal((1, 6))
    c = rng.standard_normal((1, 3))
    for i in range(6):
        net.forward(c, x)
        d_logits = np.zeros((1, 6))
        d_logits[0, i] = 1.0
        net.backward(d_logits)
        assert np.all(net.d_x[0, :i] != 0)


# ---------------------------------------------------------------- gradients of the whole model
def _made_gradcheck(model, x, eps):
    model.loss(x, eps=eps)
    assume(all(np.abs(g).max() > 1e-3 for g in model.grads.values()))
    errors = check_gradients(
        lambda: model.loss(x, eps=eps, grad=False).loss, model.params, model.grads
    )
    assert_gradients_close(errors)
    return errors


@given(
    batch=st.integers(1, 4),
    d=st.integers(2, 8),
    hidden=widths,
    latent=st.integers(1, 3),
    direct=st.booleans(),
    seed=seeds,
)
def test_model_with_made_decoder_gradients(batch, d, hidden, latent, direct, seed):
    """Every parameter of a VAE with the MADE decoder (tanh), against central differences."""
    model = VAE(
        d, hidden_dims=(5,), latent_dim=latent, activation="tanh", decoder="made",
        made_hidden=hidden, made_direct=direct, backend=F64, seed=seed,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, d)) < 0.5).astype(np.float64)
    errors = _made_gradcheck(model, x, rng.standard_normal((batch, latent)))
    assert sum(name.startswith("decoder.context") for name in errors) == len(hidden)
    assert ("decoder.direct.weight" in errors) == direct


@pytest.mark.parametrize(
    "settings",
    [
        {"objective": "iwae", "k": 3, "estimator": "dreg"},
        {"objective": "vae", "k": 2},
        {"made_z": False},
        {"n_classes": 3},
    ],
    ids=["iwae-dreg", "vae-k2", "without-z", "conditional"],
)
def test_made_model_gradients_other_settings(settings):
    model = VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", decoder="made",
                made_hidden=(7, 5), backend=F64, seed=4,
                **{k: v for k, v in settings.items() if k != "n_classes"},
                n_classes=settings.get("n_classes", 0))  # fmt: skip
    rng = np.random.default_rng(4)
    x = (rng.random((4, 6)) < 0.5).astype(np.float64)
    y = rng.integers(0, 3, size=4) if settings.get("n_classes") else None
    eps = rng.standard_normal(model.noise_shape(4))
    loss = lambda: model.loss(x, y, eps=eps, grad=False).loss  # noqa: E731
    model.loss(x, y, eps=eps)
    if settings.get("estimator") == "dreg":  # not the bound's gradient in the encoder
        params = {n: p for n, p in model.params.items() if n.startswith("decoder")}
    else:
        params = model.params
    errors = check_gradients(loss, params, {n: model.grads[n] for n in params})
    assert_gradients_close(errors)
    if settings.get("made_z") is False:
        # The decoder ignores z: the encoder learns from the KL alone.
        assert not any(n.startswith("decoder.context") for n in model.params)


@given(
    d=st.integers(2, 10),
    hidden=widths,
    direct=st.booleans(),
    made_z=st.booleans(),
    act=st.sampled_from(["relu", "tanh", "leaky_relu", "sigmoid"]),
    seed=seeds,
)
def test_fast_made_decoder_is_bitwise_the_specification(d, hidden, direct, made_z, act, seed):
    """FastMADE (each mask applied once, into buffers, no pixel gradient): logits, the
    context's gradient and every parameter gradient bitwise equal to MADEDecoder's, twice in a
    row (the second call reuses the buffers)."""
    from numpy_vae.fast.buffers import Buffers
    from numpy_vae.fast.made import FastMADE

    spec = made(d, hidden, direct=direct, made_z=made_z, seed=seed, act=act)
    twin = made(d, hidden, direct=direct, made_z=made_z, seed=seed, act=act)
    fast, buffers = FastMADE(twin), Buffers(np)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        x = (rng.random((4, d)) < 0.5).astype(np.float64)
        c = rng.standard_normal((4, 3))
        d_logits = rng.standard_normal((4, d))
        assert np.array_equal(fast.forward(c, x, buffers), spec.forward(c, x))
        assert np.array_equal(fast.backward(d_logits, buffers), spec.backward(d_logits))
        for name, g in spec.gradients().items():
            assert np.array_equal(twin.gradients()[name], g), name


# ---------------------------------------------------------------- the sampler
def test_sampler_matches_the_exact_distribution_on_every_image():
    """D = 4: all 16 images enumerated. The model's own probabilities sum to 1, and 40,000
    pixel-by-pixel samples hit each image as often as that probability says (each frequency
    within 4.5 standard errors; the total variation distance below 0.01).

    Planted: the sampler reading the logit of pixel d - 1 (or d + 1) for pixel d fails.
    """
    d, n = 4, 40_000
    net = made(d, (6, 6), context_dim=2, direct=True, seed=7)
    rng = np.random.default_rng(7)
    for _, layer in net.named_layers():
        layer.weight *= 3  # sharper conditionals than the initial ones
    c = np.array([[0.7, -1.2]])
    images = np.array(list(itertools.product([0.0, 1.0], repeat=d)))
    logits = net.forward(np.repeat(c, len(images), axis=0), images)
    log_p = (images * logits - np.logaddexp(0, logits)).sum(axis=1)
    p = np.exp(log_p)
    assert abs(p.sum() - 1) < 1e-12
    x, probs = net.sample(np.repeat(c, n, axis=0), rng.random((n, d)))
    assert set(np.unique(x)) <= {0.0, 1.0}
    code = (x * 2 ** np.arange(d - 1, -1, -1)).sum(axis=1).astype(int)  # image index
    freq = np.bincount(code, minlength=len(images)) / n
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 4.5 * se + 1e-12), np.c_[freq, p]
    assert 0.5 * np.abs(freq - p).sum() < 0.01
    # The returned probabilities are the conditionals along each drawn image.
    teacher = 1 / (1 + np.exp(-net.forward(np.repeat(c, n, axis=0), x)))
    assert np.allclose(probs, teacher, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- exact log p(x) without z
def _z_blind_model(latent=2, seed=0):
    model = VAE(
        8, hidden_dims=(6,), latent_dim=latent, decoder="made", made_hidden=(10,),
        made_direct=True, backend=F64, seed=seed,
    )  # fmt: skip
    for name, p in model.params.items():
        if name.startswith("decoder.context"):
            p[...] = 0.0
    return model


def _exact_log_px(model, x):
    """log p(x) of a decoder blind to z: the teacher-forced likelihood, at any z."""
    z = np.zeros((x.shape[0], model.latent_dim))
    return model.log_likelihood(x, model.decoder_output(z, x=x))


def test_z_blind_decoder_with_q_equal_to_the_prior_gives_the_exact_log_px_for_every_k():
    """Every importance weight is p(x) itself, so the IW estimate is exact for every K (to
    rounding: a few ulps), where a bug in log p(z) - log q(z|x) or in the log-mean-exp would
    leave a K-dependent gap."""
    model = _z_blind_model()
    model.head.weight[...] = 0.0
    model.head.bias[...] = 0.0  # mu = 0, logvar = 0: q(z|x) = N(0, I) = p(z)
    x = (np.random.default_rng(1).random((5, 8)) < 0.5).astype(np.float64)
    exact = _exact_log_px(model, x)
    other_z = model.log_likelihood(x, model.decoder_output(np.full((5, 2), 3.0), x=x))
    assert np.array_equal(exact, other_z)  # the decoder does ignore z
    for k in (1, 7, 100, 1000):
        estimate = iw_log_likelihood(model, x, k=k, rng=np.random.default_rng(k), max_rows=64)
        assert np.max(np.abs(estimate - exact) / np.abs(exact)) < 1e-14, k


def test_z_blind_decoder_iw_estimate_rises_towards_log_px_from_below():
    """With q away from the prior, ``log p(x) - IW_K`` is ``-log mean_k p(z_k)/q(z_k|x)``:
    about KL(q || p) = 1.09 nats at K = 1, shrinking as K grows. Averaged over 40 images x 20
    repeats (measured: -1.18, -0.092, -0.0088, -0.0051 nats at K = 1, 10, 100, 1000): rising
    from K = 1 to 10 to 100 by more than 3 standard errors, not falling from 100 to 1000,
    below log p(x), and within 0.02 nats of it at K = 1000."""
    model = _z_blind_model()
    model.head.weight[...] = 0.0
    model.head.bias[:2] = [1.0, 1.0]  # mu = (1, 1)
    # sigma^2 = 1.5, KL = 2 * (1.5 + 1 - 1 - ln 1.5) / 2. A q wider than p keeps the weights'
    # variance finite (sigma^2 <= 1/2 would not), so the gap shrinks like 1/K.
    model.head.bias[2:] = np.log(1.5)
    x = (np.random.default_rng(2).random((40, 8)) < 0.5).astype(np.float64)
    exact = _exact_log_px(model, x).mean()
    means, ses = [], []
    for k in (1, 10, 100, 1000):
        gaps = [
            iw_log_likelihood(model, x, k=k, rng=np.random.default_rng(100 * k + r)).mean() - exact
            for r in range(20)
        ]
        means.append(np.mean(gaps))
        ses.append(np.std(gaps, ddof=1) / math.sqrt(len(gaps)))
    means, ses = np.array(means), np.array(ses)
    rise = np.diff(means)
    assert np.all(rise[:2] > 3 * (ses[:2] + ses[1:3])), (means, ses)  # K = 1 -> 10 -> 100
    assert rise[2] > -3 * (ses[2] + ses[3]), (means, ses)  # no fall from 100 to 1000
    assert np.all(means[:2] < -3 * ses[:2]), (means, ses)  # below log p(x)
    assert -0.02 < means[-1] < 3 * ses[-1], (means, ses)  # and close to it at K = 1000


# ---------------------------------------------------------------- the boundary
def test_made_decoder_refuses_grey_levels_and_needs_x_for_its_logits():
    model = VAE(6, hidden_dims=(4,), latent_dim=2, decoder="made", made_hidden=(5,), backend=F64)
    with pytest.raises(ValueError, match="binary pixels: binarize"):
        model.loss(np.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="depend on the pixels: pass x"):
        model.decoder_output(np.zeros((2, 2)))
    x, p = model.decode_sample(np.zeros((3, 2)))
    assert x.shape == p.shape == (3, 6) and set(np.unique(x)) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"decoder": "made", "likelihood": "gaussian"}, "needs likelihood='bernoulli'"),
        ({"made_direct": True}, "made_direct configures the MADE decoder"),
        ({"made_z": False, "made_hidden": (20,)}, "made_hidden, made_z configure"),
        ({"decoder": "made", "made_direct": 1}, "made_direct must be true or false"),
    ],
)
def test_made_settings_that_do_not_fit_are_refused(settings, message):
    from numpy_vae.config import ModelConfig

    with pytest.raises(ValueError, match=message):
        ModelConfig(**settings)


def test_training_config_needs_binarized_data_for_made():
    from numpy_vae.training.trainer import TrainConfig

    with pytest.raises(ValueError, match="binarize='dynamic'"):
        TrainConfig(decoder="made")
    TrainConfig(decoder="made", binarize="dynamic")
