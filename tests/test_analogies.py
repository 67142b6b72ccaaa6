"""The conditional VAE's figures: style analogies (each test image's z decoded with every label),
class samples at a stated temperature, and which runs draw them."""

from pathlib import Path

import numpy as np
import pytest

from numpy_vae import VAE
from numpy_vae.cli.evaluate import main as evaluate_main
from numpy_vae.cli.train import main as train_main
from numpy_vae.experiments.conditional import (
    analogies_read_as,
    label_in_z,
    nearest_class_mean_accuracy,
    nearest_code_distance,
    samples_read_as_label,
    softmax_regression,
)
from numpy_vae.training import plots
from numpy_vae.training.conditional import (
    CONDITIONAL_FIGURES,
    PER_CLASS,
    analogy_rows,
    class_samples,
    style_analogies,
)


@pytest.fixture
def model():
    return VAE(input_dim=16, hidden_dims=(8,), latent_dim=3, n_classes=10, seed=0)


def test_column_k_is_the_decoder_mean_for_label_k_at_the_rows_posterior_mean(model):
    rng = np.random.default_rng(0)
    x = rng.random((5, 16)).astype(np.float32)
    y = np.array([3, 0, 9, 3, 7])
    grid = style_analogies(model, x, y)
    assert grid.shape == (5, 10, 16)
    mu, _ = model.encode(x, y)  # each row encoded with its own label
    for i in range(5):
        for k in range(10):
            expected = model.decode(mu[i : i + 1], np.array([k]))[0]
            np.testing.assert_allclose(grid[i, k], expected, rtol=1e-6, atol=1e-7)
    # The row's own label matters: encoded with another label, the posterior mean differs.
    other, _ = model.encode(x, (y + 1) % 10)
    assert not np.allclose(other, mu)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_class_samples_use_the_stated_temperature(model, temperature):
    seed = 7
    images = class_samples(model, seed, temperature)
    eps = np.random.default_rng(seed).standard_normal((10 * PER_CLASS, 3))
    mode = temperature != 1.0  # below T = 1 each row starts with z = 0
    per_class = PER_CLASS + mode
    assert images.shape == (10 * per_class, 16)
    for d in range(10):
        row = images[d * per_class : (d + 1) * per_class]
        labels = np.full(PER_CLASS, d)
        z = (temperature * eps[d * PER_CLASS : (d + 1) * PER_CLASS]).astype(np.float32)
        np.testing.assert_allclose(row[mode:], model.decode(z, labels), rtol=1e-5, atol=1e-6)
        if mode:
            at_zero = model.decode(np.zeros((1, 3), dtype=np.float32), np.array([d]))
            np.testing.assert_allclose(row[0], at_zero[0], rtol=1e-6, atol=1e-7)


def test_analogy_rows_take_one_image_of_each_label_first():
    labels = np.array([4, 4, 1, 0, 1, 9, 2])
    assert analogy_rows(labels).tolist() == [3, 2, 6, 0, 5, 1, 4]
    assert analogy_rows(labels, n=3).tolist() == [3, 2, 6]


def test_nearest_class_mean_accuracy():
    mu_train = np.array([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.2, 5.0]])
    y_train = np.array([1, 1, 6, 6])
    mu_test = np.array([[0.1, 0.3], [4.0, 4.0], [0.5, 0.5]])
    assert nearest_class_mean_accuracy(mu_train, y_train, mu_test, np.array([1, 6, 6])) == 2 / 3


def test_softmax_regression_separates_planted_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 30)
    x = np.eye(10)[y] * 3 + rng.normal(0, 0.3, (300, 10))
    assert np.mean(softmax_regression(x, y)(x) == y) > 0.95


def test_nearest_code_distance_is_to_the_same_label():
    codes, code_labels = np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([0, 1])
    z, labels = np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([1, 1])
    assert nearest_code_distance(codes, code_labels, z, labels) == 5.0


def test_the_readings_of_samples_and_analogies(model):
    """With a classifier that reads every image as 3: 10 % of samples at any temperature; of
    the analogies decoded with another label, the ninth decoded with 3."""
    threes = lambda images: np.full(len(images), 3)  # noqa: E731
    assert samples_read_as_label(model, threes, (1.0, 0.0), per_class=4) == {1.0: 0.1, 0.0: 0.1}
    x = np.random.default_rng(0).random((4, 16)).astype(np.float32)
    read = analogies_read_as(model, threes, x, np.array([3, 0, 1, 2]))
    assert read == {"decoded_label": pytest.approx(3 / 36), "own_label": pytest.approx(9 / 36)}
    train = (np.random.default_rng(1).random((40, 16)).astype(np.float32), np.arange(40) % 10)
    found = label_in_z(model, train, (x, np.array([3, 0, 1, 2])), batch=16)
    assert 0 <= found["between_class_share"] <= 1 and found["posterior_variance"] > 0
    assert {"nearest_code_T1", "nearest_code_T0.5", "nearest_code_T0"} <= set(found)


def test_analogy_columns_are_labelled(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    plots.plot_analogies(np.zeros((2, 11, 16)), [3, 8], tmp_path / "a", "class")
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input", *map(str, range(10))]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["class 3", "class 8"]


def tiny_run(tmp_path: Path, name: str, *extra: str) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("test", 30)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 10, n).astype(np.int64)
    data = tmp_path / "data.npz"
    np.savez(data, **arrays)
    argv = [
        "--data-file", str(data), "--runs-dir", str(tmp_path), "--name", name, "--hidden", "8",
        "--latent-dim", "3", "--batch-size", "32", "--epochs", "1", "--no-progress", *extra,
    ]  # fmt: skip
    assert train_main(argv) == 0
    return tmp_path / name


def test_a_conditional_run_draws_the_new_figures_and_evaluate_redraws_them(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, "cond", "--conditional")
    for name in CONDITIONAL_FIGURES:
        assert (run_dir / name).is_file(), name
        (run_dir / name).unlink()
    assert evaluate_main([str(run_dir), "--iw-samples", "0", "--figures"]) == 0
    assert all((run_dir / name).is_file() for name in CONDITIONAL_FIGURES)


def test_an_unconditional_run_does_not_draw_them(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, "plain")
    assert (run_dir / "samples.png").is_file()
    assert not any((run_dir / name).exists() for name in CONDITIONAL_FIGURES)
