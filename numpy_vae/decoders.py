"""Decoders: the network from the context ``c = [z | one-hot y]`` to the parameters of p(x | z).

Every decoder is a class with one interface:

- ``forward(context, x) -> out``: the decoder output (Bernoulli logits, or a Gaussian mean) for
  each row. ``x`` is the data, which an autoregressive decoder reads (teacher forcing); the MLP
  ignores it.
- ``backward(d_out) -> d_context``: the chain rule back to the context, writing the decoder's
  parameter gradients.
- ``mean(context, likelihood, rng)``: the picture of p(x | z) a figure shows.
- ``sample(context, u) -> (x, p)``: binary pixels ``x_d = 1[u_d < p_d]`` drawn with the
  uniforms ``u``, and the probabilities ``p`` they were drawn with.
- ``binary_pixels``, ``reads_pixels``: whether it models 0/1 data only, and whether it reads
  the pixels (both checked at the input boundary).

:class:`MLPDecoder` is the textbook decoder (pixels independent given z);
:class:`numpy_vae.made.MADEDecoder` is autoregressive over the pixels. :data:`DECODERS` names
them for the configuration (``ModelConfig.decoder``); a new decoder is a new class there.
"""

from __future__ import annotations

from typing import Any

from numpy_vae.backend import Backend
from numpy_vae.layers import Linear, Sequential, mlp
from numpy_vae.made import MADEDecoder

Array = Any


class MLPDecoder(Sequential):
    """``out = Linear(act(... act(Linear(c))))``: the encoder's hidden widths in reverse, then
    a Linear to the D pixels. Parameters are named as ``torch.nn.Sequential`` names them."""

    name = "mlp"
    binary_pixels = False
    reads_pixels = False
    settings: tuple[str, ...] = ()  # the ModelConfig fields of this decoder alone

    def __init__(self, layers: list, backend: Backend) -> None:
        super().__init__(layers)
        self.special = backend.special

    @classmethod
    def from_config(
        cls, input_dim: int, context_dim: int, config: Any, backend: Backend, rng: Any
    ) -> MLPDecoder:
        """The decoder of a :class:`~numpy_vae.config.ModelConfig`, initialised from ``rng``."""
        widths = (context_dim, *reversed(config.hidden_dims))
        hidden = mlp(widths, config.activation, backend, rng, config.leaky_relu_slope)
        last = Linear(config.hidden_dims[0], input_dim, backend, rng)
        return cls([*hidden.layers, last], backend)

    def forward(self, context: Array, x: Array | None = None) -> Array:
        """The output (B, D) for the context (B, C); the pixels ``x`` are not read."""
        return super().forward(context)

    def backward(self, d_out: Array) -> Array:
        """``d_context`` (B, C) from ``d_out = dL/dout`` (B, D): each layer's backward, last
        first."""
        return super().backward(d_out)

    def mean(self, context: Array, likelihood: Any, rng: Any) -> Array:
        """The mean of p(x | z), ``likelihood.mean(out)`` (pixel probabilities for Bernoulli)."""
        return likelihood.mean(self.forward(context))

    def sample(self, context: Array, u: Array) -> tuple[Array, Array]:
        """Independent Bernoulli pixels in one pass: ``p = sigmoid(out)``, ``x = 1[u < p]``."""
        p = self.special.expit(self.forward(context))
        return (u < p).astype(u.dtype), p


#: The decoders by the name a configuration gives (``ModelConfig.decoder``).
DECODERS = {"mlp": MLPDecoder, "made": MADEDecoder}
