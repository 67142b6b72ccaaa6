"""The MADE decoder of :mod:`numpy_vae.made`, into reused buffers, with each mask applied once.

Profiled at batch 100 (784-400-20 encoder, MADE 500), the specification's masked layers were
half of the training step: every forward and every backward forms ``M * W`` afresh (a 784 x
500 product each time), and the first layer computes the pixels' gradient, which training never
reads. Here each masked layer forms ``V = M * W`` once per forward into a buffer and its backward
reuses it, the weight gradient is masked in place, and neither the first layer nor the direct
connection computes an input gradient. The arithmetic is the specification's, operation by
operation, so the logits and every gradient are bitwise equal to
:meth:`numpy_vae.made.MADEDecoder.forward`/``backward`` (``tests/test_made.py``).
"""

from __future__ import annotations

from typing import Any

from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.layers import FastLinear, fast_layer
from numpy_vae.layers import MaskedLinear
from numpy_vae.made import MADEDecoder

Array = Any


class FastMaskedLinear:
    """:class:`~numpy_vae.layers.MaskedLinear` into ``out``, with ``V = M * W`` kept from the
    forward pass for the backward pass."""

    def __init__(self, layer: MaskedLinear, name: str) -> None:
        self.layer, self.xp, self.name = layer, layer.xp, name
        self.out_features, self.in_features = layer.out_features, layer.in_features
        self._x = self._v = None

    def forward(self, x: Array, buffers: Buffers) -> Array:
        layer, xp = self.layer, self.xp
        self._x = x
        self._v = xp.multiply(
            layer.mask, layer.weight, out=buffers.get(f"{self.name}.v", layer.weight.shape, x.dtype)
        )
        y = xp.matmul(
            x, self._v.T, out=buffers.get(self.name, (x.shape[0], self.out_features), x.dtype)
        )
        if "bias" in layer.param_names:
            y += layer.bias
        return y

    def backward(
        self, d_out: Array, buffers: Buffers, need_input_grad: bool = True
    ) -> Array | None:
        layer, xp = self.layer, self.xp
        xp.matmul(d_out.T, self._x, out=layer.d_weight)
        layer.d_weight *= layer.mask
        if "bias" in layer.param_names:
            d_out.sum(axis=0, out=layer.d_bias)
        if not need_input_grad:
            return None
        out = buffers.get(f"d{self.name}", (d_out.shape[0], self.in_features), d_out.dtype)
        return xp.matmul(d_out, self._v, out=out)


class FastMADE:
    """:class:`~numpy_vae.made.MADEDecoder`'s training pass through :class:`Buffers`.

    Results live in ``buffers`` and are overwritten by the next call; ``forward`` then
    ``backward``, as for :class:`~numpy_vae.fast.layers.FastSequential`.
    """

    def __init__(self, made: MADEDecoder) -> None:
        self.xp = made.xp
        self.masked = [FastMaskedLinear(layer, f"m{i}") for i, layer in enumerate(made.masked)]
        self.context = [FastLinear(layer) for layer in made.context]  # bias-free
        self.direct = FastMaskedLinear(made.direct, "x") if made.direct is not None else None
        self.activations = [fast_layer(layer) for layer in made.activations]
        self.context_dim = made.context_dim

    def forward(self, context: Array, x: Array, buffers: Buffers) -> Array:
        h = x
        for i, activation in enumerate(self.activations):
            a = self.masked[i].forward(h, buffers)
            if self.context:
                out = buffers.get(f"c{i}", a.shape, a.dtype)
                a += self.context[i].forward(context, out=out)
            # In place, unless the activation keeps its output (tanh): then ``a`` is kept whole.
            out = buffers.get(f"h{i}", a.shape, a.dtype) if activation.keeps_output else a
            h = activation.forward(a, out=out)
        logits = self.masked[-1].forward(h, buffers)
        if self.direct is not None:
            logits += self.direct.forward(x, buffers)
        return logits

    def backward(self, d_logits: Array, buffers: Buffers) -> Array:
        """dL/dcontext; every parameter gradient written (the pixels' gradient is skipped)."""
        d_h = self.masked[-1].backward(d_logits, buffers)
        if self.direct is not None:
            self.direct.backward(d_logits, buffers, need_input_grad=False)
        d_context = buffers.get("d_context", (d_logits.shape[0], self.context_dim), d_logits.dtype)
        d_context[...] = 0
        for i in reversed(range(len(self.activations))):
            d_a = self.activations[i].backward(d_h, out=d_h)
            if self.context:
                out = buffers.get(f"dc{i}", d_context.shape, d_context.dtype)
                d_context += self.context[i].backward(d_a, out=out)
            d_h = self.masked[i].backward(d_a, buffers, need_input_grad=i > 0)
        return d_context
