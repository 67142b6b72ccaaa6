"""The estimator experiment: both gradient estimators unbiased, reparameterization's variance
lower, and wrong estimators rejected by the same checks.

Unbiasedness is tested as |mean - exact| <= 4.5 standard errors on every coordinate, with
N = 100,000 samples. With fixed seeds each test is deterministic; the bound is chosen so that it
would also hold for almost any seed: for a correct estimator each z-score is close to standard
normal (all moments of these samples are finite, and N is large), so one exceeds 4.5 with
probability 7e-6 and any of the 16 per check with about 1e-4. The deliberately wrong estimators
below miss by tens of standard errors, so the same bound rejects them.
"""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import numpy_vae.experiments.estimators as estimators
from numpy_vae import VAE, get_backend
from numpy_vae.cli.gradient_variance import main
from numpy_vae.experiments.estimators import (
    ESTIMATORS,
    SAMPLERS,
    Z_BOUND,
    DecoderLogLikelihood,
    Quadratic,
    check_closed_form,
    gaussian_score,
    gradient_variance,
    quadratic_case,
    reparameterization_samples,
    score_function_samples,
)
from numpy_vae.gradcheck import check_gradients, numerical_gradient, relative_error

F64 = get_backend("numpy", "float64")
vectors = arrays(np.float64, 3, elements=st.floats(-2, 2))


def log_normal(z, mu, logvar):
    return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 / np.exp(logvar))


@given(z=vectors, mu=vectors, logvar=vectors)
def test_gaussian_score_is_the_gradient_of_log_q(z, mu, logvar):
    d_mu, d_logvar = gaussian_score(z, mu, logvar)
    # Absolute comparison: the logvar score is exactly 0 where |z - mu| = sigma.
    for param, analytic in ((mu, d_mu), (logvar, d_logvar)):
        numeric = numerical_gradient(lambda: log_normal(z, mu, logvar), param)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-8, atol=1e-8)


@given(seed=st.integers(0, 2**31 - 1), latent=st.integers(1, 5))
def test_quadratic_gradient_and_exact_expectation(seed, latent):
    objective, mu, logvar = quadratic_case(latent, seed)
    z = np.random.default_rng(seed).standard_normal((3, latent))
    errors = check_gradients(lambda: objective.value(z), {"z": z}, {"z": objective.gradient(z)})
    assert errors["z"] < 1e-8
    d_mu, d_logvar = objective.exact_gradient(mu, logvar)
    errors = check_gradients(
        lambda: objective.expectation(mu, logvar), {"mu": mu, "logvar": logvar},
        {"mu": d_mu, "logvar": d_logvar},
    )  # fmt: skip
    assert max(errors.values()) < 1e-8


def test_quadratic_expectation_matches_monte_carlo():
    """The closed form itself, against a plain average of f over many samples."""
    objective, mu, logvar = quadratic_case(4, 0)
    eps = np.random.default_rng(7).standard_normal((400_000, 4))
    values = objective.value(mu + np.exp(logvar / 2) * eps)
    stderr = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - objective.expectation(mu, logvar)) < Z_BOUND * stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_check_passes(seed):
    study, passed, lines = check_closed_form(latent_dim=4, repeats=100, seed=seed)
    assert passed, "\n".join(lines)
    assert all(z <= Z_BOUND for z in study.unbiasedness().values())
    reparam, score = (study.results[name] for name in ESTIMATORS)
    # Lower variance with margin (the check's own bound is 2x; here it is about 50-200x).
    for ours, theirs in [(reparam.variance_mu, score.variance_mu),
                         (reparam.variance_logvar, score.variance_logvar)]:  # fmt: skip
        assert all(10 * a < b for a, b in zip(ours, theirs, strict=True))


def reparam_logvar_without_half(objective, mu, logvar, eps):
    d_mu, d_logvar = reparameterization_samples(objective, mu, logvar, eps)
    return d_mu, 2 * d_logvar


def reparam_sigma_is_exp_logvar(objective, mu, logvar, eps):
    """The planted bug of test_checks_bite: sigma = exp(logvar) instead of exp(logvar / 2)."""
    sigma = np.exp(logvar)
    d_z = objective.gradient(mu + sigma * eps)
    return d_z, d_z * eps * sigma / 2


def score_without_minus_one(objective, mu, logvar, eps):
    z = mu + np.exp(logvar / 2) * eps
    f = objective.value(z)[:, None]
    return f * (z - mu) / np.exp(logvar), f * 0.5 * (z - mu) ** 2 / np.exp(logvar)


def score_mu_over_sigma(objective, mu, logvar, eps):
    z = mu + np.exp(logvar / 2) * eps
    f = objective.value(z)[:, None]
    return f * (z - mu) / np.exp(logvar / 2), f * 0.5 * ((z - mu) ** 2 / np.exp(logvar) - 1)


@pytest.mark.parametrize(
    "wrong",
    [reparam_logvar_without_half, reparam_sigma_is_exp_logvar, score_without_minus_one,
     score_mu_over_sigma],
)  # fmt: skip
def test_a_biased_estimator_is_rejected(wrong):
    objective, mu, logvar = quadratic_case(4, 0)
    exact = objective.exact_gradient(mu, logvar)
    study = gradient_variance(
        objective, mu, logvar, repeats=100, seed=0, exact=exact, samplers={"wrong": wrong}
    )
    assert study.unbiasedness()["wrong"] > 2 * Z_BOUND


def test_measured_variance_is_the_single_sample_variance_over_k():
    """Against the exact variance of one reparameterization sample of the quadratic."""
    objective, mu, logvar = quadratic_case(4, 3)
    var_mu, var_logvar = objective.reparameterization_variance(mu, logvar)
    counts = [1, 10, 100]
    study = gradient_variance(objective, mu, logvar, counts, repeats=1000, seed=3)
    reparam = study.results["reparameterization"]
    for i, k in enumerate(counts):
        blocks = study.samples // k
        # The sample variance of n normal values has relative standard deviation sqrt(2/(n-1)).
        tol = 5 * np.sqrt(2 / (blocks - 1))
        assert reparam.variance_mu[i] == pytest.approx(var_mu.mean() / k, rel=tol)
        assert reparam.variance_logvar[i] == pytest.approx(var_logvar.mean() / k, rel=tol)


@pytest.mark.parametrize(
    "kwargs", [{}, {"likelihood": "gaussian"}, {"n_classes": 3, "activation": "tanh"}]
)
def test_decoder_objective_gradient(kwargs):
    model = VAE(6, hidden_dims=(5,), latent_dim=3, backend=F64, seed=2, **kwargs)
    rng = np.random.default_rng(2)
    objective = DecoderLogLikelihood(model, rng.random(6), 1 if model.n_classes else None, chunk=2)
    z = rng.standard_normal((5, 3))
    assert objective.value(z).shape == (5,)
    errors = check_gradients(lambda: objective.value(z), {"z": z}, {"z": objective.gradient(z)})
    assert errors["z"] < 1e-7
    # The value is the model's own log p(x|z).
    out = model.decoder_output(z, np.full(5, 1) if model.n_classes else None)
    x = np.tile(objective.x, (5, 1))
    assert relative_error(objective.value(z), model.log_likelihood(x, out)) < 1e-14


def test_both_estimators_agree_on_a_decoder():
    """No closed form here, but both estimate the same gradient: their per-sample difference
    (same eps for both) has mean zero within its standard error."""
    model = VAE(8, hidden_dims=(6,), latent_dim=2, backend=F64, seed=4)
    rng = np.random.default_rng(4)
    x = rng.random(8)
    objective = DecoderLogLikelihood(model, x)
    mu, logvar = (a[0] for a in model.encode(x[None]))
    eps = rng.standard_normal((100_000, 2))
    diff = np.concatenate(
        [r - s for r, s in zip(reparameterization_samples(objective, mu, logvar, eps),
                               score_function_samples(objective, mu, logvar, eps), strict=True)],
        axis=1,
    )  # fmt: skip
    z = diff.mean(axis=0) / (diff.std(axis=0, ddof=1) / np.sqrt(len(diff)))
    assert np.abs(z).max() < Z_BOUND


def test_script_prints_both_tables_and_draws_the_figure(tmp_path, capsys):
    plot, report = tmp_path / "variance.png", tmp_path / "variance.json"
    argv = ["--data-dir", str(tmp_path), "--repeats", "20", "--sample-counts", "1,10,100",
            "--plot", str(plot), "--json", str(report)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "a random image (no MNIST cached" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["100"])]
    assert [r[0] for r in rows] == ["1", "100"] and all(len(r) == 7 for r in rows)
    assert plot.stat().st_size > 10_000
    data = json.loads(report.read_text())
    assert data["closed_form_passed"] and data["decoder"]["sample_counts"] == [1, 10, 100]
    assert data["decoder"]["samples"] == 2000


def test_script_exits_1_when_an_estimator_is_wrong(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(SAMPLERS, "reparameterization", reparam_logvar_without_half)
    argv = ["--data-dir", str(tmp_path), "--sample-counts", "1,10", "--plot",
            str(tmp_path / "p.png")]  # fmt: skip
    assert main(argv) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [(["--repeats", "1"], "at least 2"), (["--sample-counts", "1,0"], "positive"),
     (["--sample-counts", "a"], "integers"), (["--image", "-3"], "--image")],
)  # fmt: skip
def test_bad_usage_is_one_line_and_status_2(monkeypatch, tmp_path, usage_error, argv, message):
    if argv[0] == "--image":  # needs MNIST: pretend it is cached
        pytest.importorskip("numpy_vae.training.data")
        fake = type("M", (), {"test_images": np.zeros((5, 784), np.uint8),
                              "test_labels": np.zeros(5, np.int64)})  # fmt: skip
        monkeypatch.setattr("numpy_vae.training.data.load_mnist", lambda *a, **k: fake)
    err = usage_error(main, [*argv, "--plot", str(tmp_path / "p.png"), "--data-dir", str(tmp_path)])
    assert message in err


def test_quadratic_is_a_dataclass_of_arrays():
    q = Quadratic(a=np.eye(2), c=np.zeros(2))
    assert q.value(np.array([[1.0, 1.0]]))[0] == -1.0
    assert estimators.SAMPLE_COUNTS == (1, 3, 10, 30, 100, 300, 1000)


def test_model_from_run_copies_a_checkpoint_into_float64(tmp_path):
    from numpy_vae.experiments.estimators import model_from_run
    from numpy_vae.training.checkpoint import save_checkpoint
    from numpy_vae.training.trainer import TrainConfig

    config = TrainConfig(hidden_dims=(5,), latent_dim=2, n_classes=10)
    trained = VAE(
        8, hidden_dims=(5,), latent_dim=2, n_classes=10, seed=3
    )  # float32, like a training run
    flat = np.concatenate([p.ravel() for p in trained.params.values()])
    state = {"config": config.to_json(), "history": [{"epoch": 1}], "epoch": 1, "step": 1,
             "adam_step": 1, "adam_m": np.zeros_like(flat), "adam_v": np.zeros_like(flat),
             "params": {k: v.copy() for k, v in trained.params.items()}}  # fmt: skip
    save_checkpoint(tmp_path / "checkpoint.npz", state)
    model = model_from_run(tmp_path)
    assert model.dtype == np.float64 and (model.input_dim, model.n_classes) == (8, 10)
    for name, p in trained.params.items():
        np.testing.assert_array_equal(model.params[name], p.astype(np.float64))
