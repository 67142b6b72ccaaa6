"""One flat buffer for all parameters and one for all gradients.

Layers keep their parameters as attributes (``weight``, ``bias``); after :func:`flatten` those
attributes are *views* into one contiguous vector, and their gradients (``d_weight``, ``d_bias``)
views into a second one. The optimizer then updates every parameter with a few whole-vector
operations instead of a loop over arrays, and a checkpoint is two arrays. Names are stable:
``"<module>.<index>.<param>"`` in the order the modules were given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    """

    def __init__(self, modules: Mapping[str, Layer], backend: Backend) -> None:
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
        self._slices: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        for name, layer, attr, shape, start in slots:
            stop = start + _size(shape)
            self.data[start:stop] = getattr(layer, attr).reshape(-1)
            value = self.data[start:stop].reshape(shape)
            grad = self.grad[start:stop].reshape(shape)
            setattr(layer, attr, value)
            setattr(layer, "d_" + attr, grad)
            self.params[name] = value
            self.grads[name] = grad
            self._slices[name] = (start, stop, shape)

    def split(self, flat: Array) -> dict[str, Array]:
        """Named views into any vector laid out like ``data`` (e.g. Adam's moments)."""
        return {
            name: flat[start:stop].reshape(shape)
            for name, (start, stop, shape) in self._slices.items()
        }


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
