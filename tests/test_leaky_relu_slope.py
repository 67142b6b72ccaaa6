"""``leaky_relu_slope``: a hyperparameter like the others, from ModelConfig to every LeakyReLU.

Its range is checked in ModelConfig, its flag is generated from the field, the model's
construction hands it to every LeakyReLU (encoder, MLP decoder, MADE decoder, and the fast
twins of those layers), ``VAE(**model.config())`` keeps it, and the gradient is right at a slope
other than PyTorch's default.
"""

import argparse

import numpy as np
import pytest

from numpy_vae import VAE, get_backend
from numpy_vae.cli.common import add_model_flags, model_config_from_args
from numpy_vae.config import ModelConfig
from numpy_vae.fast import FastVAE
from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.layers import LeakyReLU

F64 = get_backend("numpy", "float64")


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.5, -0.1, float("nan"), True, "0.1"])
def test_the_range_is_strictly_between_0_and_1(bad):
    with pytest.raises(ValueError, match="leaky_relu_slope must be a finite number > 0 and < 1"):
        ModelConfig(activation="leaky_relu", leaky_relu_slope=bad)


def test_a_slope_without_the_leaky_relu_activation_is_refused():
    with pytest.raises(ValueError, match="set activation='leaky_relu'"):
        ModelConfig(leaky_relu_slope=0.2)
    assert ModelConfig(activation="leaky_relu", leaky_relu_slope=0.2).leaky_relu_slope == 0.2
    assert ModelConfig().leaky_relu_slope == 0.01  # PyTorch's nn.LeakyReLU default


def leaky_layers(model):
    """Every LeakyReLU of the model, in the MLP's Sequential or among MADE's activations."""
    layers = [*model.encoder.layers, *getattr(model.decoder, "layers", [])]
    layers += getattr(model.decoder, "activations", [])
    return [layer for layer in layers if isinstance(layer, LeakyReLU)]


@pytest.mark.parametrize("decoder", [{}, {"decoder": "made", "made_hidden": (16, 16)}])
def test_the_slope_reaches_every_leaky_relu_and_survives_config(decoder):
    kwargs = dict(hidden_dims=(8, 6), latent_dim=3, activation="leaky_relu", **decoder)
    model = FastVAE(12, leaky_relu_slope=0.2, backend=F64, **kwargs)
    layers = leaky_layers(model)
    assert len(layers) == 4 and all(a.slope == 0.2 for a in layers)  # 2 encoder, 2 decoder
    fast = [a for a in model.fast_encoder.layers if hasattr(a, "slope")]
    assert fast and all(a.slope == 0.2 for a in fast)
    assert model.config()["leaky_relu_slope"] == 0.2
    assert VAE(**model.config(), backend=F64).hparams.leaky_relu_slope == 0.2
    # The slope changes the loss, and the fast step agrees with the specification at it.
    rng = np.random.default_rng(0)
    x = (rng.random((6, 12)) < 0.5).astype(float)
    eps = rng.standard_normal((6, 3))
    spec = VAE(12, leaky_relu_slope=0.2, backend=F64, **kwargs)
    default = VAE(12, backend=F64, **kwargs)
    loss = spec.loss(x, eps=eps).loss
    assert abs(loss - default.loss(x, eps=eps, grad=False).loss) > 1e-6
    assert model.loss(x, eps=eps).loss == pytest.approx(loss, rel=1e-12)
    for name, g in spec.grads.items():
        np.testing.assert_allclose(model.grads[name], g, rtol=1e-10, atol=1e-13)


def test_gradients_at_a_large_slope_agree_with_finite_differences():
    model = VAE(10, hidden_dims=(7,), latent_dim=2, activation="leaky_relu",
                leaky_relu_slope=0.3, backend=F64, seed=3)  # fmt: skip
    rng = np.random.default_rng(3)
    x, eps = rng.random((4, 10)), rng.standard_normal((4, 2))
    model.loss(x, eps=eps)
    errors = check_gradients(
        lambda: model.loss(x, eps=eps, grad=False).loss, model.params, model.grads
    )
    assert_gradients_close(errors, 1e-7)


def test_the_flag_is_generated_from_the_field():
    parser = add_model_flags(argparse.ArgumentParser())
    args = parser.parse_args(["--activation", "leaky_relu", "--leaky-relu-slope", "0.2"])
    assert model_config_from_args(args).leaky_relu_slope == 0.2
    assert parser.parse_args([]).leaky_relu_slope == 0.01
    with pytest.raises(SystemExit):
        parser.parse_args(["--leaky-relu-slope", "1.5"])
