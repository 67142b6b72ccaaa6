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


@pytest.fixture
def usage_error(capsys):
    """``usage_error(main, argv)``: run a command line's ``main`` and check that it refused
    with status 2 and one line on standard error (no traceback); returns that line."""

    def run(main, argv):
        try:
            status = main(argv)
        except SystemExit as exit_info:  # argparse exits instead of returning
            status = exit_info.code
        assert status == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        return err

    return run
