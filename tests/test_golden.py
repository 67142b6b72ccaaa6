"""Golden files: numpy-vae still computes what tests/fixtures/golden_*.npz hold.

The files are read here the way a port would read them (``numpy.load`` and ``json``), not with
numpy-vae's generator, so these tests also check that the files are self-describing: every key the
porting guide (docs/12-porting.md) lists is present with the documented shape, and the stored
numbers obey the documented conventions (the MADE masks from the documented degree rule, the
loss from the documented formula of each objective). The stored gradients are checked against
finite differences too (STL's and DReG's encoder gradients against their surrogates'), so the
files cannot rot along with the code that made them.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from numpy_vae import VAE, bounds, completion, get_backend
from numpy_vae.checks.golden import (
    COMPLETION_VARIANTS,
    VARIANTS,
    _preactivations,
    adam_of,
    completion_config,
    model_config,
)
from numpy_vae.config import ModelConfig
from numpy_vae.fast import FastVAE
from numpy_vae.gradcheck import assert_gradients_close, check_gradients, relative_error

FIXTURES = Path(__file__).parent / "fixtures"
ALL_PATHS = sorted(FIXTURES.glob("golden_*.npz"))
# The completion models' files (their own format, below) and the VAE's.
COMPLETION_PATHS = [p for p in ALL_PATHS if p.stem.removeprefix("golden_") in COMPLETION_VARIANTS]
PATHS = [p for p in ALL_PATHS if p not in COMPLETION_PATHS]
IDS = [p.stem.removeprefix("golden_") for p in PATHS]
COMPLETION_IDS = [p.stem.removeprefix("golden_") for p in COMPLETION_PATHS]
F64 = get_backend("numpy", "float64")
REQUIRED_VARIANTS = {
    "default",
    "beta",
    "warmup",
    "free_bits",
    "conditional",
    "gaussian",
    "deep_tanh",
    "iwae",
    "vae_k",
    "iwae_stl",
    "iwae_dreg",
    "made",
}
MODEL_KEYS = {
    "input_dim",
    "hidden_dims",
    "latent_dim",
    "activation",
    "likelihood",
    "gaussian_sigma",
    "n_classes",
    "beta",
    "free_bits",
    "objective",
    "k",
    "estimator",
    "leaky_relu_slope",
}
MADE_KEYS = {"decoder", "made_hidden", "made_direct", "made_z"}  # in the MADE files only
BOUND = 1e-12  # relative difference, max|a - b| / max(|a|, |b|), for every recomputed array


def load(path):
    """(config dict, arrays dict) of one golden file."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    return json.loads(arrays["config"].item()), arrays


def build(config, arrays):
    """A numpy-vae model with the file's configuration and initial parameters."""
    model = VAE(**config["model"], backend=F64)
    for name in config["param_names"]:
        model.params[name][...] = arrays[f"param/{name}"]
    return model


def expected_shapes(model_config):
    """Parameter names and shapes as docs/12-porting.md describes them, from the config alone."""
    hidden = model_config["hidden_dims"]
    d, latent, k = model_config["input_dim"], model_config["latent_dim"], model_config["n_classes"]
    shapes = {}
    widths = [d + k, *hidden]
    for i in range(len(hidden)):
        shapes[f"encoder.{2 * i}.weight"] = (widths[i + 1], widths[i])  # (out, in)
        shapes[f"encoder.{2 * i}.bias"] = (widths[i + 1],)
    shapes["head.weight"] = (2 * latent, hidden[-1])
    shapes["head.bias"] = (2 * latent,)
    if model_config.get("decoder") == "made":
        return shapes | {name: mask.shape for name, mask in made_masks_from_docs(model_config)}
    widths = [latent + k, *reversed(hidden), d]
    for i in range(len(widths) - 1):
        shapes[f"decoder.{2 * i}.weight"] = (widths[i + 1], widths[i])
        shapes[f"decoder.{2 * i}.bias"] = (widths[i + 1],)
    return shapes


def made_masks_from_docs(model_config):
    """(name, 0/1 mask) of each MADE decoder weight, in parameter order, from the documented
    rule alone: input j has degree j (1..D); hidden unit k of a layer of H units has degree
    1 + floor(k (D - 1) / H); a hidden unit reads a unit of the layer below whose degree is <= its
    own, output d reads hidden units of degree < d (and, directly, pixels j < d). The context
    layers (z and the label into each hidden layer) are unmasked."""
    d, widths = model_config["input_dim"], model_config["made_hidden"]
    context = model_config["latent_dim"] + model_config["n_classes"]
    below, out = np.arange(1, d + 1), []
    for i, h in enumerate(widths):
        m = 1 + np.arange(h) * (d - 1) // h
        out.append((f"decoder.masked.{i}.weight", (m[:, None] >= below[None, :]) * 1.0))
        out.append((f"decoder.masked.{i}.bias", np.ones(h)))
        below = m
    pixels = np.arange(1, d + 1)
    out.append((f"decoder.masked.{len(widths)}.weight", (pixels[:, None] > below[None, :]) * 1.0))
    out.append((f"decoder.masked.{len(widths)}.bias", np.ones(d)))
    if model_config["made_z"]:
        out += [
            (f"decoder.context.{i}.weight", np.ones((h, context))) for i, h in enumerate(widths)
        ]
    if model_config["made_direct"]:
        out.append(("decoder.direct.weight", (pixels[:, None] > pixels[None, :]) * 1.0))
    return out


def test_every_variant_has_a_file():
    assert REQUIRED_VARIANTS <= set(IDS)
    assert set(IDS) == set(VARIANTS), "regenerate with: python scripts/make_golden.py"
    assert set(COMPLETION_IDS) == set(COMPLETION_VARIANTS) == {"completion", "completion_baseline"}


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_file_holds_everything_the_readme_lists(path):
    config, arrays = load(path)
    assert config["format"] == "numpy-vae golden v1"
    assert config["variant"] == path.stem.removeprefix("golden_")
    made = config["model"].get("decoder") == "made"
    assert set(config["model"]) == MODEL_KEYS | (MADE_KEYS if made else set())
    assert config["adam"] == {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "steps": 3}
    # The generator and the committed file describe the same model.
    generated = model_config(config["variant"])
    assert config["model"] == generated, "regenerate with: python scripts/make_golden.py"

    mc = config["model"]
    shapes = expected_shapes(mc)
    assert config["param_names"] == list(shapes)
    n, d, latent, steps = len(arrays["x"]), mc["input_dim"], mc["latent_dim"], 3
    # One noise row per example, or K of them (B, K, L) for a multi-sample objective.
    noise = (n, latent) if mc["objective"] == "elbo" else (n, mc["k"], latent)
    expected = {
        "config": (),
        "x": (n, d),
        "eps": noise,
        "kl_weight": (),
        "loss": (),
        "recon": (),
        "kl": (),
        "kl_per_dim": (latent,),
        "adam3_eps": (steps, *noise),
        "adam3_loss": (steps,),
    }
    if mc["n_classes"]:
        expected["y"] = (n,)
    if mc["objective"] != "elbo":
        expected["log_w"] = (n, mc["k"])
    for prefix in ("param/", "grad/", "adam3/"):
        expected.update({prefix + name: shape for name, shape in shapes.items()})
    assert set(arrays) == set(expected)
    for key, shape in expected.items():
        assert arrays[key].shape == shape, key
        if key == "config":
            assert arrays[key].dtype.kind == "U"
        elif key == "y":
            assert arrays[key].dtype == np.int64
            assert 0 <= arrays[key].min() and arrays[key].max() < mc["n_classes"]
        else:
            assert arrays[key].dtype == np.float64, key
            assert np.all(np.isfinite(arrays[key])), key
    # The single pass is the first of the three Adam steps.
    np.testing.assert_array_equal(arrays["adam3_eps"][0], arrays["eps"])
    if mc["likelihood"] == "bernoulli":
        assert 0 <= arrays["x"].min() and arrays["x"].max() <= 1
    if made:  # binary pixels; every masked-out weight is 0, before, under and after Adam
        assert np.isin(arrays["x"], (0.0, 1.0)).all()
        for name, mask in made_masks_from_docs(mc):
            for prefix in ("param/", "grad/", "adam3/"):
                assert np.all(arrays[prefix + name][mask == 0] == 0), prefix + name
            if name.endswith("weight"):
                assert np.all(arrays["param/" + name][mask == 1] != 0), name


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_stored_loss_follows_the_documented_formula(path):
    """loss = recon + w * KL, or with free bits recon + w * B * sum_j max(lambda, KL_j / B); for
    the IWAE files loss = -sum_b (logsumexp_k log_w[b, k] - log K), for the k-sample VAE file
    loss = -sum_b mean_k log_w[b, k]."""
    config, a = load(path)
    n, w, lam = len(a["x"]), float(a["kl_weight"]), config["model"]["free_bits"]
    assert a["kl"] == pytest.approx(a["kl_per_dim"].sum(), rel=1e-14)
    if config["model"]["objective"] != "elbo":
        log_w, k = a["log_w"], config["model"]["k"]
        m = log_w.max(axis=1)
        iwae = -(m + np.log(np.exp(log_w - m[:, None]).sum(axis=1)) - np.log(k)).sum()
        vae = -log_w.mean(axis=1).sum()
        loss = iwae if config["model"]["objective"] == "iwae" else vae
        assert a["loss"] == pytest.approx(loss, rel=1e-14)
        assert a["adam3_loss"][0] == a["loss"] and w == 1
        # recon is -sum_b mean_k log p(x_b|z_bk), reported beside the bound.
        assert a["recon"] > 0 and a["kl"] > 0
        # The weights are far from uniform, so the file tells the IWAE bound from the k-sample
        # VAE bound and from a wrong K.
        assert iwae < vae - 0.1
        return
    kl_objective = n * np.maximum(lam, a["kl_per_dim"] / n).sum() if lam > 0 else a["kl"]
    assert a["loss"] == pytest.approx(a["recon"] + w * kl_objective, rel=1e-14)
    assert a["adam3_loss"][0] == a["loss"]
    if lam > 0:  # the free-bits file sits on both sides of the clamp
        clamped = a["kl_per_dim"] / n < lam
        assert clamped.any() and not clamped.all()


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_numpy_vae_reproduces_loss_and_gradients(path):
    config, a = load(path)
    model = build(config, a)
    parts = model.loss(a["x"], a.get("y"), eps=a["eps"], kl_weight=float(a["kl_weight"]))
    for key in ("loss", "recon", "kl", "kl_per_dim"):
        assert relative_error(getattr(parts, key), a[key]) <= BOUND, key
    errors = {name: relative_error(g, a[f"grad/{name}"]) for name, g in model.grads.items()}
    assert max(errors.values()) <= BOUND, errors
    if "log_w" in a:
        log_w = bounds.samples(model, a["x"], a.get("y"), eps=a["eps"]).log_w
        assert relative_error(log_w, a["log_w"]) <= BOUND


@pytest.mark.parametrize("cls", [VAE, FastVAE])
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_the_files_own_config_rebuilds_the_model(path, cls):
    """``VAE(**config["model"])``, the file's own dictionary as it stands, builds the model: the
    parameter names and shapes the file lists, and with its parameters loaded the recorded loss,
    parts, ``log_w`` and gradients, each to 1e-12 relative; the training path, FastVAE, too.
    (The file holds no seed: the initial parameters are in it, which is what a port without
    numpy's generator needs.)"""
    config, a = load(path)
    model = cls(**config["model"], backend=F64)
    assert list(model.params) == config["param_names"]
    assert {n: p.shape for n, p in model.params.items()} == {
        n: a[f"param/{n}"].shape for n in config["param_names"]
    }
    model.load_state_dict({n: a[f"param/{n}"] for n in config["param_names"]})
    assert model.config() == {**config["model"], "seed": 0, **model_defaults(config["model"])}
    parts = model.loss(a["x"], a.get("y"), eps=a["eps"], kl_weight=float(a["kl_weight"]))
    for key in ("loss", "recon", "kl", "kl_per_dim"):
        assert relative_error(getattr(parts, key), a[key]) <= BOUND, key
    for name in config["param_names"]:
        assert relative_error(model.grads[name], a[f"grad/{name}"]) <= BOUND, name
    if "log_w" in a:
        log_w = bounds.samples(model, a["x"], a.get("y"), eps=a["eps"]).log_w
        assert relative_error(log_w, a["log_w"]) <= BOUND


def model_defaults(model_dict):
    """The constructor defaults a file's model dictionary leaves out (the MLP files omit the MADE
    decoder's settings)."""
    defaults = ModelConfig().model_json()
    return {k: v for k, v in defaults.items() if k not in model_dict}


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_numpy_vae_reproduces_three_adam_steps(path):
    config, a = load(path)
    model = build(config, a)
    replay_adam_steps(
        model,
        config,
        a,
        lambda step: model.loss(
            a["x"], a.get("y"), eps=a["adam3_eps"][step], kl_weight=a["kl_weight"]
        ),
    )


def replay_adam_steps(model, config, a, loss_at):
    """The file's Adam steps on ``model``, each after ``loss_at(step)`` (the loss and its
    backward): every step's loss and the parameters after the last, to 1e-12 relative."""
    adam = config["adam"]
    opt = adam_of(model, adam)  # the file's settings, not the writer's
    for step in range(adam["steps"]):
        assert relative_error(loss_at(step).loss, a["adam3_loss"][step]) <= BOUND
        opt.step()
    errors = {name: relative_error(p, a[f"adam3/{name}"]) for name, p in model.params.items()}
    assert max(errors.values()) <= BOUND, errors
    # The three steps moved every weight matrix, so the comparison above is not vacuous.
    moved = {name: relative_error(p, a[f"param/{name}"]) for name, p in model.params.items()}
    assert all(v > 1e-4 for k, v in moved.items() if k.endswith("weight")), moved


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_stored_gradients_agree_with_finite_differences(path):
    """Of the loss; with STL or DReG the encoder's and head's gradients are those of the
    estimator's surrogate (q's parameters held where q's density is evaluated, and for DReG the
    squared weights w~^2 too), the decoder's those of the loss under every estimator."""
    config, a = load(path)
    model = build(config, a)
    y, w = a.get("y"), float(a["kl_weight"])
    stored = {name: a[f"grad/{name}"] for name in config["param_names"]}
    loss = lambda: model.loss(a["x"], y, eps=a["eps"], kl_weight=w, grad=False).loss  # noqa: E731
    estimator = config["model"]["estimator"]
    if estimator == "reparam":
        assert_gradients_close(check_gradients(loss, model.params, stored), 1e-7)
        return
    held = bounds.samples(model, a["x"], y, eps=a["eps"])
    mu0, logvar0 = held.mu.copy(), held.logvar.copy()
    w2 = bounds.normalized_weights(held.log_w, np) ** 2

    def surrogate():  # minus the surrogate, as the loss is minus the bound
        s = bounds.samples(model, a["x"], y, eps=a["eps"])
        log_joint = s.log_px + s.log_pz
        if estimator == "stl":
            return -bounds.stl_surrogate(log_joint, s.z, mu0, logvar0, np).sum()
        return -bounds.dreg_surrogate(log_joint, s.z, mu0, logvar0, w2, np).sum()

    decoder = {n: p for n, p in model.params.items() if n.startswith("decoder.")}
    encoder = {n: p for n, p in model.params.items() if n not in decoder}
    errors = check_gradients(surrogate, encoder, {n: stored[n] for n in encoder})
    errors |= check_gradients(loss, decoder, {n: stored[n] for n in decoder})
    assert_gradients_close(errors, 1e-7)


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_the_estimator_files_differ_from_the_plain_gradient_in_the_encoder_only(estimator):
    """The same model with the plain estimator: the decoder's gradients are the file's (every
    estimator takes the IWAE bound's own there), the encoder's and head's are far from it, so a
    port that ignored ``estimator`` would fail the file."""
    config, a = load(FIXTURES / f"golden_iwae_{estimator}.npz")
    plain = VAE(**{**config["model"], "estimator": "reparam"}, backend=F64)
    plain.load_state_dict({n: a[f"param/{n}"] for n in config["param_names"]})
    parts = plain.loss(a["x"], eps=a["eps"])
    assert relative_error(parts.loss, a["loss"]) <= BOUND  # one bound, two gradients
    for name, g in plain.grads.items():
        diff = relative_error(g, a[f"grad/{name}"])
        assert diff <= BOUND if name.startswith("decoder.") else diff > 0.1, (name, diff)


def test_the_kink_check_sees_every_sample_of_every_example():
    """With eps (B, K, L) the kink check's decoder pre-activations are B * K rows, example-major
    (row b K + k is sample k of example b), each what a single-sample pass on eps[:, k] gives."""
    model = VAE(**model_config("iwae"), backend=F64, seed=3)  # input 12, hidden (8,), K 3
    rng = np.random.default_rng(3)
    x, eps = rng.random((5, 12)), rng.standard_normal((5, 3, 3))
    many = _preactivations(model, x, None, eps)
    assert [p.shape for p in many] == [(5, 8), (15, 8)]
    for k in range(3):
        one = _preactivations(model, x, None, eps[:, k])
        np.testing.assert_array_equal(many[0], one[0])  # the encoder sees x alone
        np.testing.assert_allclose(many[1].reshape(5, 3, 8)[:, k], one[1], rtol=1e-15)


# ------------------------------------------------------------------ the completion models' files
COMPLETION_MODEL_KEYS = {"visible_dim", "hidden_dim", "widths", "activation"}


def completion_shapes(config):
    """Parameter names and shapes of a completion file, from its config alone, as
    docs/12-porting.md describes them: each network Linear layers at indices 0, 2, ...,
    (out, in), through ``widths`` to its output."""
    mc = config["model"]
    v, h, widths = mc["visible_dim"], mc["hidden_dim"], mc["widths"]
    if config["model_class"] == "CompletionBaseline":
        nets = {"net": (v, h)}
    else:
        two_l = 2 * mc["latent_dim"]
        nets = {
            "prior": (v, two_l),
            "recognition": (v + h, two_l),
            "generation": (v + mc["latent_dim"], h),
        }
    shapes = {}
    for net, (fan_in, out) in nets.items():
        sizes = [fan_in, *widths, out]
        for i in range(len(sizes) - 1):
            shapes[f"{net}.{2 * i}.weight"] = (sizes[i + 1], sizes[i])
            shapes[f"{net}.{2 * i}.bias"] = (sizes[i + 1],)
    return shapes


def documented_split(images, side, n_given):
    """``visible`` and ``hidden`` as the porting guide defines them: the pixels of the given
    quadrants (bottom-left; then top-left; then top-right) and the rest, each in row-major
    order."""
    half, grid = side // 2, np.zeros((side, side), dtype=bool)
    corners = [(half, 0), (0, 0), (0, half)][:n_given]
    for row, col in corners:
        grid[row : row + half, col : col + half] = True
    mask = grid.ravel()
    return images[:, mask], images[:, ~mask]


def build_completion(config, arrays):
    """The file's model from its own config: ``numpy_vae.completion.<model_class>(**model)``."""
    model = getattr(completion, config["model_class"])(**config["model"], backend=F64)
    assert list(model.params) == config["param_names"]
    for name in config["param_names"]:
        model.params[name][...] = arrays[f"param/{name}"]
    return model


@pytest.mark.parametrize("path", COMPLETION_PATHS, ids=COMPLETION_IDS)
def test_completion_file_holds_every_documented_key(path):
    config, a = load(path)
    assert config["format"] == "numpy-vae golden completion v1"
    assert config["variant"] == path.stem.removeprefix("golden_")
    cvae = config["model_class"] == "CompletionCVAE"
    assert config["model_class"] in ("CompletionCVAE", "CompletionBaseline")
    assert set(config["model"]) == COMPLETION_MODEL_KEYS | ({"latent_dim"} if cvae else set())
    assert config["model"] == completion_config(config["variant"]), "regenerate the file"
    assert config["adam"] == {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "steps": 3}
    side, n_given, mc = config["side"], config["n_given"], config["model"]
    assert (side, n_given) == (8, 2)
    assert (
        mc["visible_dim"] == n_given * side**2 // 4
        and mc["hidden_dim"] == side**2 - mc["visible_dim"]
    )
    shapes = completion_shapes(config)
    assert config["param_names"] == list(shapes)
    n = len(a["images"])
    expected = {
        "config": (),
        "images": (n, side * side),
        "visible": (n, mc["visible_dim"]),
        "hidden": (n, mc["hidden_dim"]),
        "loss": (),
        "recon": (),
        "adam3_loss": (3,),
    }
    if cvae:
        latent = mc["latent_dim"]
        expected |= {
            "eps": (n, latent),
            "kl": (),
            "kl_per_dim": (latent,),
            "adam3_eps": (3, n, latent),
        }
    for prefix in ("param/", "grad/", "adam3/"):
        expected.update({prefix + name: shape for name, shape in shapes.items()})
    assert set(a) == set(expected)
    for key, shape in expected.items():
        assert a[key].shape == shape, key
        if key != "config":
            assert a[key].dtype == np.float64 and np.all(np.isfinite(a[key])), key
    assert 0 <= a["images"].min() and a["images"].max() <= 1
    visible, hidden = documented_split(a["images"], side, n_given)
    np.testing.assert_array_equal(a["visible"], visible)
    np.testing.assert_array_equal(a["hidden"], hidden)
    if cvae:
        np.testing.assert_array_equal(a["adam3_eps"][0], a["eps"])


def port_completion_loss(config, a, eps):
    """(loss, recon, kl (B, L) or None) of a completion file's model at its initial parameters,
    in plain NumPy from the documented formulas."""
    mc = config["model"]
    p = {name: a[f"param/{name}"] for name in config["param_names"]}

    def net(name, h):
        i = 0
        while f"{name}.{i + 2}.weight" in p:
            h, i = np.maximum(h @ p[f"{name}.{i}.weight"].T + p[f"{name}.{i}.bias"], 0), i + 2
        return h @ p[f"{name}.{i}.weight"].T + p[f"{name}.{i}.bias"]

    def nll(logits, x):
        return (np.logaddexp(0, logits) - x * logits).sum()

    v, h = a["visible"], a["hidden"]
    if config["model_class"] == "CompletionBaseline":
        recon = nll(net("net", v), h)
        return recon, recon, None
    latent = mc["latent_dim"]
    prior, rec = net("prior", v), net("recognition", np.concatenate([v, h], axis=1))
    mu_p, b, mu_q, a_q = prior[:, :latent], prior[:, latent:], rec[:, :latent], rec[:, latent:]
    z = mu_q + np.exp(a_q / 2) * eps
    recon = nll(net("generation", np.concatenate([v, z], axis=1)), h)
    kl = 0.5 * (b - a_q + np.exp(a_q - b) + (mu_q - mu_p) ** 2 * np.exp(-b) - 1)
    return recon + kl.sum(), recon, kl


@pytest.mark.parametrize("path", COMPLETION_PATHS, ids=COMPLETION_IDS)
def test_completion_stored_loss_follows_the_documented_formula(path):
    """loss = recon + sum KL (the CVAE; recon alone for the baseline), recomputed in plain NumPy
    from the file's parameters and inputs."""
    config, a = load(path)
    loss, recon, kl = port_completion_loss(config, a, a.get("eps"))
    assert relative_error(loss, a["loss"]) <= BOUND and relative_error(recon, a["recon"]) <= BOUND
    assert a["adam3_loss"][0] == a["loss"]
    if kl is None:
        assert a["loss"] == a["recon"]
        return
    assert relative_error(kl.sum(axis=0), a["kl_per_dim"]) <= BOUND
    assert a["loss"] == pytest.approx(a["recon"] + a["kl"], rel=1e-14)
    assert a["kl"] == pytest.approx(a["kl_per_dim"].sum(), rel=1e-14) and a["kl"] > 0


@pytest.mark.parametrize("path", COMPLETION_PATHS, ids=COMPLETION_IDS)
def test_completion_files_own_config_rebuilds_the_model_and_its_three_adam_steps(path):
    """``<model_class>(**config["model"])`` with the file's parameters: the loss, parts and
    every gradient, then three Adam steps, each to 1e-12 relative."""
    config, a = load(path)
    model = build_completion(config, a)
    assert {n: p.shape for n, p in model.params.items()} == completion_shapes(config)
    parts = model.loss(a["visible"], a["hidden"], eps=a.get("eps"))
    keys = ("loss", "recon", "kl", "kl_per_dim") if "kl" in a else ("loss", "recon")
    for key in keys:
        assert relative_error(getattr(parts, key), a[key]) <= BOUND, key
    errors = {name: relative_error(g, a[f"grad/{name}"]) for name, g in model.grads.items()}
    assert max(errors.values()) <= BOUND, errors
    eps = a["adam3_eps"] if "adam3_eps" in a else [None] * config["adam"]["steps"]
    replay_adam_steps(
        model, config, a, lambda step: model.loss(a["visible"], a["hidden"], eps=eps[step])
    )


@pytest.mark.parametrize("path", COMPLETION_PATHS, ids=COMPLETION_IDS)
def test_completion_stored_gradients_agree_with_finite_differences(path):
    config, a = load(path)
    model = build_completion(config, a)
    stored = {name: a[f"grad/{name}"] for name in config["param_names"]}
    eps = a.get("eps")
    loss = lambda: model.loss(a["visible"], a["hidden"], eps=eps, grad=False).loss  # noqa: E731
    assert_gradients_close(check_gradients(loss, model.params, stored), 1e-7)
