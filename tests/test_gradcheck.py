"""The checker itself: it must find right gradients right and wrong ones wrong."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from numpy_vae.gradcheck import (
    assert_gradients_close,
    check_gradients,
    numerical_gradient,
    relative_error,
)

finite = st.floats(-3, 3, allow_nan=False)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)), elements=finite))
def test_numerical_gradient_of_cubic(x):
    def f():
        return np.sum(x**3)

    assert np.allclose(numerical_gradient(f, x), 3 * x**2, rtol=0, atol=1e-7)


def test_vector_jacobian_product_with_upstream_gradient(rng):
    x = rng.standard_normal((3, 2))
    d_out = rng.standard_normal((3, 2))
    numeric = numerical_gradient(lambda: np.sin(x), x, d_out)
    assert relative_error(numeric, np.cos(x) * d_out) < 1e-9


def test_relative_error_is_scale_free_and_sees_factor_two():
    a = np.array([1e-3, 2e-3, -4e-3])
    assert relative_error(a, a) == 0.0
    assert relative_error(a * 1e6, a * 1e6 * (1 + 1e-9)) == pytest.approx(1e-9, rel=1e-3)
    assert relative_error(a, 2 * a) == pytest.approx(0.5)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_check_gradients_flags_wrong_gradient_and_restores_input(rng):
    x = rng.standard_normal(5)
    x0 = x.copy()

    def f():
        return np.exp(x)

    good = check_gradients(f, {"x": x}, {"x": np.exp(x)})
    bad = check_gradients(f, {"x": x}, {"x": 2 * np.exp(x)})
    assert good["x"] < 1e-9
    assert bad["x"] > 0.4
    np.testing.assert_array_equal(x, x0)
    assert_gradients_close(good)
    with pytest.raises(AssertionError, match="x"):
        assert_gradients_close(bad)


def test_check_gradients_subset_and_dtype_guard(rng):
    x = rng.standard_normal((10, 10))
    errors = check_gradients(lambda: x**2, {"x": x}, {"x": 2 * x}, max_entries=7)
    assert errors["x"] < 1e-9
    with pytest.raises(ValueError, match="float64"):
        check_gradients(lambda: x, {"x": x.astype(np.float32)}, {"x": x})
