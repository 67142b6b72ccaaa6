"""The MNIST quadrants of Sohn, Lee and Yan (2015): which part of an image is given.

An image is cut into four ``side/2 x side/2`` quadrants (14 x 14 for MNIST); one, two or three
are given (``visible``) and a model predicts the rest (``hidden``). Which quadrants are given,
as Pyro's ``examples/cvae`` masks them (each set holds the one before)::

    n_given = 1: bottom-left        n_given = 2: bottom-left, top-left (the left half)
    n_given = 3: bottom-left, top-left, top-right (all but the bottom-right)

The models of ``p(hidden | visible)`` are in :mod:`numpy_vae.completion` and
:mod:`numpy_vae.gsnn`.
"""

from __future__ import annotations

from typing import Any

import numpy

from numpy_vae import inputs
from numpy_vae.backend import array_module

Array = Any
#: The visible quadrants for each number given (Pyro's ``examples/cvae`` masks).
GIVEN = {1: ("bottom_left",), 2: ("bottom_left", "top_left"),
         3: ("bottom_left", "top_left", "top_right")}  # fmt: skip


def quadrant_mask(n_given: int, side: int = 28) -> numpy.ndarray:
    """Boolean (side * side,): True on the pixels of the ``n_given`` visible quadrants."""
    inputs.check_quadrants(None, n_given, side)
    half, mask = side // 2, numpy.zeros((side, side), dtype=bool)
    corners = {"top_left": (0, 0), "top_right": (0, half), "bottom_left": (half, 0)}
    for name in GIVEN[n_given]:
        row, col = corners[name]
        mask[row : row + half, col : col + half] = True
    return mask.ravel()


def quadrant_split(images: Array, n_given: int, side: int = 28) -> tuple[Array, Array]:
    """``visible`` (B, n_given side^2 / 4) and ``hidden`` (B, the rest) of flattened images
    (B, side^2), each in row-major pixel order."""
    inputs.check_quadrants(images, n_given, side)
    mask = array_module(images).asarray(quadrant_mask(n_given, side))
    return images[:, mask], images[:, ~mask]


def quadrant_join(visible: Array, hidden: Array, n_given: int, side: int = 28) -> Array:
    """The images (B, side^2) whose :func:`quadrant_split` is ``(visible, hidden)``."""
    inputs.check_quadrants(None, n_given, side, (visible, hidden))
    xp = array_module(visible)
    mask = xp.asarray(quadrant_mask(n_given, side))
    images = xp.zeros((visible.shape[0], side * side), dtype=visible.dtype)
    images[:, mask], images[:, ~mask] = visible, hidden
    return images
