r"""Multi-sample bounds on log p(x): the k-sample VAE bound, the IWAE bound, and the encoder
gradient estimators of the IWAE bound (plain reparameterized, STL, DReG).

Notation, per example (K samples, latent size L)::

    z_k = mu + sigma * eps_k,            eps_k ~ N(0, I),  sigma = exp(logvar / 2)
    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)

    k-sample VAE bound   L_vae  = (1/K) sum_k log w_k
    IWAE bound           L_iwae = log (1/K) sum_k w_k          (Burda et al. 2016)

Both are lower bounds on log p(x) (Jensen: E[log mean w] <= log E[mean w] = log p(x)); the IWAE
bound rises to log p(x) as K grows, the VAE bound does not (it is the ELBO for every K, with
less noise). K = 1 gives one and the same quantity: the ELBO with a *sampled* KL,
``log p(x|z) - [log q(z|x) - log p(z)]``.

The gradient, in four steps (written out for students; :mod:`numpy_vae.objectives` runs them).

1. **Weights.** ``d L_iwae / d log w_k = w_k / sum_j w_j = w~_k`` (the derivative of a
   log-sum-exp is a softmax), so ``grad L_iwae = sum_k w~_k grad log w_k``: each sample's ELBO
   gradient, weighted by how well it explains x. For the VAE bound the weights are ``1/K``.
   The weights are not differentiated again: they are the chain rule's coefficients.
2. **The total derivative of log w_k.** With eps fixed, ``z_k`` depends on ``mu`` and
   ``logvar``; ``log q(z_k|x)`` depends on them twice, through ``z_k`` (the *path*) and through
   its own parameters (the *score*). Writing ``log q`` at ``z_k = mu + sigma eps_k``,

       log q(z_k|x) = -1/2 sum_j (eps_kj^2 + logvar_j + log 2 pi)

   so its total derivative is ``0`` in ``mu`` and ``-1/2`` in each ``logvar_j``: path and score
   cancel in ``mu``, and leave ``-1/2`` in ``logvar``. The rest of ``log w_k`` reaches the
   encoder through ``z_k`` only, with ``g_k = d/dz [log p(x|z) + log p(z)]`` at ``z_k`` (the
   decoder's backward pass, minus ``z_k`` for the prior) and ``dz/dmu = 1``,
   ``dz/dlogvar = sigma eps_k / 2``.
3. **The plain reparameterized estimator** (steps 1 and 2 together)::

       dL/dmu     = sum_k w~_k g_k
       dL/dlogvar = sum_k w~_k g_k sigma eps_k / 2  +  1/2

4. **The decoder** sees only ``log p(x|z_k)``: ``dL/dtheta = sum_k w~_k grad_theta
   log p(x|z_k)``, every estimator alike.

The path derivative. Holding ``q``'s own parameters fixed (the score dropped), ``log w_k``
changes with ``z_k`` at the rate ``a_k = g_k - d log q/dz = g_k + eps_k / sigma`` (since
``d log q / dz = -(z - mu) / sigma^2 = -eps / sigma``). STL and DReG use only this:

- **STL** (Roeder et al. 2017), the gradient of ``log mean exp(log p(x, z_k) - log q(z_k; held))``::

      dL/dmu = sum_k w~_k a_k,        dL/dlogvar = sum_k w~_k a_k sigma eps_k / 2

  The dropped term is ``sum_k w~_k d/dphi log q(z_k; phi)`` at fixed z. For K = 1 (w~ = 1) it
  is the score function, whose mean is 0, so STL is unbiased for the ELBO's gradient. For
  K > 1 the weights depend on z and the dropped term's mean is not 0: STL is *biased* for the
  IWAE bound's gradient (Tucker et al. 2018, section 4); it has lower variance near q = p(z|x).
- **DReG** (Tucker et al. 2018), the doubly reparameterized gradient: the score term of the
  plain estimator is itself rewritten by a second reparameterization (the identity
  ``E_q[f(z) d/dphi log q] = E_q[df/dz dz/dphi]`` applied to ``f = w~_k``), which turns the
  weight ``w~_k`` into ``w~_k^2``::

      dL/dmu = sum_k w~_k^2 a_k,      dL/dlogvar = sum_k w~_k^2 a_k sigma eps_k / 2

  Its mean is *exactly* the IWAE bound's encoder gradient (unbiased, for every K), and its
  signal-to-noise ratio does not fall as K grows (Rainforth et al. 2018 show that the plain
  estimator's does, like 1/sqrt(K)).

Only the plain estimator is the gradient of the bound itself; STL and DReG are gradients of
surrogates with some quantities held (``q``'s parameters inside its density; DReG also the
weights ``w~_k^2``), which the tests check against finite differences of those surrogates
(:func:`stl_surrogate`, :func:`dreg_surrogate`).

How the code gets ``w~_k g_k`` without dividing by a weight: the decoder's backward pass is
linear in its output gradient row by row, so running it with the weights on each sample's row
(which the decoder's parameter gradient needs anyway) returns ``w~_k d log p(x|z_k)/dz``.
Every formula above is a weighted sum of terms linear in ``g_k``, so the estimators take
``w_tilde_g = w~_k g_k`` and the weights ``w_tilde`` themselves (for the VAE bound, ``1/K``).

The objects. The objectives that train on these bounds are in :mod:`numpy_vae.objectives`
(:class:`~numpy_vae.objectives.KSampleVAE`, :class:`~numpy_vae.objectives.IWAE`); here are
their forward pieces (:func:`importance_samples`) and the encoder gradient estimators, one class
each with one method (:class:`Reparameterized`, :class:`StickingTheLanding`,
:class:`DoublyReparameterized`). A new estimator is a new class and an entry in
:data:`ESTIMATORS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from numpy_vae.inputs import loss_inputs

Array = Any
LOG_2PI = math.log(2 * math.pi)


def log_prior(z: Array) -> Array:
    """``log N(z; 0, I)`` summed over the last axis: ``-1/2 sum_j (z_j^2 + log 2 pi)``."""
    return -0.5 * (z * z + LOG_2PI).sum(axis=-1)


def log_posterior(eps: Array, logvar: Array) -> Array:
    """``log q(z_k|x)`` at ``z_k = mu + sigma eps_k``, (B, K), from ``eps`` (B, K, L) and
    ``logvar`` (B, L): ``-1/2 sum_j (eps_kj^2 + logvar_j + log 2 pi)``.

    (``(z - mu) / sigma`` is ``eps`` itself, so no division by sigma is needed; with eps fixed
    this is also the form whose derivative in ``logvar`` is the total one, ``-1/2``.)
    """
    return -0.5 * (eps * eps + logvar[:, None, :] + LOG_2PI).sum(axis=-1)


def log_mean_exp(log_w: Array, xp: ModuleType) -> Array:
    r"""``log (1/K) sum_k exp(log_w[:, k])`` per row, (B,), without overflow or underflow.

    .. math:: \log \tfrac1K \textstyle\sum_k e^{a_k} = m + \log \tfrac1K \sum_k e^{a_k - m},
              \qquad m = \max_k a_k

    Every shifted exponent is <= 0 and the largest is exactly 0, so the sum lies in [1, K]:
    it neither overflows nor underflows to a log of 0. Unshifted, log w of an MNIST image is
    around -100 nats: in float32 ``exp`` leaves the normal range below about -87 (subnormal
    results) and underflows to 0 below about -104; in float64 below about -708 and -745.
    """
    m = log_w.max(axis=1, keepdims=True)
    return m[:, 0] + xp.log(xp.exp(log_w - m).mean(axis=1))


def normalized_weights(log_w: Array, xp: ModuleType) -> Array:
    """``w~ = softmax(log w)`` along the samples of each example, (B, K), shifted as
    :func:`log_mean_exp` is. Row b's weights belong to row b's samples only."""
    e = xp.exp(log_w - log_w.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ImportanceSamples:
    """K samples of z per example and the log-densities of their weights (:func:`samples`).

    Attributes
    ----------
    mu, logvar, sigma : (B, L) the posterior's parameters and ``exp(logvar / 2)``
    eps, z : (B, K, L) the noise and the samples ``z_k = mu + sigma eps_k``
    log_px, log_pz, log_qz : (B, K) ``log p(x|z_k)``, ``log p(z_k)``, ``log q(z_k|x)``
    d_logits : (B K, D) the gradient of ``-log p(x|z_k)`` in the decoder output, rows
        example-major (row ``b K + k`` is sample k of example b); None unless asked for
    """

    mu: Array
    logvar: Array
    sigma: Array
    eps: Array
    z: Array
    log_px: Array
    log_pz: Array
    log_qz: Array
    d_logits: Array | None = None

    @property
    def log_w(self) -> Array:
        """``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)``, (B, K)."""
        return self.log_px + self.log_pz - self.log_qz


def samples(
    model: Any, x: Array, y: Array | None = None, eps: Array | None = None, validate: bool = True
) -> ImportanceSamples:
    """K samples of z per example and their log-densities; ``eps`` (B, K, L) is drawn from
    ``model.rng`` with ``K = model.objective.k`` if omitted. Values only, in fresh arrays."""
    x, onehot, eps = loss_inputs(model, x, y, eps, validate, k=model.objective.k)
    return importance_samples(model, x, onehot, eps, grad=False)


def importance_samples(
    model: Any, x: Array, onehot: Array | None, eps: Array, grad: bool
) -> ImportanceSamples:
    """:func:`samples` on checked inputs; with ``grad``, also ``d_logits``."""
    xp = model.xp
    n, k, latent = eps.shape
    mu, logvar = model.posterior(x, onehot)
    sigma = xp.exp(0.5 * logvar)
    z = mu[:, None, :] + sigma[:, None, :] * eps  # (B, K, L)
    # Example-major rows: sample k of example b is row b K + k, beside its own x and label.
    x_rows = repeat_rows(x, k, xp)
    logits = model.decoder.forward(model.context(z.reshape(n * k, latent), onehot, k), x_rows)
    if grad:
        nll, d_logits = model.likelihood.nll(logits, x_rows)
    else:
        nll, d_logits = -model.likelihood.log_prob(logits, x_rows), None
    log_px = -nll.reshape(n, k)
    log_qz = log_posterior(eps, logvar)
    return ImportanceSamples(mu, logvar, sigma, eps, z, log_px, log_prior(z), log_qz, d_logits)


def repeat_rows(a: Array | None, k: int, xp: ModuleType) -> Array | None:
    """Each row of ``a`` ``k`` times in a row (row b goes to rows b k .. b k + k - 1)."""
    return a if a is None or k == 1 else xp.repeat(a, k, axis=0)


class Reparameterized:
    """The plain estimator, the bound's own gradient: ``dL/dmu = sum_k w~_k g_k``,
    ``dL/dlogvar = sum_k w~_k g_k sigma eps_k / 2 + 1/2``."""

    name = "reparam"

    def encoder_gradient(
        self, w_tilde_g: Array, w_tilde: Array, eps: Array, sigma: Array
    ) -> tuple[Array, Array]:
        """``dL/dmu`` and ``dL/dlogvar`` (B, L) of the bound L, from ``w_tilde_g = w~_k g_k``
        (B, K, L), the weights ``w_tilde`` (B, K), ``eps`` (B, K, L) and ``sigma`` (B, L)."""
        half_sigma_eps = 0.5 * sigma[:, None, :] * eps  # dz_k/dlogvar
        d_mu = w_tilde_g.sum(axis=1)
        d_logvar = (w_tilde_g * half_sigma_eps).sum(axis=1) + 0.5  # + the total d log q term
        return d_mu, d_logvar


class StickingTheLanding(Reparameterized):
    """STL: the path derivative alone, ``dL/dmu = sum_k w~_k a_k``,
    ``dL/dlogvar = sum_k w~_k a_k sigma eps_k / 2``, with ``a_k = g_k + eps_k / sigma``."""

    name = "stl"

    def encoder_gradient(
        self, w_tilde_g: Array, w_tilde: Array, eps: Array, sigma: Array
    ) -> tuple[Array, Array]:
        w_tilde, sigma = w_tilde[:, :, None], sigma[:, None, :]
        half_sigma_eps = 0.5 * sigma * eps
        w_tilde_a = self.reweighted(w_tilde_g + w_tilde * eps / sigma, w_tilde)  # w~_k a_k
        return w_tilde_a.sum(axis=1), (w_tilde_a * half_sigma_eps).sum(axis=1)

    def reweighted(self, w_tilde_a: Array, w_tilde: Array) -> Array:
        """The path derivatives as the estimator weighs them: ``w~_k a_k`` itself."""
        return w_tilde_a


class DoublyReparameterized(StickingTheLanding):
    """DReG: STL with the weights squared, ``dL/dmu = sum_k w~_k^2 a_k``,
    ``dL/dlogvar = sum_k w~_k^2 a_k sigma eps_k / 2``."""

    name = "dreg"

    def reweighted(self, w_tilde_a: Array, w_tilde: Array) -> Array:
        """``w~_k^2 a_k``."""
        return w_tilde * w_tilde_a


#: The encoder gradient estimators of a multi-sample bound (``ModelConfig.estimator``).
ESTIMATORS = {"reparam": Reparameterized, "stl": StickingTheLanding, "dreg": DoublyReparameterized}


# ---------------------------------------------------------------------- surrogates, for checks
def stl_surrogate(
    log_joint: Array, z: Array, mu_held: Array, logvar_held: Array, xp: ModuleType
) -> Array:
    """The function whose exact gradient STL is: ``log mean exp(log p(x, z_k) - log q(z_k;
    mu_held, logvar_held))`` per example, (B,), with q's parameters held at given values while
    ``z`` (and ``log_joint = log p(x|z) + log p(z)``, (B, K)) move with the parameters."""
    return log_mean_exp(log_joint - _log_q_at(z, mu_held, logvar_held, xp), xp)


def dreg_surrogate(
    log_joint: Array,
    z: Array,
    mu_held: Array,
    logvar_held: Array,
    w2_held: Array,
    xp: ModuleType,
) -> Array:
    """The function whose exact encoder gradient DReG is: ``sum_k w2_held_k (log p(x, z_k) -
    log q(z_k; held))`` per example, (B,), with the squared weights and q's parameters held."""
    return (w2_held * (log_joint - _log_q_at(z, mu_held, logvar_held, xp))).sum(axis=1)


def _log_q_at(z: Array, mu: Array, logvar: Array, xp: ModuleType) -> Array:
    """``log N(z_k; mu, exp(logvar))`` at arbitrary ``z`` (B, K, L), (B, K)."""
    diff = z - mu[:, None, :]
    inv_var = xp.exp(-logvar)[:, None, :]
    return -0.5 * (diff * diff * inv_var + logvar[:, None, :] + LOG_2PI).sum(axis=-1)
