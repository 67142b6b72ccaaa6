"""The whole VAE: gradient of the negative ELBO w.r.t. every parameter, sampling, bad input."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_vae import VAE, get_backend
from numpy_vae.checks.variants import VARIANTS as PARITY_VARIANTS
from numpy_vae.fast import FastVAE
from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.layers import Linear

seeds = st.integers(0, 2**31 - 1)
F64 = get_backend("numpy", "float64")


def min_preactivation(model):
    """Smallest |input| of any activation in the last forward pass (ReLU kink distance)."""
    smallest = np.inf
    for net in (model.encoder, model.decoder):
        for layer, nxt in zip(net.layers[:-1], net.layers[1:], strict=True):
            if isinstance(layer, Linear) and not isinstance(nxt, Linear):
                pre = layer._x @ layer.weight.T + layer.bias
                smallest = min(smallest, np.abs(pre).min())
    return smallest


def check_model(model, x, y=None, seed=0, kl_weight=None, tol=1e-7):
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((x.shape[0], model.latent_dim))
    model.loss(x, y, eps=eps, kl_weight=kl_weight)
    # A central difference across a ReLU kink sees two slopes; keep clear of it.
    assume(min_preactivation(model) > 5e-3)
    # Rounding limits the estimate to about 1e-11 of the loss in absolute terms; a relative bound
    # of 1e-7 means something only for gradient arrays that are not vanishingly small (a
    # saturated tanh can make them so).
    assume(all(np.abs(g).max() > 1e-3 for g in model.grads.values()))
    errors = check_gradients(
        lambda: model.loss(x, y, eps=eps, kl_weight=kl_weight, grad=False).loss,
        model.params,
        model.grads,
    )
    assert_gradients_close(errors, tol)
    return errors


@given(
    batch=st.integers(1, 5),
    input_dim=st.integers(1, 10),
    hidden=st.integers(1, 8),
    latent=st.integers(1, 4),
    seed=seeds,
    binary=st.booleans(),
)
def test_default_architecture_gradients(batch, input_dim, hidden, latent, seed, binary):
    """The classic one-hidden-layer ReLU model with Bernoulli likelihood, small widths."""
    model = VAE(input_dim, hidden_dims=(hidden,), latent_dim=latent, backend=F64, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, input_dim))
    if binary:
        x = (x > 0.5).astype(np.float64)
    errors = check_model(model, x, seed=seed)
    assert set(errors) == {
        "encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias",
        "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias",
    }  # fmt: skip


@given(
    batch=st.integers(1, 4),
    widths=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    latent=st.integers(1, 3),
    seed=seeds,
    scale=st.sampled_from([1.0, 3.0]),
)
def test_deeper_tanh_model_gradients(batch, widths, latent, seed, scale):
    """Two hidden layers, Tanh; weights scaled up so logits and logvar leave the linear regime."""
    model = VAE(7, hidden_dims=widths, latent_dim=latent, activation="tanh", backend=F64, seed=seed)
    for p in model.params.values():
        p *= scale
    x = np.random.default_rng(seed).random((batch, 7))
    errors = check_model(model, x, seed=seed)
    assert len(errors) == 2 * (2 + 1 + 3)  # encoder, head, decoder Linear layers


def vector(arrays):
    """Named arrays end to end, for whole-model comparisons."""
    return np.concatenate([a.ravel() for a in arrays.values()])


def test_every_parameter_name_is_stable_and_shaped_like_torch():
    model = VAE()
    shapes = {name: p.shape for name, p in model.params.items()}
    assert shapes == {
        "encoder.0.weight": (400, 784), "encoder.0.bias": (400,),
        "head.weight": (40, 400), "head.bias": (40,),
        "decoder.0.weight": (400, 20), "decoder.0.bias": (400,),
        "decoder.2.weight": (784, 400), "decoder.2.bias": (784,),
    }  # fmt: skip
    # The fast path: the same names, as views into one flat vector each.
    fast = FastVAE(seed=0)
    assert {k: tuple(v.shape) for k, v in fast.params.items()} == shapes
    assert fast.flat.data.size == sum(p.size for p in fast.params.values())
    for name, p in fast.params.items():
        assert np.shares_memory(p, fast.flat.data) and np.shares_memory(
            fast.grads[name], fast.flat.grad
        )
    assert fast.flat.data.dtype == np.float32


def test_loss_parts_add_up_and_match_independent_formulas():
    model = VAE(6, hidden_dims=(5,), latent_dim=3, backend=F64, seed=3)
    rng = np.random.default_rng(0)
    x, eps = rng.random((4, 6)), rng.standard_normal((4, 3))
    parts = model.loss(x, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps
    h = np.maximum(z @ model.params["decoder.0.weight"].T + model.params["decoder.0.bias"], 0)
    p = 1 / (1 + np.exp(-(h @ model.params["decoder.2.weight"].T + model.params["decoder.2.bias"])))
    recon = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum()
    kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum()
    assert parts.recon == pytest.approx(recon, rel=1e-12)
    assert parts.kl == pytest.approx(kl, rel=1e-12)
    assert parts.loss == pytest.approx(recon + kl, rel=1e-12)
    assert parts.neg_elbo == pytest.approx(recon + kl, rel=1e-12)
    np.testing.assert_allclose(parts.kl_per_dim.sum(), kl, rtol=1e-12)
    assert parts.n == 4


def test_model_uses_sigma_from_half_logvar(rng):
    """The z the decoder receives is mu + exp(logvar / 2) eps, and its spread is exp(logvar)."""
    model = VAE(5, hidden_dims=(4,), latent_dim=2, backend=F64, seed=0)
    x = rng.random((1, 5))
    mu, logvar = model.encode(x)
    n = 100_000
    xs = np.repeat(x, n, axis=0)
    model.loss(xs)  # eps drawn from the model's own generator
    z = model.decoder.layers[0]._x
    var = np.exp(logvar[0])
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - mu[0]), 5 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(z.var(axis=0) - var), 5 * var * np.sqrt(2 / n))


def test_extreme_logits_and_logvar_give_finite_loss_and_gradients():
    model = VAE(784, hidden_dims=(16,), latent_dim=4, seed=0)  # float32, as in training
    model.params["decoder.2.bias"][::2] = 1e4
    model.params["decoder.2.bias"][1::2] = -1e4
    model.params["head.bias"][4:6] = 40.0  # logvar up to about 40: sigma = exp(20)
    model.params["head.bias"][6:] = -40.0
    x = (np.random.default_rng(0).random((8, 784)) > 0.5).astype(np.float32)
    parts = model.loss(x)
    assert np.isfinite(parts.loss) and parts.loss > 1e4
    assert all(np.all(np.isfinite(g)) for g in model.grads.values())


def test_reproducible_with_the_same_seed():
    x = np.random.default_rng(0).random((16, 784)).astype(np.float32)
    a, b, c = VAE(seed=7), VAE(seed=7), VAE(seed=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(vector(a.params), vector(c.params))
    la, lb = a.loss(x), b.loss(x)
    assert float(la.loss) == float(lb.loss)
    np.testing.assert_array_equal(vector(a.grads), vector(b.grads))
    np.testing.assert_array_equal(a.sample(3), b.sample(3))


def test_inference_methods_shapes_and_ranges():
    model = VAE(12, hidden_dims=(8,), latent_dim=3, seed=0)
    x = np.random.default_rng(0).random((5, 12)).astype(np.float32)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    for out in (model.decode(mu), model.reconstruct(x), model.sample(7)):
        assert out.dtype == np.float32 and out.shape[1] == 12
        assert np.all((out >= 0) & (out <= 1))
    assert model.sample(7).shape == (7, 12)


BAD_INPUTS = [
    (np.zeros((4, 783), np.float32), "783 columns.*input_dim=784"),
    (np.zeros((4, 28, 28), np.float32), "must be 2-D.*flatten"),
    (np.zeros(784, np.float32), "must be 2-D"),
    (np.full((2, 784), np.nan, np.float32), "NaN or infinite"),
    (np.full((2, 784), np.inf, np.float32), "NaN or infinite"),
    (np.full((2, 784), 255, np.uint8), "floating-point.*uint8.*x / 255"),
    (np.full((2, 784), 1.5, np.float32), r"\[1.5, 1.5\].*Bernoulli.*\[0, 1\]"),
    (np.full((2, 784), -0.1, np.float32), "Bernoulli"),
    (np.zeros((0, 784), np.float32), "empty batch"),
]


@pytest.mark.parametrize("x,message", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_the_problem(x, message):
    model = VAE(hidden_dims=(8,), latent_dim=2)
    with pytest.raises(ValueError, match=message):
        model.loss(x)
    if x.ndim == 2 and x.shape[0] and x.shape[1] == 784 and x.dtype.kind == "f":
        with pytest.raises(ValueError, match=message):
            model.encode(x)


def test_bad_eps_labels_and_constructor_arguments():
    model = VAE(hidden_dims=(8,), latent_dim=2)
    x = np.zeros((3, 784), np.float32)
    with pytest.raises(ValueError, match="eps has 3 columns but the model has latent_dim=2"):
        model.loss(x, eps=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="eps has 2 rows"):
        model.loss(x, eps=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not conditional"):
        model.loss(x, y=np.zeros(3, int))
    cvae = VAE(hidden_dims=(8,), latent_dim=2, n_classes=10)
    with pytest.raises(ValueError, match="needs labels"):
        cvae.loss(x)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cvae.loss(x, y=np.array([0, 1, 10]))
    with pytest.raises(ValueError, match="integer"):
        cvae.loss(x, y=np.array([0.0, 1.0, 2.0]))
    for kwargs, message in [
        ({"input_dim": 0}, "input_dim must be an integer >= 1"),
        ({"hidden_dims": ()}, "at least one hidden width"),
        ({"hidden_dims": (400, -1)}, "every hidden width"),
        ({"latent_dim": 2.5}, "latent_dim must be an integer"),
        ({"activation": "gelu"}, "unknown activation"),
        ({"likelihood": "poisson"}, "unknown likelihood"),
        ({"beta": -1.0}, "beta"),
        ({"free_bits": float("nan")}, "free_bits"),
        ({"gaussian_sigma": 0.0}, "gaussian_sigma"),
        ({"backend": "jax"}, "unknown backend 'jax'"),
    ]:
        with pytest.raises(ValueError, match=message):
            VAE(**kwargs)
    with pytest.raises(ValueError, match="unsupported dtype"):
        get_backend("numpy", "float16")


@pytest.mark.parametrize("model_cls", [VAE, FastVAE])
@pytest.mark.parametrize("data_dtype", [np.float16, np.float32])
def test_no_silent_precision_change_without_validation(model_cls, data_dtype):
    """A float64 model given float16/float32 data computes in float64 whether or not it
    validates: the batch is cast at the boundary (planted bug: computing in the input's dtype
    gave results of that dtype and gradients off by up to 5%)."""
    model = model_cls(12, hidden_dims=(8,), latent_dim=3, backend=F64, seed=0)
    rng = np.random.default_rng(0)
    x, eps = rng.random((5, 12)).astype(data_dtype), rng.standard_normal((5, 3)).astype(data_dtype)
    expected = model.loss(x.astype(np.float64), eps=eps.astype(np.float64))
    grads = {k: v.copy() for k, v in model.grads.items()}
    for validate in (True, False):
        parts = model.loss(x, eps=eps, validate=validate)
        assert parts.loss.dtype == np.float64
        assert float(parts.loss) == float(expected.loss)
        for name, g in model.grads.items():
            assert g.dtype == np.float64
            np.testing.assert_array_equal(g, grads[name])


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -0.5, "1", True, [1.0]])
def test_kl_weight_must_be_finite_and_nonnegative(weight):
    model = VAE(12, hidden_dims=(8,), latent_dim=3, backend=F64, seed=0)
    x = np.random.default_rng(0).random((2, 12))
    for validate in (True, False):
        with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0"):
            model.loss(x, kl_weight=weight, validate=validate)


def test_kl_weight_accepts_numbers_and_0d_arrays():
    model = VAE(12, hidden_dims=(8,), latent_dim=3, backend=F64, seed=0)
    x, eps = np.random.default_rng(0).random((2, 12)), np.zeros((2, 3))
    values = [float(model.loss(x, eps=eps, kl_weight=w).loss) for w in (0.5, np.float32(0.5))]
    values.append(float(model.loss(x, eps=eps, kl_weight=np.array(0.5)).loss))
    assert values[0] == values[1] == values[2]


@pytest.mark.parametrize("variant", sorted(PARITY_VARIANTS))
@pytest.mark.parametrize("model_cls", [VAE, FastVAE])
def test_the_config_rebuilds_every_variant(variant, model_cls):
    """``VAE(**model.config())`` builds the same model (hyperparameters, pieces, parameters,
    and so the same loss) for every variant the parity harness runs, on both paths."""
    model = model_cls(12, hidden_dims=(6,), latent_dim=3, seed=7, **PARITY_VARIANTS[variant].model)
    twin = model_cls(**model.config())
    assert twin.config() == model.config() and twin.hparams == model.hparams
    kinds = [(type(m.decoder), type(m.likelihood), type(m.objective)) for m in (model, twin)]
    assert kinds[0] == kinds[1]
    for name, p in model.params.items():
        np.testing.assert_array_equal(twin.params[name], p, err_msg=name)
    x = (np.random.default_rng(0).random((4, 12)) < 0.5).astype(np.float32)
    y = np.arange(4) % model.n_classes if model.n_classes else None
    eps = np.random.default_rng(1).standard_normal(model.noise_shape(4)).astype(np.float32)
    assert model.loss(x, y, eps=eps, grad=False).loss == twin.loss(x, y, eps=eps, grad=False).loss
