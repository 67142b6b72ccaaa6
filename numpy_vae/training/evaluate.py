"""Beyond the single-sample ELBO: importance-weighted log-likelihood, collapse diagnostics.

Importance-weighted estimate (Burda, Grosse & Salakhutdinov 2016), with z_k ~ q(z | x):

.. math::
    \\log p(x) \\approx \\mathcal L_K = \\log \\frac1K \\sum_{k=1}^K
        \\frac{p(x \\mid z_k)\\, p(z_k)}{q(z_k \\mid x)},
    \\qquad \\mathbb E[\\mathcal L_1] = \\mathrm{ELBO} \\le \\mathbb E[\\mathcal L_K]
    \\le \\mathbb E[\\mathcal L_{K+1}] \\to \\log p(x).

Active units (Burda et al. 2016): latent dimension j is active when
:math:`\\mathrm{Var}_x\\, \\mathbb E_{q(z|x)}[z_j] > 0.01`, i.e. its posterior mean moves with
the data; a collapsed dimension has mean 0 and variance 1 whatever x is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from numpy_vae.backend import to_host
from numpy_vae.inputs import check_batch
from numpy_vae.model import VAE
from numpy_vae.training.progress import Progress

Array = Any
LOG_2PI = math.log(2 * math.pi)


def iw_log_likelihood(
    model: VAE,
    x: Array,
    y: Array | None = None,
    k: int = 1000,
    rng: Any = None,
    max_rows: int = 8192,
    encode_batch: int = 1000,
    progress: Progress | None = None,
) -> numpy.ndarray:
    """Importance-weighted estimate of log p(x) for each example, with ``k`` samples.

    Memory is bounded by ``max_rows`` decoder rows per pass (about ``max_rows * input_dim``
    floats), whatever ``k`` and the number of examples: several examples share a pass when
    ``k`` is small, and one example's samples are split over passes when ``k`` is large. The
    ``k`` log-weights of an example are combined by a stable log-sum-exp in float64.

    Parameters
    ----------
    model : VAE
    x : array (N, input_dim)
        Inputs as the model takes them.
    y : int array (N,), optional
        Labels for a conditional model (then the estimate is of log p(x | y)).
    k : int
        Importance samples per example.
    rng : generator, optional
        Source of the noise (``standard_normal(size, dtype=...)``); default the model's own.
    max_rows : int
        Decoder rows per pass.
    encode_batch : int
        Examples per encoder pass.
    progress : Progress, optional
        Told how many examples are done after every decoder pass (it reads nothing from the
        device).

    Returns
    -------
    numpy.ndarray (N,) float64
        The estimates, in nats (log p(x) <= 0 for binary data; a density for grey levels).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of importance samples k must be a positive integer, got {k}")
    xp, latent = model.xp, model.latent_dim
    rng = model.rng if rng is None else rng
    x, y = check_batch(model, x, y)  # once, at the boundary; the passes below trust it
    n = x.shape[0]
    out = xp.empty(n, dtype=numpy.float64)  # on the device; one transfer at the end
    per_pass = max(1, max_rows // k)  # examples per decoder pass
    chunk = min(k, max_rows)  # samples of one example per pass
    for start in range(0, n, encode_batch):
        xb = x[start : start + encode_batch]
        yb = None if y is None else y[start : start + encode_batch]
        mu, logvar = model.encode(xb, yb, validate=False)
        sigma = xp.exp(0.5 * logvar)
        # log q(z|x) needs only eps: (z - mu) / sigma = eps.
        log_det = (0.5 * logvar).sum(axis=1, dtype=numpy.float64)
        for i in range(0, xb.shape[0], per_pass):
            rows = slice(i, min(i + per_pass, xb.shape[0]))
            m = rows.stop - rows.start
            log_w = xp.empty((m, k), dtype=numpy.float64)
            for first in range(0, k, chunk):
                count = min(chunk, k - first)  # samples of this pass
                eps = rng.standard_normal((m, count, latent), dtype=model.dtype)
                z = mu[rows, None, :] + sigma[rows, None, :] * eps
                y_rows = None if yb is None else yb[rows]
                log_px_z = model.sample_log_likelihood(xb[rows], z, y_rows)
                log_pz = -0.5 * (z * z).sum(axis=2, dtype=numpy.float64) - 0.5 * latent * LOG_2PI
                log_qz = (
                    -0.5 * (eps * eps).sum(axis=2, dtype=numpy.float64)
                    - log_det[rows, None]
                    - 0.5 * latent * LOG_2PI
                )
                log_w[:, first : first + count] = log_px_z + log_pz - log_qz
            top = log_w.max(axis=1, keepdims=True)
            lse = top[:, 0] + xp.log(xp.exp(log_w - top).sum(axis=1))
            out[start + rows.start : start + rows.stop] = lse - math.log(k)
            if progress is not None:
                progress.update(start + rows.stop)
    if progress is not None:
        progress.close()
    return model.backend.to_host(out)


def test_subset(x: Array, n: int | None, xp: Any, seed: int = 0) -> tuple[numpy.ndarray, Array]:
    """The test images a study measures on: ``n`` rows of ``x`` drawn at random once (from
    ``seed``, kept in their order), or all of them when ``n`` is None or at least ``len(x)``.

    Returns the row indices (host) and the rows: ``x`` itself for the whole set (no copy of all
    of it), a gathered copy for a subset. Random, not the first ``n``: MNIST's test set is
    ordered by writer group.
    """
    n_test = int(x.shape[0])
    if n is None or n >= n_test:
        return numpy.arange(n_test), x
    index = numpy.sort(numpy.random.default_rng(seed).permutation(n_test)[:n])
    return index, x[xp.asarray(index)]


def posterior_means(model: VAE, x: Array, y: Array | None = None, batch: int = 1000) -> Array:
    """E_q[z | x] for every example, (N, latent_dim), an array of the model's backend."""
    x, y = check_batch(model, x, y)  # once, at the boundary; the batches below trust it
    parts = []
    for start in range(0, x.shape[0], batch):
        yb = None if y is None else y[start : start + batch]
        parts.append(model.encode(x[start : start + batch], yb, validate=False)[0])
    return model.xp.concatenate(parts, axis=0)


def active_units(mu: Array, threshold: float = 0.01) -> tuple[int, numpy.ndarray]:
    """Number of latent dimensions whose posterior mean varies over the data by more than
    ``threshold``, and each dimension's variance (host array).

    ``mu`` (N, L) may live on any backend; the variances are computed there and only those L
    numbers are copied to the host.
    """
    variance = to_host(mu.var(axis=0, dtype=numpy.float64))
    return int((variance > threshold).sum()), variance
