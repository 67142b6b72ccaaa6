"""The disentanglement metrics on representations whose answer is known (as disentanglement_lib
tests its own): the factors themselves, a constant, noise, duplicates.

Each known answer is also run on a broken copy of the metric, one piece of it replaced by a
planted bug (no normalization, a wrong entropy, no gap, no pruning), and must catch it: the test
asserts that the answer holds for the metric as written and fails for the broken copy. The
representations are functions of the factor tuples directly (no images): what is tested is the
metric, not an encoder.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import numpy_vae.experiments.disentanglement as metrics
from numpy_vae.experiments.disentanglement import (
    compute_mig,
    discrete_entropy,
    discrete_mutual_information,
    factor_vae_score,
    histogram_discretize,
    mutual_information_gap,
)
from numpy_vae.training.dsprites import DSPRITES, FactorGrid

# Every factor takes at most 5 values, fewer than the 20 bins: binning loses nothing.
GRID = FactorGrid(shapes=3, scales=3, orientations=4, positions_x=5, positions_y=5)
K = 5

#: The bugs, each a piece of the metric replaced (``monkeypatch`` on the module).
PLANTED = {
    "as written": {},
    "MIG not normalized by H(v_k)": {"discrete_entropy": lambda v: np.ones(v.shape[1])},
    "entropy in bits, information in nats": {
        "discrete_entropy": lambda v: discrete_entropy(v) / np.log(2)
    },
    "MIG without the gap: the top information alone": {
        "information_gaps": lambda information, entropy: information.max(axis=0) / entropy
    },
    "FactorVAE not normalized by the spread over the data": {
        "data_variance": lambda represent, sample, rng, n: np.ones(
            represent(sample(2, rng)).shape[1]
        )
    },
    "FactorVAE without pruning": {
        "active_dimensions": lambda variance, threshold=0.05: np.ones(len(variance), dtype=bool)
    },
}


@pytest.fixture
def planted(request, monkeypatch):
    """Plant the bug named by the test's parameter; returns whether the metric is as written."""
    for name, broken in PLANTED[request.param].items():
        monkeypatch.setattr(metrics, name, broken)
    return request.param == "as written"


def known_answer(*bugs):
    """Parametrize a known-answer test over the metric as written and the broken copies."""
    return pytest.mark.parametrize("planted", ["as written", *bugs], indirect=True)


def sample(n, seed=0, grid=GRID):
    return grid.sample_factors(n, np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------- MIG


@known_answer("MIG not normalized by H(v_k)", "entropy in bits, information in nats")
def test_the_factors_themselves_score_one(planted):
    v = sample(5000)
    result = mutual_information_gap(GRID.factor_values(v), v)
    holds = 0.99 <= result.score <= 1 + 1e-12
    assert holds == planted, (result.score, result.gaps)


@known_answer("MIG without the gap: the top information alone")
def test_every_factor_in_two_dimensions_scores_zero(planted):
    """A factor known equally by two dimensions has no gap: MIG 0."""
    v = sample(5000)
    values = GRID.factor_values(v)
    result = mutual_information_gap(np.hstack([values, values]), v)
    assert (result.score <= 1e-12) == planted, result.score


def test_one_factor_in_two_dimensions_loses_that_factor():
    """Shape in two dimensions: its gap is 0, the other factors keep theirs: MIG about 4/5."""
    v = sample(5000)
    values = GRID.factor_values(v)
    result = mutual_information_gap(np.hstack([values[:, :1], values]), v)
    assert result.gaps[0] == 0
    assert (result.gaps[1:] > 0.99).all()
    assert 0.79 < result.score <= 0.8


def entangled(v):
    """Shape and scale mixed by a rotation of 45 degrees (each standardized over the grid):
    two dimensions that each know both factors; the other three factors one dimension each."""
    values = GRID.factor_values(v)
    mean = [GRID.values(k).mean() for k in range(K)]
    std = [GRID.values(k).std() for k in range(K)]
    s = (values - mean) / std
    return np.column_stack([s[:, 0] + s[:, 1], s[:, 0] - s[:, 1], s[:, 2:]])


def test_two_factors_mixed_by_a_rotation_lose_their_gaps():
    """Each of the mixed factors is known equally by the two mixed dimensions: gaps near 0,
    MIG near 3/5."""
    v = sample(5000)
    result = mutual_information_gap(entangled(v), v)
    assert (result.gaps[:2] < 0.05).all() and (result.gaps[2:] > 0.99).all(), result.gaps
    assert 0.59 < result.score < 0.62


@given(st.integers(0, 2**32 - 1), st.integers(2, 6))
def test_mig_lies_between_0_and_1_for_any_representation(seed, dims):
    rng = np.random.default_rng(seed)
    v = sample(300, seed=seed)
    z = rng.normal(size=(300, dims)) * rng.integers(0, 2, size=(300, 1))  # some structure
    z[:, 0] += GRID.factor_values(v)[:, rng.integers(0, K)] * rng.normal()
    result = mutual_information_gap(z, v)
    assert 0 <= result.score <= 1 and (result.gaps >= 0).all() and (result.gaps <= 1).all()


def test_a_constant_and_an_independent_representation_score_zero():
    v = sample(5000)
    assert mutual_information_gap(np.zeros((5000, 3)), v).score == 0
    noise = np.random.default_rng(1).normal(size=(5000, 5))
    assert mutual_information_gap(noise, v).score < 0.03  # plug-in bias only


def test_the_factors_of_dsprites_lose_to_the_bins():
    """On dSprites' grid, 20 bins merge neighbouring orientations (40) and positions (32): the
    factors themselves score about 0.9 (shape and scale, fewer values than bins, about 1). With
    40 bins nothing is merged, and what is left below 1 is the plug-in estimator's upward bias
    of the second dimension's information, about (40 - 1)(32 - 1) / (2 N) nats here."""
    v = sample(10_000, grid=DSPRITES)
    result = mutual_information_gap(DSPRITES.factor_values(v), v)
    assert 0.85 < result.score < 0.93, result.gaps
    assert (result.gaps[:2] > 0.99).all() and (result.gaps[2:] < 0.9).all()
    assert mutual_information_gap(DSPRITES.factor_values(v), v, n_bins=40).score > 0.98


def test_compute_mig_samples_and_scores():
    result = compute_mig(GRID.factor_values, GRID.sample_factors, np.random.default_rng(0), 3000)
    assert result.mutual_information.shape == (5, 5) and result.score > 0.99
    np.testing.assert_allclose(result.entropy, np.log(GRID.sizes), rtol=0.01)


small_labels = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=60)


@given(small_labels)
def test_mutual_information_is_symmetric_bounded_and_of_a_variable_with_itself_its_entropy(
    pairs,
):
    ab = np.array(pairs)
    a, b = ab[:, :1], ab[:, 1:]
    h_a, h_b = discrete_entropy(a)[0], discrete_entropy(b)[0]
    i_ab = discrete_mutual_information(a, b)[0, 0]
    assert i_ab == pytest.approx(discrete_mutual_information(b, a)[0, 0], abs=1e-12)
    assert -1e-12 <= i_ab <= min(h_a, h_b) + 1e-12
    assert discrete_mutual_information(a, a)[0, 0] == pytest.approx(h_a, abs=1e-12)
    relabelled = np.array([7, -2, 30, 4])[a]  # a bijection of a's values
    assert discrete_mutual_information(relabelled, b)[0, 0] == pytest.approx(i_ab, abs=1e-12)


@given(st.permutations(range(6)), st.lists(st.integers(-8, 8), min_size=6, max_size=6))
def test_mig_ignores_the_order_and_powers_of_two_of_the_dimensions(order, exponents):
    v = sample(2000)
    rng = np.random.default_rng(2)
    z = np.hstack([GRID.factor_values(v), rng.normal(size=(2000, 1))])
    z = z + 0.1 * rng.normal(size=z.shape)
    moved = z[:, order] * 2.0 ** np.array(exponents)
    assert mutual_information_gap(moved, v).score == mutual_information_gap(z, v).score


def test_histogram_bins():
    z = np.column_stack([np.linspace(-3, 5, 40), np.full(40, 2.5)])
    bins = histogram_discretize(z, 20)
    np.testing.assert_array_equal(np.bincount(bins[:, 0]), np.full(20, 2))
    assert (bins[:, 1] == 0).all()


def test_mig_refuses_what_it_cannot_score():
    v = sample(100)
    with pytest.raises(ValueError, match="two latent dimensions"):
        mutual_information_gap(np.zeros((100, 1)), v)
    with pytest.raises(ValueError, match="entropy is 0"):
        mutual_information_gap(np.zeros((100, 2)), np.zeros((100, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="one row per tuple"):
        mutual_information_gap(np.zeros((99, 2)), v)


# ----------------------------------------------------------------------------- FactorVAE score

QUICK = {"n_train": 500, "n_eval": 500, "n_variance": 2000}


def fvae(represent, seed=0, **sizes):
    return factor_vae_score(
        represent, GRID.sample_factors, np.random.default_rng(seed), **{**QUICK, **sizes}
    )


def test_the_factors_themselves_score_one_and_each_dimension_names_its_factor():
    result = fvae(GRID.factor_values)
    assert result.score == 1.0 and result.train_accuracy == 1.0
    np.testing.assert_array_equal(result.classifier, np.arange(K))
    assert result.train_votes.sum() == 500 and result.eval_votes.shape == (K, K)


def noisy_factors_in_other_units(v):
    """A disentangled representation as an encoder gives one: each dimension one factor, plus
    noise of 5% of its spread, in units of its own (shape and scale multiplied by 1000)."""
    values = GRID.factor_values(v)
    spread = values.std(axis=0)
    rng = np.random.default_rng(len(v))
    noisy = values + 0.05 * spread * rng.normal(size=values.shape)
    return noisy * np.array([1000.0, 1000.0, 1.0, 1.0, 1.0])


@known_answer("FactorVAE not normalized by the spread over the data")
def test_a_disentangled_representation_in_any_units_scores_one(planted):
    """Without the normalization the dimensions in large units never have the least variance:
    the votes of shape and scale go to other dimensions and the score falls to about 3/5."""
    result = fvae(noisy_factors_in_other_units)
    assert (result.score >= 0.99) == planted, result.score


def collapsed(v):
    """Every dimension collapsed: a constant mean, up to 1e-3 of noise."""
    return 0.5 + 1e-3 * np.random.default_rng(len(v)).normal(size=(len(v), 4))


@known_answer("FactorVAE without pruning")
def test_a_collapsed_representation_scores_zero(planted):
    """Pruned, it scores 0; unpruned, its normalized noise scores chance, about 1/K."""
    result = fvae(collapsed)
    assert (result.score == 0.0) == planted, result.score


def test_a_constant_scores_zero_and_noise_scores_chance():
    assert fvae(lambda v: np.zeros((len(v), 5))).score == 0.0
    noise = fvae(lambda v: np.random.default_rng(len(v)).normal(size=(len(v), 5)), n_eval=2000)
    assert abs(noise.score - 1 / K) < 0.1, noise.score


def test_two_factors_mixed_by_a_rotation_lose_half_their_votes():
    """Holding shape (or scale) fixed leaves the same variance in both mixed dimensions, half
    of it over the data: whichever wins, one dimension cannot be classified as both factors,
    so the votes of one of the two are lost: about 4/5."""
    result = fvae(entangled)
    assert 0.7 < result.score < 0.9, result.score


def test_duplicated_factors_still_score_one():
    """Unlike MIG, the FactorVAE score does not see a factor held twice: the tie goes to the
    first of the two dimensions, and the vote is right."""
    assert fvae(lambda v: np.hstack([GRID.factor_values(v)] * 2)).score == 1.0


@given(st.lists(st.integers(0, 10), min_size=5, max_size=5))
def test_the_score_ignores_the_units_of_each_dimension(exponents):
    """Powers of two: the ratio of variances is unchanged to the last bit, so are the votes."""
    units = 2.0 ** np.array(exponents)
    a = fvae(noisy_factors_in_other_units, seed=3, n_train=100, n_eval=100)
    b = fvae(lambda v: noisy_factors_in_other_units(v) * units, seed=3, n_train=100, n_eval=100)
    np.testing.assert_array_equal(a.eval_votes, b.eval_votes)


# ------------------------------------------------------------------------------ a VAE's means


def test_a_vaes_representation_is_its_posterior_means_of_the_drawn_images():
    from numpy_vae import VAE
    from numpy_vae.experiments.disentanglement import encoder_representation
    from numpy_vae.training.dsprites import render

    grid = FactorGrid(scales=2, orientations=4, positions_x=3, positions_y=3, image_size=16)
    model = VAE(256, hidden_dims=(32,), latent_dim=4, seed=0)
    represent = encoder_representation(model, grid, chunk=7)
    v = grid.sample_factors(20, np.random.default_rng(0))
    mu = represent(v)

    def means(rows):
        pixels = render(rows, grid).reshape(len(rows), 256) / 255
        return model.encode(pixels.astype(np.float32))[0]

    assert mu.dtype == np.float64 and mu.shape == (20, 4)
    # bit for bit, chunk by chunk; the whole batch at once only to float32 rounding, since
    # BLAS may round a product of 7 rows and one of 20 differently
    np.testing.assert_array_equal(
        mu, np.concatenate([means(v[i : i + 7]) for i in range(0, 20, 7)])
    )
    np.testing.assert_allclose(mu, means(v), rtol=1e-5, atol=1e-6)
    assert 0 <= compute_mig(represent, grid.sample_factors, np.random.default_rng(1), 500).score
    with pytest.raises(ValueError, match="pixels"):
        encoder_representation(model, GRID)
