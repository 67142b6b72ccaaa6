import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from numpy_vae import get_backend

# Gradient checks loop in Python over every entry; wall-clock deadlines would only add flakiness.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.load_profile("default")


@pytest.fixture
def f64():
    """NumPy float64 backend: the one gradient checks run in."""
    return get_backend("numpy", "float64")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
