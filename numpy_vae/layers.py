"""Layers with a hand-written backward pass.

Each layer has ``forward(x)``, which keeps what the backward pass needs, and
``backward(d_out)``, which returns ``d_x = dL/dx`` and stores the gradient of every parameter
``p`` in ``d_p`` (``weight`` -> ``d_weight``). Shapes follow PyTorch: a batch is ``(B, features)``
and a Linear weight is ``(out_features, in_features)``, so parameters copy one-to-one into
``torch.nn.Linear`` and ``torch.nn.Sequential`` (same names, same layout).

Gradients are *written* (not accumulated) by every backward call.

Both methods take an optional ``out``: an array to write the result into instead of a new one.
For the elementwise layers ``out`` may be the input itself (the computation is then in place).
:class:`Sequential` uses this when it is given :class:`~numpy_vae.buffers.Buffers`: the model's
training step then allocates nothing (see :mod:`numpy_vae.buffers` for why that matters).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy

from .backend import Backend
from .buffers import Buffers

Array = Any


class Layer:
    """Base class: a differentiable map with optional parameters.

    Subclasses list their parameters in ``param_names``; parameter ``p`` lives in attribute
    ``p`` and its gradient in ``d_p``.
    """

    param_names: tuple[str, ...] = ()
    #: Whether backward reads this layer's own output (then nothing may overwrite it in place).
    keeps_output: bool = False

    def forward(self, x: Array, out: Array | None = None) -> Array:
        raise NotImplementedError

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array | None:
        raise NotImplementedError

    def parameters(self) -> dict[str, Array]:
        """Parameter arrays by name (the arrays themselves, not copies)."""
        return {name: getattr(self, name) for name in self.param_names}

    def gradients(self) -> dict[str, Array]:
        """Gradient arrays by parameter name, as left by the last ``backward``."""
        return {name: getattr(self, "d_" + name) for name in self.param_names}


class Linear(Layer):
    """Affine map ``y = x W^T + b``.

    Initialised as ``torch.nn.Linear``: weight and bias both ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    backend : Backend
        Array module and dtype.
    rng : numpy.random.Generator
        Host generator for the initial values (drawn on the host so that every backend starts
        from the same numbers).
    """

    param_names = ("weight", "bias")

    def __init__(
        self, in_features: int, out_features: int, backend: Backend, rng: numpy.random.Generator
    ) -> None:
        self.in_features = in_features
        self.out_features = out_features
        self.xp = backend.xp
        bound = 1.0 / math.sqrt(in_features)
        self.weight = backend.asarray(rng.uniform(-bound, bound, size=(out_features, in_features)))
        self.bias = backend.asarray(rng.uniform(-bound, bound, size=out_features))
        self.d_weight = self.xp.zeros_like(self.weight)
        self.d_bias = self.xp.zeros_like(self.bias)
        self._x = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        """``x`` (B, in_features) -> ``x W^T + b`` (B, out_features), into ``out`` if given.

        ``x`` is kept (not copied) for the backward pass.
        """
        self._x = x
        y = self.xp.matmul(x, self.weight.T, out=out)
        y += self.bias
        return y

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array | None:
        """dL/dW = d_out^T x,  dL/db = sum_batch d_out,  dL/dx = d_out W (into ``out``).

        Derivation: entry by entry the layer is ``y[b, i] = sum_k x[b, k] W[i, k] + bias[i]``,
        with ``d_out[b, i] = dL/dy[b, i]``. ``W[i, k]`` touches ``y[b, i]`` of every example b
        with slope ``x[b, k]``, so ``dL/dW[i, k] = sum_b d_out[b, i] x[b, k]``, the (i, k) entry
        of ``d_out^T x``. ``bias[i]`` touches the same outputs with slope 1: ``sum_b d_out[b, i]``.
        ``x[b, k]`` touches ``y[b, i]`` for every i with slope ``W[i, k]``:
        ``dL/dx[b, k] = sum_i d_out[b, i] W[i, k]``, the (b, k) entry of ``d_out W``. Each sum is
        over what the forward pass fanned out to (the batch for parameters, the outputs for x).

        The input gradient is skipped when ``need_input_grad`` is false (the first layer of the
        encoder: nothing upstream of the data is trained), which saves a third of the layer's
        backward matrix products.
        """
        self.xp.matmul(d_out.T, self._x, out=self.d_weight)
        d_out.sum(axis=0, out=self.d_bias)
        return self.xp.matmul(d_out, self.weight, out=out) if need_input_grad else None


class ReLU(Layer):
    """``y = max(x, 0)``; the derivative at 0 is taken as 0 (as PyTorch does)."""

    def __init__(self, backend: Backend) -> None:
        self.xp = backend.xp
        self._mask = None
        self._buffers = Buffers(backend.xp)  # the mask is internal, so it can always be reused

    def forward(self, x: Array, out: Array | None = None) -> Array:
        """``x * 1[x > 0]``, keeping the mask; ``out`` may be ``x`` (then in place)."""
        self._mask = self.xp.greater(x, 0, out=self._buffers.get("mask", x.shape, bool))
        return self.xp.multiply(x, self._mask, out=out)

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        """dL/dx = d_out * 1[x > 0]; ``out`` may be ``d_out`` (then in place).

        Each output depends on its own input only, so the Jacobian is diagonal and the chain
        rule is an elementwise product with the local slope: 1 where ``x > 0``, 0 elsewhere.
        """
        return self.xp.multiply(d_out, self._mask, out=out)


class LeakyReLU(Layer):
    """``y = x`` for ``x > 0``, else ``slope * x`` (PyTorch's default slope 0.01)."""

    def __init__(self, backend: Backend, slope: float = 0.01) -> None:
        self.xp = backend.xp
        self.slope = slope
        self._positive = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        self._positive = x > 0
        return _into(out, self.xp.where(self._positive, x, self.slope * x))

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        """dL/dx = d_out * (1 if x > 0 else slope): elementwise, like ReLU's."""
        return _into(out, self.xp.where(self._positive, d_out, self.slope * d_out))


class Tanh(Layer):
    """``y = tanh(x)``."""

    keeps_output = True

    def __init__(self, backend: Backend) -> None:
        self.xp = backend.xp
        self._y = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        self._y = self.xp.tanh(x, out=out)
        return self._y

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        """dL/dx = d_out * (1 - y^2), with y = tanh(x).

        ``tanh = sinh / cosh`` and the quotient rule give ``(cosh^2 - sinh^2) / cosh^2
        = 1 - tanh^2``: the slope is a function of the output, so the output is what is kept.
        """
        return self.xp.multiply(d_out, 1 - self._y * self._y, out=out)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, computed without overflow by ``special.expit``."""

    keeps_output = True

    def __init__(self, backend: Backend) -> None:
        self.xp = backend.xp
        self.special = backend.special
        self._y = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        self._y = self.special.expit(x, out=out)
        return self._y

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        """dL/dx = d_out * y (1 - y), with y = sigmoid(x).

        ``d/dx (1 + e^-x)^-1 = e^-x / (1 + e^-x)^2 = y * e^-x / (1 + e^-x) = y (1 - y)``.
        """
        return self.xp.multiply(d_out, self._y * (1 - self._y), out=out)


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def make_activation(name: str, backend: Backend) -> Layer:
    """The activation layer called ``name`` (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](backend)


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse.

    Parameter names are ``"<index>.<name>"`` with the index of the layer in the list, exactly as
    ``torch.nn.Sequential`` numbers them (activations take an index too).
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    def forward(self, x: Array, buffers: Buffers | None = None) -> Array:
        """Apply the layers in order.

        With ``buffers``, every Linear layer writes into an array of ``buffers`` and every
        activation works in place on its input, except where that input is the caller's ``x``
        or is kept by the layer that made it (Tanh and Sigmoid keep their output for their
        backward). The result then lives in ``buffers`` and is overwritten by the next call.
        """
        for i, layer in enumerate(self.layers):
            out = None
            if buffers is not None:
                if isinstance(layer, Linear):
                    out = buffers.get(f"{i}", (x.shape[0], layer.out_features), x.dtype)
                elif i > 0 and not self.layers[i - 1].keeps_output:
                    out = x
                else:
                    out = buffers.get(f"{i}", x.shape, x.dtype)
            x = layer.forward(x, out=out)
        return x

    def backward(
        self, d_out: Array, need_input_grad: bool = True, buffers: Buffers | None = None
    ) -> Array | None:
        """Chain rule: each layer's input gradient is the previous layer's ``d_out``.

        With ``buffers``, as in :meth:`forward`: the gradients flowing back live in ``buffers``
        and activations multiply them in place (never the caller's ``d_out``).
        """
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            need = need_input_grad or i > 0
            out = None
            if buffers is not None and need:
                if isinstance(layer, Linear):
                    out = buffers.get(f"d{i}", (d_out.shape[0], layer.in_features), d_out.dtype)
                elif i < last:
                    out = d_out
                else:
                    out = buffers.get(f"d{i}", d_out.shape, d_out.dtype)
            d_out = layer.backward(d_out, need_input_grad=need, out=out)
        return d_out

    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        """(index, layer) for every layer that has parameters."""
        for i, layer in enumerate(self.layers):
            if layer.param_names:
                yield str(i), layer

    def parameters(self) -> dict[str, Array]:
        return {
            f"{prefix}.{name}": array
            for prefix, layer in self.named_layers()
            for name, array in layer.parameters().items()
        }

    def gradients(self) -> dict[str, Array]:
        return {
            f"{prefix}.{name}": array
            for prefix, layer in self.named_layers()
            for name, array in layer.gradients().items()
        }


def _into(out: Array | None, result: Array) -> Array:
    """``result``, copied into ``out`` if one is given."""
    if out is None:
        return result
    out[...] = result
    return out
