"""The VAE's training step, fused and in place: what training runs by default.

:class:`FastVAE` is :class:`numpy_vae.VAE` (same layers, same parameters, same numbers) with
the pieces of a fast training step:

- every parameter is a view into one flat vector, every gradient a view into another
  (:class:`~numpy_vae.fast.parameters.FlatParameters`), so Adam updates the whole model in a few
  vector passes (:class:`~numpy_vae.fast.optim.FastAdam`) and a checkpoint is one array;
- the fast twin of each layer (:mod:`numpy_vae.fast.layers`) and of the decoder
  (:data:`~numpy_vae.fast.decoders.FAST_DECODERS`; the MADE decoder's
  :class:`~numpy_vae.fast.made.FastMADE` is bitwise the specification's);
- the large intermediate arrays in :class:`~numpy_vae.fast.buffers.Buffers` owned by the
  model, so an epoch allocates nothing after its first step; everything returned is fresh;
- the fast step of its objective in place of the specification's
  (:data:`~numpy_vae.fast.objectives.FAST_OBJECTIVES`: :class:`~numpy_vae.fast.objectives.FastELBO`
  is bitwise the specification's ELBO but for the Bernoulli kernel,
  :class:`~numpy_vae.fast.objectives.FastMultiSample` regroups the multi-sample sums), which
  :meth:`~numpy_vae.VAE.loss` runs. The tests state every bound.

:meth:`forward` and :meth:`backward` stay the specification's (the negative ELBO in textbook
form, on the same parameters), as do :meth:`encode`, :meth:`decode`, :meth:`sample` and the
rest; :meth:`sample_log_likelihood`, the k = 5000 evaluation's inner loop, takes the Bernoulli
rows kernel."""

from __future__ import annotations

from typing import Any

import numpy

from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.decoders import FAST_DECODERS, FastMLPDecoder
from numpy_vae.fast.layers import FastLinear, FastSequential
from numpy_vae.fast.likelihoods import bernoulli_nll_fused, bernoulli_rows_nll
from numpy_vae.fast.objectives import FAST_OBJECTIVES
from numpy_vae.fast.parameters import FlatParameters, same_bits_transposed
from numpy_vae.layers import Linear, Sequential
from numpy_vae.likelihoods import Bernoulli
from numpy_vae.model import VAE

Array = Any


class FastVAE(VAE):
    """:class:`numpy_vae.VAE` with its training step fused, in place and allocation-free.

    Same arguments as :class:`numpy_vae.VAE`. Adds ``flat`` (the flat parameter and gradient
    vectors), the fast twins of its layers (``fast_encoder``, ``fast_head``, ``fast_decoder``)
    and their scratch memory (``buffers``); its ``objective`` is the fast step. What a step's
    backward reads lives in the buffers, so no other :meth:`loss` may come between its forward
    and backward (``encode``, ``decode`` and ``sample`` may: they use no buffers).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parts = {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}
        self.flat = FlatParameters(parts, self.backend, self.transposed_weights())
        self.fast_encoder = FastSequential(self.encoder)
        self.fast_head = FastLinear(self.head)
        self.fast_decoder = FAST_DECODERS[type(self.decoder)](self.decoder)
        self.objective = FAST_OBJECTIVES[type(self.objective)](self.objective)
        # Scratch memory of the training step, one Buffers per part of the model.
        self.buffers = {name: Buffers(self.xp) for name in ("encoder", "head", "decoder", "loss")}
        # The k = 5000 evaluation's scratch (sample_log_likelihood), apart from the step's.
        self.evaluation_buffers = Buffers(self.xp)

    def transposed_weights(self) -> list[str]:
        """The weights whose block in ``flat`` holds ``W^T`` (a Fortran-ordered ``(out, in)``
        view, :class:`~numpy_vae.fast.parameters.FlatParameters`): the encoder's first Linear
        layer's, on the host.

        That layer makes two products, ``x W^T`` and ``d^T x`` (it needs no input gradient),
        and OpenBLAS (0.3.31, SkylakeX kernels, AVX-512 Xeon) makes both faster from the
        transposed block: 784 -> 400 at batch 128 in two threads, 290 and 222 us against 340
        and 298 us; the Burda model's 784 -> 200 at batch 20 in one thread, both products 115
        against 161 us. Every other layer also makes ``d W``, which that layout makes slower
        (311 against 292 us for the same weight), so the others stay as they are (their three
        products, transposed / as is: 0.88 to 1.10). The numbers are the same bits at 7 rows
        or more (OpenBLAS packs both layouts into the same panels; ``tests/test_fast_path.py``);
        a single row goes through a matrix-vector product that rounds otherwise. Where this
        machine's BLAS gives other bits for the two layouts
        (:func:`~numpy_vae.fast.parameters.same_bits_transposed`), nothing is transposed.
        """
        first = self.encoder.layers[0] if isinstance(self.encoder, Sequential) else None
        if self.xp is not numpy or type(first) is not Linear:
            return []
        shape = (first.out_features, first.in_features, numpy.dtype(self.dtype).name)
        return ["encoder.0.weight"] if same_bits_transposed(*shape) else []

    @property
    def params(self) -> dict[str, Array]:
        """Parameter arrays by stable name (views into ``flat.data``)."""
        return self.flat.params

    @property
    def grads(self) -> dict[str, Array]:
        """Gradient arrays by the same names (views into ``flat.grad``), set by :meth:`loss`."""
        return self.flat.grads

    def sample_log_likelihood(self, x: Array, z: Array, y: Array | None = None) -> Array:
        """:meth:`VAE.sample_log_likelihood` without the (B K, D) elementwise pass of
        ``sum_d x_d l_d`` (the Bernoulli likelihood; others are the specification's).

        The Bernoulli ``log p(x|z) = sum_d x_d l_d - sum_d softplus(l_d)``, and with the last
        layer ``l = W h + b``, ``sum_d x_d l_d = (x W) . h + x . b``: one (B, D) x (D, H) product
        per example and an H-wide dot per sample, instead of repeating x K times and
        multiplying 784 pixels per sample: the training step's kernel,
        :func:`~numpy_vae.fast.likelihoods.bernoulli_rows_nll`, without its gradient. This is
        what the k = 5000 evaluation spends its time on besides the decoder's matrix products.
        """
        if not isinstance(self.likelihood, Bernoulli) or not isinstance(
            self.fast_decoder, FastMLPDecoder
        ):
            return super().sample_log_likelihood(x, z, y)
        n, k, latent = z.shape
        h = self.context(z.reshape(n * k, latent), self.one_hot(y), k)
        for layer in self.decoder.layers[:-1]:
            h = layer.forward(h)
        last = self.decoder.layers[-1]
        logits = h @ last.weight.T  # (B K, D), a fresh array to work in; the bias comes there
        nll, _, _ = bernoulli_rows_nll(logits, h, x, last.weight, last.bias, k, self.xp,
                                    buffers=self.evaluation_buffers, grad=False)  # fmt: skip
        return -nll.reshape(n, k)

    def log_likelihood(self, x: Array, decoded: Array) -> Array:
        """log p(x | z) per example, (B,): the fused Bernoulli value, in fresh arrays."""
        if isinstance(self.likelihood, Bernoulli):
            return -bernoulli_nll_fused(decoded, x, self.xp, grad=False)[0]
        return self.likelihood.log_prob(decoded, x)
