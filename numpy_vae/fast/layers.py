"""The layers of :mod:`numpy_vae.layers`, computing in place and into reused buffers.

Each fast layer wraps a specification layer: it reads that layer's parameters and writes that
layer's gradient arrays (``d_weight``, ...), so the two always share their numbers, and it
computes exactly what the specification's ``forward``/``backward`` compute, in the same order of
operations (bitwise equal: ``tests/test_fast_vs_reference.py``). What differs is where results go:

- ``forward(x, out=None)`` and ``backward(d_out, need_input_grad=True, out=None)`` take an
  ``out`` to write into; for the elementwise layers ``out`` may be the input itself (in place).
- :class:`FastSequential` lends every layer an array of a :class:`~numpy_vae.fast.buffers.Buffers`,
  so the model's training step allocates nothing after its first call (see
  :mod:`numpy_vae.fast.buffers` for why that matters).
- The first layer of the encoder skips its input gradient (``need_input_grad=False``): nothing
  upstream of the data is trained. Its backward then makes one matrix product (``d_weight``)
  instead of two (``d_weight`` and the input gradient; ``d_bias`` is a sum): half of that layer's
  backward products, a third of all its products.
"""

from __future__ import annotations

from typing import Any

import numpy

from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.kernels import (
    bias_relu_forward,
    relu_backward,
    relu_backward_bias_sum,
    relu_forward,
    tanh_backward,
)
from numpy_vae.layers import Layer, LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Tanh

Array = Any


class FastLinear:
    """:class:`~numpy_vae.layers.Linear` into ``out``: ``x W^T + b``; ``d_out^T x``, ``d_out W``
    (without ``b`` for a layer that has none)."""

    #: Whether backward reads this layer's own output (then nothing may overwrite it in place).
    keeps_output = False

    def __init__(self, layer: Linear) -> None:
        self.layer, self.xp = layer, layer.xp
        self.out_features, self.in_features = layer.out_features, layer.in_features
        self.input = None  # the last forward's input, kept for the backward pass
        # Whether the bias is added, and its gradient summed, here; False where the activation
        # after this layer does it in its own pass (FastSequential arranges it).
        self.adds_bias = self.sums_bias_gradient = "bias" in layer.param_names

    def forward(self, x: Array, out: Array | None = None, bias: bool = True) -> Array:
        """``x W^T + b``; without ``bias``, ``x W^T`` (the caller adds ``b`` in a pass of its
        own)."""
        self.input = x  # kept, not copied
        y = self.xp.matmul(x, self.layer.weight.T, out=out)
        if self.adds_bias and bias:
            y += self.layer.bias
        return y

    def backward(
        self,
        d_out: Array,
        need_input_grad: bool = True,
        out: Array | None = None,
        bias: bool = True,
    ) -> Array | None:
        """``d_out^T x`` into ``d_weight``, the column sums of ``d_out`` into ``d_bias`` and
        ``d_out W``; without ``bias``, no sums (the caller sums ``d_bias`` in a pass of its
        own)."""
        layer = self.layer
        self.xp.matmul(d_out.T, self.input, out=layer.d_weight)
        if self.sums_bias_gradient and bias:
            d_out.sum(axis=0, out=layer.d_bias)
        return self.xp.matmul(d_out, layer.weight, out=out) if need_input_grad else None


class FastReLU:
    """:class:`~numpy_vae.layers.ReLU` in place, the specification's ``x * 1[x > 0]`` bit for bit.

    NumPy arrays take the compiled passes :func:`~numpy_vae.fast.kernels.relu_forward` and
    :func:`~numpy_vae.fast.kernels.relu_backward` (one pass each, against two and one NumPy
    passes with a boolean mask), which read the slope from the layer's output: so the layer
    keeps its output (``keeps_output``), and nothing may write over it before the backward.
    Device arrays take the NumPy passes with the mask in a buffer of its own.
    """

    keeps_output = True

    def __init__(self, layer: ReLU) -> None:
        self.xp = layer.xp
        self._mask = None
        self._y = None
        self._buffers = Buffers(layer.xp)  # the mask is internal, so it can always be reused
        # The Linear layer before this one, whose bias this one adds and whose bias gradient it
        # sums (:func:`~numpy_vae.fast.kernels.bias_relu_forward`,
        # :func:`~numpy_vae.fast.kernels.relu_backward_bias_sum`), or None.
        self.linear: Linear | None = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        if self.xp is not numpy:
            self._mask = self.xp.greater(x, 0, out=self._buffers.get("mask", x.shape, bool))
            return self.xp.multiply(x, self._mask, out=out)
        y = x.copy() if out is None else out
        if y is not x:
            y[...] = x
        if self.linear is None:
            relu_forward(y)  # (B, width): the layers' activations are 2-D
        else:
            bias_relu_forward(y, self.linear.bias)
        self._y = y
        return y

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        if self.xp is not numpy:
            return self.xp.multiply(d_out, self._mask, out=out)
        d = d_out.copy() if out is None else out
        if d is not d_out:
            d[...] = d_out
        if self.linear is None:
            relu_backward(d, self._y)
        else:
            relu_backward_bias_sum(d, self._y, self.linear.d_bias)
        return d


class FastLeakyReLU:
    """:class:`~numpy_vae.layers.LeakyReLU` (``where`` allocates; copied into ``out``)."""

    keeps_output = False

    def __init__(self, layer: LeakyReLU) -> None:
        self.xp, self.slope = layer.xp, layer.slope
        self._positive = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        self._positive = x > 0
        return _into(out, self.xp.where(self._positive, x, self.slope * x))

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        return _into(out, self.xp.where(self._positive, d_out, self.slope * d_out))


class FastKeepsOutput:
    """An activation whose slope is a function of its output (Tanh, Sigmoid): ``y = f(x)`` into
    ``out``, kept for the backward pass, and ``d_x = d_out * slope(y)``."""

    keeps_output = True

    def __init__(self, xp: Any, function: Any, slope: Any) -> None:
        self.xp, self._function, self._slope = xp, function, slope
        self._y = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        self._y = self._function(x, out=out)
        return self._y

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        return self.xp.multiply(d_out, self._slope(self._y), out=out)


class FastTanh(FastKeepsOutput):
    """:class:`~numpy_vae.layers.Tanh`, into ``out``: NumPy's SIMD ``tanh`` forward; on the
    host the backward ``d_out (1 - y^2)`` in one compiled pass
    (:func:`~numpy_vae.fast.kernels.tanh_backward`, the specification's operations, the same
    bits), which also sums the bias gradient of the Linear layer before it where
    :class:`FastSequential` gives it one (``linear``). Device arrays take the specification's
    slope in NumPy-style passes."""

    def __init__(self, layer: Tanh) -> None:
        super().__init__(layer.xp, layer.xp.tanh, layer.slope)
        self.linear: Linear | None = None

    def backward(
        self, d_out: Array, need_input_grad: bool = True, out: Array | None = None
    ) -> Array:
        if self.xp is not numpy:
            return super().backward(d_out, need_input_grad, out)
        d = d_out.copy() if out is None else out
        if d is not d_out:
            d[...] = d_out
        # (a d_bias of length 0: no sum)
        d_bias = numpy.empty(0, d.dtype) if self.linear is None else self.linear.d_bias
        tanh_backward(d, self._y, d_bias)
        return d


def fast_sigmoid(layer: Sigmoid) -> FastKeepsOutput:
    """:class:`~numpy_vae.layers.Sigmoid`, into ``out``, with the specification's own slope."""
    return FastKeepsOutput(layer.xp, layer.special.expit, layer.slope)


FAST_LAYERS = {
    Linear: FastLinear,
    ReLU: FastReLU,
    LeakyReLU: FastLeakyReLU,
    Tanh: FastTanh,
    Sigmoid: fast_sigmoid,
}

FastLayer = FastLinear | FastReLU | FastLeakyReLU | FastKeepsOutput


def fast_layer(layer: Layer) -> FastLayer:
    """The fast twin of a specification layer (sharing its parameters and gradient arrays)."""
    try:
        return FAST_LAYERS[type(layer)](layer)
    except KeyError:
        raise TypeError(f"no fast version of {type(layer).__name__}") from None


class FastSequential:
    """:class:`~numpy_vae.layers.Sequential` whose intermediate arrays live in :class:`Buffers`.

    Every Linear layer writes into an array of ``buffers``, and every activation works in place
    on its input, except where that input is the caller's (the first layer's ``x``, the last
    layer's ``d_out``) or is kept by the layer that made it (ReLU, Tanh and Sigmoid keep their
    output for their backward). Results live in ``buffers`` and are overwritten by the next call.

    Parameters
    ----------
    sequential : Sequential
        The specification's layers; their parameters and gradient arrays are shared.
    """

    def __init__(self, sequential: Sequential) -> None:
        self.layers = [fast_layer(layer) for layer in sequential.layers]
        # A ReLU after a Linear layer with a bias adds that bias and sums its gradient in its
        # own compiled passes, one pass over the activations fewer each way; a Tanh sums it in
        # its backward pass (its forward is NumPy's tanh). NumPy arrays only, and not a layer of
        # width 1, whose one column NumPy sums pairwise, where the passes sum in order.
        for linear, activation in zip(self.layers[:-1], self.layers[1:], strict=True):
            if not (
                isinstance(linear, FastLinear)
                and isinstance(activation, FastReLU | FastTanh)
                and linear.sums_bias_gradient
                and linear.xp is numpy
                and linear.out_features > 1
            ):
                continue
            activation.linear = linear.layer
            linear.sums_bias_gradient = False
            if isinstance(activation, FastReLU):
                linear.adds_bias = False

    def forward(self, x: Array, buffers: Buffers, last_bias: bool = True) -> Array:
        """Forward through the layers; without ``last_bias`` the last layer, a Linear one,
        leaves its bias to the caller."""
        if not last_bias and not isinstance(self.layers[-1], FastLinear):
            raise ValueError("last_bias=False needs a Linear last layer")
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if isinstance(layer, FastLinear):
                out = buffers.get(f"{i}", (x.shape[0], layer.out_features), x.dtype)
                x = layer.forward(x, out=out, bias=last_bias or i < last)
                continue
            if i > 0 and not self.layers[i - 1].keeps_output:
                out = x
            else:
                out = buffers.get(f"{i}", x.shape, x.dtype)
            x = layer.forward(x, out=out)
        return x

    def backward(
        self,
        d_out: Array,
        buffers: Buffers,
        need_input_grad: bool = True,
        start: int | None = None,
        last_bias: bool = True,
    ) -> Array | None:
        """Backward through the layers, from the last (or from layer ``start``, with ``d_out``
        the gradient of that layer's output, held by the caller or by ``buffers``); without
        ``last_bias`` the last layer, a Linear one, leaves its bias gradient to the caller."""
        last = len(self.layers) - 1
        if not last_bias and not isinstance(self.layers[-1], FastLinear):
            raise ValueError("last_bias=False needs a Linear last layer")
        for i in range(last if start is None else start, -1, -1):
            layer = self.layers[i]
            need = need_input_grad or i > 0
            out = None
            if need:
                if isinstance(layer, FastLinear):
                    out = buffers.get(f"d{i}", (d_out.shape[0], layer.in_features), d_out.dtype)
                elif i < last:
                    out = d_out
                else:
                    out = buffers.get(f"d{i}", d_out.shape, d_out.dtype)
            if isinstance(layer, FastLinear):
                d_out = layer.backward(d_out, need, out, bias=last_bias or i < last)
            else:
                d_out = layer.backward(d_out, need_input_grad=need, out=out)
        return d_out


def _into(out: Array | None, result: Array) -> Array:
    """``result``, copied into ``out`` if one is given."""
    if out is None:
        return result
    out[...] = result
    return out
