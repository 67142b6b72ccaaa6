"""The objectives' training steps through the model's buffers, one fast class per objective.

:data:`FAST_OBJECTIVES` maps each objective class of :mod:`numpy_vae.objectives` to its fast
step, which :class:`~numpy_vae.fast.FastVAE` takes in place of the specification's:

- :class:`FastELBO`: the negative ELBO, bitwise the specification's but for the Bernoulli kernel.
- :class:`FastMultiSample`: the k-sample VAE and IWAE bounds (whose ``weights``, ``bound`` and
  encoder estimator it uses), with the K decoder rows per example in buffers and a Bernoulli
  likelihood that never repeats x K times
  (:func:`~numpy_vae.fast.likelihoods.bernoulli_rows_nll`; for K below
  :attr:`FastMultiSample.rows_kernel_min_k` the ELBO's fused kernel with x broadcast is faster).
  The MADE decoder reads x (teacher forcing), so its K rows per example are x repeated into a
  buffer, and its likelihood takes the broadcast kernel at every K. It is not bitwise the
  specification's (other groupings of the same sums); the tests state the bound."""

from __future__ import annotations

from typing import Any

import numpy

from numpy_vae import inputs
from numpy_vae.bounds import Reparameterized, log_posterior, log_prior
from numpy_vae.fast.decoders import FastMLPDecoder
from numpy_vae.fast.kernels import (
    importance_log_weights,
    reparam_kl_backward,
    reparam_kl_forward,
    softmax_rows,
    weighted_encoder_gradient,
    weighted_rows_x_part,
)
from numpy_vae.fast.layers import FastLinear
from numpy_vae.fast.likelihoods import (
    bernoulli_nll_fused,
    bernoulli_rows_gradient,
    bernoulli_rows_nll,
)
from numpy_vae.kl import kl_standard_normal, weighted_kl
from numpy_vae.likelihoods import Bernoulli
from numpy_vae.model import append_onehot
from numpy_vae.objectives import ELBO, IWAE, KSampleVAE, LossParts, MultiSampleBound
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any

#: FastELBO's (B, L) buffers beside the head: sigma, exp(logvar), z and the KL terms.
SAMPLE_BUFFERS = ("sigma", "var", "z", "kl")


def flush_negligible_weights(w_tilde: Array, xp: Any) -> Array:
    r"""``w_tilde`` with its entries below :math:`\tau = \sqrt{\text{tiny}}` set to 0, in place.

    ``tiny`` is the dtype's smallest normal number (float32: 1.2e-38, so :math:`\tau \approx
    1.1 \cdot 10^{-19}`; float64: :math:`\tau \approx 1.5 \cdot 10^{-154}`).

    **Why.** A normalized weight ``w~_k`` multiplies its sample's whole gradient row
    (``w~_k sigmoid(l)`` at the decoder's output, then back through every layer). A sample whose
    ``log w`` lies more than about 44 nats below its example's best (float32) has a weight
    below :math:`\tau`, and the entries of its row, products of that weight with the
    sigmoids and the layers' weights and slopes, easily fall below ``tiny`` into subnormal
    numbers. x86 CPUs take a slow microcode path for arithmetic on those: measured on this
    project's machine, a (1000, 784) x (784, 200) product with half its rows subnormal took
    169 ms instead of 1.7 ms, and the Burda step at K = 50 (batch 20, float32, stand-in images)
    41.9 ms instead of 13.5 ms; PyTorch's plain step slows down the same way
    (``scripts/benchmark.py --iwae`` prints it with and without ``torch.set_flush_denormal``).

    **What it does not do.** A kept weight leaves the rest of its row :math:`\tau` of room
    before ``tiny``, not more: a row with ``w~_k`` near :math:`\tau` and a logit below about
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
    (the loss) is computed from ``log w``, not from the weights, and does not change.
    """
    w_tilde[w_tilde < xp.finfo(w_tilde.dtype).tiny ** 0.5] = 0  # (a NaN stays: NaN < tau is False)
    return w_tilde


class FastObjective:
    """The fast step of the specification's objective ``spec``, which it stands in for: its
    ``name``, ``k``, ``multi_sample`` and ``noise_shape`` are ``spec``'s."""

    def __init__(self, spec: ELBO | MultiSampleBound) -> None:
        self.spec = spec
        self.name, self.k, self.multi_sample = spec.name, spec.k, spec.multi_sample
        self._cache: tuple | None = None  # what the step's backward reads

    def noise_shape(self, n: int, latent_dim: int) -> tuple[int, ...]:
        return self.spec.noise_shape(n, latent_dim)


class FastELBO(FastObjective):
    """The ELBO's step (:meth:`numpy_vae.VAE.forward` and ``backward``) fused and in place.

    What it does differently from the specification, each held to it by the tests:

    - the layers run through their fast twins, into the model's buffers (activations in place,
      the encoder's first layer without its input gradient);
    - the Bernoulli value and gradient come from one exp and one compiled pass, written into
      the loss buffers (:func:`~numpy_vae.fast.likelihoods.bernoulli_nll_fused`); on the host,
      with the MLP decoder, that pass also sums the last layer's bias gradient (in a buffer,
      copied to the layer by :meth:`backward`, so that a forward without a backward leaves the
      gradients alone);
    - the sample ``z`` and the KL terms come from one compiled pass after NumPy's two exps
      (:func:`~numpy_vae.fast.kernels.reparam_kl_forward`), and the two paths into ``mu`` and
      ``logvar`` are summed by one more (:func:`~numpy_vae.fast.kernels.reparam_kl_backward`)
      into one buffer, not concatenated (device arrays: the same operations as NumPy passes).

    The order of the arithmetic is the specification's, so every step but the Bernoulli kernel
    is bitwise equal to it. What :meth:`backward` reads lives in the buffers, so no other
    forward may come in between.
    """

    def forward(self, model: Any, x: Array, y: Array | None = None, eps: Array | None = None,
                kl_weight: float | None = None, validate: bool = True) -> LossParts:  # fmt: skip
        """:meth:`numpy_vae.VAE.forward`, keeping what :meth:`backward` needs in buffers."""
        kl_weight = inputs.check_elbo_weights(model, kl_weight)
        x, onehot, eps = inputs.loss_inputs(model, x, y, eps, validate)
        xp, latent, buffers = model.xp, model.latent_dim, model.buffers
        n = x.shape[0]
        h = model.fast_encoder.forward(append_onehot(x, onehot, xp), buffers["encoder"])
        stats = model.fast_head.forward(h, out=buffers["head"].get("out", (n, 2 * latent), h.dtype))
        mu, logvar = stats[:, :latent], stats[:, latent:]
        if xp is numpy:  # exp from NumPy, the rest in one compiled pass (the same operations)
            head = buffers["head"]
            sigma, var, z, kl = (head.get(name, mu.shape, mu.dtype) for name in SAMPLE_BUFFERS)
            xp.exp(xp.multiply(logvar, 0.5, out=sigma), out=sigma)
            xp.exp(logvar, out=var)
            reparam_kl_forward(stats, eps, sigma, var, z, kl)
            reparam_cache, d_mu_kl, d_logvar_kl = (eps, sigma), None, var
        else:
            z, reparam_cache = reparameterize(mu, logvar, eps, xp)
            kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, xp)
        # (an autoregressive decoder reads the data as its pixels: teacher forcing)
        out = model.fast_decoder.forward(model.context(z, onehot), x, buffers["decoder"])

        # The likelihood's gradient: over ``out`` (which nothing else holds) on a device, into
        # the loss buffers on the host (bernoulli_nll_fused says why). On the host its pass
        # also sums the MLP's last bias's gradient, into a buffer that backward copies.
        last = self._last_linear(model, x)
        d_bias = None if last is None else buffers["loss"].get("d_bias", last.bias.shape,
                                                                last.bias.dtype)  # fmt: skip
        if isinstance(model.likelihood, Bernoulli):
            recon, d_out = bernoulli_nll_fused(out, x, xp, out=out, buffers=buffers["loss"],
                                               d_bias=d_bias)  # fmt: skip
        else:
            recon, d_out = model.likelihood.nll(out, x)
        kl_term, kl_grad_weight = weighted_kl(kl, model.free_bits, kl_weight, xp)
        self._cache = (stats, reparam_cache, d_out, d_bias, d_mu_kl, d_logvar_kl, kl_grad_weight)
        return LossParts.of(recon, kl, kl_term, kl_weight)

    @staticmethod
    def _last_linear(model: Any, x: Array) -> Any:
        """The decoder's last Linear layer where the Bernoulli pass sums its bias's gradient:
        NumPy arrays, the MLP decoder, more than one pixel (NumPy sums a single column
        pairwise, the pass in order); else None."""
        if not (
            model.xp is numpy
            and isinstance(model.likelihood, Bernoulli)
            and isinstance(model.fast_decoder, FastMLPDecoder)
            and x.shape[1] > 1
        ):
            return None
        last = model.fast_decoder.layers[-1]
        return last.layer if isinstance(last, FastLinear) and last.sums_bias_gradient else None

    def backward(self, model: Any) -> None:
        """:meth:`numpy_vae.VAE.backward`'s six arrows, through the model's buffers."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        (stats, reparam_cache, d_out, d_bias, d_mu_kl, d_logvar_kl, kl_grad_weight) = self._cache
        self._cache = None
        xp, latent, buffers = model.xp, model.latent_dim, model.buffers
        if d_bias is None:
            d_z = model.fast_decoder.backward(d_out, buffers["decoder"])[:, :latent]
        else:  # the Bernoulli pass summed the last bias's gradient
            model.fast_decoder.layers[-1].layer.d_bias[...] = d_bias
            d_z = model.fast_decoder.backward(d_out, buffers["decoder"], last_bias=False)
            d_z = d_z[:, :latent]
        # d_stats = [d_mu + kl_weight d_mu_kl | d_logvar + kl_weight d_logvar_kl], in one buffer.
        d_stats = buffers["head"].get("d_out", stats.shape, stats.dtype)
        if d_mu_kl is None:  # forward's compiled pass: d_logvar_kl holds exp(logvar)
            weight = xp.broadcast_to(xp.asarray(kl_grad_weight, dtype=stats.dtype), (latent,))
            reparam_kl_backward(stats, d_z, *reparam_cache, d_logvar_kl, weight, d_stats)
        else:
            self._backward_passes(xp, latent, d_z, reparam_cache, d_mu_kl, d_logvar_kl,
                                  kl_grad_weight, d_stats)  # fmt: skip
        d_h = buffers["head"].get("d_in", (stats.shape[0], model.head.in_features), stats.dtype)
        model.fast_head.backward(d_stats, out=d_h)
        model.fast_encoder.backward(d_h, buffers["encoder"], need_input_grad=False)

    @staticmethod
    def _backward_passes(xp: Any, latent: int, d_z: Array, reparam_cache: tuple,
                         d_mu_kl: Array, d_logvar_kl: Array, kl_grad_weight: Any,
                         d_stats: Array) -> None:  # fmt: skip
        """:func:`~numpy_vae.fast.kernels.reparam_kl_backward` as NumPy passes (device arrays)."""
        d_mu, d_logvar = reparameterize_backward(d_z, reparam_cache)
        xp.multiply(d_mu_kl, kl_grad_weight, out=d_stats[:, :latent])
        d_stats[:, :latent] += d_mu
        xp.multiply(d_logvar_kl, kl_grad_weight, out=d_stats[:, latent:])
        d_stats[:, latent:] += d_logvar


class FastMultiSample(FastObjective):
    """The multi-sample objective ``spec``'s step, fused and in place (see the module).

    Parameters
    ----------
    spec : MultiSampleBound
        The specification's objective: its ``name``, ``k``, ``weights``, ``bound`` and
        ``estimator`` are this one's.
    """

    #: Fewest samples per example for which the Bernoulli step takes
    #: :func:`~numpy_vae.fast.likelihoods.bernoulli_rows_nll` (never repeating x, at the price
    #: of two (B, D) x (D, H) products and a column sum of W per step); below it, the ELBO's
    #: kernel with x broadcast over the K rows. Measured, Burda model, batch 20, float32, one
    #: thread (ms per step, rows kernel / broadcast): K = 1 1.86 / 1.63, 5 2.73 / 2.53,
    #: 10 3.77 / 3.56, 20 6.01 / 6.08 (the same within noise), 50 12.9 / 13.6.
    rows_kernel_min_k = 20

    def forward(self, model: Any, x: Array, y: Array | None = None, eps: Array | None = None,
                kl_weight: float | None = None, validate: bool = True) -> LossParts:  # fmt: skip
        """:meth:`MultiSampleBound.forward`, keeping what :meth:`backward` needs in buffers."""
        inputs.check_kl_weight(1.0 if kl_weight is None else kl_weight, True, self.name)
        x, onehot, eps = inputs.loss_inputs(model, x, y, eps, validate, k=self.k)
        xp, latent, buffers = model.xp, model.latent_dim, model.buffers
        n, k = eps.shape[0], eps.shape[1]
        h = model.fast_encoder.forward(append_onehot(x, onehot, xp), buffers["encoder"])
        stats = model.fast_head.forward(h, out=buffers["head"].get("out", (n, 2 * latent), h.dtype))
        mu, logvar = stats[:, :latent], stats[:, latent:]
        sigma = xp.exp(0.5 * logvar)
        z = mu[:, None, :] + sigma[:, None, :] * eps
        rows = model.context(z.reshape(n * k, latent), onehot, k)
        bernoulli = isinstance(model.likelihood, Bernoulli)
        x_rows = None  # each example beside each of its samples, (B K, D), where it is read
        if model.decoder.reads_pixels or not bernoulli:
            x_rows = buffers["loss"].get("x_rows", (n, k, x.shape[1]), x.dtype)
            x_rows[...] = x[:, None, :]
            x_rows = x_rows.reshape(n * k, x.shape[1])
        # The rows kernel works on the MLP's last layer (an autoregressive decoder has none),
        # and adds that layer's bias in its own first pass.
        rows_kernel = (
            bernoulli
            and isinstance(model.fast_decoder, FastMLPDecoder)
            and k >= self.rows_kernel_min_k
        )
        decoder = {"last_bias": False} if rows_kernel else {}
        out = model.fast_decoder.forward(rows, x_rows, buffers["decoder"], **decoder)
        xw = e = None
        if rows_kernel:  # out now holds l, e = exp(-|l|): the gradient's part comes in backward
            nll, xw, e = self._bernoulli_rows(model, out, x, n, k)
        elif bernoulli:
            rows3 = out.reshape(n, k, -1)  # x broadcast against each example's K rows
            nll, d_rows = bernoulli_nll_fused(rows3, x[:, None, :], xp, rows3, buffers["loss"])
            out = d_rows.reshape(n * k, -1)  # sigmoid(l) - x; nll is (B, K)
        else:
            nll, out = model.likelihood.nll(out, x_rows)
        log_px = -nll.reshape(n, k)
        log_w, w_tilde = self._weights(model, stats, eps, z, log_px)
        if not rows_kernel:
            out *= w_tilde.reshape(n * k, 1)  # the output gradient, w~_k (sigmoid(l) - x_b)
        self._cache = (stats, out, w_tilde, z, eps, sigma, x, xw, e)
        kl, _, _ = kl_standard_normal(mu, logvar, xp)
        return LossParts.of_bound(self.spec.bound(log_w, xp), log_px, kl)

    def _weights(
        self, model: Any, stats: Array, eps: Array, z: Array, log_px: Array
    ) -> tuple[Array, Array]:
        """``log w`` (B, K) and the flushed weights ``w~`` (B, K). On the host, ``log w`` and
        its shift by each row's largest in one compiled pass
        (:func:`~numpy_vae.fast.kernels.importance_log_weights`), and the IWAE's softmax and
        flush in another (:func:`~numpy_vae.fast.kernels.softmax_rows`) after NumPy's exp."""
        xp, latent = model.xp, model.latent_dim
        if xp is not numpy:
            log_w = log_px + log_prior(z) - log_posterior(eps, stats[:, latent:])
            return log_w, flush_negligible_weights(self.spec.weights(log_w, xp), xp)
        buffers, dtype = model.buffers["loss"], stats.dtype
        log_w = buffers.get("log_w", log_px.shape, dtype)
        w_tilde = buffers.get("w_tilde", log_px.shape, dtype)
        importance_log_weights(stats, eps, z, log_px, log_w, w_tilde)  # w_tilde: the shift
        if not isinstance(self.spec, IWAE):
            return log_w, flush_negligible_weights(self.spec.weights(log_w, xp), xp)
        xp.exp(w_tilde, out=w_tilde)
        softmax_rows(w_tilde, dtype.type(xp.finfo(dtype).tiny ** 0.5))
        return log_w, w_tilde

    def _bernoulli_rows(
        self, model: Any, logits: Array, x: Array, n: int, k: int
    ) -> tuple[Array, Array, Array]:
        """:func:`~numpy_vae.fast.likelihoods.bernoulli_rows_nll` on the decoder's last layer
        and its input: ``-log p(x_b | z_bk)`` of every row, (B K,), with ``logits`` (the last
        layer's output before its bias) now ``l``, and for :meth:`backward` ``x W`` (B, H) and
        ``e = exp(-|l|)`` (B K, D)."""
        last = model.fast_decoder.layers[-1]  # its input is the last hidden activation
        return bernoulli_rows_nll(
            logits, last.input, x, last.layer.weight, last.layer.bias, k, model.xp,
            buffers=model.buffers["loss"],
        )  # fmt: skip

    def backward(self, model: Any) -> None:
        """:meth:`MultiSampleBound.backward` through the model's buffers.

        For the Bernoulli likelihood the decoder's output gradient is ``w~_k (sigmoid(l) -
        x_b)``. After the rows kernel (``xw`` is set) only its first part becomes a (B K, D)
        array (:func:`~numpy_vae.fast.likelihoods.bernoulli_rows_gradient`, which also sums
        it into the bias gradient); the last layer's products take the ``- w~_k x_b`` part per
        example: ``dW -= x^T (sum_k w~_k h_k)``, ``db -= sum_b (sum_k w~_bk) x_b``,
        ``dh_k -= w~_k (x W)``. After the broadcast kernel (and for other likelihoods) the
        whole gradient is in the array.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        (stats, d_out, w_tilde, z, eps, sigma, x, xw, e), self._cache = self._cache, None
        xp, latent, buffers = model.xp, model.latent_dim, model.buffers
        n, k = w_tilde.shape
        if xw is None:
            d_rows = model.fast_decoder.backward(d_out, buffers["decoder"])
        else:
            layers = model.fast_decoder.layers
            last, i = layers[-1], len(layers) - 1
            layer, h = last.layer, last.input
            d_out = bernoulli_rows_gradient(d_out, e, w_tilde, layer.d_bias, xp, buffers["loss"])
            d_h = buffers["decoder"].get(f"d{i}", h.shape, h.dtype)
            last.backward(d_out, out=d_h, bias=False)  # (the bias gradient is summed above)
            h_bar = buffers["loss"].get("h_bar", (n, h.shape[1]), h.dtype)  # sum_k w~_k h_k
            if xp is numpy:  # h_bar and d_h -= w~_k (x W) in one compiled pass
                weighted_rows_x_part(h, w_tilde, xw, h_bar, d_h)
            else:
                (w_tilde[:, :, None] * h.reshape(n, k, -1)).sum(axis=1, out=h_bar)
                d_h.reshape(n, k, -1)[...] -= w_tilde[:, :, None] * xw[:, None, :]
            layer.d_weight -= x.T @ h_bar
            layer.d_bias -= w_tilde.sum(axis=1) @ x
            d_rows = model.fast_decoder.backward(d_h, buffers["decoder"], start=i - 1)
        d_rows = d_rows[:, :latent]
        d_stats = buffers["head"].get("d_out", stats.shape, stats.dtype)
        plain = type(self.spec.estimator) is Reparameterized
        if xp is numpy and plain and latent > 1:  # one compiled pass (its docstring: L > 1)
            weighted_encoder_gradient(d_rows, w_tilde, z, eps, sigma, d_stats)
        else:
            w_tilde_g = -(d_rows.reshape(n, k, latent) + w_tilde[:, :, None] * z)  # w~_k g_k
            d_mu, d_logvar = self.spec.estimator.encoder_gradient(w_tilde_g, w_tilde, eps, sigma)
            xp.negative(d_mu, out=d_stats[:, :latent])
            xp.negative(d_logvar, out=d_stats[:, latent:])
        d_h = buffers["head"].get("d_in", (n, model.head.in_features), stats.dtype)
        model.fast_head.backward(d_stats, out=d_h)
        model.fast_encoder.backward(d_h, buffers["encoder"], need_input_grad=False)


#: The fast step of each objective class of :data:`numpy_vae.objectives.OBJECTIVES`.
FAST_OBJECTIVES = {ELBO: FastELBO, KSampleVAE: FastMultiSample, IWAE: FastMultiSample}
