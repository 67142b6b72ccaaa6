"""scripts/gradcheck.py: the report passes on right gradients, fails on a broken one, and is
honest about kinks."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_checks_bite import doubled

import numpy_vae.likelihoods as likelihoods_module
import numpy_vae.model as model_module
from numpy_vae import VAE, get_backend
from numpy_vae.checks.gradreport import check_model, gradient_report
from numpy_vae.cli.gradcheck import main
from numpy_vae.config import ModelConfig
from numpy_vae.gradcheck import numerical_gradient

F64 = get_backend("numpy", "float64")
DEFAULT_NAMES = [
    "encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias",
    "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias",
]  # fmt: skip


def table_rows(text):
    """parameter name -> the words of its row in the printed table."""
    return {
        line.split()[0]: line.split()
        for line in text.splitlines()
        if line.split() and line.split()[0] in DEFAULT_NAMES
    }


def test_default_model_passes(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "784-400-20 relu, bernoulli" in out and "random images" in out
    rows = table_rows(out)
    assert list(rows) == DEFAULT_NAMES
    for words in rows.values():
        assert words[-1] == "pass" and float(words[2]) <= 1e-7 and int(words[3]) >= 1
    assert "PASSED: 8 of 8" in out


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
    for param, words in rows.items():
        assert words[-1] == ("FAIL" if param in affected else "pass"), (param, words)
    assert "FAILED:" in out


def test_json_report(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert main(["--hidden", "6", "--latent-dim", "2", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["passed"] and not report["full"]
    assert [row["name"] for row in report["rows"]] == DEFAULT_NAMES
    assert report["model"]["hidden_dims"] == [6] and report["model"]["latent_dim"] == 2
    printed_loss = capsys.readouterr().out.split("loss ")[1].split()[0]
    assert report["loss"] == pytest.approx(float(printed_loss))


def test_full_check_covers_every_entry():
    report = gradient_report(
        ModelConfig(hidden_dims=(4,), latent_dim=2), batch=3, entries=None, input_dim=9
    )
    assert report.passed and report.full
    for row in report.rows:  # every entry is compared or counted as a kink
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
    assert all(row.passed or not row.resolvable for row in report.rows), report.format()
    assert any(row.resolvable for row in report.rows)
    for row in report.rows:
        size = int(np.prod(row.shape))
        assert row.checked + row.kink == min(6, size)


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
