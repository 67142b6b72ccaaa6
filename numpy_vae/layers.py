"""Layers with a hand-written backward pass.

Each layer has ``forward(x)``, which keeps what the backward pass needs, and
``backward(d_out)``, which returns ``d_x = dL/dx`` and stores the gradient of every parameter
``p`` in ``d_p`` (``weight`` -> ``d_weight``). Shapes follow PyTorch: a batch is ``(B, features)``
and a Linear weight is ``(out_features, in_features)``, so parameters copy one-to-one into
``torch.nn.Linear`` and ``torch.nn.Sequential`` (same names, same layout).

Gradients are *written* (not accumulated) by every backward call, into the arrays ``d_p`` that
the layer made at construction: an optimizer that holds those arrays sees each new gradient.

The fast path (:mod:`numpy_vae.fast.layers`) computes the same in place, into reused buffers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy

from numpy_vae.backend import Backend

Array = Any


class Layer:
    """Base class: a differentiable map with optional parameters.

    Subclasses list their parameters in ``param_names``; parameter ``p`` lives in attribute
    ``p`` and its gradient in ``d_p``.
    """

    param_names: tuple[str, ...] = ()

    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, d_out: Array) -> Array:
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
    bias : bool
        Whether the layer has a bias (``torch.nn.Linear(..., bias=False)`` when not; the weight
        is drawn alike).
    """

    param_names: tuple[str, ...] = ("weight", "bias")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        backend: Backend,
        rng: numpy.random.Generator,
        bias: bool = True,
    ) -> None:
        self.in_features = in_features
        self.out_features = out_features
        self.xp = backend.xp
        bound = 1.0 / math.sqrt(in_features)
        self.weight = backend.asarray(rng.uniform(-bound, bound, size=(out_features, in_features)))
        self.d_weight = self.xp.zeros_like(self.weight)
        if bias:
            self.bias = backend.asarray(rng.uniform(-bound, bound, size=out_features))
            self.d_bias = self.xp.zeros_like(self.bias)
        else:
            self.param_names = ("weight",)
        self._x = None

    def forward(self, x: Array) -> Array:
        """``x`` (B, in_features) -> ``x W^T + b`` (B, out_features); keeps ``x``."""
        self._x = x
        y = x @ self.weight.T
        return y + self.bias if "bias" in self.param_names else y

    def backward(self, d_out: Array) -> Array:
        """dL/dW = d_out^T x,  dL/db = sum_batch d_out,  dL/dx = d_out W.

        Derivation: entry by entry the layer is ``y[b, i] = sum_k x[b, k] W[i, k] + bias[i]``,
        with ``d_out[b, i] = dL/dy[b, i]``. ``W[i, k]`` touches ``y[b, i]`` of every example b
        with slope ``x[b, k]``, so ``dL/dW[i, k] = sum_b d_out[b, i] x[b, k]``, the (i, k) entry
        of ``d_out^T x``. ``bias[i]`` touches the same outputs with slope 1: ``sum_b d_out[b, i]``.
        ``x[b, k]`` touches ``y[b, i]`` for every i with slope ``W[i, k]``:
        ``dL/dx[b, k] = sum_i d_out[b, i] W[i, k]``, the (b, k) entry of ``d_out W``. Each sum is
        over what the forward pass fanned out to (the batch for parameters, the outputs for x).
        """
        self.d_weight[...] = d_out.T @ self._x
        if "bias" in self.param_names:
            self.d_bias[...] = d_out.sum(axis=0)
        return d_out @ self.weight


class MaskedLinear(Linear):
    """Affine map through a fixed 0/1 mask: ``y = x (M * W)^T + b`` (MADE's layer).

    ``M`` (out_features, in_features) says which inputs each output may see; it is not a
    parameter. The weight starts as :class:`Linear`'s draw with the masked entries set to 0, so
    the stored weight is the weight in use; the forward pass still multiplies by ``M``, so a
    loaded weight with non-zero masked entries cannot break the mask.

    Parameters
    ----------
    mask : array (out_features, in_features) of 0 and 1
    backend, rng, bias : as for :class:`Linear`
    """

    def __init__(
        self, mask: Array, backend: Backend, rng: numpy.random.Generator, bias: bool = True
    ) -> None:
        mask = numpy.asarray(mask)
        super().__init__(mask.shape[1], mask.shape[0], backend, rng, bias=bias)
        self.mask = backend.asarray(mask)
        self.weight[...] = self.mask * self.weight

    def forward(self, x: Array) -> Array:
        """``x (M * W)^T + b``; keeps ``x``."""
        self._x = x
        y = x @ (self.mask * self.weight).T
        return y + self.bias if "bias" in self.param_names else y

    def backward(self, d_out: Array) -> Array:
        """dL/dW = M * (d_out^T x),  dL/db = sum_batch d_out,  dL/dx = d_out (M * W).

        Derivation: the layer is :class:`Linear` with weight ``V = M * W``, so ``dL/dV = d_out^T
        x`` and ``dL/dx = d_out V``. Each ``W[i, k]`` reaches the loss only through ``V[i, k] =
        M[i, k] W[i, k]``, with slope ``M[i, k]``: ``dL/dW[i, k] = M[i, k] dL/dV[i, k]``. The
        masked weight gradient is therefore not a choice but the chain rule: where ``M`` is 0 the
        weight does not touch the output and its derivative is exactly 0. Without the mask the
        optimizer would move weights that do nothing today, and any later change that stopped
        multiplying by ``M`` (a fused kernel on the stored weight) would let them break the
        autoregressive property; with it, a weight that starts at 0 stays 0 under Adam.
        """
        self.d_weight[...] = self.mask * (d_out.T @ self._x)
        if "bias" in self.param_names:
            self.d_bias[...] = d_out.sum(axis=0)
        return d_out @ (self.mask * self.weight)


class ReLU(Layer):
    """``y = max(x, 0)``; the derivative at 0 is taken as 0 (as PyTorch does)."""

    def __init__(self, backend: Backend) -> None:
        self.xp = backend.xp
        self._mask = None

    def forward(self, x: Array) -> Array:
        """``x * 1[x > 0]``, keeping the mask."""
        self._mask = x > 0
        return x * self._mask

    def backward(self, d_out: Array) -> Array:
        """dL/dx = d_out * 1[x > 0].

        Each output depends on its own input only, so the Jacobian is diagonal and the chain
        rule is an elementwise product with the local slope: 1 where ``x > 0``, 0 elsewhere.
        """
        return d_out * self._mask


class LeakyReLU(Layer):
    """``y = x`` for ``x > 0``, else ``slope * x`` (PyTorch's default slope 0.01)."""

    def __init__(self, backend: Backend, slope: float = 0.01) -> None:
        self.xp = backend.xp
        self.slope = slope
        self._positive = None

    def forward(self, x: Array) -> Array:
        self._positive = x > 0
        return self.xp.where(self._positive, x, self.slope * x)

    def backward(self, d_out: Array) -> Array:
        """dL/dx = d_out * (1 if x > 0 else slope): elementwise, like ReLU's."""
        return self.xp.where(self._positive, d_out, self.slope * d_out)


class KeepsOutput(Layer):
    """An activation ``y = f(x)`` whose slope is a function of its output, ``f'(x) = s(y)``: it
    keeps ``y`` (not ``x``) for the backward pass, ``dL/dx = d_out * s(y)`` elementwise."""

    def __init__(self, backend: Backend) -> None:
        self.xp, self.special = backend.xp, backend.special
        self._y = None

    def forward(self, x: Array) -> Array:
        self._y = self.function(x)
        return self._y

    def backward(self, d_out: Array) -> Array:
        """dL/dx = d_out * slope(y)."""
        return d_out * self.slope(self._y)

    def function(self, x: Array) -> Array:
        raise NotImplementedError

    def slope(self, y: Array) -> Array:
        raise NotImplementedError


class Tanh(KeepsOutput):
    """``y = tanh(x)``."""

    def function(self, x: Array) -> Array:
        return self.xp.tanh(x)

    def slope(self, y: Array) -> Array:
        """``1 - y^2``: ``tanh = sinh / cosh`` and the quotient rule give ``(cosh^2 - sinh^2) /
        cosh^2 = 1 - tanh^2``, a function of the output, so the output is what is kept."""
        return 1 - y * y


class Sigmoid(KeepsOutput):
    """``y = 1 / (1 + exp(-x))``, computed without overflow by ``special.expit``."""

    def function(self, x: Array) -> Array:
        return self.special.expit(x)

    def slope(self, y: Array) -> Array:
        """``y (1 - y)``: ``d/dx (1 + e^-x)^-1 = e^-x / (1 + e^-x)^2 = y e^-x / (1 + e^-x)
        = y (1 - y)``."""
        return y * (1 - y)


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def make_activation(name: str, backend: Backend, slope: float = 0.01) -> Layer:
    """The activation layer called ``name`` (one of ``ACTIVATIONS``; ``slope``: LeakyReLU's)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return LeakyReLU(backend, slope) if name == "leaky_relu" else ACTIVATIONS[name](backend)


class Container(Layer):
    """A layer made of named layers: parameters are ``"<layer name>.<parameter>"``, as
    ``torch.nn.Module`` names the parameters of its submodules."""

    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        """(name, layer) for every layer that has parameters."""
        raise NotImplementedError

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


class Sequential(Container):
    """Layers applied in order; backward runs them in reverse.

    Parameter names are ``"<index>.<name>"`` with the index of the layer in the list, exactly as
    ``torch.nn.Sequential`` numbers them (activations take an index too).
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    def forward(self, x: Array) -> Array:
        """Apply the layers in order."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, d_out: Array) -> Array:
        """Chain rule: each layer's input gradient is the ``d_out`` of the layer before it."""
        for layer in reversed(self.layers):
            d_out = layer.backward(d_out)
        return d_out

    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        """(index, layer) for every layer that has parameters."""
        for i, layer in enumerate(self.layers):
            if layer.param_names:
                yield str(i), layer


def mlp(
    widths: Sequence[int], activation: str, backend: Backend, rng: Any, slope: float = 0.01
) -> Sequential:
    """Linear layers between consecutive ``widths``, each followed by the activation ``activation``
    (the encoder, the decoder's hidden part; ``slope``: LeakyReLU's), initialised from ``rng``."""
    layers: list[Layer] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        act = make_activation(activation, backend, slope)
        layers += [Linear(fan_in, fan_out, backend, rng), act]
    return Sequential(layers)
