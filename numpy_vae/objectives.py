"""What training minimises: the negative ELBO or minus a multi-sample bound on log p(x).

An objective is a class with one interface::

    parts = objective.forward(model, x, y, eps, kl_weight, validate)   # LossParts
    objective.backward(model)                                          # writes model.grads

- :class:`ELBO`: one z per example and the analytic KL; the model's own
  :meth:`~numpy_vae.model.VAE.forward` and :meth:`~numpy_vae.model.VAE.backward`.
- :class:`KSampleVAE` and :class:`IWAE`: K samples per example, combined by their log weights
  ``log w_k`` (:mod:`numpy_vae.bounds` derives the bounds, their gradients and the encoder
  estimators). They differ only in :meth:`~MultiSampleBound.bound` and
  :meth:`~MultiSampleBound.weights`.

:class:`numpy_vae.VAE` builds the one its configuration names (:data:`OBJECTIVES`) and calls it
from :meth:`~numpy_vae.model.VAE.loss`; it never branches on the objective. A new objective is
a new class and an entry in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from numpy_vae.bounds import ESTIMATORS, importance_samples, log_mean_exp, normalized_weights
from numpy_vae.inputs import check_kl_weight, loss_inputs
from numpy_vae.kl import kl_standard_normal

Array = Any


@dataclass
class LossParts:
    """What one forward pass measured, summed over the batch (0-d arrays of the backend).

    Attributes
    ----------
    loss : the objective, what training minimises: ``recon + kl_weight * kl_term`` for the
        ELBO, minus the bound (summed) for a multi-sample objective. The gradients are its
        gradient, except that with the STL and DReG estimators the encoder's are theirs
    recon : the reconstruction term, sum of -log p(x|z) (for a multi-sample bound, the mean
        over the K samples)
    kl : KL(q(z|x) || p(z)), the analytic KL (before free bits or the weight)
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
    def of(cls, recon: Array, kl: Array, kl_term: Array, kl_weight: float) -> LossParts:
        """From the per-example reconstruction terms (B,), the elementwise KL (B, L), the KL
        term's value (the summed KL, or free bits') and its weight."""
        recon_sum = recon.sum()
        return cls(
            recon_sum + kl_weight * kl_term, recon_sum, kl.sum(), kl.sum(axis=0), kl.shape[0]
        )

    @classmethod
    def of_bound(cls, bound_value: Array, log_px: Array, kl: Array) -> LossParts:
        """From the bound of each example (B,), ``log p(x|z_k)`` (B, K) and the analytic KL
        (B, L), reported beside the bound so that ``recon + kl`` is an ELBO and collapse shows."""
        recon = -log_px.mean(axis=1).sum()
        return cls(-bound_value.sum(), recon, kl.sum(), kl.sum(axis=0), kl.shape[0])


class ELBO:
    """The negative ELBO, one z per example and the analytic KL: the model's own
    :meth:`~numpy_vae.model.VAE.forward` and :meth:`~numpy_vae.model.VAE.backward`."""

    name, k = "elbo", 1
    multi_sample = False
    estimators = ("reparam",)  # the encoder gradients it accepts (its own, the exact one)

    @classmethod
    def from_config(cls, config: Any) -> ELBO:
        return cls()

    def noise_shape(self, n: int, latent_dim: int) -> tuple[int, ...]:
        """``eps`` of a batch of ``n``: one draw of z per example."""
        return (n, latent_dim)

    def forward(self, model: Any, x: Array, y: Array | None = None, eps: Array | None = None,
                kl_weight: float | None = None, validate: bool = True) -> LossParts:  # fmt: skip
        return model.forward(x, y, eps=eps, kl_weight=kl_weight, validate=validate)

    def backward(self, model: Any) -> None:
        model.backward()


class MultiSampleBound:
    """A bound on log p(x) from K importance samples per example; subclasses say how the
    samples' log weights combine (:meth:`bound`) and with which weights the gradient sums
    their gradients (:meth:`weights`, the derivative of the bound in each ``log w_k``)."""

    name = ""
    multi_sample = True
    estimators: tuple[str, ...] = ("reparam",)

    def __init__(self, k: int, estimator: Any) -> None:
        self.k, self.estimator = k, estimator
        self._saved: tuple | None = None

    @classmethod
    def from_config(cls, config: Any) -> MultiSampleBound:
        return cls(config.k, ESTIMATORS[config.estimator]())

    def noise_shape(self, n: int, latent_dim: int) -> tuple[int, ...]:
        """``eps`` of a batch of ``n``: K draws of z per example."""
        return (n, self.k, latent_dim)

    def bound(self, log_w: Array, xp: ModuleType) -> Array:
        """The bound of each example (B,) from its samples' log weights (B, K)."""
        raise NotImplementedError

    def weights(self, log_w: Array, xp: ModuleType) -> Array:
        """``w_tilde``, (B, K): the derivative of the bound in each ``log w_k``."""
        raise NotImplementedError

    def forward(self, model: Any, x: Array, y: Array | None = None, eps: Array | None = None,
                kl_weight: float | None = None, validate: bool = True) -> LossParts:  # fmt: skip
        """Minus the bound, summed over the batch; keeps what :meth:`backward` needs.

        ``eps`` is (B, K, L), any K; ``kl_weight`` may only be 1 (there is no separate KL term).
        """
        check_kl_weight(1.0 if kl_weight is None else kl_weight, True, self.name)
        x, onehot, eps = loss_inputs(model, x, y, eps, validate, k=self.k)
        samples = importance_samples(model, x, onehot, eps, grad=True)
        log_w = samples.log_px + samples.log_pz - samples.log_qz  # (B, K)
        w_tilde = self.weights(log_w, model.xp)  # d bound / d log w_k
        n, k = log_w.shape
        # The gradient of -log p(x|z_k) in the decoder output, each sample's row times its weight.
        d_logits = w_tilde.reshape(n * k, 1) * samples.d_logits
        self._saved = (d_logits, w_tilde, samples.z, samples.eps, samples.sigma)
        kl, _, _ = kl_standard_normal(samples.mu, samples.logvar, model.xp)
        return LossParts.of_bound(self.bound(log_w, model.xp), samples.log_px, kl)

    def backward(self, model: Any) -> None:
        """The gradient of minus the bound, into ``model.grads``.

        1. ``d_logits = w~_k d(-log p(x|z_k))/d logits``, from :meth:`forward`.
        2. The decoder's backward pass: decoder gradients ``-sum_k w~_k grad log p(x|z_k)``, and
           ``-w~_k d log p(x|z_k)/dz`` per sample (the context's first L columns).
        3. Adding the prior's ``-w~_k d log p(z)/dz = w~_k z_k`` gives ``-w~_k g_k``.
        4. The estimator's ``dL/dmu``, ``dL/dlogvar`` of the bound L, negated for the loss.
        5. The head's and encoder's backward passes, as for the ELBO.
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first (each forward allows one)")
        (d_logits, w_tilde, z, eps, sigma), self._saved = self._saved, None
        n, k, latent = z.shape
        d_z = model.decoder.backward(d_logits)[:, :latent].reshape(n, k, latent)  # 2
        w_tilde_g = -(d_z + w_tilde[:, :, None] * z)  # 3
        d_mu, d_logvar = self.estimator.encoder_gradient(w_tilde_g, w_tilde, eps, sigma)  # 4
        model.posterior_backward(-d_mu, -d_logvar)  # 5


class KSampleVAE(MultiSampleBound):
    """The k-sample VAE bound, ``(1/K) sum_k log w_k``: every sample weighs ``1/K``."""

    name = "vae"

    def bound(self, log_w: Array, xp: ModuleType) -> Array:
        return log_w.mean(axis=1)

    def weights(self, log_w: Array, xp: ModuleType) -> Array:
        return xp.full(log_w.shape, 1.0 / log_w.shape[1], dtype=log_w.dtype)


class IWAE(MultiSampleBound):
    """The importance-weighted bound, ``log (1/K) sum_k w_k``: weights ``w~ = softmax(log w)``."""

    name = "iwae"
    estimators = tuple(ESTIMATORS)  # STL and DReG estimate this bound's encoder gradient

    def bound(self, log_w: Array, xp: ModuleType) -> Array:
        return log_mean_exp(log_w, xp)

    def weights(self, log_w: Array, xp: ModuleType) -> Array:
        return normalized_weights(log_w, xp)


#: The training objectives by the name a configuration gives (``ModelConfig.objective``).
OBJECTIVES = {"elbo": ELBO, "vae": KSampleVAE, "iwae": IWAE}
