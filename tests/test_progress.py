"""Long work shows progress: a bar that fits the terminal, plain lines for a log, silence else."""

import io
import re

import numpy as np
import pytest

from numpy_vae import VAE, get_backend
from numpy_vae.training.evaluate import iw_log_likelihood
from numpy_vae.training.progress import Progress, format_seconds


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_the_bar_never_wraps_the_terminal(monkeypatch, columns):
    """Every redraw, and the line that clears it, is shorter than the terminal (planted bug: a
    clear-line of 90 columns wrapped on an 80-column terminal)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    screen = Terminal()
    progress = Progress(469, "epoch 10/10", stream=screen)
    assert progress.bar
    for done in (1, 100, 469):
        progress._last_draw = 0  # redraw every time
        progress.update(done, lambda: 123.456)
    progress.close()
    pieces = screen.getvalue().split("\r")
    assert len(pieces) >= 4 and all(len(p) < columns for p in pieces), [len(p) for p in pieces]
    assert screen.getvalue().endswith("\r")  # cleared
    if columns >= 80:
        assert "ETA" in pieces[2] and "loss 123.46" in pieces[2]


def test_off_a_terminal_plain_lines_at_the_interval_or_nothing():
    log = io.StringIO()
    progress = Progress(10, "work", stream=log, log_interval=4)
    assert not progress.bar
    reads = []
    for done in range(1, 11):
        progress.update(done, lambda d=done: reads.append(d) or float(d))
    lines = log.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert reads == [4, 8, 10]  # the value is read only for what is shown
    assert all("ETA" in line for line in lines[:-1]) and "ETA" not in lines[-1]
    quiet = io.StringIO()
    silent = Progress(10, "work", stream=quiet)
    for done in range(1, 11):
        silent.update(done, lambda: 1.0)
    silent.close()
    assert quiet.getvalue() == ""


def test_format_seconds():
    assert format_seconds(3.14) == "3.1 s"
    assert format_seconds(42) == "42 s"
    assert format_seconds(185) == "3 min 05 s"
    assert format_seconds(3725) == "1 h 02 min"


def test_the_iw_estimate_reports_progress_without_changing_a_number():
    model = VAE(6, hidden_dims=(5,), latent_dim=2, backend=get_backend("numpy", "float64"), seed=0)
    x = np.random.default_rng(0).random((30, 6))
    log = io.StringIO()
    progress = Progress(30, "IW", stream=log, log_interval=10, bar=False)
    shown = iw_log_likelihood(model, x, k=50, rng=np.random.default_rng(1), max_rows=200,
                              progress=progress)  # fmt: skip
    plain = iw_log_likelihood(model, x, k=50, rng=np.random.default_rng(1), max_rows=200)
    np.testing.assert_array_equal(shown, plain)
    done = [int(re.search(r"IW (\d+)/30", line).group(1)) for line in log.getvalue().splitlines()]
    assert done and done[-1] == 30 and done == sorted(done)


def test_a_logged_training_run_prints_progress_lines(tmp_path, capsys):
    from test_train import small_args, synthetic_arrays

    from numpy_vae.cli import train_main

    path = tmp_path / "d.npz"
    np.savez(path, **synthetic_arrays(n_train=640, n_test=100))
    args = small_args(path, tmp_path, "run", "--epochs", "1", "--iw-samples", "5")
    assert train_main([*args, "--log-interval", "4"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"epoch 1/1 4/10  loss [\d.]+  [\d.]+ s, ETA", err), err
    assert re.search(r"IW estimate \(K = 5\), test images 100/100", err), err


def test_the_estimator_experiment_reports_progress(tmp_path, capsys):
    from numpy_vae.cli.gradient_variance import main

    argv = ["--repeats", "4", "--sample-counts", "1,10", "--latent-dim", "2", "--log-interval",
            "10", "--plot", str(tmp_path / "p.png"), "--data-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"decoder passes, rows of z 80/80", err), err
