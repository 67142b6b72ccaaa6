"""MNIST quadrant completion (Sohn et al. 2015), minimal: train the baseline network and the CVAE
of :mod:`numpy_vae.completion` on one split, then report each model's negative conditional
log-likelihood on test examples (nats per example): the baseline's exact, the CVAE's negative
ELBO and its importance-sampled estimate. The study also trains the GSNN and the hybrid
objective of :mod:`numpy_vae.gsnn`.

The pixels are binarized at 0.5 (``x > 0.5``), so that ``p(hidden | visible)`` is a probability
of a binary image and the figures are log-probabilities. This is a sanity check of the models
and the estimator, not the paper's protocol (no early stopping on a validation split, no
baseline guess fed to the prior network, few epochs).

The study (:func:`run_row`, the program ``scripts/completion_study.py``): a row per model
(:data:`MODELS`) and number of given quadrants (:data:`GIVENS`), all with one budget (epochs,
widths, latent size, Adam's learning rate, batch size), each measured with the estimates that
apply to it (:data:`ESTIMATES`). A row trains into
``runs/completion_<model>_given<N>`` with a checkpoint per epoch and continues from it when
stopped; its measurement on a fixed subset of the test images is ``RUN/completion.json``, read
back while the checkpoint and the settings are the same. A folder that holds a row of another
configuration is refused (:class:`~numpy_vae.training.runs.ConfigMismatch`). The models train
on the specification classes of :mod:`numpy_vae.completion` and :mod:`numpy_vae.gsnn` with
:class:`~numpy_vae.optim.Adam`; there is no fast path for them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from numpy_vae.completion import (
    CompletionBaseline,
    CompletionCVAE,
    CompletionModel,
    iw_conditional_log_likelihood,
)
from numpy_vae.gsnn import CompletionGSNN, CompletionHybrid, mc_conditional_log_likelihood
from numpy_vae.kl import gaussian_kl
from numpy_vae.optim import Adam
from numpy_vae.quadrants import quadrant_join, quadrant_mask, quadrant_split
from numpy_vae.reparam import reparameterize
from numpy_vae.training.atomic import write_atomic, write_json
from numpy_vae.training.checkpoint import CheckpointError, params_sha256
from numpy_vae.training.data import binarize, load_mnist, scale_images
from numpy_vae.training.plots import save_figure
from numpy_vae.training.progress import Progress
from numpy_vae.training.runs import CHECKPOINT, CONFIG, METRICS, check_config, write_metrics


def quadrant_data(
    images_uint8: np.ndarray, n_given: int, side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``visible`` and ``hidden`` float32 parts of images (N, side^2) binarized at 0.5; ``side``
    defaults to the square root of the row length (28 for MNIST)."""
    images = binarize(scale_images(images_uint8), "threshold")
    side = math.isqrt(images.shape[1]) if side is None else side
    return quadrant_split(images, n_given, side)


def train(
    model: CompletionModel,
    visible: np.ndarray,
    hidden: np.ndarray,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Adam on shuffled minibatches; the mean training loss of each epoch (nats per example)."""
    adam = Adam(list(model.params.values()), list(model.grads.values()), lr=lr)
    rng = np.random.default_rng(seed)
    return [train_epoch(model, adam, visible, hidden, batch_size, rng) for _ in range(epochs)]


def evaluate(
    baseline: CompletionBaseline,
    cvae: CompletionCVAE,
    visible: np.ndarray,
    hidden: np.ndarray,
    S: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Per-example means: the baseline's exact negative CLL, the CVAE's negative ELBO (one
    draw of z per example) and its importance-sampled negative CLL with ``S`` samples."""
    n = len(visible)
    eps = np.random.default_rng(seed).standard_normal((n, cvae.latent_dim))  # not cvae.rng's
    neg_elbo = float(cvae.loss(visible, hidden, eps, grad=False).neg_elbo) / n
    iw = iw_conditional_log_likelihood(cvae, visible, hidden, S, np.random.default_rng(seed + 1))
    return {
        "baseline_neg_cll": -float(baseline.conditional_log_likelihood(visible, hidden).mean()),
        "cvae_neg_elbo": neg_elbo,
        f"cvae_neg_cll_iw{S}": -float(iw.mean()),
    }


def sanity_run(
    n_given: int = 2,
    epochs: int = 5,
    widths: tuple[int, ...] = (256,),
    latent_dim: int = 20,
    n_test: int = 1000,
    S: int = 100,
    seed: int = 0,
    data_dir: Any = None,
) -> dict[str, Any]:
    """Train both models on the full MNIST training set for ``epochs`` and evaluate on the
    first ``n_test`` test images. Returns the figures and the training curves."""
    mnist = load_mnist(data_dir, verbose=False)
    visible, hidden = quadrant_data(mnist.train_images, n_given)
    test_visible, test_hidden = quadrant_data(mnist.test_images[:n_test], n_given)
    dims = (visible.shape[1], hidden.shape[1])
    baseline = CompletionBaseline(*dims, widths, seed=seed)
    cvae = CompletionCVAE(*dims, widths, latent_dim, seed=seed)
    curves = {
        "baseline": train(baseline, visible, hidden, epochs, seed=seed),
        "cvae": train(cvae, visible, hidden, epochs, seed=seed),
    }
    figures = evaluate(baseline, cvae, test_visible, test_hidden, S, seed)
    return {"n_given": n_given, "epochs": epochs, **figures, "curves": curves}


#: The model of each row, by its name.
MODEL_CLASSES: dict[str, type[CompletionModel]] = {
    "baseline": CompletionBaseline,
    "cvae": CompletionCVAE,
    "gsnn": CompletionGSNN,
    "hybrid": CompletionHybrid,
}
MODELS = tuple(MODEL_CLASSES)
#: What each model's rows measure (:func:`measure`): ``exact``, the baseline's
#: ``-log p(hidden | visible)``; ``elbo``, the negative ELBO (a model with a recognition
#: network); ``iw`` and ``mc``, minus the importance-sampled estimate (z from q) and the
#: prior-sampled one (z from the prior network), each for every S.
ESTIMATES = {
    "baseline": ("exact",),
    "cvae": ("elbo", "iw"),
    "gsnn": ("mc",),
    "hybrid": ("elbo", "iw", "mc"),
}
#: The sampled estimates, and the tail of their generators' seeds ``[block, S, *tail]`` (the
#: prior-sampled estimate's draws are not the importance-sampled one's).
ESTIMATORS = {
    "iw": (iw_conditional_log_likelihood, ()),
    "mc": (mc_conditional_log_likelihood, (1,)),
}
#: The settings of one model only, beside :data:`BASE`: the hybrid's weight of the CVAE's loss
#: (the paper's value could not be read; an even mix).
MODEL_SETTINGS: dict[str, dict[str, Any]] = {"hybrid": {"alpha": 0.5}}
GIVENS = (1, 2, 3)
IW_SAMPLES = (1, 10, 100, 1000)
#: What every row shares by default: the sizes and optimizer of Pyro's ``examples/cvae`` (two
#: hidden layers of 500, 200 latent dimensions, Adam 1e-3, batches of 128), without its early
#: stopping on the test set: a fixed number of epochs instead.
BASE: dict[str, Any] = {
    "widths": (500, 500),
    "latent_dim": 200,
    "activation": "relu",
    "lr": 1e-3,
    "batch_size": 128,
    "epochs": 30,
}
#: Pyro's published table (``examples/cvae``): per given quadrants, the baseline's negative
#: conditional log-likelihood and the CVAE's negative ELBO (10 particles), nats per test image.
PYRO = {1: (100.4, 71.8), 2: (61.9, 51.0), 3: (25.4, 24.2)}
#: Draws of z per test image for the CVAE's negative ELBO (Pyro's ``num_particles``).
ELBO_PARTICLES = 10
RESULT = "completion.json"
#: What may change between two invocations of a row: more epochs, and the data's name (its
#: hash is compared).
ROW_IGNORE = ("epochs", "data")
FORMAT = 1
#: Test images evaluated per pass (bounds the memory of the importance sampling).
EVAL_BLOCK = 100


class StudyData(NamedTuple):
    """The study's images, ``uint8`` rows (N, side^2), where they came from, and their hash."""

    train_images: np.ndarray
    test_images: np.ndarray
    side: int
    source: str
    sha256: str


def study_data(train_images: np.ndarray, test_images: np.ndarray, source: str) -> StudyData:
    """:class:`StudyData` of two splits of square images with an even side (MNIST's 28)."""
    side = math.isqrt(train_images.shape[1])
    if side * side != train_images.shape[1] or side % 2 or test_images.shape[1:] != (side**2,):
        raise ValueError(
            f"the images must be square with an even side (rows of side^2 pixels), got rows of "
            f"{train_images.shape[1]} and {test_images.shape[1]} pixels"
        )
    digest = hashlib.sha256()
    for images in (train_images, test_images):
        digest.update(f"{images.shape};".encode())
        digest.update(np.ascontiguousarray(images, dtype=np.uint8))
    return StudyData(train_images, test_images, side, source, digest.hexdigest())


def run_name(model: str, n_given: int, seed: int = 0) -> str:
    """``completion_cvae_given2``; ``..._seed<N>`` for another seed."""
    name = f"completion_{model}_given{n_given}"
    return name if seed == 0 else f"{name}_seed{seed}"


def row_config(
    model: str, n_given: int, data: StudyData, seed: int = 0, **changes: Any
) -> dict[str, Any]:
    """The configuration of a row, as ``config.json`` stores it: :data:`BASE` with ``changes``
    (``epochs``, ``widths``, ...; the hybrid's ``alpha``, :data:`MODEL_SETTINGS`), the model,
    the quadrants, the seed and the data."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    own = MODEL_SETTINGS.get(model, {})
    unknown = set(changes) - set(BASE) - set(own)
    if unknown:
        raise ValueError(f"unknown settings {', '.join(sorted(unknown))}")
    settings = {**BASE, **own, **changes}
    if model == "baseline":
        del settings["latent_dim"]
    config = {"study": "completion", "model": model, "n_given": n_given, "side": data.side}
    config.update(settings, seed=seed, dtype="float32", data=data.source, data_sha256=data.sha256)
    return json.loads(json.dumps(config))  # tuples as lists, as stored


def build_model(config: dict[str, Any]) -> CompletionModel:
    """A new model of a row's configuration (its initial weights)."""
    visible_dim = int(quadrant_mask(config["n_given"], config["side"]).sum())
    dims = (visible_dim, config["side"] ** 2 - visible_dim)
    own = {key: config[key] for key in ("latent_dim", "alpha") if key in config}
    return MODEL_CLASSES[config["model"]](
        *dims, widths=tuple(config["widths"]), activation=config["activation"],
        seed=config["seed"], **own,
    )  # fmt: skip


def save_row(path: Path, config: dict[str, Any], model: CompletionModel, adam: Adam,
             history: list[dict[str, Any]]) -> None:  # fmt: skip
    """Write a row's checkpoint atomically: configuration, history, parameters, Adam's state."""
    arrays: dict[str, Any] = {
        "format": np.asarray(FORMAT),
        "config": np.asarray(json.dumps(config)),
        "history": np.asarray(json.dumps(history)),
        "epoch": np.asarray(len(history)),
    }
    arrays.update({f"param/{k}": v for k, v in model.params.items()})
    arrays.update({f"adam/{k}": np.asarray(v) for k, v in adam.state_dict().items()})
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_row(path: Path) -> dict[str, Any]:
    """A row's checkpoint as written by :func:`save_row` (read without pickle).

    Raises
    ------
    CheckpointError
        In one line, when the file is not such a checkpoint.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}
        if int(data["format"]) != FORMAT:
            raise ValueError(f"format {int(data['format'])}, this numpy-vae reads {FORMAT}")
        config, history = json.loads(str(data["config"])), json.loads(str(data["history"]))
        epoch = int(data["epoch"])
        if len(history) != epoch:
            raise ValueError(f"its history does not list {epoch} epochs")
    except Exception as err:  # untrusted bytes: any failure to parse them means the same
        message = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise CheckpointError(f"{path}: not a completion study checkpoint ({message})") from err
    params = {k[len("param/") :]: v for k, v in data.items() if k.startswith("param/")}
    adam = {k[len("adam/") :]: v for k, v in data.items() if k.startswith("adam/")}
    return {"config": config, "history": history, "epoch": epoch, "params": params, "adam": adam}


def restore(state: dict[str, Any]) -> tuple[CompletionModel, Adam]:
    """The model and optimizer of a checkpoint read by :func:`load_row`."""
    model = build_model(state["config"])
    adam = Adam(list(model.params.values()), list(model.grads.values()), lr=state["config"]["lr"])
    names = model.params
    if set(state["params"]) != set(names):
        raise CheckpointError("the checkpoint's parameters do not fit the row's model")
    for name, value in names.items():
        if value.shape != state["params"][name].shape:
            raise CheckpointError(f"parameter {name} has shape {state['params'][name].shape}")
        value[...] = state["params"][name]
    adam.load_state_dict({**state["adam"], "step": int(state["adam"]["step"])})
    return model, adam


def train_epoch(
    model: CompletionModel,
    adam: Adam,
    visible: np.ndarray,
    hidden: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    bar: Progress | None = None,
) -> float:
    """One pass of Adam over shuffled minibatches; the mean loss (nats per example)."""
    order, total = rng.permutation(len(visible)), 0.0
    for done, start in enumerate(range(0, len(order), batch_size), 1):
        rows = order[start : start + batch_size]
        total += float(model.loss(visible[rows], hidden[rows], validate=False).loss)
        adam.step()
        if bar is not None:
            seen = min(len(order), start + batch_size)
            bar.update(done, lambda t=total, k=seen: t / k)
    if bar is not None:
        bar.close()
    return total / len(order)


def train_row(
    config: dict[str, Any],
    data: StudyData,
    run_dir: Path,
    progress: bool = False,
    log_interval: int = 0,
) -> tuple[CompletionModel, list[dict[str, Any]]]:
    """Train a row to ``config["epochs"]`` into ``run_dir``, continuing from its checkpoint.

    Each epoch's shuffle and noise come from generators seeded by the row's seed and the epoch,
    so that a row stopped and continued trains as one that ran through. After each epoch the
    checkpoint is written (atomically), then ``metrics.jsonl``.

    Raises
    ------
    ConfigMismatch
        ``run_dir`` holds a row of another configuration.
    ValueError
        ``run_dir`` has trained more epochs than asked.
    """
    run_dir = Path(run_dir)
    epochs = config["epochs"]
    if (run_dir / CHECKPOINT).is_file():
        if (run_dir / CONFIG).is_file():
            check_config(run_dir, config, ROW_IGNORE)
        state = load_row(run_dir / CHECKPOINT)
        check_config(run_dir, config, ROW_IGNORE, state["config"])
        model, adam = restore(state)
        history = state["history"]
        if len(history) > epochs:
            raise ValueError(
                f"{run_dir} has already trained {len(history)} epochs, more than {epochs}"
            )
        if len(history) < epochs:
            print(f"resuming {run_dir} after epoch {len(history)} of {epochs}", flush=True)
    else:
        model = build_model(config)
        adam = Adam(list(model.params.values()), list(model.grads.values()), lr=config["lr"])
        history = []
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.part"):  # a killed write's temporary file
        stale.unlink(missing_ok=True)
    write_json(run_dir / CONFIG, config)
    write_metrics(run_dir / METRICS, history)  # behind the checkpoint if killed between them
    visible, hidden = quadrant_data(data.train_images, config["n_given"], data.side)
    while len(history) < epochs:
        epoch = len(history) + 1
        start = time.perf_counter()
        model.rng = np.random.default_rng([config["seed"], epoch, 1])  # the CVAE's eps
        steps = -(-len(visible) // config["batch_size"])
        bar = None
        if progress or log_interval:
            bar = Progress(
                steps, f"epoch {epoch}/{epochs}", bar=progress, log_interval=log_interval
            )
        loss = train_epoch(
            model, adam, visible, hidden, config["batch_size"],
            np.random.default_rng([config["seed"], epoch]), bar,
        )  # fmt: skip
        history.append({"epoch": epoch, "train_loss": loss, "seconds": time.perf_counter() - start})
        save_row(run_dir / CHECKPOINT, config, model, adam, history)
        write_metrics(run_dir / METRICS, history)
        name = f"{config['model']} given {config['n_given']}"
        print(
            f"{name}: epoch {epoch:>3}/{epochs}  train {loss:8.3f} nats  "
            f"{history[-1]['seconds']:.1f} s",
            flush=True,
        )
    return model, history


def evaluation_subset(data: StudyData, n: int) -> np.ndarray:
    """The indices of the test images every row is measured on: ``n`` drawn once (seed 0,
    whatever the rows' seed), sorted."""
    count = len(data.test_images)
    return np.sort(np.random.default_rng(0).choice(count, size=min(n, count), replace=False))


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error over the test images."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def neg_elbo_per_example(
    model: CompletionCVAE, visible: np.ndarray, hidden: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The negative ELBO of each example, (B,): the closed-form KL plus the reconstruction term
    averaged over :data:`ELBO_PARTICLES` draws of z from q (the same expectation as Pyro's
    10-particle estimate)."""
    mu_p, logvar_p = model.prior_stats(visible)
    mu_q, logvar_q = model.recognition_stats(visible, hidden)
    kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, np)[0].sum(axis=1)
    eps = rng.standard_normal((len(visible), ELBO_PARTICLES, model.latent_dim), dtype=model.dtype)
    z = reparameterize(mu_q[:, None, :], logvar_q[:, None, :], eps, np)[0]
    return -model.log_likelihood(visible, hidden, z).mean(axis=1) + kl


def measure(
    model: CompletionModel,
    visible: np.ndarray,
    hidden: np.ndarray,
    iw_samples: tuple[int, ...],
    estimates: tuple[str, ...],
) -> dict[str, Any]:
    """A trained row's figures on the test examples, nats per example with standard errors, for
    each of ``estimates`` (:data:`ESTIMATES`): ``neg_cll`` (exact), ``neg_elbo``, and
    ``neg_cll_iw``, ``neg_cll_mc`` for each S of ``iw_samples`` (keys ``"S"``). Test images are
    taken :data:`EVAL_BLOCK` at a time; each block's draws come from generators seeded by the
    block and S (:data:`ESTIMATORS`)."""
    blocks = range(0, len(visible), EVAL_BLOCK)
    pairs = [(visible[i : i + EVAL_BLOCK], hidden[i : i + EVAL_BLOCK]) for i in blocks]
    result: dict[str, Any] = {}
    if "exact" in estimates:
        nll = np.concatenate([-model.conditional_log_likelihood(v, h) for v, h in pairs])
        result["neg_cll"], result["neg_cll_se"] = mean_and_se(nll)
    if "elbo" in estimates:
        elbo = [neg_elbo_per_example(model, v, h, np.random.default_rng([b, 0])) for b, (v, h) in
                enumerate(pairs)]  # fmt: skip
        result["neg_elbo"], result["neg_elbo_se"] = mean_and_se(np.concatenate(elbo))
    for name, (estimate, tail) in ESTIMATORS.items():
        if name not in estimates:
            continue
        means, errors = {}, {}
        for S in iw_samples:
            values = [
                -estimate(model, v, h, S, np.random.default_rng([b, S, *tail]))
                for b, (v, h) in enumerate(pairs)
            ]
            means[str(S)], errors[str(S)] = mean_and_se(np.concatenate(values))
        result[f"neg_cll_{name}"], result[f"neg_cll_{name}_se"] = means, errors
    return result


def run_row(
    model: str,
    n_given: int,
    data: StudyData,
    runs_dir: Path,
    seed: int = 0,
    test_images: int = 1000,
    iw_samples: tuple[int, ...] = IW_SAMPLES,
    progress: bool = False,
    log_interval: int = 0,
    **changes: Any,
) -> dict[str, Any]:
    """Train a row (continuing from its checkpoint) and measure it; the measurement is read back
    from ``RUN/completion.json`` while the checkpoint, the configuration and the measurement's
    settings are the ones asked for.

    Raises
    ------
    numpy_vae.training.runs.ConfigMismatch
        The row's folder holds a run of another configuration (say other ``widths``).
    """
    config = row_config(model, n_given, data, seed, **changes)
    run_dir = Path(runs_dir) / run_name(model, n_given, seed)
    path = run_dir / RESULT
    if (run_dir / CONFIG).is_file():
        check_config(run_dir, config, ROW_IGNORE)
    wanted = {"config": config, "test_images": test_images}
    if {"iw", "mc"} & set(ESTIMATES[model]):
        wanted["iw_samples"] = list(iw_samples)
    if path.is_file() and (run_dir / CHECKPOINT).is_file():
        done = json.loads(path.read_text())
        state = load_row(run_dir / CHECKPOINT)
        current = done.get("params_sha256") == params_sha256(state["params"])
        if current and {key: done.get(key) for key in wanted} == wanted:
            return done
    trained, history = train_row(config, data, run_dir, progress, log_interval)
    rows = evaluation_subset(data, test_images)
    visible, hidden = quadrant_data(data.test_images[rows], n_given, data.side)
    start = time.perf_counter()
    figures = measure(trained, visible, hidden, tuple(iw_samples), ESTIMATES[model])
    result = {
        "model": model,
        "n_given": n_given,
        "seed": seed,
        "epoch": len(history),
        **wanted,
        **figures,
        "params_sha256": params_sha256(trained.params),
        "train_seconds": sum(h["seconds"] for h in history),
        "measure_seconds": time.perf_counter() - start,
    }
    write_json(path, result)
    return result


def collect(runs_dir: Path, seed: int = 0) -> dict[tuple[str, int], dict[str, Any]]:
    """Every measured row of ``seed`` under ``runs_dir``, by (model, given quadrants)."""
    found = {}
    for n_given in GIVENS:
        for model in MODELS:
            path = Path(runs_dir) / run_name(model, n_given, seed) / RESULT
            if path.is_file():
                found[model, n_given] = json.loads(path.read_text())
    return found


def markdown_table(found: dict[tuple[str, int], dict[str, Any]]) -> str:
    """A line per number of given quadrants: the baseline's and the CVAE's figures beside
    Pyro's; then, if there are GSNN or hybrid rows, :func:`latent_table`."""
    tables = [latent_table(found)] if {"gsnn", "hybrid"} & {m for m, _ in found} else []
    if {"baseline", "cvae"} & {m for m, _ in found}:
        tables.insert(0, pyro_table(found))
    return "\n\n".join(tables)


def pyro_table(found: dict[tuple[str, int], dict[str, Any]]) -> str:
    """A line per number of given quadrants: the baseline's and the CVAE's figures beside
    Pyro's."""
    samples = sorted({int(s) for r in found.values() for s in r.get("neg_cll_iw", {})})
    head = ["given", "epochs", "baseline", "CVAE -ELBO", *[f"CVAE S={s}" for s in samples]]
    head += ["Pyro baseline", "Pyro CVAE -ELBO"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n_given in GIVENS:
        base, cvae = found.get(("baseline", n_given)), found.get(("cvae", n_given))
        if base is None and cvae is None:
            continue
        epochs = sorted({r["epoch"] for r in (base, cvae) if r is not None})
        cells = [str(n_given), "/".join(map(str, epochs))]
        cells.append(f"{base['neg_cll']:.2f}" if base else "")
        cells.append(f"{cvae['neg_elbo']:.2f}" if cvae else "")
        for s in samples:
            value = cvae.get("neg_cll_iw", {}).get(str(s)) if cvae else None
            cells.append("" if value is None else f"{value:.2f}")
        cells += [f"{PYRO[n_given][0]:.1f}", f"{PYRO[n_given][1]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latent_table(found: dict[tuple[str, int], dict[str, Any]]) -> str:
    """A line per model with a latent z (CVAE, GSNN, hybrid) and number of given quadrants:
    the negative ELBO, minus the importance-sampled estimate (z from q, "IS") and minus the
    prior-sampled one (z from the prior network, "prior") for each S measured; a blank where
    the estimate does not apply to the model or was not measured."""
    keys = {"IS": "neg_cll_iw", "prior": "neg_cll_mc"}
    samples = {
        name: sorted({int(s) for r in found.values() for s in r.get(key, {})})
        for name, key in keys.items()
    }
    head = ["given", "model", "epochs", "-ELBO"]
    head += [f"{name} S={s}" for name in keys for s in samples[name]]
    lines = ["| " + " | ".join(head) + " |", "|---:|---|" + "---:|" * (len(head) - 2)]
    for n_given in GIVENS:
        for model in ("cvae", "gsnn", "hybrid"):
            r = found.get((model, n_given))
            if r is None:
                continue
            cells = [str(n_given), model, str(r["epoch"])]
            cells.append(f"{r['neg_elbo']:.2f}" if "neg_elbo" in r else "")
            for name, key in keys.items():
                values = [r.get(key, {}).get(str(s)) for s in samples[name]]
                cells += ["" if v is None else f"{v:.2f}" for v in values]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_row_model(run_dir: Path) -> tuple[CompletionModel, dict[str, Any]]:
    """The trained model of a row's folder, and its configuration."""
    state = load_row(Path(run_dir) / CHECKPOINT)
    return restore(state)[0], state["config"]


def plot_completions(
    models: dict[str, CompletionModel],
    data: StudyData,
    n_given: int,
    path: Path,
    n_images: int = 6,
    n_samples: int = 5,
    seed: int = 0,
) -> None:
    """For ``n_images`` test images (the first of :func:`evaluation_subset`), one row each: the
    visible part (the hidden part grey), the truth, the baseline's mean prediction and
    ``n_samples`` completions of the CVAE, each with its own z from the prior network (pixel
    probabilities, joined to the visible part)."""
    from matplotlib.figure import Figure

    rows = evaluation_subset(data, n_images)
    visible, hidden = quadrant_data(data.test_images[rows], n_given, data.side)
    side, n = data.side, len(rows)
    columns = [("visible", quadrant_join(visible, np.full_like(hidden, 0.5), n_given, side))]
    columns.append(("truth", quadrant_join(visible, hidden, n_given, side)))
    if "baseline" in models:
        columns.append(("baseline", quadrant_join(visible, models["baseline"].complete(visible),
                                                  n_given, side)))  # fmt: skip
    if "cvae" in models:
        cvae = models["cvae"]
        rng = np.random.default_rng(seed)
        for k in range(n_samples):
            eps = rng.standard_normal((n, cvae.latent_dim), dtype=cvae.dtype)
            guess = cvae.complete(visible, eps)
            columns.append((f"CVAE {k + 1}", quadrant_join(visible, guess, n_given, side)))
    fig = Figure(figsize=(1.1 * len(columns), 1.1 * n + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(n, len(columns), squeeze=False)
    for j, (title, images) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=8)
        for i in range(n):
            axes[i, j].imshow(images[i].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
    quadrants = "quadrant" if n_given == 1 else "quadrants"
    fig.suptitle(f"{n_given} {quadrants} given", fontsize=10)
    save_figure(fig, path)
