"""The variational autoencoder: encoder, reparameterization, decoder, negative ELBO, gradient.

::

    x ─▶ encoder MLP ─▶ head ─▶ [mu | logvar] ─▶ z = mu + exp(logvar/2)·eps ─▶ decoder MLP ─▶ logits
    (y one-hot is appended to x and to z in the conditional model)

    loss = sum_batch [ -log p(x|z) ] + w · sum_batch KL(q(z|x) || N(0, I))

The ``mu`` and ``logvar`` heads are one Linear layer of width ``2 * latent_dim`` (rows
``[:latent_dim]`` give ``mu``, the rest ``logvar``): one matrix product instead of two.

The training step (:meth:`VAE.loss`, or :meth:`VAE.forward` then :meth:`VAE.backward`) keeps its
large intermediate arrays in :class:`~numpy_vae.buffers.Buffers` owned by the model, so that an
epoch allocates nothing after its first step; everything it returns is fresh. :meth:`VAE.encode`,
:meth:`VAE.decode`, :meth:`VAE.reconstruct` and :meth:`VAE.sample` use no buffers at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy

from .backend import Backend, get_backend
from .buffers import Buffers
from .kl import free_bits, kl_standard_normal
from .layers import Linear, Sequential, make_activation
from .likelihoods import bernoulli_nll, gaussian_nll
from .parameters import FlatParameters
from .reparam import reparameterize, reparameterize_backward

Array = Any
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class LossParts:
    """What one forward pass measured, summed over the batch (0-d arrays of the backend).

    Attributes
    ----------
    loss : the differentiated objective, ``recon + w * kl_objective``
    recon : reconstruction term, sum of -log p(x|z)
    kl : KL(q(z|x) || p(z)), the true KL (before free bits or the weight ``w``)
    kl_per_dim : array (L,), the KL of each latent dimension summed over the batch
    n : batch size

    The negative ELBO is ``recon + kl``; divide by ``n`` for the per-example figure.
    """

    loss: Array
    recon: Array
    kl: Array
    kl_per_dim: Array
    n: int

    @property
    def neg_elbo(self) -> Array:
        return self.recon + self.kl


class VAE:
    """A VAE with MLP encoder and decoder, diagonal-Gaussian posterior and N(0, I) prior.

    Parameters
    ----------
    input_dim : int
        Size of a flattened input (784 for MNIST).
    hidden_dims : sequence of int
        Encoder hidden widths; the decoder mirrors them in reverse. Default ``(400,)``.
    latent_dim : int
        Size of z. Default 20.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}
        Hidden activation.
    likelihood : {"bernoulli", "gaussian"}
        Decoder distribution. Bernoulli: the decoder outputs logits. Gaussian: the decoder
        outputs the mean (no squashing) and the standard deviation is ``gaussian_sigma``.
    gaussian_sigma : float
        Fixed standard deviation of the Gaussian likelihood.
    n_classes : int
        0 for the plain VAE; > 0 for a conditional VAE whose encoder sees ``[x, onehot(y)]`` and
        decoder sees ``[z, onehot(y)]``.
    beta : float
        Weight of the KL term (beta-VAE), >= 0.
    free_bits : float
        Free-bits allowance in nats per latent dimension (0 disables), see :func:`free_bits`.
    backend : Backend or str
        Array module and dtype, default NumPy float32.
    seed : int
        Seeds the initial weights and the generator of ``eps`` and prior samples.
    """

    def __init__(
        self,
        input_dim: int = 784,
        hidden_dims: tuple[int, ...] | list[int] = (400,),
        latent_dim: int = 20,
        activation: str = "relu",
        likelihood: str = "bernoulli",
        gaussian_sigma: float = 1.0,
        n_classes: int = 0,
        beta: float = 1.0,
        free_bits: float = 0.0,
        backend: Backend | str | None = None,
        seed: int = 0,
    ) -> None:
        hidden_dims = tuple(hidden_dims)
        _check_int("input_dim", input_dim, 1)
        _check_int("latent_dim", latent_dim, 1)
        _check_int("n_classes", n_classes, 0)
        if not hidden_dims:
            raise ValueError("hidden_dims must list at least one hidden width, e.g. (400,)")
        for width in hidden_dims:
            _check_int("every hidden width", width, 1)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
        if not (math.isfinite(gaussian_sigma) and gaussian_sigma > 0):
            raise ValueError(f"gaussian_sigma must be a finite number > 0, got {gaussian_sigma}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        if not (math.isfinite(free_bits) and free_bits >= 0):
            raise ValueError(f"free_bits must be a finite number >= 0 (nats), got {free_bits}")
        backend = get_backend() if backend is None else get_backend(backend)

        self.backend = backend
        self.xp = backend.xp
        self.dtype = backend.dtype
        self.input_dim = input_dim
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.activation = activation
        self.likelihood = likelihood
        self.gaussian_sigma = float(gaussian_sigma)
        self.n_classes = n_classes
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.seed = seed

        init_rng = numpy.random.default_rng(seed)
        widths = (input_dim + n_classes, *hidden_dims)
        encoder = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [
                Linear(fan_in, fan_out, backend, init_rng),
                make_activation(activation, backend),
            ]
        self.encoder = Sequential(encoder)
        self.head = Linear(hidden_dims[-1], 2 * latent_dim, backend, init_rng)
        widths = (latent_dim + n_classes, *reversed(hidden_dims))
        decoder = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            decoder += [
                Linear(fan_in, fan_out, backend, init_rng),
                make_activation(activation, backend),
            ]
        decoder.append(Linear(hidden_dims[0], input_dim, backend, init_rng))
        self.decoder = Sequential(decoder)

        self.flat = FlatParameters(
            {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}, backend
        )
        self.rng = backend.rng(seed + 1)
        self._cache: tuple | None = None  # what backward() needs from the last forward()
        # Scratch memory of the training step, one Buffers per part of the model.
        self._buffers = {
            name: Buffers(backend.xp) for name in ("encoder", "head", "decoder", "loss")
        }

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> dict[str, Array]:
        """Parameter arrays by stable name (views into ``flat.data``)."""
        return self.flat.params

    @property
    def grads(self) -> dict[str, Array]:
        """Gradient arrays by the same names (views into ``flat.grad``), set by :meth:`loss`."""
        return self.flat.grads

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable), enough to rebuild this model."""
        return {
            "input_dim": self.input_dim,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "activation": self.activation,
            "likelihood": self.likelihood,
            "gaussian_sigma": self.gaussian_sigma,
            "n_classes": self.n_classes,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ the loss
    def loss(
        self,
        x: Array,
        y: Array | None = None,
        eps: Array | None = None,
        kl_weight: float | None = None,
        grad: bool = True,
        validate: bool = True,
    ) -> LossParts:
        """Negative ELBO of a batch and, with ``grad=True``, the gradient of every parameter.

        Parameters
        ----------
        x : array, shape (B, input_dim)
            Floats; in [0, 1] for the Bernoulli likelihood.
        y : int array, shape (B,), optional
            Labels in ``[0, n_classes)``; required by (and only by) a conditional model.
        eps : array, shape (B, latent_dim), optional
            The standard normal noise of the reparameterization; drawn from ``self.rng`` if
            omitted. Pass it to make the loss a deterministic function of the parameters.
        kl_weight : float, optional
            Weight ``w`` of the KL term; default ``self.beta``. KL annealing passes its schedule.
        grad : bool
            Also run the backward pass, writing ``self.grads``.
        validate : bool
            Check ``x``, ``y`` and ``eps`` (shape, dtype, finiteness, range). The training loop
            validates the whole data set once and then skips this per batch.

        Returns
        -------
        LossParts
            Sums over the batch; ``loss`` is what the gradients differentiate.
        """
        parts = self.forward(x, y, eps=eps, kl_weight=kl_weight, validate=validate)
        if grad:
            self.backward()
        return parts

    def forward(
        self,
        x: Array,
        y: Array | None = None,
        eps: Array | None = None,
        kl_weight: float | None = None,
        validate: bool = True,
    ) -> LossParts:
        """The forward half of :meth:`loss`: the loss terms, keeping what :meth:`backward` needs.

        Same arguments and result as :meth:`loss` without ``grad``. ``loss(..., grad=True)`` is
        exactly ``forward(...)`` followed by ``backward()``; the two halves are public so that a
        profiler can time them separately. What ``backward`` reads lives in the model's
        buffers, so no other ``forward`` or ``loss`` may come in between (``encode``, ``decode``
        and ``sample`` may: they use no buffers).
        """
        if validate:
            x, y, eps = self._validate(x, y, eps)
        xp, latent = self.xp, self.latent_dim
        n = x.shape[0]
        if eps is None:
            eps = self.rng.standard_normal((n, latent), dtype=self.dtype)
        w = self.beta if kl_weight is None else float(kl_weight)
        onehot = self._one_hot(y) if self.n_classes else None

        # Forward: x -> (mu, logvar) -> z -> decoder output, in the model's buffers.
        buffers = self._buffers
        h = self.encoder.forward(_append(x, onehot, xp), buffers=buffers["encoder"])
        stats = self.head.forward(h, out=buffers["head"].get("out", (n, 2 * latent), h.dtype))
        mu, logvar = stats[:, :latent], stats[:, latent:]
        z, reparam_cache = reparameterize(mu, logvar, eps, xp)
        out = self.decoder.forward(_append(z, onehot, xp), buffers=buffers["decoder"])

        # The two terms, each with its gradient (the likelihood's is written over ``out``).
        recon, d_out = self._nll(out, x)
        kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, xp)
        if self.free_bits > 0:
            kl_objective, kl_grad_weight = free_bits(kl, self.free_bits, xp)
            kl_grad_weight *= w
        else:
            kl_objective, kl_grad_weight = kl.sum(), w
        recon_sum = recon.sum()
        self._cache = (stats, reparam_cache, d_out, d_mu_kl, d_logvar_kl, kl_grad_weight)
        return LossParts(
            loss=recon_sum + w * kl_objective,
            recon=recon_sum,
            kl=kl.sum(),
            kl_per_dim=kl.sum(axis=0),
            n=n,
        )

    def backward(self) -> None:
        """The backward half of :meth:`loss`: write ``self.grads`` for the last :meth:`forward`.

        Decoder -> z -> (mu, logvar), adding the KL gradients -> head -> encoder. The encoder's
        first layer skips its input gradient (nothing upstream of the data is trained).

        What is differentiated. Per example the ELBO is
        ``E_q[log p(x|z)] - KL(q(z|x) || N(0, I))``; the loss replaces the expectation by its
        one-sample estimate at ``z = mu + exp(logvar / 2) * eps`` (eps fixed), negates, weights
        the KL by ``w`` and sums over the batch::

            loss = sum_b [ nll(x_b, out_b) + w * sum_j KL(mu_bj, logvar_bj) ]

        Because eps does not depend on the parameters, the gradient of this estimate is an
        unbiased estimate of the ELBO's gradient (:mod:`numpy_vae.estimators` measures how
        noisy it is). The arrows, each one line below:

        1. ``d_out = dloss/dout``: ``sigmoid(out) - x`` (Bernoulli) or ``(out - x) / sigma^2``
           (Gaussian), from :meth:`_nll` in :meth:`forward`.
        2. ``d_z``: the decoder's backward pass (:meth:`Sequential.backward`, each Linear and
           activation in reverse), keeping the first ``latent_dim`` columns of its input
           gradient (the rest belong to the one-hot label of a conditional model).
        3. ``d_mu, d_logvar``: :func:`reparameterize_backward`, ``d_z`` and
           ``d_z * eps * sigma / 2``.
        4. ``mu`` and ``logvar`` also reach the loss through the KL term. Two paths from one
           variable add (multivariate chain rule), so ``d_stats = [d_mu + w d_mu_kl |
           d_logvar + w d_logvar_kl]`` with ``d_mu_kl = mu``, ``d_logvar_kl =
           (exp(logvar) - 1) / 2`` from :func:`kl_standard_normal` (with free bits, ``w`` is
           ``w`` times the 0/1 weight of each dimension, ``kl_grad_weight``).
        5. ``d_h``: the head's backward (one Linear: ``d_stats W``), and its weight gradient.
        6. The encoder's backward pass from ``d_h`` writes the encoder's parameter gradients.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        stats, reparam_cache, d_out, d_mu_kl, d_logvar_kl, kl_grad_weight = self._cache
        self._cache = None
        xp, latent, buffers = self.xp, self.latent_dim, self._buffers
        d_z = self.decoder.backward(d_out, buffers=buffers["decoder"])[:, :latent]
        d_mu, d_logvar = reparameterize_backward(d_z, reparam_cache)
        d_stats = buffers["head"].get("d_out", stats.shape, stats.dtype)
        xp.multiply(d_mu_kl, kl_grad_weight, out=d_stats[:, :latent])
        d_stats[:, :latent] += d_mu
        xp.multiply(d_logvar_kl, kl_grad_weight, out=d_stats[:, latent:])
        d_stats[:, latent:] += d_logvar
        d_h = buffers["head"].get("d_in", (stats.shape[0], self.head.in_features), stats.dtype)
        self.head.backward(d_stats, out=d_h)
        self.encoder.backward(d_h, need_input_grad=False, buffers=buffers["encoder"])

    def _nll(self, out: Array, x: Array) -> tuple[Array, Array]:
        """Per-example NLL and its gradient w.r.t. ``out``, written over ``out``.

        ``out`` is the decoder output, held by nothing else.
        """
        xp = self.xp
        if self.likelihood == "gaussian":
            return gaussian_nll(out, x, self.gaussian_sigma, xp)
        nll, d_out = bernoulli_nll(out, x, xp, out=out, buffers=self._buffers["loss"])
        if d_out is not out:  # a replacement that ignores out= (e.g. in tests)
            out[...] = d_out
        return nll, out

    # ------------------------------------------------------------------ inference
    def encode(
        self, x: Array, y: Array | None = None, validate: bool = True
    ) -> tuple[Array, Array]:
        """Posterior parameters ``(mu, logvar)``, each (B, latent_dim).

        ``validate=False`` skips the input checks (and their transfer of three scalars to the
        host), for batches of data that were checked once as a whole.
        """
        if validate:
            x, y, _ = self._validate(x, y, None)
        stats = self.head.forward(self.encoder.forward(_append(x, self._one_hot(y), self.xp)))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def decode(self, z: Array, y: Array | None = None) -> Array:
        """Mean of p(x | z): pixel probabilities (Bernoulli) or Gaussian mean, (B, input_dim)."""
        out = self.decoder_output(z, y)
        if self.likelihood == "bernoulli":
            return self.backend.special.expit(out)
        return out

    def decoder_output(self, z: Array, y: Array | None = None, validate: bool = True) -> Array:
        """Raw decoder output for latent ``z``: logits (Bernoulli) or the mean (Gaussian)."""
        if validate:
            z = self._validate_latent(z)
            y = self._validate_labels(y, z.shape[0])
        return self.decoder.forward(_append(z, self._one_hot(y), self.xp))

    def log_likelihood(self, x: Array, out: Array) -> Array:
        """log p(x | z) per example, (B,), from the decoder output ``out`` for that z.

        Value only, in fresh arrays: the training step's scratch buffers are left alone.
        """
        if self.likelihood == "gaussian":
            return -gaussian_nll(out, x, self.gaussian_sigma, self.xp)[0]
        return -bernoulli_nll(out, x, self.xp, grad=False)[0]

    def reconstruct(self, x: Array, y: Array | None = None) -> Array:
        """Decode the posterior mean: ``decode(mu(x))``."""
        mu, _ = self.encode(x, y)
        return self.decode(mu, y)

    def sample(self, n: int, y: Array | None = None) -> Array:
        """Decode ``n`` draws z ~ N(0, I) from ``self.rng``; returns the means, (n, input_dim)."""
        _check_int("n", n, 1)
        z = self.rng.standard_normal((n, self.latent_dim), dtype=self.dtype)
        return self.decode(z, y)

    # ------------------------------------------------------------------ input checks
    def _one_hot(self, y: Array | None) -> Array | None:
        if not self.n_classes:
            return None
        onehot = self.xp.zeros((y.shape[0], self.n_classes), dtype=self.dtype)
        onehot[self.xp.arange(y.shape[0]), y] = 1
        return onehot

    def _validate(self, x: Array, y: Array | None, eps: Array | None) -> tuple[Array, Array, Array]:
        x, lo, hi = _as_float_batch("x", x, self.input_dim, "input_dim", self.backend)
        if self.likelihood == "bernoulli":
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"x has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs "
                    "pixel intensities in [0, 1]: scale them (e.g. x / 255) or use "
                    "likelihood='gaussian'"
                )
        y = self._validate_labels(y, x.shape[0])
        if eps is not None:
            eps = _as_float_batch("eps", eps, self.latent_dim, "latent_dim", self.backend)[0]
            if eps.shape[0] != x.shape[0]:
                raise ValueError(
                    f"eps has {eps.shape[0]} rows but x has {x.shape[0]}: one noise row per example"
                )
        return x, y, eps

    def _validate_latent(self, z: Array) -> Array:
        return _as_float_batch("z", z, self.latent_dim, "latent_dim", self.backend)[0]

    def _validate_labels(self, y: Array | None, n: int) -> Array | None:
        if not self.n_classes:
            if y is not None:
                raise ValueError(
                    "labels y were given but the model is not conditional (n_classes=0)"
                )
            return None
        if y is None:
            raise ValueError(
                f"a conditional model needs labels y (integers in [0, {self.n_classes}))"
            )
        y = self.xp.asarray(_as_array("y", y, self.xp))  # labels may come from the host
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(
                f"y must have shape ({n},), one label per example; got {tuple(y.shape)}"
            )
        if y.dtype.kind not in "iu":
            raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
        if n:
            # The input boundary: one transfer of two scalars to the host.
            lo, hi = (int(v) for v in self.backend.to_host(self.xp.stack([y.min(), y.max()])))
            if lo < 0 or hi >= self.n_classes:
                raise ValueError(
                    f"labels must lie in [0, {self.n_classes}), got values in [{lo}, {hi}]"
                )
        return y


def _append(a: Array, onehot: Array | None, xp: Any) -> Array:
    return a if onehot is None else xp.concatenate([a, onehot], axis=1)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | numpy.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _as_array(name: str, a: Any, xp: Any) -> Array:
    """``a`` itself if it is an array, else ``xp.asarray(a)``, failing with ``name`` in the message
    (a ragged list would otherwise fail inside NumPy with a message that names nothing)."""
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a
    try:
        return xp.asarray(a)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} must be an array or a rectangular nested list ({err})") from None


def _as_float_batch(
    name: str, a: Array, width: int, width_name: str, backend: Backend
) -> tuple[Array, float, float]:
    """Check that ``a`` is a finite 2-D float batch of the right width; cast to the model dtype.

    Returns the cast array and its minimum and maximum, which cross to the host together with
    the count of non-finite values: one transfer, the input boundary's only one.
    """
    xp = backend.xp
    a = _as_array(name, a, xp)
    if a.ndim != 2:
        hint = " (flatten images first: a.reshape(len(a), -1))" if a.ndim > 2 else ""
        raise ValueError(f"{name} must be 2-D (batch, {width}), got shape {tuple(a.shape)}{hint}")
    if a.shape[1] != width:
        raise ValueError(f"{name} has {a.shape[1]} columns but the model has {width_name}={width}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 rows)")
    if a.dtype.kind != "f":
        hint = " (scale pixels to floats first, e.g. x / 255.0)" if a.dtype.kind in "uib" else ""
        raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}{hint}")
    a = backend.asarray(a)
    stats = ((~xp.isfinite(a)).sum(), a.min(), a.max())
    bad, lo, hi = backend.to_host(xp.stack([v.astype(numpy.float64) for v in stats]))
    if bad:
        raise ValueError(f"{name} contains {int(bad)} NaN or infinite value(s); it must be finite")
    return a, float(lo), float(hi)
