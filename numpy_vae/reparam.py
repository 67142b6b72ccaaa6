"""The reparameterization trick as an explicit step with its own backward pass."""

from __future__ import annotations

from types import ModuleType
from typing import Any

Array = Any


def reparameterize(mu: Array, logvar: Array, eps: Array, xp: ModuleType) -> tuple[Array, tuple]:
    r"""Draw z ~ N(mu, exp(logvar)) as a differentiable function of (mu, logvar).

    .. math:: z = \mu + \sigma \odot \epsilon,\qquad \sigma = \exp(\tfrac12 \log\sigma^2),
              \qquad \epsilon \sim \mathcal N(0, I)

    The standard deviation is ``exp(logvar / 2)``: the *variance* is ``exp(logvar)``.

    Parameters
    ----------
    mu, logvar : array, shape (B, L)
    eps : array, shape (B, L)
        Standard normal noise, passed in so that the step is deterministic and checkable.
    xp : module
        Array module.

    Returns
    -------
    z : array, shape (B, L)
    cache : tuple
        What :func:`reparameterize_backward` needs: ``(eps, sigma)``.
    """
    sigma = xp.exp(0.5 * logvar)
    z = mu + sigma * eps
    return z, (eps, sigma)


def reparameterize_backward(d_z: Array, cache: tuple) -> tuple[Array, Array]:
    r"""Route dL/dz into dL/dmu and dL/dlogvar.

    .. math:: \frac{\partial L}{\partial \mu} = \frac{\partial L}{\partial z},\qquad
              \frac{\partial L}{\partial \log\sigma^2}
              = \frac{\partial L}{\partial z} \odot \epsilon \odot \tfrac12 \sigma

    Derivation: ``z[b, j] = mu[b, j] + sigma[b, j] * eps[b, j]`` depends on its own ``mu`` and
    ``logvar`` entry only, with ``eps`` held fixed (it is an input, not a function of the
    parameters: that is the trick). So ``dz/dmu = 1`` and
    ``dz/dlogvar = eps * dsigma/dlogvar = eps * sigma / 2``, since
    ``sigma = exp(logvar / 2)``; the chain rule multiplies each by ``d_z``. Why the sample is
    written this way, and what the alternative (the score-function estimator) costs in
    variance: :mod:`numpy_vae.experiments.estimators`.

    Parameters
    ----------
    d_z : array, shape (B, L)
    cache : tuple
        From :func:`reparameterize`.

    Returns
    -------
    d_mu, d_logvar : arrays, shape (B, L)
    """
    eps, sigma = cache
    d_mu = d_z
    d_logvar = d_z * eps * sigma * 0.5
    return d_mu, d_logvar
