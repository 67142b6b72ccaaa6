"""The decoders' training passes through reused buffers, one fast class per decoder class.

Each has the interface ``forward(context, x, buffers) -> out`` and
``backward(d_out, buffers) -> d_context`` (results live in ``buffers``, overwritten by the next
call). :data:`FAST_DECODERS` maps each decoder class of :mod:`numpy_vae.decoders` to its fast
class; :class:`~numpy_vae.fast.FastVAE` looks its decoder up there.
"""

from __future__ import annotations

from typing import Any

from numpy_vae.decoders import MLPDecoder
from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.layers import FastSequential
from numpy_vae.fast.made import FastMADE
from numpy_vae.made import MADEDecoder

Array = Any


class FastMLPDecoder(FastSequential):
    """:class:`~numpy_vae.decoders.MLPDecoder` as a :class:`FastSequential` (the pixels
    ``x`` are not read)."""

    def forward(  # type: ignore[override]
        self, context: Array, x: Array | None, buffers: Buffers, last_bias: bool = True
    ) -> Array:
        """The decoder's output; without ``last_bias``, its logits before the last bias (which
        the multi-sample step's Bernoulli pass adds)."""
        return super().forward(context, buffers, last_bias)


#: The fast twin of each decoder class.
FAST_DECODERS = {MLPDecoder: FastMLPDecoder, MADEDecoder: FastMADE}
