"""Figures of a trained model, drawn with Matplotlib's object API (no pyplot, no display needed).

Every figure is written atomically (a temporary file renamed into place), so a run folder never
holds a half-written PNG. Images are taken as host arrays of shape (n, pixels) with values in
[0, 1], ``pixels`` a square (784 for MNIST's 28 x 28, or any other side); Gaussian-likelihood
means, which may leave that range, are clipped for display only. Data of two values per example
is drawn as points (:func:`plot_point_samples`, :func:`plot_point_reconstructions`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from numpy_vae.training.atomic import write_atomic

SIDE = 28  # MNIST images are 28 x 28


def image_side(pixels: int) -> int | None:
    """The side of a square image of ``pixels`` values, or None when they make no square."""
    side = int(round(pixels**0.5))
    return side if side * side == pixels else None


def class_word(pixels: int) -> str:
    """What a label names: "digit" for MNIST-sized images (28 x 28), "class" for other data,
    whose labels 0..9 need not be digits."""
    return "digit" if pixels == SIDE * SIDE else "class"


def image_grid(images: numpy.ndarray, rows: int, cols: int, pad: int = 2) -> numpy.ndarray:
    """Tile ``rows * cols`` flattened square images into one 2-D array, ``pad`` pixels apart."""
    images = numpy.clip(numpy.asarray(images, dtype=numpy.float64), 0.0, 1.0)
    side = image_side(images.shape[1])
    if side is None:
        raise ValueError(f"images of {images.shape[1]} pixels are not square")
    grid = numpy.ones((rows * (side + pad) + pad, cols * (side + pad) + pad))
    for k, image in enumerate(images[: rows * cols]):
        r, c = divmod(k, cols)
        top, left = pad + r * (side + pad), pad + c * (side + pad)
        grid[top : top + side, left : left + side] = image.reshape(side, side)
    return grid


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically."""
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi))


def _image_figure(grid: numpy.ndarray, title: str, inches: float = 6.0) -> Figure:
    fig = Figure(figsize=(inches, inches * grid.shape[0] / grid.shape[1] + 0.5), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_samples(images: numpy.ndarray, path: str | os.PathLike[str], title: str) -> None:
    """An 8 x 8 grid of 64 images (samples from the prior)."""
    save_figure(_image_figure(image_grid(images, 8, 8), title), path)


def plot_reconstructions(
    originals: numpy.ndarray, reconstructions: numpy.ndarray, path: str | os.PathLike[str]
) -> None:
    """Test images (odd rows) above their reconstructions (even rows), 8 per row."""
    n = min(len(originals), 32) // 8 * 8
    rows = []
    for start in range(0, n, 8):
        rows += [originals[start : start + 8], reconstructions[start : start + 8]]
    grid = image_grid(numpy.concatenate(rows), len(rows), 8)
    fig = _image_figure(grid, "Test images (odd rows) and their reconstructions (even rows)")
    save_figure(fig, path)


def plot_curves(
    history: Sequence[dict[str, Any]], path: str | os.PathLike[str], trained: str = ""
) -> None:
    """Train and test negative ELBO, reconstruction and KL per example against the epoch.

    Parameters
    ----------
    history : sequence of dict
        The per-epoch metrics of a run (``train_neg_elbo``, ``test_kl``, ...).
    path : path
        Where the PNG goes.
    trained : str
        The objective trained on where it is not the plain ELBO (e.g. ``"beta = 4"``), named in
        the first panel's title: the curves are the plain negative ELBO of any run, and without
        it a beta = 4 run's figure would read as if the ELBO itself had been trained.
    """
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(12, 3.6), dpi=100)
    panels = (
        ("neg_elbo", f"negative ELBO (trained: {trained})" if trained else "negative ELBO"),
        ("recon", "reconstruction  -log p(x|z)"),
        ("kl", "KL(q(z|x) || p(z))"),
    )
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"test_{key}"] for h in history], "s-", label="test")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("nats per example")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_latent_means(
    mu: numpy.ndarray,
    labels: numpy.ndarray | None,
    path: str | os.PathLike[str],
    label_name: str = "digit",
) -> None:
    """Scatter of 2-D posterior means, coloured by label when labels are given.

    ``label_name`` names the labels on the colour bar: "digit" for MNIST, "class" for data whose
    labels 0..9 are not digits (:func:`class_word`).
    """
    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=3, alpha=0.7)
    else:
        points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7,
                            vmin=-0.5, vmax=9.5)  # fmt: skip
        fig.colorbar(points, ax=ax, ticks=range(10), label=label_name)
    ax.set_title("Test set: posterior means E[z | x]")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    fig.tight_layout()
    save_figure(fig, path)


def manifold_latents(n: int) -> numpy.ndarray:
    """(n*n, 2) latent points on a grid of N(0, 1) quantiles, row by row from the top-left.

    Columns vary z1 from low to high; rows vary z2 from high (top) to low (bottom), so the grid
    reads like a plot with z2 upwards.
    """
    from scipy.stats import norm

    q = norm.ppf(numpy.linspace(0.5 / n, 1 - 0.5 / n, n))
    z1, z2 = numpy.meshgrid(q, q[::-1])
    return numpy.stack([z1.ravel(), z2.ravel()], axis=1)


def manifold_figure(images: numpy.ndarray, n: int) -> Figure:
    """The figure of :func:`plot_manifold`.

    The grid's columns and rows sit at N(0, 1) quantiles, which are not evenly spaced in z, so
    the axes are not a linear z scale: each tick marks one column (row) and is labelled with the
    true z1 (z2) of the images there.
    """
    grid = image_grid(images, n, n, pad=0)
    q = manifold_latents(n)[:n, 0]
    fig = Figure(figsize=(7.5, 7.5), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, extent=(0, n, n, 0), interpolation="nearest")
    shown = sorted(set(numpy.linspace(0, n - 1, min(n, 7)).round().astype(int).tolist()))
    ax.set_xticks([i + 0.5 for i in shown], [f"{q[i]:.2f}" for i in shown])
    ax.set_yticks([r + 0.5 for r in shown], [f"{q[n - 1 - r]:.2f}" for r in shown])
    ax.set_title("Decoded 2-D latent space (grid of N(0,1) quantiles)")
    ax.set_xlabel("z1 (the column's value)")
    ax.set_ylabel("z2 (the row's value)")
    fig.tight_layout()
    return fig


def plot_manifold(images: numpy.ndarray, n: int, path: str | os.PathLike[str]) -> None:
    """The n x n images decoded from :func:`manifold_latents`, z1 and z2 on the axes."""
    save_figure(manifold_figure(images, n), path)


def plot_kl_per_dim(
    kl_per_dim: numpy.ndarray, mean_variance: numpy.ndarray, path: str | os.PathLike[str]
) -> None:
    """Bars of each latent dimension's KL, coloured by whether the dimension is active.

    A dimension is active when the variance over the data of its posterior mean exceeds 0.01;
    collapsed dimensions sit at KL 0 and carry no information about x.
    """
    active = mean_variance > 0.01
    fig = Figure(figsize=(max(6.0, 0.35 * len(kl_per_dim) + 2), 4), dpi=100)
    ax = fig.add_subplot()
    dims = numpy.arange(1, len(kl_per_dim) + 1)  # z1, z2, ... as in the other figures
    if active.any():
        ax.bar(dims[active], kl_per_dim[active], color="tab:blue", label="active")
    if not active.all():  # a legend entry only for what the figure shows
        ax.bar(dims[~active], kl_per_dim[~active], color="tab:gray", label="inactive (collapsed)")
    ax.set_title(f"KL per latent dimension, test set ({int(active.sum())} of {len(dims)} active)")
    ax.set_xlabel("latent dimension j (z_j)")
    ax.set_ylabel("KL_j (nats per example)")
    ax.set_xticks(dims)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _labelled_rows(
    images: numpy.ndarray,
    rows: int,
    cols: int,
    row_labels: Sequence[str],
    title: str,
    xlabel: str,
    path: str | os.PathLike[str],
    col_labels: Sequence[str] = (),
) -> None:
    pad = 2
    grid = image_grid(images, rows, cols, pad=pad)
    fig = Figure(figsize=(0.75 * cols + 1.2, 0.75 * rows + 0.9), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    side = image_side(images.shape[1]) or SIDE  # image_grid has refused any other shape
    cell = side + pad
    if any(row_labels):  # each label at the middle of its row, whatever the images' side
        ax.set_yticks([pad + cell * r + side / 2 for r in range(rows)], row_labels)
    else:
        ax.set_yticks([])
    if col_labels:  # each label at the middle of its column
        ax.set_xticks([pad + cell * c + side / 2 for c in range(cols)], col_labels)
        ax.tick_params(axis="x", length=0)
    else:
        ax.set_xticks([])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)


def plot_class_samples(
    images: numpy.ndarray,
    per_class: int,
    path: str | os.PathLike[str],
    label_name: str = "digit",
    temperature: float = 1.0,
) -> None:
    """Conditional samples: row d holds ``per_class`` decoder means of p(x | z, y = d), with
    z ~ N(0, T^2 I) at the ``temperature`` T; below T = 1 the first column is z = 0.
    ``label_name`` as in :func:`plot_latent_means`."""
    if temperature == 1.0:
        title, xlabel = f"Conditional samples, one row per {label_name} y", "z ~ N(0, I)"
    else:
        title = f"Conditional samples at T = {temperature:g}, one row per {label_name} y"
        xlabel = f"first column z = 0, then z = {temperature:g} eps, eps ~ N(0, I)"
    _labelled_rows(images, 10, per_class, [str(d) for d in range(10)], title, xlabel, path)


def plot_analogies(
    rows: numpy.ndarray, labels: Sequence[int], path: str | os.PathLike[str], label_name: str
) -> None:
    """Style analogies: ``rows`` (n, 1 + C, D), a test image, then its posterior mean (encoded
    with its own label, ``labels[i]``) decoded with each label 0..C-1."""
    n, cols = rows.shape[0], rows.shape[1]
    _labelled_rows(
        rows.reshape(n * cols, -1), n, cols, [f"{label_name} {int(k)}" for k in labels],
        f"Style analogies: each test {label_name}'s z decoded with every label",
        f"input | decoded with y = 0 to {cols - 2}", path, ["input", *map(str, range(cols - 1))],
    )  # fmt: skip


def plot_traversal(
    images: numpy.ndarray,
    dims: Sequence[int],
    values: numpy.ndarray,
    path: str | os.PathLike[str],
    kl: Sequence[float] | None = None,
) -> None:
    """Row r varies latent dimension ``dims[r]`` (0-based; labelled ``z{dims[r] + 1}``, as the
    other figures number them) over ``values`` with the others held at 0; ``kl[r]``, that
    dimension's KL in nats per example, is written beside its label (how much the model uses
    the dimension, which the row shows)."""
    labels = [f"z{j + 1}" for j in dims]
    if kl is not None:
        labels = [f"{label}\nKL {k:.2f}" for label, k in zip(labels, kl, strict=True)]
    _labelled_rows(
        images, len(dims), len(values), labels,
        "Latent traversals (most informative dimensions, others at 0)",
        f"z_j from {values[0]:g} to {values[-1]:g}", path,
    )  # fmt: skip


def plot_interpolation(images: numpy.ndarray, path: str | os.PathLike[str]) -> None:
    """Decoded points on the line between two test digits' posterior means (ends: the inputs)."""
    _labelled_rows(
        images, 1, len(images), [""],
        "Interpolation in latent space between two test digits",
        "input | decoded (1-t) mu_a + t mu_b, t from 0 to 1 | input", path,
    )  # fmt: skip


def _point_axes(title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.5, 6), dpi=100)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_aspect("equal", adjustable="datalim")  # the two values share one scale
    ax.grid(alpha=0.3)
    return fig, ax


def plot_point_samples(
    samples: numpy.ndarray, data: numpy.ndarray, path: str | os.PathLike[str], title: str
) -> None:
    """Data of two values per example: decoded prior samples over the test data, as points.

    The counterpart of :func:`plot_samples` for data that is not an image: ``samples`` and
    ``data`` are host arrays of shape (n, 2).
    """
    fig, ax = _point_axes(title)
    ax.scatter(data[:, 0], data[:, 1], s=6, color="tab:gray", alpha=0.5, label="test data")
    ax.scatter(samples[:, 0], samples[:, 1], s=12, color="tab:red", label="samples (decoder means)")
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)


def plot_point_reconstructions(
    originals: numpy.ndarray, reconstructions: numpy.ndarray, path: str | os.PathLike[str]
) -> None:
    """Data of two values per example: test points, their reconstructions, and a line from each
    point to its own reconstruction (the counterpart of :func:`plot_reconstructions`)."""
    fig, ax = _point_axes("Test points and their reconstructions")
    for (x1, x2), (r1, r2) in zip(originals, reconstructions, strict=True):
        ax.plot([x1, r1], [x2, r2], color="tab:gray", alpha=0.5, linewidth=0.8)
    ax.scatter(originals[:, 0], originals[:, 1], s=14, color="tab:blue", label="test point")
    ax.scatter(reconstructions[:, 0], reconstructions[:, 1], s=14, color="tab:orange",
               marker="s", label="reconstruction")  # fmt: skip
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)


def plot_study(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Side-by-side bars of test negative ELBO, IW NLL, KL and active units per variant."""
    labels = [r["variant"] for r in rows]
    y = numpy.arange(len(rows))
    fig = Figure(figsize=(13, 0.45 * len(rows) + 1.8), dpi=100)
    names = {"test_neg_elbo": "negative ELBO", "test_iw_nll": "IW NLL", "test_kl": "KL"}
    panels = (
        ("test negative ELBO and IW NLL (nats)", ("test_neg_elbo", "test_iw_nll")),
        ("KL (nats)", ("test_kl",)),
        ("active units", ("active_units",)),
    )
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for key in keys:
            values = [numpy.nan if r[key] is None else r[key] for r in rows]
            if len(keys) > 1:
                # Points, not bars: the differences are a few nats out of about 100, and a bar
                # would have to start at 0 to be read truthfully.
                ax.plot(values, y, "o", label=names.get(key, key), markersize=7)
            else:
                ax.barh(y, values, height=0.8, label=names.get(key, key))
        ax.set_yticks(y, labels if i == 0 else [])
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(title.split(" (")[-1].rstrip(")") if "(" in title else "count")
        if len(keys) > 1:
            ax.legend(loc="lower right")
            ax.margins(x=0.15, y=0.1)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_gradient_variance(study: Any, path: str | os.PathLike[str], case: str = "") -> None:
    """Variance of the reparameterization and score-function gradient estimates against the
    number of samples K, log-log, one panel for mu and one for logvar.

    ``study`` is a :class:`numpy_vae.experiments.estimators.VarianceStudy`. Dotted lines continue
    each estimator's K = 1 variance with slope -1 (variance / K), where independent samples put it.
    """
    k = numpy.asarray(study.sample_counts, dtype=float)
    fig = Figure(figsize=(10, 4.4), dpi=100)
    panels = (("mu", "variance_mu"), ("logvar", "variance_logvar"))
    for i, (label, key) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for (name, result), color in zip(
            study.results.items(), ("tab:blue", "tab:red"), strict=True
        ):
            values = numpy.asarray(getattr(result, key))
            ax.loglog(k, values, "o-", color=color, label=name)
            ax.loglog(k, values[0] * k[0] / k, ":", color=color, alpha=0.6)
        ax.set_title(f"gradient w.r.t. {label}")
        ax.set_xlabel("samples K")
        ax.set_ylabel("variance of the K-sample estimate")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(
        f"Gradient estimators of E_q[log p(x|z)] (dotted: K = 1 variance / K)\n{case}",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure(fig, path)
