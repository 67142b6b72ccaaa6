"""The SNR study (numpy_vae.experiments.snr): exact closed-form gradients, the slopes' signs, and
the checks biting on planted bugs.

How the slopes are judged. Each slope is the least-squares slope of log SNR on log K, and its
standard error (se) is the standard deviation of that slope over 200 bootstrap resamples of the
M draws at each K: the Monte Carlo noise of the whole pipeline (mean, std, the mean over
parameters, the fit), correlations between parameters included. A slope estimate is close to
normal, so "negative by 3 se" wrongly fails a slope that is truly at the boundary 0 with
probability 0.13%, and a slope that is truly -0.35 (what these cases measure, tens of se from 0)
practically never. The limits -1/2 and +1/2 hold as K grows; over K <= 16 the curves still bend
toward them (the O(1/K^2) terms), so the tests ask for the signs, and for a slope that is not
steeper than its limit by more than 0.15 + 3 se, not for the limits themselves. DReG's slope
must not be negative by more than 3 se (here it rises, as its limit +1/2 says).

Points whose SNR lies near the noise floor sqrt(2/(pi M)) (what |mean|/std measures for a true
mean of 0) are not fitted; the floor would bend a falling curve flat, towards the sign the test
rejects, so it could hide a bug but not invent a pass. The tests also require at least four
fitted points on each curve, so that no slope rests on two noisy points.

With fixed seeds every test is deterministic; the sizes (M = 300 draws, K up to 16) keep the file
to a few seconds.
"""

import json

import numpy as np
import pytest

import numpy_vae.experiments.snr as snr_module
from numpy_vae import VAE, bounds, get_backend
from numpy_vae.bounds import dreg_surrogate, log_prior
from numpy_vae.cli.gradient_variance import main
from numpy_vae.experiments.snr import (
    GaussianCase,
    NetworkCase,
    bootstrap_snr,
    check_signs,
    fit_slope,
    network_case,
    snr,
    snr_floor,
    snr_study,
)
from numpy_vae.gradcheck import check_gradients

F64 = get_backend("numpy", "float64")
COUNTS = (1, 2, 4, 8, 16)
Z = 3.0  # standard errors, see the module docstring
SLACK = 0.15  # how far past its limit a pre-asymptotic slope may lie, see the module docstring


def small_gaussian(batch=2, dim=3, seed=0, perturbation=0.3):
    return GaussianCase.rainforth(dim=dim, n_data=8, batch=batch, perturbation=perturbation,
                                  seed=seed)  # fmt: skip


# ------------------------------------------------------------------- exact closed-form gradients
@pytest.mark.parametrize("k", [1, 2, 5])
def test_the_closed_form_plain_gradient_is_the_derivative_of_the_bound(k):
    case = small_gaussian()
    eps = np.random.default_rng(k).standard_normal(case.noise_shape(k))
    grads = case.gradients(eps[None], ["reparam"])["reparam"]
    analytic = {"theta": grads["theta"][0], "a": grads["A"][0].reshape(3, 3), "b": grads["b"][0]}
    errors = check_gradients(lambda: case.iwae_bound(eps), {n: getattr(case, n) for n in analytic},
                             analytic)  # fmt: skip
    assert max(errors.values()) < 1e-8, errors


def test_the_closed_form_dreg_gradient_is_the_derivative_of_its_surrogate():
    """DReG's A and b gradients against central differences of bounds.dreg_surrogate, with the
    squared weights and q's own parameters held at their values and z moving with (A, b)."""
    case, k = small_gaussian(), 4
    eps = np.random.default_rng(0).standard_normal(case.noise_shape(k))
    logvar = np.full((case.batch, case.dim), np.log(case.VARIANCE))
    mu_held = case.x @ case.a.T + case.b
    log_w = case._samples(eps, case.x)["log_w"]
    w2_held = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    w2_held = (w2_held / w2_held.sum(axis=1, keepdims=True)) ** 2

    def surrogate():
        z = (case.x @ case.a.T + case.b)[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps
        log_joint = log_prior(case.x[:, None, :] - z) + log_prior(z - case.theta)
        return dreg_surrogate(log_joint, z, mu_held, logvar, w2_held, np).sum()

    grads = case.gradients(eps[None], ["dreg"])["dreg"]
    analytic = {"a": grads["A"][0].reshape(3, 3), "b": grads["b"][0]}
    errors = check_gradients(surrogate, {"a": case.a, "b": case.b}, analytic)
    assert max(errors.values()) < 1e-8, errors


def test_draws_in_chunks_are_the_draws_at_once(monkeypatch):
    case = small_gaussian(batch=3)
    whole = case.draw_gradients(4, 10, ["dreg"], np.random.default_rng(0))
    monkeypatch.setattr(snr_module, "DRAW_ELEMENTS", 40)  # 1 draw per chunk
    monkeypatch.setattr(snr_module, "CHUNK_ELEMENTS", 13)  # 1 row per block
    pieces = case.draw_gradients(4, 10, ["dreg"], np.random.default_rng(0))
    for name in ("A", "b", "theta"):
        np.testing.assert_allclose(pieces["dreg"][name], whole["dreg"][name], rtol=1e-12)


# --------------------------------------------------------------------------------- statistics
def test_snr_floor_is_what_a_zero_mean_gradient_measures():
    draws = np.random.default_rng(0).standard_normal((400, 5000))
    assert abs(np.nanmean(snr(draws)) / snr_floor(400) - 1) < 0.02
    assert np.isnan(snr(np.ones((5, 2)))).all()


def test_bootstrap_and_fit():
    draws = np.random.default_rng(1).normal(1.0, 2.0, (500, 50))
    boot = bootstrap_snr(draws, 300, np.random.default_rng(2))
    point = snr(draws).mean()
    assert abs(boot.mean() - point) < 3 * boot.std() / np.sqrt(300) + 0.01 * point
    slope, intercept, se = fit_slope([1, 10, 100], [2.0, 2.0 * 10**-0.5, 0.2])
    assert (round(slope, 12), round(intercept, 12), round(se, 12)) == (
        -0.5,
        round(np.log(2), 12),
        0,
    )


# ----------------------------------------------------------------------------- the slope signs
def assert_slopes(study, fitted=4):
    """The signs of the module docstring, each by Z standard errors, on enough fitted points."""
    plain, dreg = study.curves["inference/reparam"], study.curves["inference/dreg"]
    generative = study.curves["generative"]
    for curve in (plain, dreg, generative):
        assert len(curve.fitted) >= fitted, study.table()
    assert -0.5 - SLACK - Z * plain.slope_se < plain.slope < -Z * plain.slope_se, study.table()
    assert Z * generative.slope_se < generative.slope < 0.5 + SLACK + Z * generative.slope_se
    assert dreg.slope > -Z * dreg.slope_se, study.table()
    assert check_signs(study, Z)[0]


def gaussian_study():
    return snr_study(GaussianCase.rainforth(batch=64, perturbation=0.02), COUNTS, 300,
                     ["reparam", "dreg"])  # fmt: skip


def test_slope_signs_on_the_closed_form():
    assert_slopes(gaussian_study())


def tiny_network_case():
    model = VAE(16, hidden_dims=(8,), latent_dim=2, backend=F64, seed=0)
    x = (np.random.default_rng(0).random((32, 16)) < 0.3).astype(np.float64)
    return NetworkCase(model, x, max_params=10_000, description="tiny random VAE")


def test_slope_signs_on_a_small_random_model():
    assert_slopes(snr_study(tiny_network_case(), COUNTS, 300, ["reparam", "dreg"]), fitted=5)


# ----------------------------------------------------------------------------- the network case
def test_the_network_case_is_the_specification_and_one_decoder_for_all():
    model = VAE(12, hidden_dims=(6,), latent_dim=2, backend=F64, seed=4)
    x = (np.random.default_rng(4).random((3, 12)) < 0.5).astype(np.float64)
    case = NetworkCase(model, x, max_params=10_000)
    rows = case.draw_gradients(5, 2, ["reparam", "stl", "dreg"], np.random.default_rng(7))
    alone = case.draw_gradients(5, 2, ["dreg"], np.random.default_rng(7))
    eps = np.random.default_rng(7).standard_normal((2, *case.noise_shape(5)))
    for estimator in ("reparam", "stl", "dreg"):
        spec = VAE(12, hidden_dims=(6,), latent_dim=2, objective="iwae", k=5,
                   estimator=estimator, backend=F64, seed=4)  # fmt: skip
        spec.load_state_dict(model.state_dict())
        for draw in range(2):
            spec.loss(x, eps=eps[draw])
            for name, index in case.tracked.items():
                expected = -spec.grads[name].reshape(-1)[index]
                np.testing.assert_allclose(rows[estimator][name][draw], expected, rtol=1e-9,
                                           atol=1e-12)  # fmt: skip
    for name in case.networks["generative"]:  # a decoder computed under DReG alone: the same
        np.testing.assert_allclose(alone["dreg"][name], rows["reparam"][name], rtol=1e-12)
    # The encoder entries kept are those with a gradient; the decoder's, all of them.
    assert all(case.tracked[n].size == model.params[n].size for n in case.networks["generative"])


def test_a_run_file_is_studied_on_synthetic_images_without_mnist(tmp_path):
    from numpy_vae.training.checkpoint import save_model

    path = save_model(VAE(784, hidden_dims=(8,), latent_dim=2, seed=1), tmp_path / "m.npz")
    case = network_case(path, tmp_path, batch=3, max_params=50)
    assert case.x.shape == (3, 784) and set(np.unique(case.x)) <= {0.0, 1.0}
    assert "synthetic binary images" in case.description and str(path) in case.description
    assert sum(v.size for v in case.tracked.values()) <= 100


# ------------------------------------------------------------------------ the checks bite
def max_abs_z_against_plain(case, estimator, k=8, draws=2000):
    """Largest |mean difference| / standard error between an estimator and the plain one over
    the inference parameters (paired: the same eps)."""
    g = case.draw_gradients(k, draws, ["reparam", estimator], np.random.default_rng(0))
    d = np.concatenate([g[estimator][n] - g["reparam"][n] for n in ("A", "b")], axis=1)
    return float(np.abs(d.mean(axis=0) / (d.std(axis=0, ddof=1) / np.sqrt(draws))).max())


def test_dreg_is_unbiased_and_stl_is_not(monkeypatch):
    """DReG's mean is the IWAE gradient's, STL's is not (K > 1). For an unbiased estimator each of
    the 420 paired z-scores (M = 2000) is close to standard normal, so any of them exceeds 5
    with probability about 2e-4; STL's bias is tens of standard errors here, and so is that of
    the planted bug below (DReG with w~ instead of w~^2)."""
    case = GaussianCase.rainforth(batch=4, perturbation=0.1)
    assert max_abs_z_against_plain(case, "dreg") < 5
    assert max_abs_z_against_plain(case, "stl") > 20
    monkeypatch.setattr(bounds.DoublyReparameterized, "reweighted", lambda self, a, w: a)
    assert max_abs_z_against_plain(case, "dreg") > 20


def test_the_slope_check_rejects_the_vae_bounds_weights(monkeypatch):
    """Planted: uniform weights 1/K for w~ (the k-sample VAE bound's gradient, whose inference
    SNR rises like sqrt(K)): the plain estimator's slope turns positive and the check fails."""
    uniform = lambda log_w, xp: np.full(log_w.shape, 1.0 / log_w.shape[1])  # noqa: E731
    monkeypatch.setattr(snr_module, "normalized_weights", uniform)
    study = gaussian_study()
    assert study.curves["inference/reparam"].slope > 0.2
    assert not check_signs(study, Z)[0]
    with pytest.raises(AssertionError):
        assert_slopes(study)


# ------------------------------------------------------------------------------ the command line
def test_the_snr_mode_trains_a_small_model_and_writes_table_json_and_figure(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(snr_module, "SMALL_MODEL", {"hidden_dims": (16,), "latent_dim": 2,
                                                     "objective": "iwae", "k": 2})  # fmt: skip
    monkeypatch.setattr(snr_module, "SMALL_TRAIN", 200)
    monkeypatch.setattr(snr_module, "SMALL_TEST", 20)
    out = tmp_path / "figures"
    argv = ["--snr", "--sample-counts", "1,4,16", "--gaussian-draws", "300", "--draws", "10",
            "--batch-size", "2", "--max-params", "100", "--train-epochs", "1", "--estimators",
            "reparam,dreg", "--data-dir", str(tmp_path / "none"), "--plot", str(out / "snr.png"),
            "--json", str(out / "snr.json"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "synthetic binary images" in text and "trained here" in text
    headers = [line.split() for line in text.splitlines() if line.split()[:1] == ["K"]]
    assert headers == [["K", "inf", "reparam", "inf", "dreg", "generative"]] * 2
    assert sorted(p.name for p in out.iterdir()) == ["snr.json", "snr.png"]  # nothing else
    assert (out / "snr.png").stat().st_size > 10_000
    data = json.loads((out / "snr.json").read_text())
    assert data["gaussian_passed"] and data["network"]["draws"] == 10
    curve = data["gaussian"]["curves"]["inference/reparam"]
    assert len(curve["snr"]) == 3 and curve["slope"] < 0


@pytest.mark.parametrize(
    "argv, message",
    [(["--snr", "--repeats", "5"], "--repeats belong(s) to the variance study"),
     (["--draws", "5"], "--draws belong(s) to the SNR study"),
     (["--snr", "--sample-counts", "10"], "at least two sample counts"),
     (["--snr", "--estimators", "reparam,iwae"], "--estimators"),
     (["--snr", "--gaussian-batch", "2000"], "batch must lie in [1, 1024]")],
)  # fmt: skip
def test_bad_usage_is_one_line_and_status_2(tmp_path, usage_error, argv, message):
    err = usage_error(main, [*argv, "--plot", str(tmp_path / "p.png"), "--data-dir", str(tmp_path)])
    assert message in err
    assert not (tmp_path / "p.png").exists()
