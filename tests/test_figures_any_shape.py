"""Any data shape finishes a run (issue 24, item 5): square images get the image figures, 2-D
data gets scatter plots of the data and its reconstructions, and every figure that does not fit
the data is skipped with one line that says so, instead of the run stopping at its figures."""

from pathlib import Path

import numpy as np
import pytest

from numpy_vae.cli.train import main as train_main
from numpy_vae.training import plots
from numpy_vae.training.conditional import CONDITIONAL_FIGURES

IMAGE_FIGURES = {"samples.png", "reconstructions.png", "traversal.png", "interpolation.png"}
ANY_DATA = {"curves.png", "kl_per_dim.png", "latent_means.png"}  # latent_means: 2-D latents


def data_file(tmp_path: Path, pixels: int, labels: bool = True) -> Path:
    """A tiny .npz of uint8 data of ``pixels`` values per example (labels 0..9 if asked)."""
    rng = np.random.default_rng(pixels)
    arrays = {}
    for split, n in (("train", 96), ("test", 40)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, pixels), dtype=np.uint8)
        if labels:
            arrays[f"{split}_labels"] = rng.integers(0, 10, n).astype(np.int64)
    path = tmp_path / f"data{pixels}.npz"
    np.savez(path, **arrays)
    return path


def run(tmp_path: Path, pixels: int, *extra: str) -> tuple[int, Path]:
    argv = [
        "--data-file", str(data_file(tmp_path, pixels)), "--runs-dir", str(tmp_path),
        "--name", f"run{pixels}", "--hidden", "8", "--latent-dim", "2", "--batch-size", "32",
        "--epochs", "1", "--no-progress", *extra,
    ]  # fmt: skip
    return train_main(argv), tmp_path / f"run{pixels}"


def pngs(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.glob("*.png")}


def test_ten_dimensional_data_finishes_with_the_figures_that_fit(tmp_path, capsys):
    status, run_dir = run(tmp_path, 10)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert pngs(run_dir) == ANY_DATA
    assert "done:" in out and "not square" not in err
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped) == 1, out  # one line names every figure left out, and why
    for name in IMAGE_FIGURES | {"manifold.png"}:
        assert name in skipped[0]
    assert "10 values" in skipped[0]


def test_two_dimensional_data_gets_scatter_plots(tmp_path, capsys):
    status, run_dir = run(tmp_path, 2, "--figures-every", "1")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert pngs(run_dir) == ANY_DATA | {"samples.png", "samples_epoch_1.png", "reconstructions.png"}
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "traversal.png" in skipped[0], out


def test_a_resumed_run_of_toy_data_finishes_its_figures(tmp_path, capsys):
    status, run_dir = run(tmp_path, 10)
    assert status == 0
    for png in run_dir.glob("*.png"):
        png.unlink()
    data = tmp_path / "data10.npz"
    assert train_main(["--resume", str(run_dir), "--data-file", str(data), "--no-progress"]) == 0
    assert pngs(run_dir) == ANY_DATA


def test_square_images_of_another_size_get_the_image_figures(tmp_path, capsys):
    status, run_dir = run(tmp_path, 16, "--conditional")  # 4 x 4
    out, err = capsys.readouterr()
    assert status == 0, err
    assert pngs(run_dir) == IMAGE_FIGURES | ANY_DATA | {*CONDITIONAL_FIGURES, "manifold.png"}
    assert "skipped" not in out


def test_latent_means_say_digit_for_mnist_and_class_otherwise(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    mu, labels = np.zeros((5, 2)), np.arange(5)
    plots.plot_latent_means(mu, labels, tmp_path / "a")
    plots.plot_latent_means(mu, labels, tmp_path / "b", label_name="class")
    assert [fig.axes[-1].get_ylabel() for fig in drawn] == ["digit", "class"]


@pytest.mark.parametrize(
    "trained,title", [("", "negative ELBO"), ("beta = 4", "negative ELBO (trained: beta = 4)")]
)
def test_curves_say_what_was_trained(tmp_path, monkeypatch, trained, title):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    keys = ("neg_elbo", "recon", "kl")
    history = [{"epoch": 1, **{f"{s}_{k}": 1.0 for s in ("train", "test") for k in keys}}]
    plots.plot_curves(history, tmp_path / "c", trained=trained)
    assert drawn[0].axes[0].get_title() == title


def test_labelled_rows_put_the_row_labels_on_rows_of_small_images(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    plots.plot_traversal(np.zeros((2 * 3, 16)), [0, 1], np.linspace(-1, 1, 3), tmp_path / "t")
    ticks = drawn[0].axes[0].get_yticks()
    assert list(ticks) == [2 + 2, 2 + 6 + 2]  # pad + cell * r + side / 2, side 4, pad 2
