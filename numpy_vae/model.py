"""The variational autoencoder: encoder, reparameterization, decoder, negative ELBO, gradient.

::

    x ─▶ encoder MLP ─▶ head ─▶ [mu | logvar] ─▶ z = mu + exp(logvar/2)·eps ─▶ decoder MLP ─▶ logits
    (y one-hot is appended to x and to z in the conditional model)

    loss = sum_batch [ -log p(x|z) ] + w · sum_batch KL(q(z|x) || N(0, I))

With ``decoder="made"`` the decoder is :class:`numpy_vae.made.MADEDecoder`, which also reads
the pixels (teacher forcing: logit ``d`` is that of ``p(x_d | x_<d, z)``).

The ``mu`` and ``logvar`` heads are one Linear layer of width ``2 * latent_dim`` (rows
``[:latent_dim]`` give ``mu``, the rest ``logvar``): one matrix product instead of two.

This is the specification: every step in textbook form, every array fresh.
:class:`numpy_vae.fast.FastVAE` is the same model with its training step fused and in place (what
training uses); the tests hold the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy

from numpy_vae.backend import Backend, get_backend
from numpy_vae.bounds import (
    bound,
    encoder_gradient,
    log_posterior,
    log_prior,
    sample_weights,
)
from numpy_vae.config import MODEL_FIELDS, ModelConfig
from numpy_vae.kl import free_bits, kl_standard_normal
from numpy_vae.layers import Linear, Sequential, make_activation
from numpy_vae.likelihoods import LIKELIHOODS, make_likelihood
from numpy_vae.made import MADEDecoder
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any
__all__ = ["LIKELIHOODS", "VAE", "ImportanceSamples", "LossParts"]


@dataclass
class LossParts:
    """What one forward pass measured, summed over the batch (0-d arrays of the backend).

    Attributes
    ----------
    loss : the objective, what training minimises: ``recon + w * kl_objective`` for the
        ``elbo`` objective, minus the bound (summed) for ``vae`` and ``iwae``. The gradients
        are its gradient, except that with the STL and DReG estimators the encoder's are those
        estimators' (:mod:`numpy_vae.bounds`)
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

    @classmethod
    def of_bound(cls, bound_value: Array, log_px: Array, kl: Array) -> LossParts:
        """For a multi-sample bound: from the bound of each example (B,), ``log p(x|z_k)``
        (B, K) and the elementwise analytic KL (B, L). ``loss`` is minus the summed bound;
        ``recon`` the mean over the K samples of ``-log p(x|z_k)`` and ``kl`` the analytic KL,
        reported beside it (so that ``recon + kl`` is the ELBO as the elbo objective reports
        it, and collapse shows)."""
        return cls(
            loss=-bound_value.sum(),
            recon=-log_px.mean(axis=1).sum(),
            kl=kl.sum(),
            kl_per_dim=kl.sum(axis=0),
            n=kl.shape[0],
        )

    @classmethod
    def of(cls, recon: Array, kl: Array, kl_objective: Array, w: float) -> LossParts:
        """From the per-example reconstruction terms (B,), the elementwise KL (B, L), the KL
        term's value and its weight ``w``."""
        recon_sum = recon.sum()
        return cls(
            loss=recon_sum + w * kl_objective,
            recon=recon_sum,
            kl=kl.sum(),
            kl_per_dim=kl.sum(axis=0),
            n=kl.shape[0],
        )


@dataclass
class ImportanceSamples:
    """K samples of z per example and their log-densities (:meth:`VAE.samples`).

    Attributes
    ----------
    mu, logvar : (B, L) the posterior's parameters
    sigma : (B, L) ``exp(logvar / 2)``
    eps, z : (B, K, L) the noise and the samples ``z_k = mu + sigma eps_k``
    decoded : (B * K, D) the decoder output of every sample, example-major (row ``b K + k`` is
        sample k of example b)
    log_px, log_pz, log_qz : (B, K) ``log p(x|z_k)``, ``log p(z_k)``, ``log q(z_k|x)``
    """

    mu: Array
    logvar: Array
    sigma: Array
    eps: Array
    z: Array
    decoded: Array
    log_px: Array
    log_pz: Array
    log_qz: Array

    @property
    def log_w(self) -> Array:
        """``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)``, (B, K)."""
        return self.log_px + self.log_pz - self.log_qz


@dataclass
class _SampledSaved:
    """What :meth:`VAE.backward` needs from a multi-sample forward (objectives vae, iwae)."""

    d_out: Array  # c_k * d(-log p(x|z_k))/d(decoder output), rows example-major
    c: Array  # (B, K) d bound / d log w_k: the IWAE weights w~, or 1/K
    z: Array
    eps: Array
    sigma: Array


@dataclass
class _Saved:
    """What :meth:`VAE.backward` needs from the last :meth:`VAE.forward`."""

    d_out: Array  # gradient of the reconstruction term w.r.t. the decoder output
    reparam: tuple  # (eps, sigma) of the sample z
    d_mu_kl: Array  # dKL/dmu
    d_logvar_kl: Array  # dKL/dlogvar
    w: Any  # KL weight: a number, or (free bits) one per latent dimension


class VAE:
    """A VAE with MLP encoder and decoder, diagonal-Gaussian posterior and N(0, I) prior,
    trained on the ELBO or on a multi-sample bound (:mod:`numpy_vae.bounds`).

    Parameters
    ----------
    input_dim : int
        Size of a flattened input (784 for MNIST).
    *hyperparameters, config, **named
        The model's hyperparameters (:class:`numpy_vae.config.ModelConfig`: ``hidden_dims``,
        ``latent_dim``, ``activation``, ``likelihood``, ``gaussian_sigma``, ``n_classes``,
        ``beta``, ``free_bits``, ``objective``, ``k``, ``estimator``, ``decoder``,
        ``made_hidden``, ``made_direct``, ``made_z``), given as a ``config``,
        or by name, or in that order after
        ``input_dim``: ``VAE(784, (400,), 20)`` is ``VAE(784, hidden_dims=(400,),
        latent_dim=20)``. Omitted ones take their defaults; ranges are checked there.
    backend : Backend or str
        Array module and dtype, default NumPy float32.
    seed : int
        Seeds the initial weights and the generator of ``eps`` and prior samples.
    """

    def __init__(
        self,
        input_dim: int = 784,
        *hyperparameters: Any,
        config: ModelConfig | None = None,
        backend: Backend | str | None = None,
        seed: int = 0,
        **named: Any,
    ) -> None:
        if config is None:
            config = ModelConfig(*hyperparameters, **named)
        elif hyperparameters or named:
            raise ValueError("give the hyperparameters either as config= or one by one, not both")
        _check_int("input_dim", input_dim, 1)
        _check_int("seed", seed, 0)
        backend = get_backend() if backend is None else get_backend(backend)

        self.hparams = config.model_config()
        self.backend, self.xp, self.dtype = backend, backend.xp, backend.dtype
        self.input_dim, self.seed = int(input_dim), int(seed)
        self.likelihood = make_likelihood(config.likelihood, config.gaussian_sigma, self.xp)

        init_rng = numpy.random.default_rng(seed)
        self.encoder = self._mlp((input_dim + config.n_classes, *config.hidden_dims), init_rng)
        self.head = Linear(config.hidden_dims[-1], 2 * config.latent_dim, backend, init_rng)
        context_dim = config.latent_dim + config.n_classes
        if config.decoder == "made":
            self.decoder = MADEDecoder(
                input_dim,
                context_dim,
                config.made_hidden,
                config.activation,
                backend,
                init_rng,
                direct=config.made_direct,
                uses_z=config.made_z,
            )
        else:
            decoder = self._mlp((context_dim, *reversed(config.hidden_dims)), init_rng).layers
            decoder.append(Linear(config.hidden_dims[0], input_dim, backend, init_rng))
            self.decoder = Sequential(decoder)
        self.rng = backend.rng(seed + 1)
        self._saved: _Saved | None = None

    def _mlp(self, widths: tuple[int, ...], rng: numpy.random.Generator) -> Sequential:
        """Linear layers between consecutive ``widths``, each followed by the activation."""
        layers = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                Linear(fan_in, fan_out, self.backend, rng),
                make_activation(self.hparams.activation, self.backend),
            ]
        return Sequential(layers)

    def __getattr__(self, name: str) -> Any:
        """Every hyperparameter reads as an attribute: ``model.latent_dim`` is
        ``model.hparams.latent_dim`` (so a new field of ``ModelConfig`` needs no edit here)."""
        if name in MODEL_FIELDS and "hparams" in self.__dict__:
            return getattr(self.hparams, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # The loss's own two may also change between calls (checked again when they do).
    beta = property(
        lambda self: self.hparams.beta,
        lambda self, value: setattr(self, "hparams", replace(self.hparams, beta=value)),
    )
    free_bits = property(
        lambda self: self.hparams.free_bits,
        lambda self, value: setattr(self, "hparams", replace(self.hparams, free_bits=value)),
    )

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> dict[str, Array]:
        """Parameter arrays by stable name, as ``torch.nn.Module.state_dict`` names them."""
        return {
            **{f"encoder.{k}": v for k, v in self.encoder.parameters().items()},
            **{f"head.{k}": v for k, v in self.head.parameters().items()},
            **{f"decoder.{k}": v for k, v in self.decoder.parameters().items()},
        }

    @property
    def grads(self) -> dict[str, Array]:
        """Gradient arrays by the same names, written by :meth:`loss` (or :meth:`backward`)."""
        return {
            **{f"encoder.{k}": v for k, v in self.encoder.gradients().items()},
            **{f"head.{k}": v for k, v in self.head.gradients().items()},
            **{f"decoder.{k}": v for k, v in self.decoder.gradients().items()},
        }

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """Every parameter by name, as host NumPy arrays (copies), in the names and layouts of
        ``torch.nn.Module.state_dict`` (``encoder.0.weight`` is ``(out, in)``)."""
        return {name: self.backend.to_host(p).copy() for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy parameters in by name (from :meth:`state_dict`, a checkpoint, or a PyTorch
        twin's ``state_dict`` as NumPy arrays), cast to this model's dtype and backend.

        Raises ValueError naming what does not fit: missing or unknown names, a shape, a
        non-finite value. Nothing is copied unless everything fits.
        """
        missing, extra = set(self.params) - set(state), set(state) - set(self.params)
        if missing or extra:
            parts = [f"lacks {', '.join(sorted(missing))}"] if missing else []
            parts += [f"has unknown {', '.join(sorted(extra))}"] if extra else []
            raise ValueError(f"the state does not fit the model: it {'; it '.join(parts)}")
        arrays = {}
        for name, p in self.params.items():
            a = numpy.asarray(self.backend.to_host(state[name]))
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(
                    f"{name} has shape {tuple(a.shape)} in the state, the model needs "
                    f"{tuple(p.shape)}"
                )
            if not numpy.isfinite(a).all():
                raise ValueError(f"{name} holds NaN or infinite values")
            arrays[name] = a
        for name, p in self.params.items():
            p[...] = self.backend.asarray(arrays[name])

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable), enough to rebuild this model."""
        return {"input_dim": self.input_dim, **self.hparams.model_json(), "seed": self.seed}

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
            Floats; in [0, 1] for the Bernoulli likelihood. Cast to the model's dtype.
        y : int array, shape (B,), optional
            Labels in ``[0, n_classes)``; required by (and only by) a conditional model.
        eps : array, shape (B, latent_dim), or (B, K, latent_dim) for the ``vae`` and ``iwae``
            objectives (any K; ``noise_shape`` gives the default), optional
            The standard normal noise of the reparameterization; drawn from ``self.rng`` if
            omitted. Pass it to make the loss a deterministic function of the parameters.
        kl_weight : float, optional
            Weight ``w`` of the KL term, finite and >= 0; default ``self.beta``. KL annealing
            passes its schedule.
        grad : bool
            Also run the backward pass, writing ``self.grads``.
        validate : bool
            Check ``x``, ``y`` and ``eps`` (shape, finiteness, range). The training loop
            validates the whole data set once and then skips this per batch; the cast to the
            model's dtype happens either way.

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

        Same arguments and result as :meth:`loss` without ``grad``; ``loss(..., grad=True)`` is
        exactly ``forward(...)`` followed by ``backward()``.
        """
        x, y, eps, w = self._inputs(x, y, eps, kl_weight, validate)
        if self.objective != "elbo":
            return self._forward_samples(x, y, eps)
        xp, latent = self.xp, self.latent_dim
        onehot = self._one_hot(y)

        h = self.encoder.forward(append_onehot(x, onehot, xp))
        stats = self.head.forward(h)
        mu, logvar = stats[:, :latent], stats[:, latent:]
        z, reparam_cache = reparameterize(mu, logvar, eps, xp)
        out = self._decode(append_onehot(z, onehot, xp), x)

        recon, d_out = self.likelihood.nll(out, x)  # value and gradient
        kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, xp)
        kl_objective, kl_grad_weight = self._kl_objective(kl, w)
        self._saved = _Saved(d_out, reparam_cache, d_mu_kl, d_logvar_kl, kl_grad_weight)
        return LossParts.of(recon, kl, kl_objective, w)

    def backward(self) -> None:
        """The backward half of :meth:`loss`: write ``self.grads`` for the last :meth:`forward`.

        What is differentiated. Per example the ELBO is
        ``E_q[log p(x|z)] - KL(q(z|x) || N(0, I))``; the loss replaces the expectation by its
        one-sample estimate at ``z = mu + exp(logvar / 2) * eps`` (eps fixed), negates, weights
        the KL by ``w`` and sums over the batch::

            loss = sum_b [ nll(x_b, out_b) + w * sum_j KL(mu_bj, logvar_bj) ]

        Because eps does not depend on the parameters, the gradient of this estimate is an
        unbiased estimate of the ELBO's gradient (:mod:`numpy_vae.experiments.estimators`
        measures how noisy it is). The six arrows, one line each below:

        1. ``d_out = dloss/dout``: ``sigmoid(out) - x`` (Bernoulli) or ``(out - x) / sigma^2``
           (Gaussian), computed with the value by ``self.likelihood.nll`` in :meth:`forward`.
        2. ``d_z``: the decoder's backward pass (each Linear and activation in reverse), keeping
           the first ``latent_dim`` columns of its input gradient (the rest belong to the
           one-hot label of a conditional model).
        3. ``d_mu, d_logvar``: :func:`reparameterize_backward`, ``d_z`` and
           ``d_z * eps * sigma / 2``.
        4. ``mu`` and ``logvar`` also reach the loss through the KL term. Two paths from one
           variable add (multivariate chain rule), so ``d_stats = [d_mu + w d_mu_kl |
           d_logvar + w d_logvar_kl]`` with ``d_mu_kl = mu``, ``d_logvar_kl =
           (exp(logvar) - 1) / 2`` from :func:`kl_standard_normal` (with free bits, ``w`` is
           ``w`` times the 0/1 weight of each dimension).
        5. ``d_h``: the head's backward (one Linear: ``d_stats W``), and its weight gradient.
        6. The encoder's backward pass from ``d_h`` writes the encoder's parameter gradients.
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        s, self._saved = self._saved, None
        if isinstance(s, _SampledSaved):
            return self._backward_samples(s)
        w, xp = s.w, self.xp
        d_out = s.d_out  # 1
        d_z = self.decoder.backward(d_out)[:, : self.latent_dim]  # 2
        d_mu, d_logvar = reparameterize_backward(d_z, s.reparam)  # 3
        d_stats = xp.concatenate([d_mu + w * s.d_mu_kl, d_logvar + w * s.d_logvar_kl], axis=1)  # 4
        d_h = self.head.backward(d_stats)  # 5
        self.encoder.backward(d_h)  # 6

    # ------------------------------------------------------------------ multi-sample bounds
    def samples(
        self, x: Array, y: Array | None = None, eps: Array | None = None, validate: bool = True
    ) -> ImportanceSamples:
        """K samples of z per example and the log-densities of the importance weights.

        Parameters
        ----------
        x, y : as in :meth:`loss`
        eps : array, shape (B, K, L), optional
            The noise of each sample; drawn from ``self.rng`` with ``K = self.k`` if omitted.

        The forward pass of the ``vae`` and ``iwae`` objectives (:mod:`numpy_vae.bounds` has the
        math); values only, in fresh arrays.
        """
        if validate:
            x, y, eps = self._validate(x, y, eps, samples=True)
        else:
            x = self.xp.asarray(x, dtype=self.dtype)
            eps = None if eps is None else self.xp.asarray(eps, dtype=self.dtype)
        if eps is None:
            eps = self.rng.standard_normal((x.shape[0], self.k, self.latent_dim), dtype=self.dtype)
        return self._samples(x, y, eps)[0]

    def _samples(
        self, x: Array, y: Array | None, eps: Array, grad: bool = False
    ) -> tuple[ImportanceSamples, Array | None]:
        """:meth:`samples` on checked inputs; with ``grad``, also the likelihood's gradient of
        ``-log p(x|z_k)`` in the decoder output, (B * K, D)."""
        xp, latent = self.xp, self.latent_dim
        n, k = eps.shape[0], eps.shape[1]
        onehot = self._one_hot(y)
        h = self.encoder.forward(append_onehot(x, onehot, xp))
        stats = self.head.forward(h)
        mu, logvar = stats[:, :latent], stats[:, latent:]
        sigma = xp.exp(0.5 * logvar)
        z = mu[:, None, :] + sigma[:, None, :] * eps  # (B, K, L)
        # Example-major rows: sample k of example b is row b K + k, beside its own x and label.
        rows = append_onehot(z.reshape(n * k, latent), _repeat_rows(onehot, k, xp), xp)
        x_rows = _repeat_rows(x, k, xp)
        decoded = self._decode(rows, x_rows)
        if grad:
            nll, d_nll = self.likelihood.nll(decoded, x_rows)
        else:
            nll, d_nll = -self.likelihood.log_prob(decoded, x_rows), None
        log_px = -nll.reshape(n, k)
        samples = ImportanceSamples(
            mu, logvar, sigma, eps, z, decoded, log_px, log_prior(z), log_posterior(eps, logvar)
        )
        return samples, d_nll

    def _forward_samples(self, x: Array, y: Array | None, eps: Array) -> LossParts:
        """:meth:`forward` for the ``vae`` and ``iwae`` objectives: ``loss = -sum_b bound_b``."""
        xp = self.xp
        s, d_nll = self._samples(x, y, eps, grad=True)
        log_w = s.log_w  # a property: computed once here
        n, k = log_w.shape
        c = sample_weights(self.objective, log_w, xp)
        # The gradient of -log p(x|z_k) in the decoder output, each sample's row times its weight.
        d_out = c.reshape(n * k, 1) * d_nll
        self._saved = _SampledSaved(d_out, c, s.z, s.eps, s.sigma)
        kl, _, _ = kl_standard_normal(s.mu, s.logvar, xp)
        return LossParts.of_bound(bound(self.objective, log_w, xp), s.log_px, kl)

    def _backward_samples(self, s: _SampledSaved) -> None:
        """:meth:`backward` for the ``vae`` and ``iwae`` objectives (:mod:`numpy_vae.bounds`).

        1. ``d_out = c_k d(-log p(x|z_k))/d out``, from :meth:`_forward_samples`.
        2. The decoder's backward pass: decoder gradients ``-sum_k c_k grad log p(x|z_k)``, and
           ``-c_k d log p(x|z_k)/dz`` per sample; adding the prior's ``-c_k d log p(z)/dz =
           c_k z_k`` gives ``-c_k g_k``.
        3. The estimator's ``dL/dmu``, ``dL/dlogvar`` of the bound L, negated for the loss.
        4. The head's and encoder's backward passes, as for the ELBO.
        """
        xp, latent = self.xp, self.latent_dim
        n, k = s.c.shape
        d_rows = self.decoder.backward(s.d_out)[:, :latent].reshape(n, k, latent)  # 2
        wg = -(d_rows + s.c[:, :, None] * s.z)  # c_k g_k
        d_mu, d_logvar = encoder_gradient(self.estimator, wg, s.c, s.eps, s.sigma)  # 3
        d_h = self.head.backward(-xp.concatenate([d_mu, d_logvar], axis=1))  # 4
        self.encoder.backward(d_h)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """The shape of ``eps`` for a batch of ``n``: ``(n, L)``, or ``(n, K, L)`` for the
        ``vae`` and ``iwae`` objectives."""
        if self.objective == "elbo":
            return (n, self.latent_dim)
        return (n, self.k, self.latent_dim)

    def _kl_objective(self, kl: Array, w: float) -> tuple[Array, Any]:
        """The KL term's value (summed, or free bits') and the weight of its gradient: ``w``,
        or with free bits ``w`` times the 0/1 weight of each latent dimension."""
        if self.free_bits > 0:
            value, weight = free_bits(kl, self.free_bits, self.xp)
            return value, w * weight
        return kl.sum(), w

    def _inputs(
        self, x: Array, y: Array | None, eps: Array | None, kl_weight: float | None, validate: bool
    ) -> tuple[Array, Array | None, Array, float]:
        """The loss's inputs in the model's dtype, checked if ``validate``; ``eps`` drawn if
        omitted; the KL weight (always checked: it is one number)."""
        w = self.beta if kl_weight is None else kl_weight
        try:  # a number, or a 0-d host array
            w = math.nan if isinstance(w, bool | str) else float(w)
        except (TypeError, ValueError):
            w = math.nan
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
        if self.objective != "elbo" and w != 1:
            raise ValueError(
                f"kl_weight {w:g} is a weight of the elbo objective's analytic KL; the "
                f"{self.objective} objective has no separate KL term (KL warm-up and beta do "
                "not apply)"
            )
        if validate:
            x, y, eps = self._validate(x, y, eps, samples=self.objective != "elbo")
        else:
            # No silent precision change: a batch in another float type is cast (free when it
            # already has the model's dtype), never computed in its own.
            x = self.xp.asarray(x, dtype=self.dtype)
            eps = None if eps is None else self.xp.asarray(eps, dtype=self.dtype)
        if eps is None:
            eps = self.rng.standard_normal(self.noise_shape(x.shape[0]), dtype=self.dtype)
        return x, y, eps, float(w)

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
        stats = self.head.forward(self.encoder.forward(append_onehot(x, self._one_hot(y), self.xp)))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def decode(self, z: Array, y: Array | None = None) -> Array:
        """Mean of p(x | z): pixel probabilities (Bernoulli) or Gaussian mean, (B, input_dim).

        The MADE decoder's mean has no closed form; it returns instead the probabilities
        ``p(x_d = 1 | x_<d, z)`` along one pixel-by-pixel draw from ``self.rng``
        (:meth:`numpy_vae.made.MADEDecoder.sample`), the smooth picture of that sample.
        """
        if self.decoder_kind == "made":
            return self.decode_sample(z, y)[1]
        return self.likelihood.mean(self.decoder_output(z, y))

    def decode_sample(self, z: Array, y: Array | None = None) -> tuple[Array, Array]:
        """MADE decoder: ``x ~ p(x | z)`` drawn pixel by pixel with ``self.rng``, and the
        probability each pixel was drawn with; both (B, input_dim)."""
        if self.decoder_kind != "made":
            raise ValueError(
                "decode_sample draws from the MADE decoder; this model's decoder is an mlp "
                "(its mean is decode(z))"
            )
        z = self._validate_latent(z)
        y = self._validate_labels(y, z.shape[0])
        u = self.rng.random((z.shape[0], self.input_dim), dtype=self.dtype)
        return self.decoder.sample(append_onehot(z, self._one_hot(y), self.xp), u)

    def decoder_output(
        self, z: Array, y: Array | None = None, validate: bool = True, x: Array | None = None
    ) -> Array:
        """Raw decoder output for latent ``z``: logits (Bernoulli) or the mean (Gaussian).

        The MADE decoder's logits depend on the pixels too: give ``x`` (B, input_dim), binary,
        and logit ``d`` is that of ``p(x_d | x_<d, z)`` (teacher forcing). The MLP decoder does
        not read ``x``.
        """
        if self.decoder_kind == "made" and x is None:
            raise ValueError(
                "the MADE decoder's logits depend on the pixels: pass x (its logit d is that "
                "of p(x_d | x_<d, z)), or draw images with decode_sample(z)"
            )
        if validate:
            z = self._validate_latent(z)
            y = self._validate_labels(y, z.shape[0])
            if self.decoder_kind == "made":
                x = self._validate(x, y, None)[0]
                if x.shape[0] != z.shape[0]:
                    raise ValueError(f"x has {x.shape[0]} rows but z has {z.shape[0]}")
        return self._decode(append_onehot(z, self._one_hot(y), self.xp), x)

    def _decode(self, rows: Array, x: Array | None) -> Array:
        """The decoder on ``rows = [z | one-hot y]``; the MADE decoder also reads ``x``."""
        if self.decoder_kind == "made":
            return self.decoder.forward(rows, x)
        return self.decoder.forward(rows)

    @property
    def decoder_kind(self) -> str:
        """``"mlp"`` or ``"made"`` (the ``decoder`` hyperparameter; ``self.decoder`` is the
        decoder itself)."""
        return self.hparams.decoder

    def log_likelihood(self, x: Array, decoded: Array) -> Array:
        """log p(x | z) per example, (B,), from the decoder output ``decoded`` for that z.

        Value only, in fresh arrays.
        """
        return self.likelihood.log_prob(decoded, x)

    def sample_log_likelihood(self, x: Array, z: Array, y: Array | None = None) -> Array:
        """``log p(x_b | z_bk)`` for K samples of each example, (B, K), from ``x`` (B, D) and
        ``z`` (B, K, L): each example's row decoded against each of its samples. Value only;
        inputs are trusted (checked at the boundary by the caller)."""
        n, k, latent = z.shape
        x_rows = _repeat_rows(x, k, self.xp)
        decoded = self.decoder_output(
            z.reshape(n * k, latent), _repeat_rows(y, k, self.xp), validate=False, x=x_rows
        )
        return self.log_likelihood(x_rows, decoded).reshape(n, k)

    def reconstruct(self, x: Array, y: Array | None = None) -> Array:
        """Decode the posterior mean: ``decode(mu(x))`` (for the MADE decoder, the probabilities
        along one pixel-by-pixel draw from ``self.rng``: see :meth:`decode`)."""
        mu, _ = self.encode(x, y)
        return self.decode(mu, y)

    def sample(self, n: int, y: Array | None = None) -> Array:
        """Decode ``n`` draws z ~ N(0, I) from ``self.rng``; returns the means, (n, input_dim)
        (for the MADE decoder, the probabilities along one pixel-by-pixel draw: :meth:`decode`)."""
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

    def _validate(
        self, x: Array, y: Array | None, eps: Array | None, samples: bool = False
    ) -> tuple[Array, Array, Array]:
        x, lo, hi = _as_float_batch("x", x, self.input_dim, "input_dim", self.backend)
        if self.likelihood.name == "bernoulli":
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"x has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs "
                    "pixel intensities in [0, 1]: scale them (e.g. x / 255) or use "
                    "likelihood='gaussian'"
                )
        if self.decoder_kind == "made":
            # The sampler feeds its own 0/1 draws back in; grey levels would train the
            # conditionals on inputs they never see when sampling.
            n_grey = int(self.backend.to_host(((x != 0) & (x != 1)).sum()))
            if n_grey:
                raise ValueError(
                    f"x has {n_grey} values other than 0 and 1, but the MADE decoder models "
                    "binary pixels: binarize the data (e.g. x > 0.5, or a Bernoulli draw; "
                    "train_mnist.py --binarize dynamic)"
                )
        y = self._validate_labels(y, x.shape[0])
        if eps is not None and samples:
            eps = self._validate_sample_noise(eps, x.shape[0])
        elif eps is not None:
            eps = _as_float_batch("eps", eps, self.latent_dim, "latent_dim", self.backend)[0]
            if eps.shape[0] != x.shape[0]:
                raise ValueError(
                    f"eps has {eps.shape[0]} rows but x has {x.shape[0]}: one noise row per example"
                )
        return x, y, eps

    def _validate_sample_noise(self, eps: Array, n: int) -> Array:
        """``eps`` of a multi-sample objective: (n, K, latent_dim), any K >= 1."""
        eps = _as_array("eps", eps, self.xp)
        if eps.ndim != 3 or eps.shape[0] != n or eps.shape[2] != self.latent_dim:
            raise ValueError(
                f"eps must have shape ({n}, K, {self.latent_dim}) for the {self.objective} "
                f"objective (K samples per example, e.g. K = k = {self.k}); got "
                f"{tuple(eps.shape)}"
            )
        flat = _as_float_batch(
            "eps",
            eps.reshape(n, -1),
            eps.shape[1] * self.latent_dim,
            "K * latent_dim",
            self.backend,
        )[0]
        return flat.reshape(eps.shape)

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


def _repeat_rows(a: Array | None, k: int, xp: Any) -> Array | None:
    """Each row of ``a`` ``k`` times in a row (row b goes to rows b k .. b k + k - 1)."""
    return a if a is None or k == 1 else xp.repeat(a, k, axis=0)


def append_onehot(a: Array, onehot: Array | None, xp: Any) -> Array:
    """``[a | onehot]`` along the features (``a`` itself when there are no labels)."""
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
