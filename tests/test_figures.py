"""Figures that say what they show: true z on the manifold's axes, legends of what is drawn,
one numbering of latent dimensions, labels that tell runs apart."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from numpy_vae.training import plots
from numpy_vae.training.labels import describe_variant


@pytest.mark.parametrize("n", [2, 7, 20])
def test_manifold_ticks_give_the_true_z_of_their_row_and_column(n):
    z = plots.manifold_latents(n)
    images = np.random.default_rng(0).random((n * n, 784))
    ax = plots.manifold_figure(images, n).axes[0]
    for ticks, labels, axis in (
        (ax.get_xticks(), ax.get_xticklabels(), 0),
        (ax.get_yticks(), ax.get_yticklabels(), 1),
    ):
        assert len(ticks) >= 2
        for position, label in zip(ticks, labels, strict=True):
            index = int(position)  # the column (row) whose centre the tick marks
            assert position == index + 0.5
            cell = z[index] if axis == 0 else z[index * n]  # first row / first column
            assert float(label.get_text()) == pytest.approx(cell[axis], abs=0.005)
    # The planted bug of a linear axis: a column labelled 0.9 held z = 0.60 (n = 20 there).
    if n == 20:
        assert not np.allclose(np.diff(z[:n, 0]), np.diff(z[:n, 0])[0])


def legend_texts(fig: Figure) -> list[str]:
    legend = fig.axes[0].get_legend()
    return [t.get_text() for t in legend.get_texts()]


def test_kl_legend_lists_only_what_is_drawn(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    plots.plot_kl_per_dim(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.5]), tmp_path / "a")
    plots.plot_kl_per_dim(np.array([1.0, 0.0, 3.0]), np.array([0.5, 0.0, 0.5]), tmp_path / "b")
    assert legend_texts(drawn[0]) == ["active"]
    assert legend_texts(drawn[1]) == ["active", "inactive (collapsed)"]
    assert [t.get_text() for t in drawn[0].axes[0].get_xticklabels()] == ["1", "2", "3"]


def test_latent_dimensions_are_numbered_from_1_everywhere(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    images = np.zeros((2 * 3, 784))
    plots.plot_traversal(images, [0, 4], np.linspace(-1, 1, 3), tmp_path / "t")
    assert [t.get_text() for t in drawn[0].axes[0].get_yticklabels()] == ["z1", "z5"]
    plots.plot_interpolation(np.zeros((5, 784)), tmp_path / "i")
    assert list(drawn[1].axes[0].get_yticks()) == []  # no stray tick


def test_traversal_rows_carry_their_dimensions_kl(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    images = np.zeros((2 * 3, 784))
    plots.plot_traversal(images, [3, 0], np.linspace(-1, 1, 3), tmp_path / "t", kl=[2.345, 0.0])
    labels = [t.get_text() for t in drawn[0].axes[0].get_yticklabels()]
    assert labels == ["z4\nKL 2.35", "z1\nKL 0.00"]


def test_study_labels_and_legend(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    rows = [
        {"variant": "plain VAE", "test_neg_elbo": 105.8, "test_iw_nll": 100.8, "test_kl": 25.0,
         "active_units": 20},
        {"variant": "beta = 4", "test_neg_elbo": 121.2, "test_iw_nll": 109.1, "test_kl": 9.6,
         "active_units": 13},
    ]  # fmt: skip
    plots.plot_study(rows, tmp_path / "s")
    assert legend_texts(drawn[0]) == ["negative ELBO", "IW NLL"]
    assert describe_variant({"binarize": "dynamic"}) != describe_variant({})
    assert describe_variant({"latent_dim": 2}) != describe_variant({})
    assert describe_variant({"binarize": "dynamic"}) != describe_variant({"latent_dim": 2})
    with pytest.raises(ValueError, match='replace "conditional": true by "n_classes": 10'):
        describe_variant({"conditional": True})  # an older run's key: refused, not misread
