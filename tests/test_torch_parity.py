"""numpy-vae against a plain PyTorch twin (autograd, torch.optim.Adam), step by step, in float64.

Bounds (relative difference of an array: max|a - b| / max(|a|, |b|)): the loss, its parts and
every gradient after one forward/backward from identical weights <= 1e-12; every parameter after
100 Adam steps on identical batches and noise <= 1e-10. The measured figures are ~1e-15 and
~1e-13: only the order of rounding differs.

The default model is the classic 784-400-20; the other variants train a 784-128-20 model (still
MNIST-shaped input and batch 128) to keep this file within about half a minute on two cores. The
multi-sample variants (vae_k, iwae, iwae_stl, iwae_dreg: K = 3, eps of shape (B, K, L)) are
checked for one step at 784-400-20 and batch 128 like the others, and trained for a short run
(784-32-20, batch 32); ``scripts/compare_torch.py --variant all`` trains them at full size.

The MADE decoder's variants (made, made_deep, made_no_z, made_iwae_dreg, made_conditional; binary
images, as the decoder requires) are checked for one step at full size (encoder 784-400-20,
masked widths 500 or (500, 500), batch 128) and trained for a short run like the multi-sample
ones (50 steps, 784-32-20, masked layers of 32 at the variant's depth, batch 32).

The completion models (numpy_vae.completion: the CVAE with its learned prior, and the baseline
network; numpy_vae.gsnn: the GSNN and the hybrid objective at alpha 0.5) are held to the same
bounds against their twins in numpy_vae.checks.torch_completion: the left half of synthetic
MNIST-shaped binary images given, the right half predicted (392 pixels each), batch 16, one
hidden layer of 64, z of 8; one step at every activation, 100 Adam steps, the golden files, a
wrong KL factor on either side and a wrong weight in the hybrid's twin that parity catches.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is optional: install torch==2.13.0 (CPU) to run the PyTorch parity tests",
)

from test_checks_bite import std_is_exp_logvar, std_is_exp_logvar_backward  # noqa: E402

import numpy_vae.bounds as bounds_module  # noqa: E402
import numpy_vae.completion as completion_module  # noqa: E402
import numpy_vae.decoders as decoders_module  # noqa: E402
import numpy_vae.gsnn as gsnn_module  # noqa: E402
import numpy_vae.kl as kl_module  # noqa: E402
import numpy_vae.layers as layers_module  # noqa: E402
import numpy_vae.likelihoods as likelihoods_module  # noqa: E402
import numpy_vae.made as made_module  # noqa: E402
import numpy_vae.model as model_module  # noqa: E402
import numpy_vae.objectives as objectives_module  # noqa: E402
from numpy_vae import VAE, get_backend  # noqa: E402
from numpy_vae.checks import torch_completion as tc  # noqa: E402
from numpy_vae.checks import torch_twin as tt  # noqa: E402
from numpy_vae.config import ModelConfig  # noqa: E402
from numpy_vae.gradcheck import relative_error  # noqa: E402
from numpy_vae.optim import Adam  # noqa: E402

F64 = get_backend("numpy", "float64")
FIXTURES = Path(__file__).parent / "fixtures"
COMPLETION_GOLDEN = sorted(FIXTURES.glob("golden_completion*.npz"))
GOLDEN = [p for p in sorted(FIXTURES.glob("golden_*.npz")) if p not in COMPLETION_GOLDEN]
TRAINING_HIDDEN = {"default": (400,)}  # every other variant: (128,)
MADE_VARIANTS = [v for v, spec in tt.VARIANTS.items() if spec.model.get("decoder") == "made"]
ELBO_VARIANTS = [
    v for v, spec in tt.VARIANTS.items() if "objective" not in spec.model and v not in MADE_VARIANTS
]
SAMPLED_VARIANTS = [
    v for v, spec in tt.VARIANTS.items() if "objective" in spec.model and v not in MADE_VARIANTS
]


def made_widths(variant, width):
    """A MADE variant's depth at ``width`` units per masked layer; None for an MLP decoder."""
    spec = tt.VARIANTS[variant].model
    if spec.get("decoder") != "made":
        return None
    return (width,) * len(spec.get("made_hidden", ModelConfig().made_hidden))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # One intra-op thread. At these sizes (batch 128) torch's per-op parallelism buys little, and
    # on a two-core machine shared with other work two threads made the 100-step runs 1.5 to 3
    # times slower (measured: 784-128-20, 100 steps, 5.6 s with one thread, 8.7 s with two).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mnist_shaped_batch(variant, seed=0, noise_shape=(128, 20)):
    """128 synthetic images (and labels if the variant is conditional), and eps of
    ``noise_shape``: ``model.noise_shape(128)``, (128, K, 20) for a multi-sample objective."""
    grey, binary, labels = tt.synthetic_mnist(n=128, seed=seed)
    spec = tt.VARIANTS[variant].model
    x = grey if spec.get("likelihood") == "gaussian" else binary
    if spec.get("decoder") == "made":
        assert np.isin(x, (0.0, 1.0)).all()  # the MADE decoder refuses grey levels
    y = labels if spec.get("n_classes") else None
    eps = np.random.default_rng(seed + 1).standard_normal(noise_shape)
    return x, y, eps


def model_of(variant, hidden=(400,), **overrides):
    return VAE(
        784,
        hidden_dims=hidden,
        latent_dim=20,
        backend=F64,
        seed=0,
        **{**tt.VARIANTS[variant].model, **overrides},
    )


@pytest.mark.parametrize("variant", tt.VARIANTS)
def test_one_forward_backward_matches_autograd(variant):
    model = model_of(variant)
    twin = tt.twin_of(model)
    x, y, eps = mnist_shaped_batch(variant, noise_shape=model.noise_shape(128))
    # The warm-up variant's first steps run at small KL weights: check one of those.
    w = 0.25 if variant == "warmup" else None
    diffs = tt.compare_once(model, twin, x, y, eps, kl_weight=w)
    assert max(diffs.values()) <= tt.ONE_STEP_BOUND, diffs


def test_free_bits_one_step_with_some_dimensions_clamped():
    """Lambda at the median batch-mean KL: half the dimensions pass gradient, half do not."""
    x, y, eps = mnist_shaped_batch("default")
    probe = model_of("default").loss(x, eps=eps, grad=False)
    mean_kl = probe.kl_per_dim / 128
    lam = float(np.median(mean_kl))
    assert np.abs(mean_kl - lam).min() > 1e-6  # no dimension at the kink itself
    model = model_of("default", free_bits=lam)
    diffs = tt.compare_once(model, tt.twin_of(model), x, y, eps)
    assert max(diffs.values()) <= tt.ONE_STEP_BOUND, diffs


@pytest.mark.parametrize("variant", ELBO_VARIANTS)
def test_hundred_adam_steps_match_torch_optim(variant):
    report = tt.compare_training(
        variant, steps=100, hidden_dims=TRAINING_HIDDEN.get(variant, (128,))
    )
    assert report.ok, "\n".join(report.failures)
    # The run is not vacuous: the loss fell, and the weights moved by many Adam steps.
    assert report.rows[-1].loss < 0.8 * report.rows[0].loss
    if variant == "free_bits":
        clamped = [row.clamped for row in report.rows]
        # Every dimension clamped at the start, some clamped and some not later on.
        assert clamped[0] == 20 and any(0 < c < 20 for c in clamped)
    if variant == "warmup":
        assert report.rows[0].kl_weight == 0.0 and report.rows[-1].kl_weight == 1.0


@pytest.mark.parametrize("variant", SAMPLED_VARIANTS)
def test_short_training_on_the_multi_sample_bounds_matches_torch_optim(variant):
    """30 Adam steps on K = 3 samples per example, held to the same float64 bounds."""
    report = tt.compare_training(variant, steps=30, hidden_dims=(32,), batch_size=32)
    assert report.ok, "\n".join(report.failures)
    assert report.config["k"] == 3 and report.config["objective"] != "elbo"
    assert report.rows[-1].loss < 0.8 * report.rows[0].loss  # it trained


@pytest.mark.parametrize("variant", MADE_VARIANTS)
def test_short_training_with_the_made_decoder_matches_torch_optim(variant):
    """50 Adam steps of each MADE variant (784-32-20, masked layers of 32 at the variant's depth,
    batch 32), held to the same float64 bounds. (50, not 30: a MADE this narrow trains slower,
    and after 30 steps the loss of made, made_no_z and made_conditional was still above 0.8 of
    the first.)"""
    widths = made_widths(variant, 32)
    report = tt.compare_training(
        variant, steps=50, hidden_dims=(32,), batch_size=32, made_hidden=widths
    )
    assert report.ok, "\n".join(report.failures)
    assert report.config["decoder"] == "made" and tuple(report.config["made_hidden"]) == widths
    assert report.rows[-1].loss < 0.8 * report.rows[0].loss  # it trained


def test_the_estimators_differ_in_the_encoder_and_agree_in_the_decoder():
    """Parity per estimator is not vacuous: the twin's reparam, STL and DReG gradients differ
    (so a side that ignored ``estimator`` would fail parity), except in the decoder, which takes
    the plain IWAE gradient under every estimator."""
    plain_twin = tt.twin_of(model_of("iwae", hidden=(32,)))
    grads, diffs = {}, {}
    for estimator in ("reparam", "stl", "dreg"):
        model = model_of("iwae", hidden=(32,), estimator=estimator)
        x, y, eps = mnist_shaped_batch("iwae", noise_shape=model.noise_shape(128))
        twin = tt.twin_of(model)
        tt.twin_loss_backward(twin, x, y, eps)
        grads[estimator] = tt.twin_grads(twin)
        # numpy-vae with this estimator against the twin with the plain one.
        diffs[estimator] = tt.compare_once(model, plain_twin, x, y, eps)
    for a, b in (("reparam", "stl"), ("reparam", "dreg"), ("stl", "dreg")):
        for name in grads[a]:
            diff = relative_error(grads[a][name], grads[b][name])
            if name.startswith("decoder."):
                assert diff <= 1e-13, (a, b, name, diff)
            else:
                assert diff > 1e-3, (a, b, name, diff)
    for estimator in ("stl", "dreg"):
        assert diffs[estimator]["grad/head.weight"] > 1e-3, diffs[estimator]
        assert diffs[estimator]["loss"] <= tt.ONE_STEP_BOUND  # the same bound, another gradient


@pytest.mark.parametrize("variant,widths", [("default", None), ("made", (64,))])
def test_a_leaky_relu_slope_other_than_the_default_matches_autograd(variant, widths):
    """``leaky_relu_slope`` reaches both sides: numpy-vae's layers and the twin's nn.LeakyReLU
    (its ``negative_slope``), in the encoder and the MLP or MADE decoder; at slope 0.2 they agree
    to the one-step bound, and a twin left at 0.01 does not."""
    made = {"made_hidden": widths} if widths else {}
    settings = dict(hidden=(32,), activation="leaky_relu", **made)
    model = model_of(variant, leaky_relu_slope=0.2, **settings)
    twin = tt.twin_of(model)
    slopes = {m.negative_slope for m in twin.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}
    x, y, eps = mnist_shaped_batch(variant)
    diffs = tt.compare_once(model, twin, x, y, eps)
    assert max(diffs.values()) <= tt.ONE_STEP_BOUND, diffs
    default_twin = tt.twin_of(model_of(variant, **settings))
    assert tt.compare_once(model, default_twin, x, y, eps)["loss"] > 1e-6


def test_float32_runs_and_agrees_to_single_precision_after_one_step():
    """Float32 drift over many steps is reported by scripts/compare_torch.py, not bounded."""
    report = tt.compare_training("default", steps=5, dtype="float32", hidden_dims=(32,))
    assert report.ok  # no bounds in float32
    assert report.max_one_step_loss < 1e-5 and report.max_one_step_grad < 1e-5
    assert np.isfinite(report.max_trained_param)


# ------------------------------------------------------------------ golden files, through torch
def twin_from_golden(path):
    """Build the twin from a golden file alone, as a port would: no numpy-vae model involved."""
    with np.load(path, allow_pickle=False) as f:
        a = {key: f[key] for key in f.files}
    config = json.loads(a["config"].item())
    kwargs = dict(config["model"])
    twin = tt.TorchVAE(kwargs.pop("input_dim"), ModelConfig(**kwargs), dtype=torch.float64)
    tt.load_params(twin, {name: a[f"param/{name}"] for name in config["param_names"]})
    return twin, config, a


def twin_log_w(twin, x, y, eps):
    """``log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)`` (B, K), written out in torch from
    the twin's forward pass (its ``nll`` per sample, ``mu`` and ``logvar``)."""
    with torch.no_grad():
        parts = twin.loss(*(tt.to_tensor(a, torch.float64) for a in (x, y, eps)))
        eps = torch.as_tensor(eps)
        z = parts.mu[:, None, :] + torch.exp(0.5 * parts.logvar)[:, None, :] * eps
        log_pz = -0.5 * (z**2 + tt.LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps**2 + parts.logvar[:, None, :] + tt.LOG_2PI).sum(-1)
        return (-parts.nll + log_pz - log_qz).numpy()


def assert_twin_follows_golden(harness, twin, config, a, parts, loss_at):
    """What every golden file records after its checked loss, to 1e-12 relative: the loss's
    ``parts`` (computed by the twin), the twin's gradients, and its parameters after the file's
    Adam steps, each after ``loss_at(step)`` (the loss and its backward). ``harness`` is the
    twin's module (:mod:`numpy_vae.checks.torch_twin` or ``torch_completion``)."""
    for key, value in parts.items():
        assert relative_error(value, a[key]) <= 1e-12, key
    grads = harness.twin_grads(twin)
    for name in config["param_names"]:
        assert relative_error(grads[name], a[f"grad/{name}"]) <= 1e-12, name
    adam = config["adam"]
    opt = harness.twin_adam(twin, lr=adam["lr"], betas=tuple(adam["betas"]), eps=adam["eps"])
    for step in range(adam["steps"]):
        loss_at(step)
        opt.step()
    params = harness.twin_params(twin)
    for name in config["param_names"]:
        assert relative_error(params[name], a[f"adam3/{name}"]) <= 1e-12, name


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_torch_twin_reproduces_the_golden_files(path):
    """Every golden file, every objective and estimator (elbo, vae, iwae with reparam, STL and
    DReG) and both decoders (MLP, MADE): the twin, built from the file alone, gives its loss,
    parts, ``log_w``, gradients and the parameters after three torch.optim.Adam steps, each to
    1e-12 relative."""
    twin, config, a = twin_from_golden(path)
    y, w = a.get("y"), float(a["kl_weight"])
    if "log_w" in a:
        assert relative_error(twin_log_w(twin, a["x"], y, a["eps"]), a["log_w"]) <= 1e-12
    parts = tt.twin_loss_backward(twin, a["x"], y, a["eps"], w)
    assert_twin_follows_golden(
        tt,
        twin,
        config,
        a,
        {key: parts[key] for key in ("loss", "recon", "kl", "kl_per_dim")},
        lambda step: tt.twin_loss_backward(twin, a["x"], y, a["adam3_eps"][step], w),
    )


# ------------------------------------------------------------------ the twin is a real check
@pytest.mark.parametrize(
    "variant", ["conditional", "iwae_dreg", "made_conditional", "made_iwae_dreg"]
)
def test_twin_computes_without_numpy_vae(monkeypatch, variant):
    """Once built, the twin runs with every numpy-vae computation disabled: it is autograd's."""
    model = model_of(variant, hidden=(16,))
    twin = tt.twin_of(model)
    x, y, eps = mnist_shaped_batch(variant, noise_shape=model.noise_shape(128))

    def refuse(*args, **kwargs):
        raise AssertionError("the twin called into numpy-vae")

    # Every function of the math files the model and its objectives call, where they call it.
    modules = {
        likelihoods_module: ("bernoulli_nll", "gaussian_nll"),
        kl_module: ("kl_standard_normal", "free_bits", "weighted_kl"),
        model_module: (
            "kl_standard_normal",
            "weighted_kl",
            "reparameterize",
            "reparameterize_backward",
        ),
        bounds_module: ("log_mean_exp", "normalized_weights", "log_posterior", "log_prior"),
        objectives_module: (
            "importance_samples",
            "log_mean_exp",
            "normalized_weights",
            "kl_standard_normal",
        ),
    }
    for module, names in modules.items():
        for name in names:
            monkeypatch.setattr(module, name, refuse)
    for cls in (
        model_module.VAE,
        layers_module.Linear,
        layers_module.Sequential,
        layers_module.MaskedLinear,
        decoders_module.MLPDecoder,
        made_module.MADEDecoder,
        objectives_module.ELBO,
        objectives_module.MultiSampleBound,
        bounds_module.Reparameterized,
        bounds_module.StickingTheLanding,
    ):
        monkeypatch.setattr(cls, "forward", refuse, raising=False)
        monkeypatch.setattr(cls, "backward", refuse, raising=False)
        monkeypatch.setattr(cls, "encoder_gradient", refuse, raising=False)
    monkeypatch.setattr(model_module.VAE, "loss", refuse)

    parts = twin.loss(*(tt.to_tensor(a, torch.float64) for a in (x, y, eps)))
    assert parts.loss.grad_fn is not None  # an autograd graph, not a number handed over
    if variant == "iwae_dreg":  # the encoder's own surrogate, an autograd graph too
        assert parts.encoder_loss.grad_fn is not None
    twin.backward(parts)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in twin.parameters())
    # Built from torch.nn parts only (and for MADE the twin's own two: MaskedLinear, an
    # nn.Linear whose forward is F.linear(x, weight * mask, bias), and the container TorchMADE).
    own = (tt.MaskedLinear, tt.TorchMADE)
    modules = {
        type(m).__module__.split(".")[0]
        for m in twin.modules()
        if m is not twin and not isinstance(m, own)
    }
    assert modules == {"torch"}
    assert any(isinstance(m, own) for m in twin.modules()) == variant.startswith("made")
    # It owns its weights: changing numpy-vae's leaves the twin alone.
    before = tt.twin_params(twin)["head.weight"]
    model.params["head.weight"][...] += 1.0
    np.testing.assert_array_equal(tt.twin_params(twin)["head.weight"], before)


def test_parity_catches_a_bug_that_finite_differences_miss(monkeypatch):
    """std = exp(logvar) in forward and backward passes a gradient check, not the twin."""
    model = model_of("default", hidden=(32,))
    model.params["head.bias"][20:] += 1.0  # logvar away from 0, where the bug is invisible
    twin = tt.twin_of(model)
    x, y, eps = mnist_shaped_batch("default")
    assert max(tt.compare_once(model, twin, x, y, eps).values()) <= tt.ONE_STEP_BOUND
    monkeypatch.setattr(model_module, "reparameterize", std_is_exp_logvar)
    monkeypatch.setattr(model_module, "reparameterize_backward", std_is_exp_logvar_backward)
    diffs = tt.compare_once(model, twin, x, y, eps)
    assert diffs["loss"] > 1e-3 and diffs["grad/head.weight"] > 1e-2


# ------------------------------------------------------------------ the MADE decoder
def test_made_parity_catches_a_decoder_that_forgets_its_mask(monkeypatch):
    """numpy-vae's MaskedLinear with the mask dropped from forward and backward alike is a
    consistent function and gradient (a finite-difference check passes it), and the masked
    weights start at 0, so the loss does not move either: only the gradients give it away."""
    model = model_of("made_deep", hidden=(32,), made_hidden=(64, 64))
    twin = tt.twin_of(model)
    x, y, eps = mnist_shaped_batch("made_deep")
    assert max(tt.compare_once(model, twin, x, y, eps).values()) <= tt.ONE_STEP_BOUND
    monkeypatch.setattr(layers_module.MaskedLinear, "forward", layers_module.Linear.forward)
    monkeypatch.setattr(layers_module.MaskedLinear, "backward", layers_module.Linear.backward)
    diffs = tt.compare_once(model, twin, x, y, eps)
    assert diffs["loss"] <= tt.ONE_STEP_BOUND
    for name in ("masked.0", "masked.1", "masked.2", "direct"):
        assert diffs[f"grad/decoder.{name}.weight"] > 0.1, diffs


def test_made_masked_weights_stay_zero_under_both_optimizers():
    """Where the mask is 0 both sides' weight gradient is exactly 0, so Adam (numpy-vae's and
    torch's) never moves those weights off their initial 0."""
    model = model_of("made_deep", hidden=(32,), made_hidden=(64, 64))
    twin = tt.twin_of(model)
    opt_np = Adam(list(model.params.values()), list(model.grads.values()), lr=1e-3)
    opt_torch = tt.twin_adam(twin)
    masks = {
        f"decoder.{name}.weight": m.mask.numpy()
        for name, m in twin.decoder.named_modules()
        if isinstance(m, tt.MaskedLinear)
    }
    for seed in range(5):
        x, y, eps = mnist_shaped_batch("made_deep", seed=seed)
        model.loss(x, y, eps=eps)
        tt.twin_loss_backward(twin, x, y, eps)
        opt_np.step()
        opt_torch.step()
    theirs = tt.twin_params(twin)
    assert masks
    for name, mask in masks.items():
        assert np.all(model.params[name][mask == 0] == 0), name
        assert np.all(theirs[name][mask == 0] == 0), name
        assert relative_error(model.params[name], theirs[name]) <= tt.TRAINED_BOUND, name


@pytest.mark.parametrize("direct", [False, True])
def test_twin_made_is_autoregressive_by_autograd(direct):
    """The masks the twin takes from numpy_vae.made.made_masks, checked on their own: autograd's
    Jacobian of the logits in the pixels is strictly lower triangular (logit d sees x_<d only),
    with every entry below the diagonal non-zero (widths >= D - 1 hold every degree), even with
    every weight, masked or not, set non-zero."""
    torch.manual_seed(0)
    made = tt.TorchMADE(12, 3, (11, 16), torch.nn.Tanh, direct=direct)
    with torch.no_grad():
        for p in made.parameters():
            p.uniform_(-1, 1)
    context = torch.randn(1, 3, dtype=torch.float64)
    x = (torch.rand(12, dtype=torch.float64) < 0.5).to(torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(context, v[None])[0], x)
    below = torch.tril(torch.ones(12, 12, dtype=torch.bool), diagonal=-1)
    assert torch.all(jac[~below] == 0)
    assert torch.all(jac[below] != 0)


def test_numpy_vae_does_not_import_torch_and_the_twin_says_how_to_get_it():
    code = (
        "import sys\n"
        "import numpy_vae, numpy_vae.checks.golden\n"
        "assert 'torch' not in sys.modules, 'import numpy_vae pulled in torch'\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "try:\n"
        "    import numpy_vae.checks.torch_twin\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "pip install torch==2.13.0" in out.stdout
    assert 'pip install -e ".[torch]"' in out.stdout


# ------------------------------------------------------------------ the completion models
COMPLETION_KINDS = ["cvae", "baseline", "gsnn", "hybrid"]


def completion_model(kind, widths=(64,), activation="relu", seed=0):
    """A float64 completion model of ``kind`` (a key of ``tc.MODELS``) on the left-half /
    right-half split of 28 x 28 images (392 pixels each), z of 8 where there is one."""
    latent = {} if kind == "baseline" else {"latent_dim": 8}
    cls = tc.MODELS[kind]
    return cls(392, 392, widths, activation=activation, backend=F64, seed=seed, **latent)


def completion_batch(kind, n=16, seed=0):
    visible, hidden = tc.completion_data(n=n, seed=seed)
    eps = None if kind == "baseline" else np.random.default_rng(seed + 1).standard_normal((n, 8))
    return visible, hidden, eps


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("kind", COMPLETION_KINDS)
def test_completion_one_forward_backward_matches_autograd(kind, activation):
    """Two hidden layers (64, 32): the loss, its parts and every gradient of every network
    (prior, recognition, generation; the GSNN's two; the baseline's one) to 1e-12."""
    model = completion_model(kind, widths=(64, 32), activation=activation)
    twin = tc.completion_twin_of(model)
    assert {type(m) for m in twin.modules()} >= {torch.nn.Linear, torch.nn.Sequential}
    diffs = tc.compare_once(model, twin, *completion_batch(kind))
    assert set(diffs) >= {f"grad/{name}" for name in model.params}
    assert max(diffs.values()) <= tt.ONE_STEP_BOUND, diffs


@pytest.mark.parametrize("kind", COMPLETION_KINDS)
def test_completion_hundred_adam_steps_match_torch_optim(kind):
    report = tc.compare_training(kind, steps=100)
    assert report.ok, "\n".join(report.failures)
    assert report.config["kind"] == kind and report.config["batch_size"] == 16
    assert report.rows[-1].loss < 0.8 * report.rows[0].loss  # it trained
    if kind != "baseline":
        assert all(row.loss > 0 for row in report.rows)


def test_completion_parity_catches_a_wrong_weight_in_the_hybrid_twin(monkeypatch):
    """A hybrid twin whose GSNN term weighs alpha instead of 1 - alpha (alpha 0.5 would hide
    it: alpha 0.3): the loss and the gradients differ."""
    model = tc.MODELS["hybrid"](392, 392, (64,), 8, backend=F64, seed=0, alpha=0.3)
    batch = completion_batch("hybrid")
    assert max(tc.compare_once(model, tc.completion_twin_of(model), *batch).values()) <= 1e-12
    twin, right = tc.completion_twin_of(model), tc.gsnn_nll
    monkeypatch.setattr(tc, "gsnn_nll", lambda *args: 0.3 / 0.7 * right(*args))
    diffs = tc.compare_once(model, twin, *batch)
    assert diffs["loss"] > 1e-3 and diffs["grad/generation.0.weight"] > 1e-3, diffs


def kl_with_half_the_prior_logvar_gradient_missing(mu_q, logvar_q, mu_p, logvar_p, xp):
    """numpy_vae.kl.gaussian_kl with a wrong factor in one gradient: d KL / d logvar_p is
    (1 - ratio - scaled_sq) / 2, here / 4. The value is right."""
    kl, d_mu_q, d_logvar_q, d_mu_p, d_logvar_p = kl_module.gaussian_kl(
        mu_q, logvar_q, mu_p, logvar_p, xp
    )
    return kl, d_mu_q, d_logvar_q, d_mu_p, 0.5 * d_logvar_p


def test_completion_parity_catches_a_wrong_factor_in_the_kl_gradient(monkeypatch):
    """Only the prior network's gradients are wrong (the KL's logvar_p gradient reaches it
    alone): the loss and the other two networks still agree, the prior's do not."""
    model = completion_model("cvae")
    twin = tc.completion_twin_of(model)
    batch = completion_batch("cvae")
    assert max(tc.compare_once(model, twin, *batch).values()) <= tt.ONE_STEP_BOUND
    monkeypatch.setattr(
        completion_module, "gaussian_kl", kl_with_half_the_prior_logvar_gradient_missing
    )
    diffs = tc.compare_once(model, twin, *batch)
    assert diffs["loss"] <= tt.ONE_STEP_BOUND
    for name in model.params:
        if name.startswith("prior."):
            assert diffs[f"grad/{name}"] > 1e-3, (name, diffs)
        else:
            assert diffs[f"grad/{name}"] <= tt.ONE_STEP_BOUND, (name, diffs)
    assert not tc.compare_training("cvae", steps=1).ok  # the harness reports it too


def test_completion_parity_catches_a_wrong_kl_factor_in_the_twin(monkeypatch):
    """A twin whose closed-form KL misses its factor 1/2 fails on the loss and the gradients."""
    model = completion_model("cvae")
    batch = completion_batch("cvae")
    right = tc.gaussian_kl_elements
    monkeypatch.setattr(tc, "gaussian_kl_elements", lambda *args: 2 * right(*args))
    diffs = tc.compare_once(model, tc.completion_twin_of(model), *batch)
    assert diffs["kl"] > 0.4 and diffs["loss"] > 1e-4
    assert diffs["grad/prior.0.weight"] > 0.1


@pytest.mark.parametrize("kind", COMPLETION_KINDS)
def test_completion_twin_computes_without_numpy_vae(monkeypatch, kind):
    """Once built, the twin runs with numpy-vae's layers, KL, likelihood and reparameterization
    disabled, and owns its weights."""
    model = completion_model(kind, widths=(16,))
    twin = tc.completion_twin_of(model)
    visible, hidden, eps = completion_batch(kind)

    def refuse(*args, **kwargs):
        raise AssertionError("the twin called into numpy-vae")

    for name in ("gaussian_kl", "reparameterize", "reparameterize_backward"):
        monkeypatch.setattr(completion_module, name, refuse)
    for name in ("gsnn_forward", "gsnn_backward", "reparameterize", "reparameterize_backward"):
        monkeypatch.setattr(gsnn_module, name, refuse)
    monkeypatch.setattr(likelihoods_module, "bernoulli_nll", refuse)
    for cls in (
        layers_module.Linear,
        layers_module.Sequential,
        completion_module.CompletionCVAE,
        completion_module.CompletionBaseline,
        gsnn_module.CompletionGSNN,
        gsnn_module.CompletionHybrid,
    ):
        for method in ("forward", "backward", "loss"):
            monkeypatch.setattr(cls, method, refuse, raising=False)
    tc.twin_loss_backward(twin, visible, hidden, eps)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in twin.parameters())
    assert {type(m).__module__.split(".")[0] for m in twin.modules() if m is not twin} == {"torch"}
    first = next(iter(model.params))
    before = tc.twin_params(twin)[first]
    model.params[first][...] += 1.0
    np.testing.assert_array_equal(tc.twin_params(twin)[first], before)


@pytest.mark.parametrize("path", COMPLETION_GOLDEN, ids=[p.stem for p in COMPLETION_GOLDEN])
def test_completion_twin_reproduces_the_golden_files(path):
    """The twin built from the file alone (its ``model_class`` and ``model``, its parameters by
    name): loss, parts, every gradient and three torch.optim.Adam steps, each to 1e-12."""
    with np.load(path, allow_pickle=False) as f:
        a = {key: f[key] for key in f.files}
    config = json.loads(a["config"].item())
    kind = {"CompletionCVAE": "cvae", "CompletionBaseline": "baseline"}[config["model_class"]]
    twin = tc.build_twin(kind, config["model"])
    tc.load_params(twin, {name: a[f"param/{name}"] for name in config["param_names"]})
    parts = tc.twin_loss_backward(twin, a["visible"], a["hidden"], a.get("eps"))
    keys = ("loss", "recon", "kl", "kl_per_dim") if kind == "cvae" else ("loss", "recon")

    def loss_at(step):
        eps = a["adam3_eps"][step] if kind == "cvae" else None
        tc.twin_loss_backward(twin, a["visible"], a["hidden"], eps)

    assert_twin_follows_golden(tc, twin, config, a, {key: parts[key] for key in keys}, loss_at)
