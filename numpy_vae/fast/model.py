"""The VAE's training step, fused and in place: what training runs by default.

:class:`FastVAE` is :class:`numpy_vae.VAE` (same layers, same parameters, same numbers) with
``forward`` and ``backward`` rewritten for speed:

- every parameter is a view into one flat vector, every gradient a view into another
  (:class:`~numpy_vae.fast.parameters.FlatParameters`), so Adam updates the whole model in a few
  vector passes (:class:`~numpy_vae.fast.optim.FastAdam`) and a checkpoint is one array;
- the large intermediate arrays live in :class:`~numpy_vae.fast.buffers.Buffers` owned by the
  model, so an epoch allocates nothing after its first step; everything returned is fresh;
- activations work in place (:mod:`numpy_vae.fast.layers`) and the encoder's first layer skips
  its input gradient;
- the Bernoulli value and gradient come from one exp and one log, written over the decoder output
  (:func:`~numpy_vae.fast.likelihoods.bernoulli_nll_fused`);
- the two paths into ``mu`` and ``logvar`` are summed into one buffer instead of concatenated.

The order of the arithmetic is the specification's, so every step but the Bernoulli kernel is
bitwise equal to :meth:`VAE.forward`/:meth:`VAE.backward`; the tests state the bounds.

The multi-sample objectives (``vae``, ``iwae``) have their own step,
:class:`~numpy_vae.fast.objectives.FastMultiSample`, which the model takes in place of the
specification's objective; it is not bitwise the specification's (other groupings of the same
sums), and the tests state that bound too. The k = 5000 evaluation's
:meth:`sample_log_likelihood` uses the same rearrangement as its Bernoulli kernel.
:meth:`encode`, :meth:`decode`, :meth:`sample` and the rest are the specification's own.

Each decoder runs through its fast twin (:data:`~numpy_vae.fast.decoders.FAST_DECODERS`; the
MADE decoder's :class:`~numpy_vae.fast.made.FastMADE` is bitwise the specification's, and the
profile that asked for it is in that module's docstring).
"""

from __future__ import annotations

from typing import Any

from numpy_vae import inputs
from numpy_vae.bounds import repeat_rows
from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.decoders import FAST_DECODERS, FastMLPDecoder
from numpy_vae.fast.layers import FastLinear, FastSequential
from numpy_vae.fast.likelihoods import bernoulli_nll_fused, bernoulli_rows_nll
from numpy_vae.fast.objectives import FastMultiSample
from numpy_vae.fast.parameters import FlatParameters
from numpy_vae.kl import kl_standard_normal, weighted_kl
from numpy_vae.likelihoods import Bernoulli
from numpy_vae.model import VAE, LossParts, append_onehot
from numpy_vae.objectives import MultiSampleBound
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any


class FastVAE(VAE):
    """:class:`numpy_vae.VAE` with its training step fused, in place and allocation-free.

    Same arguments as :class:`numpy_vae.VAE`. Adds ``flat`` (the flat parameter and gradient
    vectors), the fast twins of its layers (``fast_encoder``, ``fast_head``, ``fast_decoder``)
    and their scratch memory (``buffers``). What :meth:`backward` reads lives in the buffers,
    so no other :meth:`forward` or :meth:`loss` may come in between (``encode``, ``decode`` and
    ``sample`` may: they use no buffers).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flat = FlatParameters(
            {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}, self.backend
        )
        self.fast_encoder = FastSequential(self.encoder)
        self.fast_head = FastLinear(self.head)
        self.fast_decoder = FAST_DECODERS[type(self.decoder)](self.decoder)
        if isinstance(self.objective, MultiSampleBound):
            self.objective = FastMultiSample(self.objective)
        self._cache: tuple | None = None
        # Scratch memory of the training step, one Buffers per part of the model.
        self.buffers = {name: Buffers(self.xp) for name in ("encoder", "head", "decoder", "loss")}

    @property
    def params(self) -> dict[str, Array]:
        """Parameter arrays by stable name (views into ``flat.data``)."""
        return self.flat.params

    @property
    def grads(self) -> dict[str, Array]:
        """Gradient arrays by the same names (views into ``flat.grad``), set by :meth:`loss`."""
        return self.flat.grads

    def forward(
        self,
        x: Array,
        y: Array | None = None,
        eps: Array | None = None,
        kl_weight: float | None = None,
        validate: bool = True,
    ) -> LossParts:
        """:meth:`VAE.forward`, keeping what :meth:`backward` needs in the model's buffers."""
        kl_weight = inputs.check_elbo_weights(self, kl_weight)
        x, onehot, eps = inputs.loss_inputs(self, x, y, eps, validate)
        xp, latent, buffers = self.xp, self.latent_dim, self.buffers
        n = x.shape[0]
        h = self.fast_encoder.forward(append_onehot(x, onehot, xp), buffers["encoder"])
        stats = self.fast_head.forward(h, out=buffers["head"].get("out", (n, 2 * latent), h.dtype))
        mu, logvar = stats[:, :latent], stats[:, latent:]
        z, reparam_cache = reparameterize(mu, logvar, eps, xp)
        # (an autoregressive decoder reads the data as its pixels: teacher forcing)
        out = self.fast_decoder.forward(append_onehot(z, onehot, xp), x, buffers["decoder"])

        # The likelihood's gradient is written over ``out``, which nothing else holds.
        if isinstance(self.likelihood, Bernoulli):
            recon, d_out = bernoulli_nll_fused(out, x, xp, out=out, buffers=buffers["loss"])
        else:
            recon, d_out = self.likelihood.nll(out, x)
        kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, xp)
        kl_term, kl_grad_weight = weighted_kl(kl, self.free_bits, kl_weight, xp)
        self._cache = (stats, reparam_cache, d_out, d_mu_kl, d_logvar_kl, kl_grad_weight)
        return LossParts.of(recon, kl, kl_term, kl_weight)

    def backward(self) -> None:
        """:meth:`VAE.backward`'s six arrows, through the model's buffers."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        (stats, reparam_cache, d_out, d_mu_kl, d_logvar_kl, kl_grad_weight), self._cache = (
            self._cache,
            None,
        )
        xp, latent, buffers = self.xp, self.latent_dim, self.buffers
        d_z = self.fast_decoder.backward(d_out, buffers["decoder"])[:, :latent]
        d_mu, d_logvar = reparameterize_backward(d_z, reparam_cache)
        # d_stats = [d_mu + kl_weight d_mu_kl | d_logvar + kl_weight d_logvar_kl], in one buffer.
        d_stats = buffers["head"].get("d_out", stats.shape, stats.dtype)
        xp.multiply(d_mu_kl, kl_grad_weight, out=d_stats[:, :latent])
        d_stats[:, :latent] += d_mu
        xp.multiply(d_logvar_kl, kl_grad_weight, out=d_stats[:, latent:])
        d_stats[:, latent:] += d_logvar
        d_h = buffers["head"].get("d_in", (stats.shape[0], self.head.in_features), stats.dtype)
        self.fast_head.backward(d_stats, out=d_h)
        self.fast_encoder.backward(d_h, buffers["encoder"], need_input_grad=False)

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
        xp = self.xp
        n, k, latent = z.shape
        h = append_onehot(z.reshape(n * k, latent), repeat_rows(self.one_hot(y), k, xp), xp)
        for layer in self.decoder.layers[:-1]:
            h = layer.forward(h)
        last = self.decoder.layers[-1]
        logits = h @ last.weight.T  # (B K, D), a fresh array for the kernel to work in
        logits += last.bias
        nll, _ = bernoulli_rows_nll(logits, h, x, last.weight, last.bias, k, xp, grad=False)
        return -nll.reshape(n, k)

    def log_likelihood(self, x: Array, decoded: Array) -> Array:
        """log p(x | z) per example, (B,): the fused Bernoulli value, in fresh arrays."""
        if isinstance(self.likelihood, Bernoulli):
            return -bernoulli_nll_fused(decoded, x, self.xp, grad=False)[0]
        return self.likelihood.log_prob(decoded, x)
