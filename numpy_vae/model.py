"""The variational autoencoder: encoder, reparameterization, decoder, negative ELBO, gradient.

::

    x ─▶ encoder MLP ─▶ head ─▶ [mu | logvar] ─▶ z = mu + exp(logvar/2)·eps ─▶ decoder ─▶ logits
    (y one-hot is appended to x and to z in the conditional model)

    loss = sum_batch [ -log p(x|z) ] + kl_weight · sum_batch KL(q(z|x) || N(0, I))

The ``mu`` and ``logvar`` heads are one Linear layer of width ``2 * latent_dim`` (rows
``[:latent_dim]`` give ``mu``, the rest ``logvar``): one matrix product instead of two.

The pieces are objects: the decoder (:mod:`numpy_vae.decoders`), the likelihood
(:mod:`numpy_vae.likelihoods`) and the objective (:mod:`numpy_vae.objectives`; the ELBO is this
file's :meth:`VAE.forward` and :meth:`VAE.backward`, the multi-sample bounds use
:meth:`VAE.posterior` and :meth:`VAE.posterior_backward`). Inputs are checked at one boundary,
:mod:`numpy_vae.inputs`.

This is the specification: every step in textbook form, every array fresh.
:class:`numpy_vae.fast.FastVAE` is the same model with its training step fused and in place (what
training uses); the tests hold the two together.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy

from numpy_vae import inputs
from numpy_vae.backend import Backend, get_backend
from numpy_vae.bounds import repeat_rows
from numpy_vae.config import ModelConfig
from numpy_vae.decoders import DECODERS
from numpy_vae.kl import kl_standard_normal, weighted_kl
from numpy_vae.layers import Linear, mlp
from numpy_vae.likelihoods import LIKELIHOODS
from numpy_vae.objectives import OBJECTIVES, LossParts
from numpy_vae.reparam import reparameterize, reparameterize_backward

Array = Any
__all__ = ["VAE", "LossParts"]


class VAE:
    """A VAE with an MLP encoder, diagonal-Gaussian posterior and N(0, I) prior.

    Parameters
    ----------
    input_dim : int
        Size of a flattened input (784 for MNIST).
    config : ModelConfig, optional
        The hyperparameters (:class:`numpy_vae.config.ModelConfig`); or give them by name
        instead: ``VAE(784, hidden_dims=(400,), latent_dim=20)``. Omitted ones take their
        defaults; ranges are checked there. ``VAE(**model.config())`` rebuilds a model.
    backend : Backend or str
        Array module and dtype, default NumPy float32.
    seed : int
        Seeds the initial weights and the generator of ``eps`` and prior samples.
    """

    def __init__(
        self,
        input_dim: int = 784,
        config: ModelConfig | None = None,
        *,
        backend: Backend | str | None = None,
        seed: int = 0,
        **hyperparameters: Any,
    ) -> None:
        config = ModelConfig.of(config, hyperparameters)
        self.input_dim = inputs.check_int("input_dim", input_dim, 1)
        self.seed = inputs.check_int("seed", seed, 0)
        self.backend = get_backend() if backend is None else get_backend(backend)
        self.xp, self.dtype = self.backend.xp, self.backend.dtype
        self.hparams = config  # as built; beta and free_bits below may change between calls
        self.latent_dim, self.n_classes = config.latent_dim, config.n_classes
        self.beta, self.free_bits = config.beta, config.free_bits
        self.likelihood = LIKELIHOODS[config.likelihood].from_config(config, self.xp)
        self.objective = OBJECTIVES[config.objective].from_config(config)

        init_rng = numpy.random.default_rng(seed)  # the layers draw in this order
        widths = (input_dim + config.n_classes, *config.hidden_dims)
        slope = config.leaky_relu_slope  # the leaky_relu activation's (the decoder reads config)
        self.encoder = mlp(widths, config.activation, self.backend, init_rng, slope)
        self.head = Linear(config.hidden_dims[-1], 2 * config.latent_dim, self.backend, init_rng)
        self.decoder = DECODERS[config.decoder].from_config(
            input_dim, config.latent_dim + config.n_classes, config, self.backend, init_rng
        )
        self.rng = self.backend.rng(seed + 1)
        self._saved: tuple | None = None

    # ------------------------------------------------------------------ the negative ELBO
    def forward(
        self,
        x: Array,
        y: Array | None = None,
        eps: Array | None = None,
        kl_weight: float | None = None,
        validate: bool = True,
    ) -> LossParts:
        """The negative ELBO of a batch, keeping what :meth:`backward` needs.

        Parameters
        ----------
        x : array, shape (B, input_dim)
            Floats; in [0, 1] for the Bernoulli likelihood. Cast to the model's dtype.
        y : int array, shape (B,), optional
            Labels in ``[0, n_classes)``; required by (and only by) a conditional model.
        eps : array, shape (B, latent_dim), optional
            The standard normal noise of the reparameterization; drawn from ``self.rng`` if
            omitted. Pass it to make the loss a deterministic function of the parameters.
        kl_weight : float, optional
            Weight of the KL term, finite and >= 0; default ``self.beta`` (KL warm-up passes
            its schedule).
        validate : bool
            Check ``x``, ``y`` and ``eps`` (:mod:`numpy_vae.inputs`). The training loop checks
            the whole data set once and skips this per batch; the cast happens either way.

        Returns
        -------
        LossParts
            Sums over the batch; ``loss`` is what the gradients differentiate.
        """
        kl_weight = inputs.check_elbo_weights(self, kl_weight)
        x, onehot, eps = inputs.loss_inputs(self, x, y, eps, validate)
        mu, logvar = self.posterior(x, onehot)
        z, reparam_cache = reparameterize(mu, logvar, eps, self.xp)
        logits = self.decoder.forward(self.context(z, onehot), x)

        recon, d_logits = self.likelihood.nll(logits, x)  # value and gradient
        kl, d_mu_kl, d_logvar_kl = kl_standard_normal(mu, logvar, self.xp)
        kl_term, kl_grad_weight = weighted_kl(kl, self.free_bits, kl_weight, self.xp)
        self._saved = (d_logits, reparam_cache, d_mu_kl, d_logvar_kl, kl_grad_weight)
        return LossParts.of(recon, kl, kl_term, kl_weight)

    def backward(self) -> None:
        """Write ``self.grads``: the gradient of the last :meth:`forward`'s loss.

        What is differentiated. Per example the ELBO is
        ``E_q[log p(x|z)] - KL(q(z|x) || N(0, I))``; the loss replaces the expectation by its
        one-sample estimate at ``z = mu + exp(logvar / 2) * eps`` (eps fixed), negates, weights
        the KL and sums over the batch::

            loss = sum_b [ nll(x_b, logits_b) + kl_weight * sum_j KL(mu_bj, logvar_bj) ]

        Because eps does not depend on the parameters, the gradient of this estimate is an
        unbiased estimate of the ELBO's gradient (:mod:`numpy_vae.experiments.estimators`
        measures how noisy it is). The six arrows, one line each below:

        1. ``d_logits = dloss/dlogits``: ``sigmoid(logits) - x`` (Bernoulli) or
           ``(mean - x) / sigma^2`` (Gaussian), computed with the value by the likelihood.
        2. ``d_z``: the decoder's backward pass, keeping the first ``latent_dim`` columns of
           its context gradient (the rest belong to the one-hot label of a conditional model).
        3. ``d_mu, d_logvar``: :func:`reparameterize_backward`, ``d_z`` and
           ``d_z * eps * sigma / 2``.
        4. ``mu`` and ``logvar`` also reach the loss through the KL term. Two paths from one
           variable add (multivariate chain rule), so ``d_stats = [d_mu + kl_weight d_mu_kl |
           d_logvar + kl_weight d_logvar_kl]`` with ``d_mu_kl = mu``, ``d_logvar_kl =
           (exp(logvar) - 1) / 2`` from :func:`kl_standard_normal` (with free bits the weight
           is ``kl_weight`` times the 0/1 weight of each dimension).
        5. ``d_h``: the head's backward (one Linear: ``d_stats W``), and its weight gradient.
        6. The encoder's backward pass from ``d_h`` writes the encoder's parameter gradients.
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        saved, self._saved = self._saved, None
        d_logits, reparam_cache, d_mu_kl, d_logvar_kl, kl_grad_weight = saved
        d_z = self.decoder.backward(d_logits)[:, : self.latent_dim]  # 1, 2
        d_mu, d_logvar = reparameterize_backward(d_z, reparam_cache)  # 3
        d_mu = d_mu + kl_grad_weight * d_mu_kl  # 4
        d_logvar = d_logvar + kl_grad_weight * d_logvar_kl
        self.posterior_backward(d_mu, d_logvar)  # 5, 6

    def loss(
        self,
        x: Array,
        y: Array | None = None,
        eps: Array | None = None,
        kl_weight: float | None = None,
        grad: bool = True,
        validate: bool = True,
    ) -> LossParts:
        """The objective the model trains (``self.objective``: the negative ELBO of
        :meth:`forward`, or minus a multi-sample bound, whose ``eps`` is (B, K, L)) and, with
        ``grad=True``, the gradient of every parameter. Arguments as in :meth:`forward`."""
        parts = self.objective.forward(self, x, y, eps, kl_weight, validate)
        if grad:
            self.objective.backward(self)
        return parts

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """The shape of the objective's ``eps`` for a batch of ``n``: (n, L) or (n, K, L)."""
        return self.objective.noise_shape(n, self.latent_dim)

    # ------------------------------------------------------------------ the pieces
    def posterior(self, x: Array, onehot: Array | None) -> tuple[Array, Array]:
        """``mu, logvar`` (B, L) of q(z | x): the encoder, then the head."""
        stats = self.head.forward(self.encoder.forward(append_onehot(x, onehot, self.xp)))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def posterior_backward(self, d_mu: Array, d_logvar: Array) -> None:
        """The head's and the encoder's backward passes from ``d_mu, d_logvar`` (B, L)."""
        self.encoder.backward(self.head.backward(self.xp.concatenate([d_mu, d_logvar], axis=1)))

    def context(self, z: Array, onehot: Array | None, k: int = 1) -> Array:
        """The decoder's input ``[z | one-hot y]``, each label repeated for its ``k`` rows."""
        return append_onehot(z, repeat_rows(onehot, k, self.xp), self.xp)

    def one_hot(self, y: Array | None) -> Array | None:
        """The labels as one-hot rows (B, n_classes), or None for an unconditional model."""
        return one_hot(y, self.n_classes, self.dtype, self.xp) if self.n_classes else None

    # ------------------------------------------------------------------ inference
    def encode(
        self, x: Array, y: Array | None = None, validate: bool = True
    ) -> tuple[Array, Array]:
        """Posterior parameters ``(mu, logvar)``, each (B, latent_dim)."""
        x, y = inputs.check_batch(self, x, y) if validate else (x, y)
        return self.posterior(x, self.one_hot(y))

    def decoder_output(
        self, z: Array, y: Array | None = None, validate: bool = True, x: Array | None = None
    ) -> Array:
        """Raw decoder output for latent ``z``: logits (Bernoulli) or the mean (Gaussian).

        An autoregressive decoder (MADE) also reads the pixels ``x`` (B, input_dim): its logit
        ``d`` is that of ``p(x_d | x_<d, z)`` (teacher forcing). The MLP decoder does not."""
        z, y, x = inputs.check_decoder_inputs(self, z, y, x, validate)
        return self.decoder.forward(self.context(z, self.one_hot(y)), x)

    def decode(self, z: Array, y: Array | None = None) -> Array:
        """The mean of p(x | z), (B, input_dim) (for MADE, which has none in closed form, the
        probabilities along one pixel-by-pixel draw from ``self.rng``)."""
        z, y = inputs.check_codes(self, z, y)
        return self.decoder.mean(self.context(z, self.one_hot(y)), self.likelihood, self.rng)

    def decode_sample(self, z: Array, y: Array | None = None) -> tuple[Array, Array]:
        """``x ~ p(x | z)``, binary pixels drawn with ``self.rng``, and the probability each
        pixel was drawn with; both (B, input_dim). Needs the Bernoulli likelihood."""
        z, y = inputs.check_sample_inputs(self, z, y)
        u = self.rng.random((z.shape[0], self.input_dim), dtype=self.dtype)
        return self.decoder.sample(self.context(z, self.one_hot(y)), u)

    def reconstruct(self, x: Array, y: Array | None = None) -> Array:
        """Decode the posterior mean: ``decode(mu(x))``."""
        return self.decode(self.encode(x, y)[0], y)

    def sample(self, n: int, y: Array | None = None) -> Array:
        """Decode ``n`` draws z ~ N(0, I) from ``self.rng``; the means, (n, input_dim)."""
        n = inputs.check_int("n", n, 1)
        return self.decode(self.rng.standard_normal((n, self.latent_dim), dtype=self.dtype), y)

    def log_likelihood(self, x: Array, decoded: Array) -> Array:
        """log p(x | z) per example, (B,), from the decoder output for that z. Value only."""
        return self.likelihood.log_prob(decoded, x)

    def sample_log_likelihood(self, x: Array, z: Array, y: Array | None = None) -> Array:
        """``log p(x_b | z_bk)`` (B, K) for ``x`` (B, D) and K samples ``z`` (B, K, L) of each
        example. Value only; inputs are trusted (checked at the boundary by the caller)."""
        n, k, latent = z.shape
        x_rows = repeat_rows(x, k, self.xp)
        context = self.context(z.reshape(n * k, latent), self.one_hot(y), k)
        return self.log_likelihood(x_rows, self.decoder.forward(context, x_rows)).reshape(n, k)

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> dict[str, Array]:
        """Parameter arrays by stable name, as ``torch.nn.Module.state_dict`` names them."""
        return named_arrays({"encoder": self.encoder, "head": self.head, "decoder": self.decoder})

    @property
    def grads(self) -> dict[str, Array]:
        """Gradient arrays by the same names, written by :meth:`loss` (or :meth:`backward`)."""
        parts = {"encoder": self.encoder, "head": self.head, "decoder": self.decoder}
        return named_arrays(parts, gradients=True)

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """Every parameter by name, as host NumPy arrays (copies), in the names and layouts of
        ``torch.nn.Module.state_dict`` (``encoder.0.weight`` is ``(out, in)``)."""
        return {name: self.backend.to_host(p).copy() for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy parameters in by name (from :meth:`state_dict`, a checkpoint, or a PyTorch
        twin's ``state_dict`` as NumPy arrays), cast to this model's dtype and backend. Nothing
        is copied unless everything fits (:func:`numpy_vae.inputs.check_state`)."""
        arrays = inputs.check_state(self, state)
        for name, p in self.params.items():
            p[...] = self.backend.asarray(arrays[name])

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON values): ``VAE(**model.config())`` rebuilds it."""
        hparams = replace(self.hparams, beta=self.beta, free_bits=self.free_bits)
        return {"input_dim": self.input_dim, **hparams.model_json(), "seed": self.seed}


def named_arrays(parts: dict[str, Any], gradients: bool = False) -> dict[str, Array]:
    """``"<part>.<name>"`` for every parameter (or its gradient) of each part."""
    return {
        f"{part}.{name}": array
        for part, layer in parts.items()
        for name, array in (layer.gradients() if gradients else layer.parameters()).items()
    }


def one_hot(y: Array, n_classes: int, dtype: Any, xp: Any) -> Array:
    """Integer labels ``y`` (B,) as one-hot rows (B, n_classes)."""
    onehot = xp.zeros((y.shape[0], n_classes), dtype=dtype)
    onehot[xp.arange(y.shape[0]), y] = 1
    return onehot


def append_onehot(a: Array, onehot: Array | None, xp: Any) -> Array:
    """``[a | onehot]`` along the features (``a`` itself when there are no labels)."""
    return a if onehot is None else xp.concatenate([a, onehot], axis=1)
