"""Disentanglement metrics: the mutual information gap and the FactorVAE score.

Both compare a representation ``z = represent(v)`` (latent means, a function of the factor
tuples ``v`` through the images they draw) with the factors ``v_1..v_K`` that made the data,
on factor tuples drawn by ``sample_factors(n, rng)`` (e.g.
:meth:`numpy_vae.training.dsprites.FactorGrid.sample_factors`). For a VAE on dSprites::

    grid = FactorGrid()
    represent = encoder_representation(model, grid)  # the posterior means of rendered images
    mig = compute_mig(represent, grid.sample_factors, np.random.default_rng(0)).score
    fvae = factor_vae_score(represent, grid.sample_factors, np.random.default_rng(1)).score

**Mutual information gap** (Chen, Li, Grosse and Duvenaud 2018, "Isolating Sources of
Disentanglement in VAEs"):

.. math::

    \\mathrm{MIG} = \\frac{1}{K} \\sum_{k=1}^{K} \\frac{1}{H(v_k)}
    \\Big( I(z_{j^{(k)}}; v_k) - \\max_{j \\ne j^{(k)}} I(z_j; v_k) \\Big),
    \\qquad j^{(k)} = \\arg\\max_j I(z_j; v_k):

for each factor, the gap between the two latent dimensions that know most about it, in units
of the factor's entropy. 1 when each factor is captured by one dimension alone; 0 when a
factor is known by no dimension, or equally by two. The information is estimated as
``disentanglement_lib`` does (Locatello et al. 2019, ``evaluation/metrics/mig.py`` and
``utils.py``): each latent mean discretized into 20 equal-width bins between its smallest and
largest value, then the plug-in (empirical) entropy and mutual information of discrete
variables, in nats, on 10,000 sampled tuples. (Chen et al. estimate ``I(z_j; v_k)`` from the
encoder's distribution ``q(z_j | x)`` over the whole data set instead.) Binning costs the
factors themselves some information: a factor of more values than bins loses the difference
between values that share a bin, so the factors of dSprites score about 0.9, not 1.

**FactorVAE score** (Kim and Mnih 2018, "Disentangling by Factorising"): fix one
factor ``k`` chosen at random, draw ``L`` tuples with the other factors free, divide each latent
dimension by its standard deviation over the full data (so that a dimension's units do not
matter), take the dimension ``d`` of least variance over the ``L``: the pair ``(d, k)`` is one
vote. A majority-vote classifier maps each dimension to the factor that gave it most training
votes; the score is its accuracy on held-out votes. Kim and Mnih first prune the dimensions
that have collapsed to the prior; here, as in ``disentanglement_lib``, a dimension whose
standard deviation over the data is below 0.05 is pruned and never chosen, and with none left
the score is 0. The sizes are ``disentanglement_lib``'s (its ``factor_vae.py`` and its study's
gin settings), each an argument: ``L = 64``, 10,000 training and 5,000 evaluation votes, 10,000
tuples for the spread over the data.

Each piece is a function of its own (:func:`discrete_entropy`, :func:`discrete_mutual_information`,
:func:`information_gaps`, :func:`data_variance`, :func:`active_dimensions`), so the tests can
plant a bug in one piece and see the known answers catch it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from numpy_vae.training.data import scale_images
from numpy_vae.training.dsprites import FactorGrid, render

#: ``sample_factors(n, rng)``: n factor tuples as an int array (n, K).
SampleFactors = Callable[[int, np.random.Generator], np.ndarray]
#: ``represent(factors)``: the representation (N, D) of the images that factor tuples draw.
Represent = Callable[[np.ndarray], np.ndarray]

#: disentanglement_lib's settings (its unsupervised study's gin files).
MIG_BINS, MIG_POINTS = 20, 10_000
FACTOR_VAE_BATCH, FACTOR_VAE_TRAIN, FACTOR_VAE_EVAL, FACTOR_VAE_VARIANCE = 64, 10_000, 5_000, 10_000
PRUNE_BELOW = 0.05


# -------------------------------------------------------------------------------- information


def histogram_discretize(latents: np.ndarray, n_bins: int = MIG_BINS) -> np.ndarray:
    """Each column cut into ``n_bins`` equal-width bins between its smallest and largest value.

    Parameters
    ----------
    latents : float array (N, D)

    Returns
    -------
    int64 array (N, D)
        Bin numbers ``0..n_bins - 1``; a constant column is all in bin 0.
    """
    latents = np.asarray(latents, dtype=np.float64)
    low, high = latents.min(axis=0), latents.max(axis=0)
    width = np.where(high > low, high - low, 1.0)
    bins = np.floor((latents - low) / width * n_bins).astype(np.int64)
    return np.minimum(bins, n_bins - 1)  # the largest value belongs to the last bin


def _relabel(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Values as labels ``0..n - 1`` and their number ``n``."""
    distinct, labels = np.unique(values, return_inverse=True)
    return labels.reshape(-1), len(distinct)


def discrete_entropy(labels: np.ndarray) -> np.ndarray:
    """The plug-in entropy of each column, ``H(a) = -sum_a p(a) log p(a)`` in nats.

    Parameters
    ----------
    labels : int array (N, K)

    Returns
    -------
    float64 array (K,)
    """
    entropies = []
    for column in np.asarray(labels).T:
        p = np.unique(column, return_counts=True)[1] / len(column)
        entropies.append(-np.sum(p * np.log(p)))
    return np.array(entropies)


def discrete_mutual_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """The plug-in mutual information of every column of ``codes`` with every factor,

    .. math::  I(a; b) = \\sum_{a, b} p(a, b) \\log \\frac{p(a, b)}{p(a)\\, p(b)}

    in nats, ``p`` the empirical frequencies of the N rows.

    Parameters
    ----------
    codes : int array (N, D)
        Discretized latents.
    factors : int array (N, K)

    Returns
    -------
    float64 array (D, K)
    """
    codes, factors = np.asarray(codes), np.asarray(factors)
    n = len(codes)
    information = np.zeros((codes.shape[1], factors.shape[1]))
    factor_labels = [_relabel(f) for f in factors.T]
    for j, column in enumerate(codes.T):
        a, n_a = _relabel(column)
        for k, (b, n_b) in enumerate(factor_labels):
            joint = np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b) / n
            p_a, p_b = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
            seen = joint > 0
            information[j, k] = np.sum(joint[seen] * np.log(joint[seen] / (p_a @ p_b)[seen]))
    return np.maximum(information, 0.0)  # a rounding -1e-17 is 0


def information_gaps(information: np.ndarray, entropy: np.ndarray) -> np.ndarray:
    """Per factor, ``(I(z_j(k); v_k) - max_{j != j(k)} I(z_j; v_k)) / H(v_k)``.

    Parameters
    ----------
    information : float array (D, K), D >= 2
        ``I(z_j; v_k)``.
    entropy : float array (K,)
        ``H(v_k)``, positive.

    Returns
    -------
    float64 array (K,)
    """
    top_two = -np.sort(-information, axis=0)[:2]  # the largest and second largest of each column
    return (top_two[0] - top_two[1]) / entropy


class MIG(NamedTuple):
    """The mutual information gap and what it is made of.

    Attributes
    ----------
    score : float
        The mean of ``gaps``.
    gaps : float array (K,)
        Each factor's normalized gap.
    mutual_information : float array (D, K)
        ``I(z_j; v_k)`` in nats.
    entropy : float array (K,)
        ``H(v_k)`` in nats.
    """

    score: float
    gaps: np.ndarray
    mutual_information: np.ndarray
    entropy: np.ndarray


def mutual_information_gap(latents: np.ndarray, factors: np.ndarray, n_bins: int = MIG_BINS) -> MIG:
    """MIG of a representation on given factor tuples (see the module's docstring).

    Parameters
    ----------
    latents : float array (N, D), D >= 2
        The representation of each tuple (latent means).
    factors : int array (N, K)
        The tuples; every factor must take at least two values among them.
    n_bins : int
        Bins per latent dimension.

    Returns
    -------
    MIG
    """
    latents, factors = np.asarray(latents), np.asarray(factors)
    if latents.ndim != 2 or factors.ndim != 2 or len(latents) != len(factors):
        raise ValueError(
            f"latents (N, D) and factors (N, K) must have one row per tuple, got "
            f"{latents.shape} and {factors.shape}"
        )
    if latents.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions: the gap is between two")
    entropy = discrete_entropy(factors)
    if (entropy == 0).any():
        raise ValueError(
            f"factors {np.flatnonzero(entropy == 0).tolist()} take one value: their entropy "
            "is 0 and their gap undefined"
        )
    information = discrete_mutual_information(histogram_discretize(latents, n_bins), factors)
    gaps = information_gaps(information, entropy)
    return MIG(float(np.mean(gaps)), gaps, information, entropy)


def compute_mig(
    represent: Represent,
    sample_factors: SampleFactors,
    rng: np.random.Generator,
    n_points: int = MIG_POINTS,
    n_bins: int = MIG_BINS,
) -> MIG:
    """MIG of ``represent`` on ``n_points`` tuples drawn by ``sample_factors``."""
    factors = sample_factors(n_points, rng)
    return mutual_information_gap(represent(factors), factors, n_bins)


# ----------------------------------------------------------------------------- FactorVAE score


def data_variance(
    represent: Represent, sample_factors: SampleFactors, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Each dimension's variance over the data (``n`` tuples): the square of the spread that
    Kim and Mnih divide by.

    Returns
    -------
    float64 array (D,)
    """
    return np.var(np.asarray(represent(sample_factors(n, rng)), dtype=np.float64), axis=0, ddof=1)


def active_dimensions(variance: np.ndarray, threshold: float = PRUNE_BELOW) -> np.ndarray:
    """The dimensions whose standard deviation over the data is at least ``threshold``: the
    others have collapsed to the prior (a constant mean) and are pruned.

    Returns
    -------
    bool array (D,)
    """
    return np.sqrt(variance) >= threshold


def factor_vae_votes(
    represent: Represent,
    sample_factors: SampleFactors,
    rng: np.random.Generator,
    n_votes: int,
    variance: np.ndarray,
    active: np.ndarray,
    batch_size: int = FACTOR_VAE_BATCH,
    chunk: int = 64,
) -> np.ndarray:
    """Votes ``(k, d)``: a factor ``k`` held fixed over ``batch_size`` tuples, and the active
    dimension ``d`` of least variance over them once divided by its variance over the data.

    Parameters
    ----------
    variance : float array (D,)
        :func:`data_variance`.
    active : bool array (D,)
        :func:`active_dimensions`; at least one.
    chunk : int
        Votes represented at once (``chunk * batch_size`` tuples per call of ``represent``).

    Returns
    -------
    int64 array (K, D)
        How many votes each (factor, dimension) pair got.
    """
    votes = None
    for start in range(0, n_votes, chunk):
        m = min(chunk, n_votes - start)
        factors = sample_factors(m * batch_size, rng).reshape(m, batch_size, -1)
        n_factors = factors.shape[2]
        fixed = rng.integers(0, n_factors, m)  # the factor k of each vote
        votes_rows = np.arange(m)
        factors[votes_rows, :, fixed] = factors[votes_rows, :1, fixed]  # the first tuple's value
        z = np.asarray(represent(factors.reshape(m * batch_size, n_factors)), dtype=np.float64)
        local = np.var(z.reshape(m, batch_size, -1), axis=1, ddof=1)  # (m, D)
        ratio = np.where(active, local / np.where(active, variance, 1.0), np.inf)
        least = np.argmin(ratio, axis=1)
        if votes is None:
            votes = np.zeros((n_factors, z.shape[1]), dtype=np.int64)
        np.add.at(votes, (fixed, least), 1)
    return votes


class FactorVAEScore(NamedTuple):
    """The FactorVAE score and its classifier.

    Attributes
    ----------
    score : float
        Accuracy of the majority-vote classifier on the evaluation votes.
    train_accuracy : float
        Its accuracy on the votes it was built from.
    classifier : int array (D,)
        The factor each dimension votes for.
    train_votes, eval_votes : int arrays (K, D)
    active : bool array (D,)
        The dimensions not pruned.
    """

    score: float
    train_accuracy: float
    classifier: np.ndarray
    train_votes: np.ndarray
    eval_votes: np.ndarray
    active: np.ndarray


def majority_vote_accuracy(classifier: np.ndarray, votes: np.ndarray) -> float:
    """The share of votes ``(k, d)`` whose factor is the one the classifier gives ``d``."""
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / votes.sum())


def factor_vae_score(
    represent: Represent,
    sample_factors: SampleFactors,
    rng: np.random.Generator,
    batch_size: int = FACTOR_VAE_BATCH,
    n_train: int = FACTOR_VAE_TRAIN,
    n_eval: int = FACTOR_VAE_EVAL,
    n_variance: int = FACTOR_VAE_VARIANCE,
    threshold: float = PRUNE_BELOW,
) -> FactorVAEScore:
    """The FactorVAE score of ``represent`` (see the module's docstring).

    Parameters
    ----------
    represent, sample_factors : callables
        :data:`Represent`, :data:`SampleFactors`.
    rng : numpy.random.Generator
    batch_size : int
        ``L``, the tuples of one vote.
    n_train, n_eval : int
        Votes that build the classifier, and votes that score it.
    n_variance : int
        Tuples for each dimension's variance over the data.
    threshold : float
        Dimensions of smaller standard deviation over the data are pruned.

    Returns
    -------
    FactorVAEScore
        Score 0 when every dimension is pruned.
    """
    variance = data_variance(represent, sample_factors, rng, n_variance)
    active = active_dimensions(variance, threshold)
    if not active.any():
        n_factors = sample_factors(1, rng).shape[1]
        none = np.zeros((n_factors, len(variance)), dtype=np.int64)
        return FactorVAEScore(0.0, 0.0, np.zeros(len(variance), np.int64), none, none, active)
    train = factor_vae_votes(represent, sample_factors, rng, n_train, variance, active, batch_size)
    classifier = np.argmax(train, axis=0)  # each dimension's most frequent factor
    evaluation = factor_vae_votes(
        represent, sample_factors, rng, n_eval, variance, active, batch_size
    )
    return FactorVAEScore(
        majority_vote_accuracy(classifier, evaluation),
        majority_vote_accuracy(classifier, train),
        classifier,
        train,
        evaluation,
        active,
    )


# ------------------------------------------------------------------------------ a VAE's means


def encoder_representation(model: Any, grid: FactorGrid, chunk: int = 1024) -> Represent:
    """The representation a VAE gives: its posterior means ``mu(x)`` of the images that factor
    tuples draw on ``grid`` (pixels ``k / 255``, as the trainer feeds them).

    Parameters
    ----------
    model : VAE or FastVAE
        Trained on ``grid``'s images (``input_dim == grid.pixels``), unconditional.
    grid : FactorGrid
    chunk : int
        Images drawn and encoded at once.

    Returns
    -------
    callable
        ``represent(factors (N, 5)) -> float64 array (N, latent_dim)``, on the host.
    """
    if model.input_dim != grid.pixels:
        raise ValueError(
            f"the model takes {model.input_dim} pixels, the grid draws {grid.pixels} "
            f"({grid.image_size} x {grid.image_size})"
        )

    def represent(factors: np.ndarray) -> np.ndarray:
        means = []
        for start in range(0, len(factors), chunk):
            images = render(factors[start : start + chunk], grid).reshape(-1, grid.pixels)
            mu = model.encode(scale_images(images, model.xp, model.dtype))[0]
            means.append(np.asarray(model.backend.to_host(mu), dtype=np.float64))
        return np.concatenate(means)

    return represent
