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

The multi-sample objectives (``vae``, ``iwae``) have their own step, :meth:`_forward_samples`
and :meth:`_backward_samples`: the K decoder rows per example in buffers, and a Bernoulli
likelihood that never repeats x K times (:meth:`_bernoulli_rows`; for K below
``FastVAE.ROWS_KERNEL_MIN_K`` the fused kernel with x broadcast is faster); it is not bitwise the
specification's (other groupings of the same sums), and the tests state that bound too. The
k = 5000 evaluation's :meth:`sample_log_likelihood` uses the same rearrangement.
:meth:`encode`, :meth:`decode`, :meth:`sample` and the rest are the specification's own.

The MADE decoder (:mod:`numpy_vae.made`) runs through :class:`~numpy_vae.fast.made.FastMADE`
in the ELBO step (bitwise the specification's decoder; the profile that asked for it is in that
module's docstring). Its multi-sample step is the specification's (no profile has asked yet).
"""

from __future__ import annotations

from typing import Any

from numpy_vae.bounds import (
    bound,
    encoder_gradient,
    log_posterior,
    log_prior,
    sample_weights,
)
from numpy_vae.fast.buffers import Buffers
from numpy_vae.fast.layers import FastLinear, FastSequential
from numpy_vae.fast.likelihoods import bernoulli_nll_fused, bernoulli_rows_nll
from numpy_vae.fast.made import FastMADE
from numpy_vae.fast.parameters import FlatParameters
from numpy_vae.kl import kl_standard_normal
from numpy_vae.likelihoods import Bernoulli
from numpy_vae.model import VAE, LossParts, _repeat_rows, append_onehot
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any


def flush_negligible_weights(c: Array, xp: Any) -> Array:
    r"""``c`` with its entries below :math:`\tau = \sqrt{\text{tiny}}` set to 0, in place.

    ``tiny`` is the dtype's smallest normal number (float32: 1.2e-38, so :math:`\tau \approx
    1.1 \cdot 10^{-19}`; float64: :math:`\tau \approx 1.5 \cdot 10^{-154}`).

    **Why.** A normalized weight ``w~_k`` multiplies its sample's whole gradient row
    (``c_k sigmoid(l)`` at the decoder's output, then back through every layer). A sample whose
    ``log w`` lies more than about 44 nats below its example's best (float32) has a weight
    below :math:`\tau`, and the entries of its row, products of that weight with the
    sigmoids and the layers' weights and slopes, easily fall below ``tiny`` into subnormal
    numbers. x86 CPUs take a slow microcode path for arithmetic on those: measured on this
    project's machine, a (1000, 784) x (784, 200) product with half its rows subnormal took
    169 ms instead of 1.7 ms, and the Burda step at K = 50 (batch 20, float32, stand-in images)
    41.9 ms instead of 13.5 ms; PyTorch's plain step slows down the same way
    (``scripts/benchmark.py --iwae`` prints it with and without ``torch.set_flush_denormal``).

    **What it does not do.** A kept weight leaves the rest of its row :math:`\tau` of room
    before ``tiny``, not more: a row with ``c_k`` near :math:`\tau` and a logit below about
    -44 (float32), where ``sigmoid(l) < tau``, still has subnormal entries (planted
    logits near -60 show them). The Burda model's output bias starts at the logit of the mean
    pixel, clipped at -6.9; how low trained decoders' logits go was not measured.
    Flushing the output gradient itself would cost two more passes over the B K x D logits.

    **What it changes.** A zeroed sample drops out of every sum over samples. The loss sums
    the bound over the B examples, so a parameter's gradient entry moves by at most
    :math:`B K \tau \max_{b,k} |\partial \log w_{bk}|` (an example's ``mu`` and ``logvar``
    gradients by :math:`K \tau` of its own largest), some 10^-16 of the largest per-sample
    gradient at B = 20, K = 50 in float32; the weights are not renormalized, so they sum to 1
    only within :math:`K \tau` (which is also all that the reparameterized ``d logvar``'s
    ``+ 1/2``, the weights' sum times the total ``d log q`` term, is off by). The bound itself
    (the loss) is computed from ``log w``, not from ``c``, and does not change.
    """
    c[c < xp.finfo(c.dtype).tiny ** 0.5] = 0  # (a NaN stays: c < tau is False for it)
    return c


class FastVAE(VAE):
    """:class:`numpy_vae.VAE` with its training step fused, in place and allocation-free.

    Same arguments as :class:`numpy_vae.VAE`. Adds ``flat`` (the flat parameter and gradient
    vectors). What :meth:`backward` reads lives in the model's buffers, so no other
    :meth:`forward` or :meth:`loss` may come in between (``encode``, ``decode`` and ``sample``
    may: they use no buffers).
    """

    #: Fewest samples per example for which the Bernoulli multi-sample step takes
    #: :func:`~numpy_vae.fast.likelihoods.bernoulli_rows_nll` (never repeating x, at the price
    #: of two (B, D) x (D, H) products and a column sum of W per step); below it, the ELBO's
    #: kernel with x broadcast over the K rows. Measured, Burda model, batch 20, float32, one
    #: thread (ms per step, rows kernel / broadcast): K = 1 1.86 / 1.63, 5 2.73 / 2.53,
    #: 10 3.77 / 3.56, 20 6.01 / 6.08 (the same within noise), 50 12.9 / 13.6.
    ROWS_KERNEL_MIN_K = 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flat = FlatParameters(
            {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}, self.backend
        )
        self._fast_encoder = FastSequential(self.encoder)
        self._fast_head = FastLinear(self.head)
        self._fast_decoder = (
            FastSequential(self.decoder) if self.decoder_kind == "mlp" else FastMADE(self.decoder)
        )
        self._cache: tuple | None = None
        # Scratch memory of the training step, one Buffers per part of the model.
        self._buffers = {name: Buffers(self.xp) for name in ("encoder", "head", "decoder", "loss")}

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
        """:meth:`VAE.forward`, keeping what :meth:`backward` needs in the model's buffers.

        The ``vae`` and ``iwae`` objectives: :meth:`_forward_samples`.
        """
        x, y, eps, w = self._inputs(x, y, eps, kl_weight, validate)
        if self.objective != "elbo":
            return self._forward_samples(x, y, eps)
        xp, latent, buffers = self.xp, self.latent_dim, self._buffers
        n = x.shape[0]
        onehot = self._one_hot(y)

        h = self._fast_encoder.forward(append_onehot(x, onehot, xp), buffers["encoder"])
        stats = self._fast_head.forward(h, out=buffers["head"].get("out", (n, 2 * latent), h.dtype))
        mu, logvar = stats[:, :latent], stats[:, latent:]
        z, reparam_cache = reparameterize(mu, logvar, eps, xp)
        rows = append_onehot(z, onehot, xp)
        if self.decoder_kind == "made":  # teacher forcing: the data are the decoder's pixels
            out = self._fast_decoder.forward(rows, x, buffers["decoder"])
        else:
            out = self._fast_decoder.forward(rows, buffers["decoder"])

        # The likelihood's gradient is written over ``out``, which nothing else holds.
        if isinstance(self.likelihood, Bernoulli):
            recon, d_out = bernoulli_nll_fused(out, x, xp, out=out, buffers=buffers["loss"])
        else:
            recon, d_out = self.likelihood.nll(out, x)
        kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, xp)
        kl_objective, kl_grad_weight = self._kl_objective(kl, w)
        self._cache = (stats, reparam_cache, d_out, d_mu_kl, d_logvar_kl, kl_grad_weight)
        return LossParts.of(recon, kl, kl_objective, w)

    def backward(self) -> None:
        """:meth:`VAE.backward`'s six arrows, through the model's buffers."""
        if self._saved is not None:  # the specification's forward ran (MADE, vae and iwae)
            s, self._saved = self._saved, None
            return VAE._backward_samples(self, s)
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        if self.objective != "elbo":
            return self._backward_samples()
        stats, reparam_cache, d_out, d_mu_kl, d_logvar_kl, kl_grad_weight = self._cache
        self._cache = None
        xp, latent, buffers = self.xp, self.latent_dim, self._buffers
        d_z = self._fast_decoder.backward(d_out, buffers["decoder"])[:, :latent]
        d_mu, d_logvar = reparameterize_backward(d_z, reparam_cache)
        # d_stats = [d_mu + w d_mu_kl | d_logvar + w d_logvar_kl], in one buffer.
        d_stats = buffers["head"].get("d_out", stats.shape, stats.dtype)
        xp.multiply(d_mu_kl, kl_grad_weight, out=d_stats[:, :latent])
        d_stats[:, :latent] += d_mu
        xp.multiply(d_logvar_kl, kl_grad_weight, out=d_stats[:, latent:])
        d_stats[:, latent:] += d_logvar
        d_h = buffers["head"].get("d_in", (stats.shape[0], self.head.in_features), stats.dtype)
        self._fast_head.backward(d_stats, out=d_h)
        self._fast_encoder.backward(d_h, buffers["encoder"], need_input_grad=False)

    # ------------------------------------------------------------------ multi-sample bounds
    def _forward_samples(self, x: Array, y: Array | None, eps: Array) -> LossParts:
        """The specification's multi-sample forward (:meth:`VAE._forward_samples`) with the
        decoder's B K rows in buffers and the Bernoulli likelihood in :meth:`_bernoulli_rows`
        (at batch 20 with K = 50 the textbook likelihood was 56% of the step, issue 15's note)
        or, below ``ROWS_KERNEL_MIN_K`` samples, in the ELBO's fused kernel."""
        if self.decoder_kind == "made":  # the specification's step; backward() finds its _saved
            return VAE._forward_samples(self, x, y, eps)
        xp, latent, buffers = self.xp, self.latent_dim, self._buffers
        n, k = eps.shape[0], eps.shape[1]
        onehot = self._one_hot(y)
        h = self._fast_encoder.forward(append_onehot(x, onehot, xp), buffers["encoder"])
        stats = self._fast_head.forward(h, out=buffers["head"].get("out", (n, 2 * latent), h.dtype))
        mu, logvar = stats[:, :latent], stats[:, latent:]
        sigma = xp.exp(0.5 * logvar)
        z = mu[:, None, :] + sigma[:, None, :] * eps
        rows = append_onehot(z.reshape(n * k, latent), _repeat_rows(onehot, k, xp), xp)
        out = self._fast_decoder.forward(rows, buffers["decoder"])
        if isinstance(self.likelihood, Bernoulli) and k >= self.ROWS_KERNEL_MIN_K:
            nll, xw = self._bernoulli_rows(out, x, n, k)  # out now holds sigmoid(l)
        elif isinstance(self.likelihood, Bernoulli):
            rows3 = out.reshape(n, k, -1)  # x broadcast against each example's K rows
            nll, _ = bernoulli_nll_fused(rows3, x[:, None, :], xp, rows3, buffers["loss"])
            xw = None  # out now holds sigmoid(l) - x; nll is (B, K)
        else:
            x_rows = buffers["loss"].get("x_rows", (n, k, x.shape[1]), x.dtype)
            x_rows[...] = x[:, None, :]  # each example beside each of its samples
            nll, out = self.likelihood.nll(out, x_rows.reshape(n * k, x.shape[1]))
            xw = None
        log_px = -nll.reshape(n, k)
        log_w = log_px + log_prior(z) - log_posterior(eps, logvar)
        c = flush_negligible_weights(sample_weights(self.objective, log_w, xp), xp)
        out *= c.reshape(n * k, 1)  # rows kernel: c_k sigmoid(l), the x part comes in backward
        self._cache = (stats, out, c, z, eps, sigma, x, xw)
        kl, _, _ = kl_standard_normal(mu, logvar, xp)
        return LossParts.of_bound(bound(self.objective, log_w, xp), log_px, kl)

    def _bernoulli_rows(self, logits: Array, x: Array, n: int, k: int) -> tuple[Array, Array]:
        """:func:`~numpy_vae.fast.likelihoods.bernoulli_rows_nll` on the decoder's last layer
        and its input: ``-log p(x_b | z_bk)`` of every row, (B K,), with ``logits`` overwritten
        by ``sigmoid(l)``, and ``x W`` (B, H) for :meth:`_backward_samples`."""
        last = self._fast_decoder.layers[-1]  # its input is the last hidden activation
        return bernoulli_rows_nll(
            logits, last._x, x, last.layer.weight, last.layer.bias, k, self.xp,
            buffers=self._buffers["loss"],
        )  # fmt: skip

    def _backward_samples(self) -> None:
        """:meth:`VAE._backward_samples` through the model's buffers.

        For the Bernoulli likelihood the decoder's output gradient is ``c_k (sigmoid(l) - x_b)``.
        After the rows kernel (``xw`` is set) only its first part is a (B K, D) array; the last
        layer's products take the ``- c_k x_b`` part per example: ``dW -= x^T (sum_k c_k
        h_k)``, ``db -= sum_b (sum_k c_bk) x_b``, ``dh_k -= c_k (x W)``. After the broadcast
        kernel (and for other likelihoods) the whole gradient is in the array.
        """
        stats, d_out, c, z, eps, sigma, x, xw = self._cache
        self._cache = None
        xp, latent, buffers = self.xp, self.latent_dim, self._buffers
        n, k = c.shape
        if xw is None:
            d_rows = self._fast_decoder.backward(d_out, buffers["decoder"])
        else:
            layers = self._fast_decoder.layers
            last, i = layers[-1], len(layers) - 1
            h = last._x
            d_h = buffers["decoder"].get(f"d{i}", h.shape, h.dtype)
            last.backward(d_out, out=d_h)
            layer = last.layer
            h_bar = (c[:, :, None] * h.reshape(n, k, -1)).sum(axis=1)  # sum_k c_k h_k, (B, H)
            layer.d_weight -= x.T @ h_bar
            layer.d_bias -= c.sum(axis=1) @ x
            d_h.reshape(n, k, -1)[...] -= c[:, :, None] * xw[:, None, :]
            d_rows = self._fast_decoder.backward(d_h, buffers["decoder"], start=i - 1)
        d_rows = d_rows[:, :latent]
        wg = -(d_rows.reshape(n, k, latent) + c[:, :, None] * z)  # c_k g_k
        d_mu, d_logvar = encoder_gradient(self.estimator, wg, c, eps, sigma)
        d_stats = buffers["head"].get("d_out", stats.shape, stats.dtype)
        xp.negative(d_mu, out=d_stats[:, :latent])
        xp.negative(d_logvar, out=d_stats[:, latent:])
        d_h = buffers["head"].get("d_in", (n, self.head.in_features), stats.dtype)
        self._fast_head.backward(d_stats, out=d_h)
        self._fast_encoder.backward(d_h, buffers["encoder"], need_input_grad=False)

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
        if not isinstance(self.likelihood, Bernoulli) or self.decoder_kind == "made":
            return super().sample_log_likelihood(x, z, y)
        xp = self.xp
        n, k, latent = z.shape
        h = append_onehot(z.reshape(n * k, latent), _repeat_rows(self._one_hot(y), k, xp), xp)
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
