"""One flat buffer for all parameters and one for all gradients.

Layers keep their parameters as attributes (``weight``, ``bias``); after :func:`flatten` those
attributes are *views* into one contiguous vector, and their gradients (``d_weight``, ``d_bias``)
views into a second one. The optimizer then updates every parameter with a few whole-vector
operations instead of a loop over arrays, and a checkpoint is two arrays. Names are stable:
``"<module>.<index>.<param>"`` in the order the modules were given.

**Weights stored transposed.** Each view keeps its layer's shape (a Linear weight ``W`` is
``(out, in)``), but the block behind a view named in ``transposed`` holds ``W^T`` row by row:
the view is that block transposed (Fortran-ordered). Only the speed of the products changes,
and not always for the better; :class:`~numpy_vae.fast.FastVAE` says which weight it
stores so, and why.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import Any

import numpy

from numpy_vae.backend import Backend
from numpy_vae.layers import Container, Layer

Array = Any


class FlatParameters:
    """Flat parameter and gradient vectors with named views into them.

    Attributes
    ----------
    data, grad : array, shape (n,)
        All parameters, and all gradients, end to end.
    params, grads : dict[str, array]
        Views into ``data`` and ``grad`` by parameter name, with the layers' shapes.

    Parameters
    ----------
    modules : mapping of str to Layer
        The parts of the model by name; their parameters become views, in this order.
    backend : Backend
    transposed : collection of str
        Names of 2-D parameters whose block holds the transpose (see the module).
    """

    def __init__(
        self, modules: Mapping[str, Layer], backend: Backend, transposed: Collection[str] = ()
    ) -> None:
        slots = []  # (name, layer, attribute, shape, offset)
        offset = 0
        for module_name, module in modules.items():
            layers = (
                [(f"{module_name}.{i}", layer) for i, layer in module.named_layers()]
                if isinstance(module, Container)
                else [(module_name, module)]
            )
            for prefix, layer in layers:
                for attr in layer.param_names:
                    shape = getattr(layer, attr).shape
                    slots.append((f"{prefix}.{attr}", layer, attr, shape, offset))
                    offset += _size(shape)
        xp = backend.xp
        self.data = xp.empty(offset, dtype=backend.dtype)
        self.grad = xp.zeros(offset, dtype=backend.dtype)
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        # name -> (start, stop, shape, whether its block holds the transpose)
        self._slices: dict[str, tuple[int, int, tuple[int, ...], bool]] = {}
        for name, layer, attr, shape, start in slots:
            stop = start + _size(shape)
            self._slices[name] = (start, stop, shape, name in transposed)
            value, grad = (self._view(v, name) for v in (self.data, self.grad))
            value[...] = getattr(layer, attr)
            setattr(layer, attr, value)
            setattr(layer, "d_" + attr, grad)
            self.params[name] = value
            self.grads[name] = grad

    def _view(self, flat: Array, name: str) -> Array:
        """Parameter ``name``'s view into ``flat``, in its layer's shape."""
        start, stop, shape, transposed = self._slices[name]
        if transposed:
            return flat[start:stop].reshape(shape[::-1]).T
        return flat[start:stop].reshape(shape)

    def split(self, flat: Array) -> dict[str, Array]:
        """Named views into any vector laid out like ``data`` (e.g. Adam's moments)."""
        return {name: self._view(flat, name) for name in self._slices}

    def to_standard(self, flat: Array) -> Array:
        """A vector laid out like ``data`` in the standard layout: every parameter's entries
        in C order, one after the other (the specification's ``reshape(-1)`` of each, as a
        checkpoint stores Adam's moments), whichever blocks are stored transposed."""
        return numpy.concatenate([v.reshape(-1) for v in self.split(flat).values()])

    def from_standard(self, vector: Array) -> Array:
        """The inverse of :meth:`to_standard`: a new vector laid out like ``data``."""
        flat = numpy.empty_like(vector)
        for name, view in self.split(flat).items():
            start, stop, shape, _ = self._slices[name]
            view[...] = vector[start:stop].reshape(shape)
        return flat


@functools.cache
def same_bits_transposed(out_features: int, in_features: int, dtype: str) -> bool:
    """Whether this machine's BLAS gives the same bits for a Linear layer's two products,
    ``x W^T`` and ``d^T x``, from a weight stored as is and from one stored transposed, at 7
    and at 128 rows (random operands; once per shape and dtype in a process).

    A layout is a speed choice, and it must not change a number: OpenBLAS packs both layouts
    into the same panels, so they agree where that path runs (measured: its SkylakeX kernels,
    784 -> 400 and 784 -> 200 in float32), but its small-matrix kernels (a 30 -> 9 float64
    layer at 7 rows), another BLAS or another CPU's kernels need not, and then nothing is
    stored transposed."""
    rng = numpy.random.default_rng(0)
    w = rng.standard_normal((out_features, in_features)).astype(dtype)
    w_t = numpy.asfortranarray(w)
    for rows in (7, 128):
        x = rng.standard_normal((rows, in_features)).astype(dtype)
        d = rng.standard_normal((rows, out_features)).astype(dtype)
        d_w, d_w_t = numpy.empty_like(w), numpy.empty_like(w_t)
        numpy.matmul(d.T, x, out=d_w)
        numpy.matmul(d.T, x, out=d_w_t)
        if not (numpy.array_equal(x @ w.T, x @ w_t.T) and numpy.array_equal(d_w, d_w_t)):
            return False
    return True


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
