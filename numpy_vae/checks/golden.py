"""Golden files: small, fixed models with their loss, gradients and three Adam steps, in ``.npz``.

A golden file pins down what this package computes for one configuration, in float64, so that

* numpy-vae itself cannot drift silently (``tests/test_golden.py`` recomputes every file), and
* a port (JAX, PyTorch, anything that reads ``.npz``) can test itself against numpy-vae without
  installing it: everything needed is in the file, described in docs/12-porting.md.

Layout of ``golden_<variant>.npz`` (all floats are float64):

============================  ==============  ================================================
key                           shape           meaning
============================  ==============  ================================================
``config``                    () str          JSON: ``format``, ``variant``, ``model`` (the
                                              constructor arguments), ``param_names`` (in
                                              order), ``adam`` (``lr``, ``betas``, ``eps``,
                                              ``steps``)
``param/<name>``              layer shape     initial parameters; weights are (out, in)
``x``                         (B, D)          the batch (0/1 pixels for the MADE decoder)
``y``                         (B,) int64      labels, conditional variant only
``eps``                       (B, L)          reparameterization noise of the single pass;
                              (B, K, L)       K samples per example (``vae``, ``iwae``)
``kl_weight``                 ()              weight ``w`` of the KL term
``loss``, ``recon``, ``kl``   ()              sums over the batch (see ``VAE.loss``)
``kl_per_dim``                (L,)            KL of each latent dimension, summed over batch
``log_w``                     (B, K)          ``log w_k`` of the single pass (``vae``, ``iwae``)
``grad/<name>``               layer shape     gradient of ``loss``
``adam3_eps``                 (3, B, L)       noise of each of 3 Adam steps; ``[0]`` is ``eps``
                              (3, B, K, L)    (``vae``, ``iwae``)
``adam3_loss``                (3,)            ``loss`` before each step's update
``adam3/<name>``              layer shape     parameters after the 3 steps
============================  ==============  ================================================

With the ``iwae`` objective ``loss`` is the negative IWAE bound, ``-sum_b (logsumexp_k
log_w[b, k] - log K)``, with the ``vae`` objective the negative k-sample VAE bound, ``-sum_b
mean_k log_w[b, k]``; ``recon`` and ``kl`` are reported beside it as :meth:`VAE.loss` reports
them (``-sum_b mean_k log p(x_b|z_bk)`` and the closed-form KL), and ``kl_weight`` is 1. The
gradients are the loss's own, except the encoder's and head's under the STL and DReG
estimators, which are those estimators' (:mod:`numpy_vae.bounds`).

The files of the completion models (:data:`COMPLETION_VARIANTS`, :mod:`numpy_vae.completion`)
have a layout of their own, format ``numpy-vae golden completion v1``: see
:func:`make_completion_golden`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpy_vae import __version__, bounds
from numpy_vae.backend import get_backend
from numpy_vae.completion import CompletionBaseline, CompletionCVAE
from numpy_vae.made import made_masks
from numpy_vae.model import VAE
from numpy_vae.optim import Adam
from numpy_vae.quadrants import quadrant_split

FORMAT = "numpy-vae golden v1"
ADAM = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "steps": 3}
BATCH = 5
SMALL = {"input_dim": 12, "hidden_dims": [8], "latent_dim": 3}


@dataclass(frozen=True)
class GoldenVariant:
    """One golden configuration: constructor arguments on top of :data:`SMALL`, a KL weight
    (default: ``beta``) and the seed of the weights and of the data."""

    description: str
    model: dict[str, Any] = field(default_factory=dict)
    kl_weight: float | None = None
    seed: int = 0


VARIANTS: dict[str, GoldenVariant] = {
    "default": GoldenVariant("ReLU, Bernoulli, beta 1", seed=0),
    "beta": GoldenVariant("beta-VAE: beta 4 (kl_weight 4)", {"beta": 4.0}, seed=1),
    "warmup": GoldenVariant("KL warm-up: beta 1, kl_weight 0.3", kl_weight=0.3, seed=2),
    # Seed 4 puts the batch-mean KL of the three latent dimensions near 0.05, 0.05 and 0.14 nats:
    # an allowance of 0.08 clamps the first two and passes the third, each at least 20% of lambda
    # away from the kink in every one of the three Adam steps (checked when the file is made).
    "free_bits": GoldenVariant(
        "free bits: lambda 0.08 nats, 2 of 3 dimensions clamped", {"free_bits": 0.08}, seed=4
    ),
    "conditional": GoldenVariant("conditional VAE, 4 classes", {"n_classes": 4}, seed=5),
    "gaussian": GoldenVariant(
        "Gaussian likelihood, sigma 0.7", {"likelihood": "gaussian", "gaussian_sigma": 0.7}, seed=6
    ),
    "deep_tanh": GoldenVariant(
        "two hidden layers (8, 6), tanh", {"hidden_dims": [8, 6], "activation": "tanh"}, seed=7
    ),
    "leaky_relu": GoldenVariant("LeakyReLU (slope 0.01)", {"activation": "leaky_relu"}, seed=8),
    "sigmoid": GoldenVariant("sigmoid hidden activation", {"activation": "sigmoid"}, seed=9),
    # K = 3 samples per example: eps is (B, K, L) and the decoder runs on B * K rows. Seed 12
    # keeps every pre-activation at least 1e-3 from the ReLU kink in all three Adam steps (seed
    # 10 does not) and spreads the normalized weights w~ over about 0.2 to 0.55: near-uniform
    # weights (1/3) would make the IWAE bound's gradient nearly the k-sample VAE bound's, and
    # the file could not tell the two apart.
    "iwae": GoldenVariant(
        "IWAE bound, K 3, plain reparameterized gradient", {"objective": "iwae", "k": 3}, seed=12
    ),
    # One model, batch and eps (seed 15) under the k-sample VAE bound and the IWAE bound's STL
    # and DReG estimators: the two estimator files differ only in the encoder's and head's
    # gradients and what Adam makes of them. (Seed 12, the "iwae" file's, puts a pre-activation
    # within 1e-3 of the kink in an Adam step of STL and DReG.) The weights w~ spread over about
    # 0.15 to 0.58, so the bounds, and the estimators, are far apart.
    "vae_k": GoldenVariant(
        "k-sample VAE bound, K 3: mean_k log w_k", {"objective": "vae", "k": 3}, seed=15
    ),
    "iwae_stl": GoldenVariant(
        "IWAE bound, K 3, STL encoder gradient",
        {"objective": "iwae", "k": 3, "estimator": "stl"},
        seed=15,
    ),
    "iwae_dreg": GoldenVariant(
        "IWAE bound, K 3, DReG encoder gradient",
        {"objective": "iwae", "k": 3, "estimator": "dreg"},
        seed=15,
    ),
    # Binary pixels (the MADE decoder models 0/1 data only). Masked widths 11 (every degree
    # 1..11 of D = 12) and 8 (degrees 1 2 3 5 6 7 9 10: some missing), z in both, and the
    # direct connection, so every parameter kind of the decoder is in the file.
    "made": GoldenVariant(
        "MADE decoder, masked hidden (11, 8), direct connection, binary data",
        {"decoder": "made", "made_hidden": [11, 8], "made_direct": True},
        seed=13,
    ),
}

COMPLETION_FORMAT = "numpy-vae golden completion v1"
#: The completion files' images: 8 x 8, 2 of the 4 quadrants given (the left half), so
#: ``visible`` and ``hidden`` are 32 pixels each.
COMPLETION_SIDE, COMPLETION_N_GIVEN = 8, 2
COMPLETION_SMALL = {"widths": [8], "activation": "relu"}
COMPLETION_CLASSES = {"CompletionCVAE": CompletionCVAE, "CompletionBaseline": CompletionBaseline}


@dataclass(frozen=True)
class CompletionGoldenVariant:
    """One golden configuration of :mod:`numpy_vae.completion`: the model's class, constructor
    arguments on top of :data:`COMPLETION_SMALL` and the sizes of the quadrants, and the seed of
    the weights and of the data."""

    description: str
    model_class: str
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


# One seed for both: the two files hold the same images, so a port's two models see one batch.
# Seed 21 keeps every ReLU input of the CVAE's three networks and of the baseline's at least
# MIN_KINK_DISTANCE from 0 in all three Adam steps (seed 20 does not).
COMPLETION_VARIANTS: dict[str, CompletionGoldenVariant] = {
    "completion": CompletionGoldenVariant(
        "completion CVAE: learned prior p(z | visible), 8 x 8 images, left half given",
        "CompletionCVAE",
        {"latent_dim": 3},
        seed=21,
    ),
    "completion_baseline": CompletionGoldenVariant(
        "completion baseline: deterministic network, 8 x 8 images, left half given",
        "CompletionBaseline",
        seed=21,
    ),
}

# Central differences at step h (five-point: up to 2h) must not straddle a kink; the golden
# files' own finite-difference test uses h = 1e-4.
MIN_KINK_DISTANCE = 1e-3
MIN_FREE_BITS_MARGIN = 0.2  # as a fraction of lambda


def adam_of(model: Any, settings: dict[str, Any]) -> Adam:
    """The specification's Adam over ``model``'s parameters with a golden file's ``adam``
    settings (``lr``, ``betas``, ``eps``)."""
    params, grads = list(model.params.values()), list(model.grads.values())
    betas = tuple(settings["betas"])
    return Adam(params, grads, lr=settings["lr"], betas=betas, eps=settings["eps"])


def model_config(variant: str) -> dict[str, Any]:
    """Constructor arguments of the variant's :class:`VAE` (without ``seed`` and ``backend``):
    ``model.config()``, so that ``VAE(**model_config(variant))`` builds it."""
    spec = VARIANTS[variant]
    config = {**SMALL, **spec.model}
    model = VAE(**config, backend=get_backend("numpy", "float64"))
    out = model.config()
    out.pop("seed")
    if out["decoder"] == "mlp":
        # The MLP files keep the keys they had before the MADE decoder existed: its settings
        # are constructor defaults there, and a port reading the files needs nothing new.
        for key in ("decoder", "made_hidden", "made_direct", "made_z"):
            out.pop(key)
    return out


def make_golden(variant: str) -> dict[str, np.ndarray]:
    """Compute the arrays of ``golden_<variant>.npz`` with numpy-vae in float64.

    Parameters
    ----------
    variant : str
        A key of :data:`VARIANTS`, or of :data:`COMPLETION_VARIANTS`
        (:func:`make_completion_golden`).

    Returns
    -------
    dict key -> array
        The layout in the module docstring.

    Raises
    ------
    ValueError
        If the variant is unknown, or its data lie too near a kink (ReLU at 0, the free-bits
        allowance) for finite differences to check the file.
    """
    if variant in COMPLETION_VARIANTS:
        return make_completion_golden(variant)
    if variant not in VARIANTS:
        known = ", ".join([*VARIANTS, *COMPLETION_VARIANTS])
        raise ValueError(f"unknown golden variant {variant!r}; choose one of {known}")
    spec = VARIANTS[variant]
    config = model_config(variant)
    model = VAE(**config, backend=get_backend("numpy", "float64"), seed=spec.seed)
    rng = np.random.default_rng(1000 + spec.seed)
    n, d = BATCH, config["input_dim"]
    if config["likelihood"] == "gaussian":
        x = rng.normal(0.5, 0.5, size=(n, d))  # real-valued targets, some outside [0, 1]
    elif config.get("decoder") == "made":
        x = (rng.random((n, d)) < 0.5).astype(np.float64)  # the MADE decoder's 0/1 pixels
    else:
        x = rng.random((n, d))  # grey levels in [0, 1] exercise the x * logit term fully
    y = (
        rng.integers(0, config["n_classes"], size=n).astype(np.int64)
        if config["n_classes"]
        else None
    )
    # (3, B, L), or (3, B, K, L) for a multi-sample objective; drawn after x and y, so the
    # single-sample files' arrays are those they had before the objectives existed.
    steps_eps = rng.standard_normal((ADAM["steps"], *model.noise_shape(n)))
    kl_weight = config["beta"] if spec.kl_weight is None else float(spec.kl_weight)

    arrays: dict[str, np.ndarray] = {}
    names = list(model.params)
    arrays["config"] = np.array(
        json.dumps(
            {
                "format": FORMAT,
                "variant": variant,
                "description": spec.description,
                "model": config,
                "param_names": names,
                "adam": ADAM,
                "numpy_vae_version": __version__,
            },
            sort_keys=True,
        )
    )
    for name in names:
        arrays[f"param/{name}"] = model.params[name].copy()
    arrays["x"] = x
    if y is not None:
        arrays["y"] = y
    arrays["eps"] = steps_eps[0].copy()
    arrays["kl_weight"] = np.array(kl_weight)

    parts = model.loss(x, y, eps=steps_eps[0], kl_weight=kl_weight)
    _check_kinks(model, x, y, steps_eps[0], parts, variant)
    arrays["loss"] = np.array(float(parts.loss))
    arrays["recon"] = np.array(float(parts.recon))
    arrays["kl"] = np.array(float(parts.kl))
    arrays["kl_per_dim"] = parts.kl_per_dim.copy()
    if config["objective"] != "elbo":
        # The importance weights' logs, for a port to check its log w before its loss.
        arrays["log_w"] = bounds.samples(model, x, y, eps=steps_eps[0]).log_w.copy()
    for name in names:
        arrays[f"grad/{name}"] = model.grads[name].copy()

    def checked_loss(step: int) -> Any:
        parts = model.loss(x, y, eps=steps_eps[step], kl_weight=kl_weight)
        _check_kinks(model, x, y, steps_eps[step], parts, variant)
        return parts

    arrays["adam3_eps"] = steps_eps
    record_adam_steps(model, arrays, checked_loss)
    return arrays


def record_adam_steps(model: Any, arrays: dict[str, np.ndarray], loss_at: Any) -> None:
    """The file's :data:`ADAM` steps from the parameters it holds, each after ``loss_at(step)``
    (the loss and its backward, with whatever check the file's data need), into ``arrays``:
    ``adam3_loss`` (steps,) and ``adam3/<name>``, the parameters after the last step."""
    opt = adam_of(model, ADAM)
    losses = []
    for step in range(ADAM["steps"]):
        losses.append(float(loss_at(step).loss))
        opt.step()
    arrays["adam3_loss"] = np.array(losses)
    for name, param in model.params.items():
        arrays[f"adam3/{name}"] = param.copy()


def completion_config(variant: str) -> dict[str, Any]:
    """Constructor arguments of a completion variant's model (without ``seed`` and ``backend``):
    ``COMPLETION_CLASSES[model_class](**completion_config(variant))`` builds it."""
    spec = COMPLETION_VARIANTS[variant]
    half = COMPLETION_SIDE * COMPLETION_SIDE // 4
    sizes = {
        "visible_dim": COMPLETION_N_GIVEN * half,
        "hidden_dim": (4 - COMPLETION_N_GIVEN) * half,
    }
    return {**sizes, **COMPLETION_SMALL, **spec.model}


def make_completion_golden(variant: str) -> dict[str, np.ndarray]:
    """The arrays of ``golden_<variant>.npz`` for a completion model (numpy-vae, float64).

    Layout: ``config`` (JSON: ``format`` :data:`COMPLETION_FORMAT`, ``variant``,
    ``description``, ``model_class``, ``model`` (the constructor arguments), ``side``,
    ``n_given``, ``param_names``, ``adam``); ``param/<name>``; ``images`` (B, side^2) in [0, 1]
    and their :func:`~numpy_vae.quadrants.quadrant_split` ``visible`` (B, V) and ``hidden``
    (B, H); for the CVAE ``eps`` (B, L); ``loss``, ``recon`` and, for the CVAE, ``kl`` and
    ``kl_per_dim`` (L,); ``grad/<name>``; for the CVAE ``adam3_eps`` (3, B, L);
    ``adam3_loss`` (3,) and ``adam3/<name>``. The baseline's ``loss`` is its ``recon``.

    Raises
    ------
    ValueError
        If a pre-activation of any network lies within :data:`MIN_KINK_DISTANCE` of the ReLU
        kink in any of the three steps.
    """
    spec = COMPLETION_VARIANTS[variant]
    config = completion_config(variant)
    cls = COMPLETION_CLASSES[spec.model_class]
    model = cls(**config, backend=get_backend("numpy", "float64"), seed=spec.seed)
    rng = np.random.default_rng(1000 + spec.seed)
    images = rng.random((BATCH, COMPLETION_SIDE * COMPLETION_SIDE))  # grey levels in [0, 1]
    visible, hidden = quadrant_split(images, COMPLETION_N_GIVEN, COMPLETION_SIDE)
    latent = model.latent_dim
    steps_eps = rng.standard_normal((ADAM["steps"], BATCH, latent)) if latent else None

    names = list(model.params)
    header = {
        "format": COMPLETION_FORMAT,
        "variant": variant,
        "description": spec.description,
        "model_class": spec.model_class,
        "model": config,
        "side": COMPLETION_SIDE,
        "n_given": COMPLETION_N_GIVEN,
        "param_names": names,
        "adam": ADAM,
        "numpy_vae_version": __version__,
    }
    arrays: dict[str, np.ndarray] = {"config": np.array(json.dumps(header, sort_keys=True))}
    for name in names:
        arrays[f"param/{name}"] = model.params[name].copy()
    arrays.update(images=images, visible=visible, hidden=hidden)
    if latent:
        arrays["eps"] = steps_eps[0].copy()

    def step_eps(step: int) -> np.ndarray | None:
        return None if steps_eps is None else steps_eps[step]

    parts = model.loss(visible, hidden, eps=step_eps(0))
    arrays["loss"] = np.array(float(parts.loss))
    arrays["recon"] = np.array(float(parts.recon))
    if latent:
        arrays["kl"] = np.array(float(parts.kl))
        arrays["kl_per_dim"] = parts.kl_per_dim.copy()
    for name in names:
        arrays[f"grad/{name}"] = model.grads[name].copy()

    def checked_loss(step: int) -> Any:
        smallest = min(
            np.abs(a).min()
            for a in completion_preactivations(model.params, visible, hidden, step_eps(step))
        )
        if smallest < MIN_KINK_DISTANCE:
            raise ValueError(
                f"{variant}: a pre-activation is {smallest:.2e} from the ReLU kink "
                f"(< {MIN_KINK_DISTANCE:g}) in Adam step {step + 1}; choose another seed"
            )
        return model.loss(visible, hidden, eps=step_eps(step))

    if latent:
        arrays["adam3_eps"] = steps_eps
    record_adam_steps(model, arrays, checked_loss)
    return arrays


def completion_preactivations(
    params: dict[str, np.ndarray], visible: np.ndarray, hidden: np.ndarray, eps: Any
) -> list[np.ndarray]:
    """Inputs of every hidden ReLU of a completion model (CVAE with ``eps`` (B, L), baseline
    with ``eps`` None), recomputed from ``params`` alone."""

    def run(net: str, h: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        pres, i = [], 0
        while f"{net}.{i + 2}.weight" in params:
            pres.append(h @ params[f"{net}.{i}.weight"].T + params[f"{net}.{i}.bias"])
            h, i = np.maximum(pres[-1], 0.0), i + 2
        return pres, h @ params[f"{net}.{i}.weight"].T + params[f"{net}.{i}.bias"]

    if eps is None:
        return run("net", visible)[0]
    latent = eps.shape[1]
    prior, _ = run("prior", visible)
    recognition, stats = run("recognition", np.concatenate([visible, hidden], axis=1))
    z = stats[:, :latent] + np.exp(0.5 * stats[:, latent:]) * eps
    generation, _ = run("generation", np.concatenate([visible, z], axis=1))
    return prior + recognition + generation


def write_golden(variant: str, directory: str | Path) -> Path:
    """Write ``golden_<variant>.npz`` (compressed) into ``directory``; return its path. ``variant``
    is a key of :data:`VARIANTS` or of :data:`COMPLETION_VARIANTS`."""
    path = Path(directory) / f"golden_{variant}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **make_golden(variant))
    return path


def _check_kinks(
    model: VAE, x: np.ndarray, y: Any, eps: np.ndarray, parts: Any, variant: str
) -> None:
    """Refuse data whose forward pass sits near a kink, where finite differences see two slopes."""
    if model.hparams.activation in ("relu", "leaky_relu"):
        smallest = min(np.abs(pre).min() for pre in _preactivations(model, x, y, eps))
        if smallest < MIN_KINK_DISTANCE:
            raise ValueError(
                f"{variant}: a pre-activation is {smallest:.2e} from the "
                f"{model.hparams.activation} kink (< {MIN_KINK_DISTANCE:g}); choose another seed"
            )
    if model.free_bits > 0:
        mean_kl = parts.kl_per_dim / parts.n
        margin = np.abs(mean_kl - model.free_bits).min() / model.free_bits
        clamped = int((mean_kl < model.free_bits).sum())
        if margin < MIN_FREE_BITS_MARGIN or clamped in (0, model.latent_dim):
            raise ValueError(
                f"{variant}: batch-mean KL per dimension {mean_kl} vs lambda {model.free_bits}: "
                "need some dimensions clamped and some not, all at least "
                f"{MIN_FREE_BITS_MARGIN:.0%} of lambda from it"
            )


def _preactivations(model: VAE, x: np.ndarray, y: Any, eps: np.ndarray) -> list[np.ndarray]:
    """Inputs of every hidden ReLU/LeakyReLU, recomputed from ``model.params`` alone.

    ``eps`` is (B, L), or (B, K, L) for K samples per example: the decoder then runs on all
    B * K rows, example-major, each beside its example's label. The MADE decoder's hidden
    layers read the pixels through their masks and the context ``[z | one-hot y]``.
    (Written out here rather than read from the layers' caches, which are internals.)
    """
    p, n_hidden = model.params, len(model.hparams.hidden_dims)
    onehot = np.eye(model.n_classes)[y] if model.n_classes else np.zeros((len(x), 0))
    eps = eps if eps.ndim == 3 else eps[:, None, :]  # one sample per example: K = 1
    n, k, latent = eps.shape

    def act(a: np.ndarray) -> np.ndarray:
        slope = 0.0 if model.hparams.activation == "relu" else model.hparams.leaky_relu_slope
        return np.where(a > 0, a, slope * a)

    pres, h = [], np.concatenate([x, onehot], axis=1)
    for i in range(n_hidden):
        pres.append(h @ p[f"encoder.{2 * i}.weight"].T + p[f"encoder.{2 * i}.bias"])
        h = act(pres[-1])
    stats = h @ p["head.weight"].T + p["head.bias"]
    mu, logvar = stats[:, :latent], stats[:, latent:]
    z = mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps  # (B, K, L)
    h = np.concatenate([z.reshape(n * k, latent), np.repeat(onehot, k, axis=0)], axis=1)
    if model.hparams.decoder == "made":
        masks, _, _ = made_masks(model.input_dim, model.hparams.made_hidden)
        context, h = h, np.repeat(x, k, axis=0)
        for i, mask in enumerate(masks):
            a = h @ (mask * p[f"decoder.masked.{i}.weight"]).T + p[f"decoder.masked.{i}.bias"]
            if model.hparams.made_z:
                a = a + context @ p[f"decoder.context.{i}.weight"].T
            pres.append(a)
            h = act(a)
        return pres
    for i in range(n_hidden):
        pres.append(h @ p[f"decoder.{2 * i}.weight"].T + p[f"decoder.{2 * i}.bias"])
        h = act(pres[-1])
    return pres
