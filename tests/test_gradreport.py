"""scripts/gradcheck.py: the report passes on right gradients, fails on a broken one (in the
specification or in the fast path that training runs), and is honest about kinks."""

import json

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_checks_bite import doubled

import numpy_vae.fast.objectives as fast_objectives
import numpy_vae.likelihoods as likelihoods_module
import numpy_vae.model as model_module
from numpy_vae import VAE, get_backend
from numpy_vae.checks.gradreport import (
    AGREEMENT_TITLE,
    FAST_TITLE,
    SPEC_TITLE,
    check_model,
    compare_paths,
    gradient_report,
)
from numpy_vae.cli.gradcheck import main
from numpy_vae.config import ModelConfig
from numpy_vae.fast import FastVAE
from numpy_vae.gradcheck import numerical_gradient

F64 = get_backend("numpy", "float64")
DEFAULT_NAMES = [
    "encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias",
    "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias",
]  # fmt: skip


def table_rows(text, title=SPEC_TITLE):
    """parameter name (or ``loss``) -> the words of its row in the section whose heading starts
    with ``title`` (sections are separated by blank lines; {} if there is no such section)."""
    for block in text.split("\n\n"):
        lines = block.splitlines()
        # "fast path" also begins "fast path against the specification": match the whole title.
        if lines and lines[0].split(" (")[0] == title:
            return {
                line.split()[0]: line.split()
                for line in lines
                if line.split() and line.split()[0] in [*DEFAULT_NAMES, "loss"]
            }
    return {}


def test_default_model_passes(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "784-400-20 relu, bernoulli" in out and "random images" in out
    for title in (SPEC_TITLE, FAST_TITLE):
        rows = table_rows(out, title)
        assert list(rows) == DEFAULT_NAMES, title
        for words in rows.values():
            assert words[-1] == "pass" and float(words[2]) <= 1e-7 and int(words[3]) >= 1
    agreement = table_rows(out, AGREEMENT_TITLE)
    assert list(agreement) == [*DEFAULT_NAMES, "loss"]
    # The ELBO's fast step is the specification's arithmetic: its gradients are bitwise equal.
    for name in DEFAULT_NAMES:
        assert agreement[name][-1] == "pass" and float(agreement[name][2]) == 0.0
    assert "step FastELBO: what training runs" in out
    assert out.splitlines()[-1].startswith(
        "PASSED: specification 8 of 8 within 1e-07; fast path 8 of 8 within 1e-07; "
        "fast path against the specification 9 of 9 within the bound;"
    )


# Which rows a doubled derivative must turn into FAIL rows: everything upstream of it.
UPSTREAM_OF_Z = ["encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias"]
BROKEN = {
    "KL d_logvar": (model_module, "kl_standard_normal", 2, UPSTREAM_OF_Z),
    "reparameterization d_logvar": (model_module, "reparameterize_backward", 1, UPSTREAM_OF_Z),
    "Bernoulli d_logits": (likelihoods_module, "bernoulli_nll", 1, DEFAULT_NAMES),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_derivative_fails_with_exit_status_1(monkeypatch, capsys, broken):
    module, name, index, affected = BROKEN[broken]
    monkeypatch.setattr(module, name, doubled(getattr(module, name), index))
    assert main(["--hidden", "50", "--entries", "5"]) == 1
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert list(rows) == DEFAULT_NAMES
    for param, words in rows.items():
        assert words[-1] == ("FAIL" if param in affected else "pass"), (param, words)
    # The fast path has its own copies of these derivatives: it still passes, and differs
    # from the specification exactly where the specification is wrong.
    assert all(words[-1] == "pass" for words in table_rows(out, FAST_TITLE).values())
    agreement = table_rows(out, AGREEMENT_TITLE)
    for param in DEFAULT_NAMES:
        assert agreement[param][-1] == ("FAIL" if param in affected else "pass"), param
    assert "FAILED (specification, fast path against the specification):" in out
    assert "the derivative to fix is the specification's" in out


def test_json_report(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert main(["--hidden", "6", "--latent-dim", "2", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["passed"] and not report["full"] and report["failed_sections"] == []
    assert [row["name"] for row in report["rows"]] == DEFAULT_NAMES
    assert [row["name"] for row in report["fast_rows"]] == DEFAULT_NAMES
    assert [row["name"] for row in report["agreement"]] == [*DEFAULT_NAMES, "loss"]
    assert report["path"] == "both" and report["agreement_terms"] == 8 + 784 + 6
    assert report["model"]["hidden_dims"] == [6] and report["model"]["latent_dim"] == 2
    printed_loss = capsys.readouterr().out.split("loss ")[1].split()[0]
    assert report["loss"] == pytest.approx(float(printed_loss))


def test_full_check_covers_every_entry():
    report = gradient_report(
        ModelConfig(hidden_dims=(4,), latent_dim=2), batch=3, entries=None, input_dim=9
    )
    assert report.passed and report.full
    for row in report.rows + report.fast_rows:  # every entry is compared or counted as a kink
        assert row.checked + row.kink == int(np.prod(row.shape))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--entries", "0"], "positive integer"),
        (["--hidden", "40,x"], "comma-separated"),
        (["--tol", "-1"], "> 0"),
        (["--likelihood", "poisson"], "invalid choice"),
        (["--batch-size"], "expected one argument"),
    ],
)
def test_bad_usage_is_one_line_and_status_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@given(
    activation=st.sampled_from(["relu", "leaky_relu", "tanh", "sigmoid"]),
    likelihood=st.sampled_from(["bernoulli", "gaussian"]),
    conditional=st.booleans(),
    beta=st.sampled_from([0.0, 1.0, 4.0]),
    free_bits=st.sampled_from([0.0, 0.05, 0.5]),
    seed=st.integers(0, 2**31 - 1),
)
# A first-layer entry whose stencil crosses a ReLU kink once the bias is added: the fast ReLU
# adds its Linear layer's bias itself, so the kink probe must look at that sum, not its input.
@example(activation="relu", likelihood="bernoulli", conditional=False, beta=0.0, free_bits=0.0,
         seed=934)  # fmt: skip
def test_every_variant_passes_and_counts_add_up(
    activation, likelihood, conditional, beta, free_bits, seed
):
    config = ModelConfig(
        hidden_dims=(5, 4),
        latent_dim=3,
        activation=activation,
        likelihood=likelihood,
        n_classes=10 if conditional else 0,
        beta=beta,
        free_bits=free_bits,
    )
    report = gradient_report(
        config,
        batch=3,
        seed=seed,
        entries=6,
        input_dim=9,
    )
    # A row may fail only where rounding alone could exceed the bound, and the report says so
    # (tiny gradients: e.g. beta = 0 with a saturated sigmoid); the model tests assume those away.
    for rows in (report.rows, report.fast_rows):
        assert all(row.passed or not row.resolvable for row in rows), report.format()
        assert any(row.resolvable for row in rows)
        for row in rows:
            size = int(np.prod(row.shape))
            assert row.checked + row.kink == min(6, size)
    # The fast path against the specification has no rounding floor: it must pass outright.
    assert all(a.passed for a in report.agreement), report.format()


def test_a_stencil_across_a_relu_kink_is_counted_not_compared():
    """A pre-activation 5e-5 from 0: moving its bias by h = 1e-4 crosses the kink."""
    model = VAE(3, hidden_dims=(2,), latent_dim=1, backend=F64, seed=0)
    rng = np.random.default_rng(0)
    x, eps = rng.random((1, 3)), rng.standard_normal((1, 1))
    p = model.params
    pre = x @ p["encoder.0.weight"].T + p["encoder.0.bias"]
    p["encoder.0.bias"][0] += 5e-5 - pre[0, 0]
    rows, _ = check_model(model, x, eps, entries=None)
    bias = next(r for r in rows if r.name == "encoder.0.bias")
    assert (bias.checked, bias.kink) == (1, 1)
    assert bias.passed
    # Why it must be left out: there the difference quotient is not the derivative.
    model.loss(x, eps=eps)
    analytic = model.grads["encoder.0.bias"][0]
    numeric = numerical_gradient(
        lambda: model.loss(x, eps=eps, grad=False).loss, p["encoder.0.bias"], indices=[(0,)]
    )[0]
    assert abs(numeric - analytic) > 1e-2 * abs(analytic)


def test_free_bits_allowance_is_a_kink_too():
    """A dimension whose batch-mean KL sits just above lambda: its logvar bias crosses it."""
    model = VAE(4, hidden_dims=(3,), latent_dim=2, activation="tanh", backend=F64, seed=1)
    rng = np.random.default_rng(1)
    x, eps = rng.random((2, 4)), rng.standard_normal((2, 2))
    parts = model.loss(x, eps=eps, grad=False)
    model.free_bits = float(parts.kl_per_dim[0] / parts.n) - 1e-8
    rows, _ = check_model(model, x, eps, entries=None)
    head_bias = next(r for r in rows if r.name == "head.bias")
    assert head_bias.kink >= 1 and head_bias.passed


def test_check_model_needs_float64():
    model = VAE(3, hidden_dims=(2,), latent_dim=1, seed=0)
    with pytest.raises(ValueError, match="float64"):
        check_model(model, np.zeros((1, 3), np.float32), np.zeros((1, 1), np.float32))


def test_an_array_with_no_entry_compared_does_not_pass():
    """A step so large that every stencil crosses a ReLU kink leaves rows with nothing compared;
    such a row must not read as a pass."""
    model = VAE(6, hidden_dims=(5,), latent_dim=2, backend=get_backend("numpy", "float64"), seed=0)
    rng = np.random.default_rng(0)
    x, eps = rng.random((4, 6)), rng.standard_normal((4, 2))
    rows, _ = check_model(model, x, eps, entries=None, h=50.0)
    empty = [r for r in rows if r.checked == 0]
    assert empty and not any(r.passed for r in empty)


# ---------------------------------------------------------------------- the fast path
# Small models: the check of the code that training runs, on every objective and decoder.
SMALL = {"hidden_dims": (4,), "latent_dim": 2}
FAST_CASES = {
    "elbo": {},
    "iwae": {"objective": "iwae", "k": 3},
    "vae": {"objective": "vae", "k": 2},
    "made elbo": {"decoder": "made", "made_hidden": (5,)},
    "made iwae": {"decoder": "made", "made_hidden": (5,), "objective": "iwae", "k": 3},
}


def small_report(path="both", **config):
    return gradient_report(
        ModelConfig(**{**SMALL, **config}), batch=3, input_dim=9, entries=6, path=path
    )


@pytest.mark.parametrize("case", FAST_CASES)
def test_the_report_covers_the_fast_path(case):
    report = small_report(**FAST_CASES[case])
    assert report.passed, report.format()
    names = [row.name for row in report.rows]
    # Its own finite-difference section and its comparison with the specification, row by row.
    assert [row.name for row in report.fast_rows] == names
    assert [a.name for a in report.agreement] == [*names, "loss"]
    assert all(row.checked > 0 for row in report.fast_rows)
    assert report.fast_step.startswith("FastMultiSample" if "objective" in FAST_CASES[case] else
                                       "FastELBO")  # fmt: skip
    # Within 64 n eps, n = B K + D + H = 3 K + 9 + max(4, MADE 5).
    k = FAST_CASES[case].get("k", 1)
    n = 3 * k + 9 + (5 if "made" in case else 4)
    assert report.agreement_terms == n
    assert report.agreement_tol == 64 * n * np.finfo(np.float64).eps
    text = report.format()
    for title in (SPEC_TITLE, FAST_TITLE, AGREEMENT_TITLE):
        assert f"\n{title} (" in text
    assert text.splitlines()[-1].startswith("PASSED: ")


def plant_in_fast_iwae(monkeypatch):
    """Double d_logvar in the fast multi-sample step only: in its compiled encoder gradient
    (which it runs for L >= 2) and in its own (fast) model's estimator, which it runs otherwise
    and which is wrapped for the duration of that step."""
    real = fast_objectives.FastMultiSample.backward
    kernel = fast_objectives.weighted_encoder_gradient

    def backward(self, model):
        estimator = self.spec.estimator
        estimator.encoder_gradient = doubled(estimator.encoder_gradient, 1)
        try:
            real(self, model)
        finally:
            del estimator.encoder_gradient  # the class's method again

    def weighted_encoder_gradient(d_rows, w_tilde, z, eps, sigma, d_stats):
        kernel(d_rows, w_tilde, z, eps, sigma, d_stats)
        d_stats[:, sigma.shape[1] :] *= 2

    monkeypatch.setattr(fast_objectives.FastMultiSample, "backward", backward)
    monkeypatch.setattr(fast_objectives, "weighted_encoder_gradient", weighted_encoder_gradient)


def plant_in_fast_elbo(monkeypatch, term):
    """Add a second copy of one of the two terms of the fast ELBO's d_logvar (so the term is
    doubled) after its compiled pass: ``"kl"``, the KL's, or ``"path"``, the decoder's path
    through z; the device passes are wrapped the same way."""
    kernel = fast_objectives.reparam_kl_backward

    def reparam_kl_backward(stats, d_z, eps, sigma, var, weight, d_stats):
        kernel(stats, d_z, eps, sigma, var, weight, d_stats)
        extra = 0.5 * (var - 1) * weight if term == "kl" else d_z * eps * sigma * 0.5
        d_stats[:, d_z.shape[1] :] += extra

    monkeypatch.setattr(fast_objectives, "reparam_kl_backward", reparam_kl_backward)
    if term == "kl":
        monkeypatch.setattr(fast_objectives, "kl_standard_normal",
                            doubled(fast_objectives.kl_standard_normal, 2))  # fmt: skip
    else:
        monkeypatch.setattr(fast_objectives, "reparameterize_backward",
                            doubled(fast_objectives.reparameterize_backward, 1))  # fmt: skip


# The bug: 2 * d_logvar in the fast path, which the specification never runs.
FAST_PLANTS = {
    "elbo KL d_logvar": ({}, lambda mp: plant_in_fast_elbo(mp, "kl")),
    "elbo reparameterization d_logvar": ({}, lambda mp: plant_in_fast_elbo(mp, "path")),
    "iwae encoder d_logvar": ({"objective": "iwae", "k": 3}, plant_in_fast_iwae),
}


@pytest.mark.parametrize("plant", FAST_PLANTS)
def test_a_broken_fast_path_fails_and_is_named(monkeypatch, plant):
    config, planting = FAST_PLANTS[plant]
    planting(monkeypatch)
    report = small_report(**config)
    assert not report.passed
    # The specification is right; the fast path fails its differences and differs from it
    # upstream of z, and nowhere else.
    assert report.failed_sections == [FAST_TITLE, AGREEMENT_TITLE]
    assert all(row.passed for row in report.rows)
    for row in report.fast_rows:
        assert row.passed == (row.name not in UPSTREAM_OF_Z), row
    for a in report.agreement:
        assert a.passed == (a.name not in UPSTREAM_OF_Z), a
        if not a.passed:
            assert a.error > 1e-3  # a wrong factor, not rounding
    text = report.format()
    assert "FAILED (fast path, fast path against the specification)" in text
    assert "the fast path (numpy_vae/fast/, what training runs) disagrees" in text


def test_the_command_line_fails_on_the_planted_fast_bug_unless_told_to_skip_it(monkeypatch, capsys):
    """Before the fast path was checked, this bug read ``PASSED: 8 of 8``; ``--path spec`` is
    that old check and still passes, the default fails with exit status 1."""
    FAST_PLANTS["elbo KL d_logvar"][1](monkeypatch)
    small = ["--hidden", "4", "--latent-dim", "2", "--batch-size", "3", "--entries", "4"]
    assert main([*small, "--path", "spec"]) == 0
    out = capsys.readouterr().out
    assert FAST_TITLE not in out and "PASSED: specification 8 of 8 within 1e-07;" in out
    assert main(small) == 1
    out = capsys.readouterr().out
    assert table_rows(out, FAST_TITLE)["head.bias"][-1] == "FAIL"
    assert table_rows(out, AGREEMENT_TITLE)["head.bias"][-1] == "FAIL"
    assert out.splitlines()[-1].startswith("FAILED (fast path, ")
    assert main([*small, "--path", "fast"]) == 1
    out = capsys.readouterr().out
    assert f"\n{SPEC_TITLE} (" not in out and "FAILED (fast path, " in out


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_stl_and_dreg_compare_the_fast_path_with_the_specification_only(
    monkeypatch, capsys, estimator
):
    config = {"objective": "iwae", "k": 3, "estimator": estimator}
    report = small_report(**config)
    assert report.passed and not report.differentiable
    assert report.rows == [] and report.fast_rows == [] and len(report.agreement) == 9
    assert "not the gradient of the bound" in report.format()
    # The comparison bites on the estimator too.
    plant_in_fast_iwae(monkeypatch)
    planted = small_report(**config)
    assert planted.failed_sections == [AGREEMENT_TITLE]
    # Differences of the loss cannot check these estimators: --path spec has nothing to run.
    argv = ["--objective", "iwae", "--k", "3", "--estimator", estimator, "--path", "spec"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not the gradient of the bound" in err and len(err.strip().splitlines()) == 1


def test_a_nan_on_the_fast_path_fails_the_comparison():
    """``error <= bound`` is False for a NaN: it cannot slip through as 'not above the bound'."""
    backend = get_backend("numpy", "float64")
    spec = VAE(9, hidden_dims=(4,), latent_dim=2, backend=backend, seed=0)
    fast = FastVAE(9, hidden_dims=(4,), latent_dim=2, backend=backend, seed=0)
    fast.load_state_dict(spec.state_dict())
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 9)), rng.standard_normal((3, 2))
    assert all(a.passed for a in compare_paths(fast, spec, x, eps, bound=1e-13))
    fast.params["decoder.2.bias"][0] = np.nan
    spec.params["decoder.2.bias"][0] = 0.0
    rows = compare_paths(fast, spec, x, eps, bound=1e-13)
    assert not next(a for a in rows if a.name == "decoder.2.bias").passed


def test_path_must_be_one_of_the_three():
    with pytest.raises(ValueError, match="spec, fast, both"):
        small_report(path="training")
