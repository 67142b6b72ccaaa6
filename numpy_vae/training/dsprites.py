"""dSprites, drawn from its factors: binary images of a square, an ellipse and a heart.

dSprites (Matthey, Higgins, Hassabis and Lerchner 2017, the data set of the beta-VAE paper,
Higgins et al. 2017) is every combination of five factors of variation, each on a grid of
values, drawn as a white shape on black::

    factor        values   range
    shape              3   square, ellipse, heart
    scale              6   linearly spaced in [0.5, 1]
    orientation       40   2 pi k / 40, k = 0..39, in [0, 2 pi)
    position x        32   linearly spaced in [0, 1]
    position y        32   linearly spaced in [0, 1]

3 * 6 * 40 * 32 * 32 = 737,280 images of 64 x 64 pixels (3 GB as bytes), so nothing here
holds them: :func:`render` draws any batch of factor tuples on the fly, vectorized over the
batch, and the same tuple always gives the same image (a pure function of the factors). The
factor order, and the order of :meth:`FactorGrid.index` (position y varies fastest), are those
of the published file (less its first factor, the one colour) and of ``disentanglement_lib``'s
``data/ground_truth/dsprites.py``. A
:class:`FactorGrid` with fewer values per factor, or smaller images, gives quick runs.

How this differs from the published dSprites (whose images come from DeepMind's own renderer,
not published):

- The heart is procedural: the region ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0`` (a classic implicit
  heart curve), centred on its bounding box and scaled to it; the published heart is a bitmap
  of a similar but not identical outline. The ellipse's axes are 1 : 1/2.
- Sizes and margins are chosen here (:data:`RADIUS`, :data:`MARGIN`): at scale 1 the square's
  side is 0.28 of the image (18 pixels at 64), and the centre moves over [0.2, 0.8] of each side
  (a step of 1.2 pixels at 64), so that no shape at any orientation leaves the image.
- Orientations are ``2 pi k / 40``, the 40 values of [0, 2 pi); the published README says "40 values
  in [0, 2 pi]" without saying whether 2 pi is one of them. Here ``k + 10`` is exactly a
  quarter turn of ``k``, so the square at both is the same image (the tests hold it to that).
- A pixel is white when its centre lies inside the shape: no anti-aliasing, as dSprites.

Images come back as ``uint8`` 0 and 255, the project's pixel convention for black and white
(:data:`numpy_vae.training.data.PIXEL_CONVENTIONS`); :func:`dsprites_dataset` renders a sample
of the grid into a :class:`~numpy_vae.training.data.Dataset` for the trainer, and
:func:`plot_factor_values` draws one image per value of each factor::

    from numpy_vae.training.dsprites import FactorGrid, plot_factor_values
    plot_factor_values(FactorGrid(), "dsprites_factors.png")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from numpy_vae.training.data import Dataset
from numpy_vae.training.plots import save_figure

#: The factors in the published order; a factor tuple is one value index per factor.
FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
SHAPE_NAMES = ("square", "ellipse", "heart")

#: The shape's half-extent at scale 1, as a fraction of the image side.
RADIUS = 0.14
#: The centre's distance from the border at position 0 (or 1), as a fraction of the side: at
#: least the half-diagonal of the largest square, sqrt(2) RADIUS, so every shape fits.
MARGIN = 0.2

# The heart (x^2 + y^2 - 1)^3 <= x^2 y^3 spans x in [-1.1385, 1.1385], y in [-1, 1.2360]:
# its bounding box is centred at y = 0.1180 with a half-width of 1.1385.
_HEART_HALF_WIDTH = 1.1385
_HEART_Y_CENTRE = 0.1180


def inside_square(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``max(|p|, |q|) <= 1``: the square of half-side 1, in the shape's own coordinates."""
    return np.maximum(np.abs(p), np.abs(q)) <= 1.0


def inside_ellipse(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p^2 + (2 q)^2 <= 1``: the ellipse of semi-axes 1 (along p) and 1/2 (along q)."""
    return p**2 + (2.0 * q) ** 2 <= 1.0


def inside_heart(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0`` with ``x, y`` the shape's coordinates rescaled so
    that the heart's bounding box is ``[-1, 1]`` wide and centred (``q`` points up, to the
    heart's lobes). Symmetric under ``p -> -p`` only."""
    x = p * _HEART_HALF_WIDTH
    y = q * _HEART_HALF_WIDTH + _HEART_Y_CENTRE
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


#: Each shape's region, by its factor value: a shape is a function, not a branch.
SHAPES: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    inside_square,
    inside_ellipse,
    inside_heart,
)


@dataclass(frozen=True)
class FactorGrid:
    """The grid of factor values and the image side; the defaults are dSprites'.

    A smaller grid keeps each factor's range and spaces fewer values over it (``shapes`` takes
    the first ones of :data:`SHAPE_NAMES`).

    Attributes
    ----------
    shapes, scales, orientations, positions_x, positions_y : int
        How many values each factor takes.
    image_size : int
        The side of the square images, in pixels.
    """

    shapes: int = 3
    scales: int = 6
    orientations: int = 40
    positions_x: int = 32
    positions_y: int = 32
    image_size: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.shapes <= len(SHAPES):
            raise ValueError(f"shapes must be 1..{len(SHAPES)}, got {self.shapes}")
        for name, n in zip(FACTOR_NAMES[1:], self.sizes[1:], strict=True):
            if n < 1:
                raise ValueError(f"{name} must take at least one value, got {n}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")

    @property
    def sizes(self) -> tuple[int, int, int, int, int]:
        """How many values each factor of :data:`FACTOR_NAMES` takes."""
        return (self.shapes, self.scales, self.orientations, self.positions_x, self.positions_y)

    @property
    def n_images(self) -> int:
        """The number of factor tuples: the product of :attr:`sizes` (737,280 for dSprites)."""
        return int(np.prod(self.sizes))

    @property
    def pixels(self) -> int:
        return self.image_size * self.image_size

    def values(self, factor: int) -> np.ndarray:
        """The values of factor number ``factor``, in order (shape: 0, 1, 2 for its name).

        Returns
        -------
        float64 array (sizes[factor],)
        """
        n = self.sizes[factor]
        if factor == 0:
            return np.arange(n, dtype=np.float64)
        if factor == 1:
            return np.linspace(0.5, 1.0, n) if n > 1 else np.ones(1)
        if factor == 2:
            return 2.0 * np.pi * np.arange(n) / n
        return np.linspace(0.0, 1.0, n) if n > 1 else np.full(1, 0.5)

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """The values that factor tuples name.

        Parameters
        ----------
        factors : int array (B, 5)
            One value index per factor of :data:`FACTOR_NAMES`.

        Returns
        -------
        float64 array (B, 5)
            Shape index, scale, orientation in radians, position x and y in [0, 1].
        """
        factors = self.check(factors)
        return np.stack([self.values(k)[factors[:, k]] for k in range(5)], axis=1)

    def check(self, factors: np.ndarray) -> np.ndarray:
        """``factors`` as an int64 array (B, 5) of valid value indices, or ValueError."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != 5 or factors.dtype.kind not in "iu":
            raise ValueError(
                f"factors must be an integer array (B, 5), got {factors.dtype} {factors.shape}"
            )
        if factors.size and ((factors < 0).any() or (factors >= self.sizes).any()):
            raise ValueError(f"factor indices must lie in 0..size-1 for sizes {self.sizes}")
        return factors.astype(np.int64)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """The place of each tuple in the published order (the last factor varies fastest).

        Returns
        -------
        int64 array (B,)
        """
        return np.ravel_multi_index(tuple(self.check(factors).T), self.sizes).astype(np.int64)

    def factors(self, index: np.ndarray) -> np.ndarray:
        """The factor tuples at places ``index`` of the published order (inverse of
        :meth:`index`).

        Returns
        -------
        int64 array (B, 5)
        """
        return np.stack(np.unravel_index(np.asarray(index), self.sizes), axis=1).astype(np.int64)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` tuples, each factor drawn uniformly and independently (with replacement).

        Returns
        -------
        int64 array (n, 5)
        """
        return np.stack([rng.integers(0, size, n) for size in self.sizes], axis=1)


DSPRITES = FactorGrid()


def render(factors: np.ndarray, grid: FactorGrid = DSPRITES, chunk: int = 512) -> np.ndarray:
    """Draw the images of a batch of factor tuples.

    A pixel ``(i, j)`` (row ``i`` from the top, column ``j``) has its centre at
    ``(u, v) = ((j + 1/2) / S, (i + 1/2) / S)``. With the centre
    ``c = MARGIN + (1 - 2 MARGIN) (position_x, position_y)`` (position y runs down the rows),
    radius ``r = RADIUS * scale`` and orientation ``theta`` (anticlockwise on the screen), the
    pixel's coordinates in the shape's own frame (``q`` up) are

    .. math::

        \\begin{pmatrix} p \\\\ q \\end{pmatrix} = \\frac{1}{r}
        \\begin{pmatrix} \\cos\\theta & \\sin\\theta \\\\ -\\sin\\theta & \\cos\\theta
        \\end{pmatrix} \\begin{pmatrix} u - c_x \\\\ -(v - c_y) \\end{pmatrix},

    and the pixel is white when ``(p, q)`` lies in the shape's region (:data:`SHAPES`).

    Parameters
    ----------
    factors : int array (B, 5)
        Value indices of :data:`FACTOR_NAMES` on ``grid``.
    grid : FactorGrid
    chunk : int
        Tuples drawn at once (bounds the memory of the float intermediates).

    Returns
    -------
    uint8 array (B, S, S)
        0 (black) and 255 (white).
    """
    values = grid.factor_values(factors)
    images = np.zeros((len(values), grid.image_size, grid.image_size), dtype=np.uint8)
    for start in range(0, len(values), chunk):
        images[start : start + chunk] = _render_values(values[start : start + chunk], grid)
    return images


def _render_values(values: np.ndarray, grid: FactorGrid) -> np.ndarray:
    """:func:`render` of factor values (B, 5), as 0/255 bytes (B, S, S)."""
    side = grid.image_size
    centres = (np.arange(side) + 0.5) / side
    shape, scale, theta = values[:, 0].astype(np.int64), values[:, 1], values[:, 2]
    c_x, c_y = MARGIN + (1 - 2 * MARGIN) * values[:, 3], MARGIN + (1 - 2 * MARGIN) * values[:, 4]
    r = (RADIUS * scale)[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    dx = centres[None, None, :] - c_x[:, None, None]  # (B, 1, S): columns
    dy = -(centres[None, :, None] - c_y[:, None, None])  # (B, S, 1): rows, pointing up
    p = (cos * dx + sin * dy) / r
    q = (-sin * dx + cos * dy) / r
    white = np.zeros(p.shape, dtype=bool)
    for s, inside in enumerate(SHAPES):
        rows = shape == s
        if rows.any():
            white[rows] = inside(p[rows], q[rows])
    return white.astype(np.uint8) * np.uint8(255)


def batches(
    grid: FactorGrid, batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every tuple of the grid once, rendered ``batch_size`` at a time.

    Parameters
    ----------
    grid : FactorGrid
    batch_size : int
    rng : numpy.random.Generator, optional
        Shuffles the order; ``None`` keeps the published order.

    Yields
    ------
    factors : int64 array (b, 5)
    images : uint8 array (b, S, S)
    """
    order = np.arange(grid.n_images) if rng is None else rng.permutation(grid.n_images)
    for start in range(0, grid.n_images, batch_size):
        factors = grid.factors(order[start : start + batch_size])
        yield factors, render(factors, grid)


def dsprites_dataset(
    grid: FactorGrid, n_train: int, n_test: int, seed: int = 0
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """A :class:`~numpy_vae.training.data.Dataset` of dSprites for the trainer.

    ``n_train + n_test`` distinct tuples of the grid, drawn without replacement, rendered as
    flattened 0/255 rows, without labels. The whole of dSprites as rows is 3 GB; a sample, or a
    smaller grid, is what fits in memory here (``n_train + n_test = grid.n_images`` takes it all).

    Returns
    -------
    dataset : Dataset
        ``train_images`` (n_train, S * S) and ``test_images`` (n_test, S * S), uint8.
    train_factors, test_factors : int64 arrays (n, 5)
        The tuples of each image, in the same order.
    """
    if n_train < 1 or n_test < 1 or n_train + n_test > grid.n_images:
        raise ValueError(
            f"n_train and n_test must be >= 1 and sum to at most the grid's {grid.n_images} "
            f"tuples, got {n_train} and {n_test}"
        )
    rng = np.random.default_rng(seed)
    factors = grid.factors(rng.choice(grid.n_images, n_train + n_test, replace=False))
    rows = render(factors, grid).reshape(len(factors), grid.pixels)
    dataset = Dataset(rows[:n_train], None, rows[n_train:], None)
    return dataset, factors[:n_train], factors[n_train:]


def factor_value_images(
    grid: FactorGrid = DSPRITES, base: tuple[int, ...] | None = None
) -> list[np.ndarray]:
    """One row of images per factor: ``base`` with that factor set to each of its values.

    Parameters
    ----------
    grid : FactorGrid
    base : tuple of 5 ints, optional
        The tuple the others are taken from; by default the heart (or the last shape) at the
        largest scale, orientation 0, in the middle of the image.

    Returns
    -------
    list of 5 uint8 arrays (sizes[k], S, S)
    """
    if base is None:
        base = (grid.shapes - 1, grid.scales - 1, 0, grid.positions_x // 2, grid.positions_y // 2)
    rows = []
    for k, size in enumerate(grid.sizes):
        factors = np.tile(np.asarray(base, dtype=np.int64), (size, 1))
        factors[:, k] = np.arange(size)
        rows.append(render(factors, grid))
    return rows


def plot_factor_values(
    grid: FactorGrid = DSPRITES,
    path: str | os.PathLike[str] = "dsprites_factors.png",
    base: tuple[int, ...] | None = None,
) -> None:
    """Draw :func:`factor_value_images`: a row per factor, one image per value, labelled."""
    rows = factor_value_images(grid, base)
    side, pad, cols = grid.image_size, 2, max(grid.sizes)
    canvas = np.full((len(rows) * (side + pad) + pad, cols * (side + pad) + pad), 0.5)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            top, left = pad + r * (side + pad), pad + c * (side + pad)
            canvas[top : top + side, left : left + side] = image / 255.0
    fig = Figure(figsize=(0.7 * cols + 1.5, 0.7 * len(rows) + 1.0), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([pad + r * (side + pad) + side / 2 for r in range(len(rows))])
    ax.set_yticklabels([f"{name} ({n})" for name, n in zip(FACTOR_NAMES, grid.sizes, strict=True)])
    ax.set_xticks([])
    ax.set_title("dSprites (procedural): one image per value of each factor")
    fig.tight_layout()
    save_figure(fig, path)
