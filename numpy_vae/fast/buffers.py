"""Scratch arrays that live from one training step to the next.

A training step makes a dozen temporaries of a few hundred kB (activations, their gradients, the
terms of the loss). Allocating them afresh is not free: glibc hands freed blocks of that size
back to the operating system, so every new one is mapped again and faulted in page by page,
which costs about as much as the arithmetic done on it. :class:`Buffers` keeps them instead.

The price is aliasing: an array from a :class:`Buffers` is overwritten by the next call that
asks for the same name. The rule in this package: only code that uses an array and lets go of
it before returning may take it from a :class:`Buffers` (the model's training step, the
training loop's batch); anything returned to a caller who may keep it is a fresh array.
"""

from __future__ import annotations

from typing import Any

Array = Any


class Buffers:
    """Named scratch arrays, reused across calls.

    Behind every name is one array with as many rows as the largest request so far; a request
    for fewer rows (the last, partial batch of an epoch) gets a view of its first rows, which is
    still C-contiguous. A request with another row width or dtype replaces the array.

    Parameters
    ----------
    xp : module
        Array module that allocates the arrays.
    """

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self._arrays: dict[str, Array] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> Array:
        """An array of ``shape`` and ``dtype`` whose contents are left over from earlier use."""
        array = self._arrays.get(name)
        if (
            array is None
            or array.dtype != dtype
            or array.shape[1:] != tuple(shape[1:])
            or array.shape[0] < shape[0]
        ):
            array = self.xp.empty(shape, dtype=dtype)
            self._arrays[name] = array
        return array[: shape[0]]

    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return sum(a.nbytes for a in self._arrays.values())

    def clear(self) -> None:
        """Let go of every array (the next requests allocate again)."""
        self._arrays.clear()
