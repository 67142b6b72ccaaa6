"""Every layer's input and parameter gradients against central differences (float64)."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from numpy_vae.gradcheck import assert_gradients_close, check_gradients
from numpy_vae.layers import (
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    make_activation,
)

TOL = 1e-7
sizes = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)


def away_from_zero(x, margin=1e-3):
    """Keep inputs off the ReLU kink, where a central difference straddles two slopes."""
    return np.where(np.abs(x) < margin, np.copysign(margin, x) + x, x)


@given(batch=sizes, n_in=sizes, n_out=sizes, seed=seeds, scale=st.floats(1e-2, 1e2))
def test_linear(f64, batch, n_in, n_out, seed, scale):
    rng = np.random.default_rng(seed)
    layer = Linear(n_in, n_out, f64, rng)
    x = scale * rng.standard_normal((batch, n_in))
    d_out = rng.standard_normal((batch, n_out))
    layer.forward(x)
    d_x = layer.backward(d_out)
    errors = check_gradients(
        lambda: layer.forward(x),
        {"x": x, "weight": layer.weight, "bias": layer.bias},
        {"x": d_x, "weight": layer.d_weight, "bias": layer.d_bias},
        d_out,
    )
    assert_gradients_close(errors, TOL)


def test_linear_matches_pytorch_init_and_layout(f64):
    layer = Linear(50, 7, f64, np.random.default_rng(0))
    assert layer.weight.shape == (7, 50) and layer.bias.shape == (7,)
    bound = 1 / np.sqrt(50)
    for p in (layer.weight, layer.bias):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.8 * bound  # uniform over the whole interval, not a narrow one
    x = np.random.default_rng(1).standard_normal((3, 50))
    np.testing.assert_allclose(layer.forward(x), x @ layer.weight.T + layer.bias, rtol=1e-14)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "sigmoid"])
@given(batch=sizes, width=sizes, seed=seeds, scale=st.floats(1e-1, 10))
def test_activation(f64, name, batch, width, seed, scale):
    rng = np.random.default_rng(seed)
    layer = make_activation(name, f64)
    x = away_from_zero(scale * rng.standard_normal((batch, width)))
    d_out = rng.standard_normal((batch, width))
    layer.forward(x)
    d_x = layer.backward(d_out)
    # A central difference is accurate to about 1e-10 in absolute terms; a saturated tanh or
    # sigmoid (all |x| > 10) has gradients too small for a relative bound to mean anything.
    assume(np.abs(d_x).max() > 1e-3)
    assert_gradients_close(check_gradients(lambda: layer.forward(x), {"x": x}, {"x": d_x}, d_out))


def test_activation_values(f64):
    x = np.array([[-2.0, -0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ReLU(f64).forward(x), [[0, 0, 0, 3]])
    np.testing.assert_allclose(LeakyReLU(f64).forward(x), [[-0.02, 0, 0, 3]])
    np.testing.assert_allclose(Tanh(f64).forward(x), np.tanh(x))
    np.testing.assert_allclose(Sigmoid(f64).forward(x), 1 / (1 + np.exp(-x)))
    # Sigmoid must not overflow for large negative inputs.
    assert np.all(np.isfinite(Sigmoid(f64).forward(np.array([[-1e4, 1e4]]))))
    # PyTorch's convention at the kink: the ReLU derivative at exactly 0 is 0.
    relu = ReLU(f64)
    relu.forward(np.array([[0.0, 1.0]]))
    np.testing.assert_array_equal(relu.backward(np.ones((1, 2))), [[0.0, 1.0]])


def test_unknown_activation(f64):
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        make_activation("swish", f64)


@given(batch=sizes, widths=st.lists(sizes, min_size=2, max_size=4), seed=seeds)
def test_sequential_chain(f64, batch, widths, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [Linear(n_in, n_out, f64, rng), Tanh(f64)]
    net = Sequential(layers)
    x = rng.standard_normal((batch, widths[0]))
    d_out = rng.standard_normal((batch, widths[-1]))
    net.forward(x)
    d_x = net.backward(d_out)
    params, grads = net.parameters(), net.gradients()
    assert list(params) == list(grads)
    assert list(params)[:2] == ["0.weight", "0.bias"]  # torch.nn.Sequential numbering
    assume(all(np.abs(g).max() > 0 for g in grads.values()))
    errors = check_gradients(lambda: net.forward(x), {"x": x, **params}, {"x": d_x, **grads}, d_out)
    assert_gradients_close(errors)
