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

The gradient, in four steps (written out for students; :mod:`numpy_vae.model` runs them).

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
linear in its output gradient row by row, so running it with the IWAE weights on each sample's
row (which the decoder's parameter gradient needs anyway) returns ``w~_k d log p(x|z_k)/dz``.
Every formula above is a weighted sum of terms linear in ``g_k``, so the functions below take
``wg = c_k g_k`` (``c`` the decoder's weights) and the weights ``c`` themselves.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

Array = Any

#: The training objectives: the analytic-KL ELBO, the k-sample VAE bound, the IWAE bound.
OBJECTIVES = ("elbo", "vae", "iwae")
#: The encoder gradient estimators of the IWAE bound.
ESTIMATORS = ("reparam", "stl", "dreg")

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
    it neither overflows nor underflows to a log of 0. Unshifted, log w of an MNIST image
    (around -100 nats) underflows ``exp`` in float32, and around -745 in float64.
    """
    m = log_w.max(axis=1, keepdims=True)
    return m[:, 0] + xp.log(xp.exp(log_w - m).mean(axis=1))


def normalized_weights(log_w: Array, xp: ModuleType) -> Array:
    """``w~ = softmax(log w)`` along the samples of each example, (B, K), shifted as
    :func:`log_mean_exp` is. Row b's weights belong to row b's samples only."""
    e = xp.exp(log_w - log_w.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sample_weights(objective: str, log_w: Array, xp: ModuleType) -> Array:
    """``d bound / d log w_k``, (B, K): ``w~`` for the IWAE bound, ``1/K`` for the VAE bound."""
    if objective == "iwae":
        return normalized_weights(log_w, xp)
    return xp.full(log_w.shape, 1.0 / log_w.shape[1], dtype=log_w.dtype)


def bound(objective: str, log_w: Array, xp: ModuleType) -> Array:
    """The bound per example, (B,): :func:`log_mean_exp` (IWAE) or the mean of ``log_w`` (VAE)."""
    if objective == "iwae":
        return log_mean_exp(log_w, xp)
    return log_w.mean(axis=1)


def encoder_gradient(
    estimator: str, wg: Array, c: Array, eps: Array, sigma: Array
) -> tuple[Array, Array]:
    """The bound's gradient in ``mu`` and ``logvar``, each (B, L), by one estimator.

    Parameters
    ----------
    estimator : {"reparam", "stl", "dreg"}
        See the module docstring for the formulas and which are unbiased.
    wg : array, shape (B, K, L)
        ``c_k g_k``: the weighted ``d/dz [log p(x|z) + log p(z)]`` at each sample.
    c : array, shape (B, K)
        The weights the decoder used: ``w~`` (IWAE) or ``1/K`` (VAE).
    eps : array, shape (B, K, L)
    sigma : array, shape (B, L)

    Returns
    -------
    d_mu, d_logvar : arrays, shape (B, L)
        Gradients of the bound (to be maximised); the model negates them for its loss.
    """
    c = c[:, :, None]
    sigma = sigma[:, None, :]
    half_sigma_eps = 0.5 * sigma * eps  # dz_k/dlogvar
    if estimator == "reparam":
        d_mu = wg.sum(axis=1)
        d_logvar = (wg * half_sigma_eps).sum(axis=1) + 0.5  # + the total d log q term
        return d_mu, d_logvar
    wa = wg + c * eps / sigma  # c_k a_k = c_k (g_k + eps_k / sigma): the path derivative
    if estimator == "dreg":
        wa = c * wa  # the weights squared
    return wa.sum(axis=1), (wa * half_sigma_eps).sum(axis=1)


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
