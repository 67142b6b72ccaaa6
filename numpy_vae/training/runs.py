"""A training run on disk: its folder, configuration, metrics, checkpoint and figures.

::

    runs/<name>/
        config.json          the TrainConfig, plus what the data was (see below)
        metrics.jsonl        one JSON object per epoch (train/test negative ELBO, parts, timing)
        checkpoint.npz       parameters, Adam state, epoch counter (numpy_vae.training.checkpoint)
        samples.png          64 samples from the prior
        reconstructions.png  test images above their reconstructions
        curves.png           train/test negative ELBO, reconstruction and KL per epoch
        kl_per_dim.png       each latent dimension's KL on the test set, active units marked
        traversal.png        the most informative latent dimensions varied one at a time
        interpolation.png    decoded points between two test digits' posterior means
        class_samples.png    conditional model only: one row of samples per digit, z ~ N(0, I)
        class_samples_t0.5.png  the same at temperature 0.5, first column z = 0
        analogies.png        conditional model only: test digits' z decoded with every label
        latent_means.png     2-D latent only: test-set posterior means coloured by digit
        manifold.png         2-D latent only: images decoded from a grid over N(0, 1) quantiles

Every file is replaced atomically after each epoch, so the folder is consistent at any moment:
``checkpoint.npz`` is written first, then ``metrics.jsonl``, which therefore lists the epochs the
checkpoint has completed or, if the process died between the two writes, one fewer (a resume
rewrites it from the history the checkpoint carries).

``config.json`` records the run's data once, when the run starts, under ``"dataset"``
(:func:`numpy_vae.training.data.data_record`: the file's absolute path, or none for MNIST, and
the SHA-256 of the arrays as loaded); ``"data"`` says the same in words. Whatever reopens the
run (a resume, an evaluation) checks the data it is given against that record
(:func:`check_data`), and a resume keeps the record as it is: it says what epoch 1 was trained
on. ``evaluation.json`` records what it evaluated (epoch, the checkpoint's parameter hash, the
data hash, K, the number of test images), so that a later look can tell whether it is current;
it is the latest evaluation, and ``evaluations.jsonl`` keeps every one, a JSON object a line
(:func:`write_evaluation`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy

from numpy_vae.training import plots
from numpy_vae.training.atomic import write_atomic, write_json
from numpy_vae.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    params_sha256,
    save_checkpoint,
)
from numpy_vae.training.conditional import CONDITIONAL_FIGURES, write_conditional_figures
from numpy_vae.training.data import Dataset, data_record
from numpy_vae.training.evaluate import (
    active_units,
    iw_log_likelihood,
    posterior_means,
    test_subset,
)
from numpy_vae.training.labels import describe_variant
from numpy_vae.training.progress import Progress
from numpy_vae.training.trainer import (
    EVAL_EPS,
    IW_EPS,
    Diverged,
    TrainConfig,
    Trainer,
    derived_seed,
    evaluate_elbo,
)

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.npz"
TIMING_KEYS = ("seconds", "images_per_second")  # differ between otherwise identical runs
EVALUATION = "evaluation.json"
#: Every evaluation of the run, one JSON object a line; EVALUATION is the last of them.
EVALUATIONS = "evaluations.jsonl"
#: The keys of config.json that say what the run was trained on; a resume never rewrites them.
DATA_KEYS = ("data", "dataset")


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    """The one-line summary printed after each epoch: the negative ELBO and its parts, and
    the objective trained on where it is another number (beta, free bits, warm-up, a
    multi-sample bound)."""
    line = (
        f"epoch {m['epoch']:>3}/{epochs}  "
        f"train {m['train_neg_elbo']:8.3f} (recon {m['train_recon']:.3f}, KL {m['train_kl']:.3f})  "
        f"test {m['test_neg_elbo']:8.3f} (recon {m['test_recon']:.3f}, KL {m['test_kl']:.3f})  "
    )
    if "test_loss" in m and m["test_loss"] != m["test_neg_elbo"]:
        line += f"objective train {m['train_loss']:.3f} test {m['test_loss']:.3f}  "
    return line + f"{m['seconds']:.1f} s  {m['images_per_second']:,.0f} img/s"


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    write_atomic(path, lambda f: f.write("".join(json.dumps(m) + "\n" for m in history)), mode="w")


def train_run(
    config: TrainConfig,
    data: Dataset,
    run_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    log_interval: int = 0,
    figures_every: int = 0,
    record: dict[str, Any] | None = None,
) -> Trainer:
    """Train (or continue training) into ``run_dir`` until ``config.epochs`` epochs are done.

    Parameters
    ----------
    config : TrainConfig
        For a resumed run, the stored configuration with ``epochs`` possibly raised.
    data : Dataset
    run_dir : path
        Created for a new run; must hold a checkpoint when ``resume`` is true.
    resume : bool
        Load ``run_dir/checkpoint.npz`` and continue from its epoch.
    progress : bool
        Progress bar on standard error during each epoch.
    log : callable, optional
        Receives the per-epoch summary lines; default: print them, flushed at once (a user
        watching a log file or a pipe sees each epoch as it ends).
    extra_config : dict, optional
        Written into ``config.json`` beside the configuration (e.g. ``"data"``, the data source
        in words).
    log_interval : int
        Without the bar, a plain progress line every this many batches (0: none).
    figures_every : int
        Every this many epochs, also draw ``samples_epoch_<N>.png`` (0: none), as the PyTorch
        example keeps a sample figure per epoch.
    record : dict, optional
        ``data``'s record (:func:`numpy_vae.training.data.data_record`), if the caller has it;
        else it is made here, its source ``extra_config["data"]``.

    Raises
    ------
    DataMismatch
        When resuming, if ``data`` is not the data that ``config.json`` records; nothing in
        ``run_dir`` is changed.
    """
    run_dir = Path(run_dir)
    log = log or (lambda line: print(line, flush=True))
    extra_config = dict(extra_config or {})
    if record is None:
        record = data_record(data, str(extra_config.get("data", "arrays given in Python")), None)
    kept: dict[str, Any] = {}
    if resume:
        # Checked before anything is written: a resume on other data would mix two data sets
        # in one run, and rewriting the record would hide what the first epochs were trained on.
        recorded = recorded_data(run_dir)
        if recorded is not None:
            check_data(run_dir, recorded, record)
            stored = json.loads((run_dir / CONFIG).read_text())
            kept = {key: stored[key] for key in DATA_KEYS if key in stored}
    if not kept:  # a new run (or one without a config.json): its data is recorded now
        kept = {"data": record["source"], "dataset": record}
    trainer = Trainer(config, data, progress=progress, log_interval=log_interval)
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT)
        try:
            trainer.load_state_dict(state)
        except ValueError as err:
            raise CheckpointError(f"{run_dir / CHECKPOINT}: {err}") from err
        if trainer.epoch > config.epochs:
            raise ValueError(
                f"{run_dir} has already trained {trainer.epoch} epochs, more than {config.epochs}"
            )
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create the run folder {run_dir} ({err})") from err
    # A killed run may leave the temporary file of an unfinished write; it was never renamed
    # into place, so nothing refers to it (and it would count against the free space).
    for stale in run_dir.glob(".*.part"):
        stale.unlink(missing_ok=True)
    check_writable(run_dir, trainer)
    if resume:
        # metrics.jsonl may be behind if a run was killed between the two writes of an epoch.
        write_metrics(run_dir / METRICS, trainer.history)
        if trainer.epoch == config.epochs:  # e.g. killed while drawing the figures
            log(f"{run_dir} has trained all {config.epochs} epochs; finishing its figures")
        else:
            log(f"resuming {run_dir} after epoch {trainer.epoch} of {config.epochs}")
    write_json(run_dir / CONFIG, {**config.to_json(), **extra_config, **kept})

    saved = trainer.epoch
    try:
        while trainer.epoch < config.epochs:
            metrics = trainer.train_epoch()
            with _interrupts_deferred():
                _save(trainer, run_dir)
                saved = trainer.epoch
            log(format_epoch(metrics, config.epochs))
            if figures_every and trainer.epoch % figures_every == 0:
                title = f"Samples from the prior after epoch {trainer.epoch}"
                write_samples(trainer, run_dir / f"samples_epoch_{trainer.epoch}.png", title)
        write_figures(trainer, run_dir)
    except KeyboardInterrupt as err:
        raise Interrupted(run_dir, saved, config.epochs, isinstance(err, Terminated)) from None
    except Diverged as err:
        kept = f"epoch {saved}, untouched in {run_dir / CHECKPOINT}" if saved else "none yet"
        advice = f"start a new run with a smaller --lr (this one has {config.lr:g})"
        if err.skippable and not config.skip_nonfinite:
            advice += (
                f", or skip such batches: --resume {run_dir} --skip-nonfinite"
                f" --epochs {config.epochs}"
            )
        raise Diverged(
            f"training diverged at {err}. Last good checkpoint: {kept}. To go on, {advice}",
            err.skippable,
        ) from None
    return trainer


def train_or_resume(
    config: TrainConfig,
    data: Dataset,
    run_dir: Path,
    extra_config: dict[str, Any],
    progress: bool = False,
    log_interval: int = 0,
) -> Trainer:
    """A study's row: :func:`train_run` into ``run_dir``, resuming from its checkpoint if an
    earlier, stopped invocation left one there.

    Raises
    ------
    ConfigMismatch
        ``run_dir`` holds a run of another configuration (anything but ``epochs`` differs):
        continuing it would train, or read back, another model than the row asks for.
    """
    resume = (run_dir / CHECKPOINT).is_file()
    if resume and (run_dir / CONFIG).is_file():
        check_config(run_dir, json.loads(json.dumps(config.to_json())))  # tuples as lists
    options = {"progress": progress, "log_interval": log_interval, "extra_config": extra_config}
    return train_run(config, data, run_dir, resume=resume, **options)


class DataMismatch(ValueError):
    """The data given to reopen a run is not the data its ``config.json`` records."""


class ConfigMismatch(ValueError):
    """A run is reopened with another configuration than its ``config.json`` records."""


def check_config(
    run_dir: Path,
    wanted: dict[str, Any],
    ignore: tuple[str, ...] = ("epochs",),
    stored: dict[str, Any] | None = None,
) -> None:
    """Refuse to continue the run in ``run_dir`` with the configuration ``wanted`` (as JSON
    values) if any setting it names, other than those in ``ignore``, differs from the one the
    run was trained with: ``stored``, by default its ``config.json``. A changed ``--hidden``
    between two invocations of a study would otherwise fail on the checkpoint's shapes, or
    worse, read back the other setting's figures. A setting the stored configuration lacks (a
    run from before the setting existed) is not compared.

    Raises
    ------
    ConfigMismatch
        In one line, naming each setting that differs.
    """
    if stored is None:
        try:
            stored = json.loads((run_dir / CONFIG).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{run_dir / CONFIG}: cannot read the run's configuration ({err})"
            ) from err
    differ = [
        f"{key} {stored[key]} (asked: {value})"
        for key, value in wanted.items()
        if key not in ignore and key in stored and stored[key] != value
    ]
    if differ:
        raise ConfigMismatch(
            f"{run_dir} holds a run trained with {', '.join(differ)}: give this setting its own "
            f"runs folder (--runs-dir), or remove {run_dir}"
        )


def recorded_data(run_dir: Path) -> dict[str, Any] | None:
    """The record of a run's data in its ``config.json``; ``None`` if there is no such file, or
    it says nothing about the data (then there is nothing to check the data against).

    A run from before the records has only ``"data"`` in words: read as MNIST if it says so
    (``path`` None), else as a file of that name, in both cases with ``sha256`` None (nothing
    to check the data against).

    Raises
    ------
    ValueError
        ``config.json`` cannot be read.
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the run's configuration ({err})") from err
    record = stored.get("dataset") if isinstance(stored, dict) else None
    if isinstance(record, dict) and isinstance(record.get("sha256"), str):
        return record
    source = stored.get("data") if isinstance(stored, dict) else None
    if not isinstance(source, str):
        return None
    mnist = source.startswith("MNIST")
    return {"source": source, "path": None if mnist else source, "sha256": None}


def check_data(
    run_dir: Path,
    recorded: dict[str, Any],
    given: dict[str, Any],
    advice: str = "give it the data it was trained on, or train a new run on this data",
) -> None:
    """Refuse to reopen the run in ``run_dir`` on data other than ``recorded``.

    Parameters
    ----------
    run_dir : pathlib.Path
    recorded : dict
        :func:`recorded_data` of the run.
    given : dict
        :func:`numpy_vae.training.data.data_record` of the data at hand.
    advice : str
        How to proceed, ending the message.

    Raises
    ------
    DataMismatch
        In one line naming both data sets and their hashes, and ``advice``.
    """
    if recorded["sha256"] is None:
        # A run from before the records: only MNIST against a file can be told apart.
        if (recorded["path"] is None) == (given["path"] is None):
            return
        raise DataMismatch(
            f"{run_dir} was trained on {recorded['source']}, not {given['source']}; {advice}"
        )
    if recorded["sha256"] == given["sha256"]:
        return
    raise DataMismatch(
        f"{given['source']} (sha256 {given['sha256'][:12]}) is not the data {run_dir} was "
        f"trained on, {recorded['source']} (sha256 {recorded['sha256'][:12]}); {advice}"
    )


class RunFolderError(OSError):
    """The run folder cannot be created or written, or its disk is too full for a checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (or SIGTERM: ``terminated``) with ``epoch`` of ``total``
    epochs saved in ``run_dir``."""

    def __init__(self, run_dir: Path, epoch: int, total: int, terminated: bool = False) -> None:
        super().__init__(run_dir, epoch, total)
        self.run_dir, self.epoch, self.total = run_dir, epoch, total
        self.terminated = terminated

    def __str__(self) -> str:
        what = "terminated (SIGTERM)" if self.terminated else "interrupted"
        if self.epoch == 0:
            return (
                f"{what} before the first epoch ended; --resume {self.run_dir} starts the run again"
            )
        if self.epoch == self.total:
            return (
                f"{what} while drawing the figures; all {self.total} epochs are saved in "
                f"{self.run_dir}: --resume {self.run_dir} finishes the figures"
            )
        return (
            f"{what}; {self.run_dir} holds epoch {self.epoch} of {self.total}: continue "
            f"with --resume {self.run_dir}"
        )


def _save(trainer: Trainer, run_dir: Path) -> None:
    """Checkpoint first, then metrics: a kill in between leaves metrics behind the checkpoint,
    which a resume rewrites from the checkpoint's own history."""
    try:
        save_checkpoint(run_dir / CHECKPOINT, trainer.state_dict())
    except OSError as err:
        raise RunFolderError(
            f"cannot save epoch {trainer.epoch} to {run_dir} ({err}); the previous checkpoint, "
            "if any, is untouched"
        ) from err
    try:
        write_metrics(run_dir / METRICS, trainer.history)
    except OSError as err:
        raise RunFolderError(
            f"epoch {trainer.epoch} is saved in {run_dir / CHECKPOINT}, but {METRICS} could not "
            f"be written ({err}); --resume {run_dir} rewrites it from the checkpoint"
        ) from err


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt by :func:`sigterm_interrupts`."""


def raise_interrupt(signum: int, frame: Any) -> None:
    """A signal handler that stops training as Ctrl-C does (for SIGTERM: see
    :func:`sigterm_interrupts`)."""
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM (a batch scheduler, ``docker stop``, ``timeout``) ends training
    as Ctrl-C does: the finished epochs are saved and the message says how to resume.

    Only where SIGTERM has its default action, and only in the main thread (the only one that
    may install handlers); elsewhere the block runs as it is.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (and a SIGTERM that :func:`sigterm_interrupts` turned into one) until
    the block ends, so that an epoch that has finished gets saved.

    (A half-written file could not result anyway, every write being atomic; this makes an
    interrupt during a save keep the epoch instead of dropping it.) Only the main thread can
    install signal handlers; elsewhere the block runs unprotected. A signal whose handler is
    someone else's (or which is ignored) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: raise_interrupt}
    deferred = [s for s, handler in ours.items() if signal.getsignal(s) is handler]
    pending: list[Any] = []
    previous = {s: signal.signal(s, lambda *args: pending.append(args)) for s in deferred}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if pending:
        raise (
            Terminated if any(args[0] == signal.SIGTERM for args in pending) else KeyboardInterrupt
        )


def check_writable(run_dir: Path, trainer: Trainer) -> None:
    """Fail before training if ``run_dir`` cannot take a checkpoint.

    A checkpoint is written beside the old one before replacing it, so the disk must hold two;
    twice that again leaves room for the metrics and figures.
    """
    try:
        probe = run_dir / ".write-test"
        write_atomic(probe, lambda f: f.write(b"ok"))
        probe.unlink()
    except OSError as err:
        raise RunFolderError(
            f"cannot write to the run folder {run_dir} ({err}); choose another --runs-dir"
        ) from err
    needed = 4 * checkpoint_bytes(trainer)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise RunFolderError(
            f"only {free / 2**20:.1f} MiB free on the disk of {run_dir}; a checkpoint needs "
            f"{needed / 4 / 2**20:.1f} MiB and saving needs room for about four: free some space "
            "or choose another --runs-dir"
        )


def checkpoint_bytes(trainer: Trainer) -> int:
    """About the size of this trainer's checkpoint: parameters and Adam's two moments."""
    n = sum(int(p.size) for p in trainer.model.params.values())
    return 3 * n * trainer.backend.dtype.itemsize + 64 * 1024  # plus config and history


def evaluate_run(
    trainer: Trainer,
    iw_samples: int = 1000,
    progress: bool = False,
    log_interval: int = 0,
    test_images: int | None = None,
) -> dict[str, Any]:
    """Test-set evaluation of a trained model: negative ELBO and its parts, KL per dimension,
    active units and, when ``iw_samples > 0``, the importance-weighted negative log-likelihood.

    Parameters
    ----------
    trainer : Trainer
        The trained model, with its test set.
    iw_samples : int
        Importance samples per test image (K); 0 skips the estimate.
    progress : bool
        A bar on standard error during the estimate (minutes at K = 1000).
    log_interval : int
        Without a bar, a plain line every this many test images (0: none).
    test_images : int, optional
        Evaluate everything on this many test images, drawn at random once (seed 0, the
        studies' :func:`~numpy_vae.training.evaluate.test_subset`: the same images every time);
        default (or the test set's size): all of them.

    Returns
    -------
    dict
        What evaluation.json holds, less the data's record and the time taken.

    Raises
    ------
    ValueError
        If ``test_images`` is more than the test set has.
    """
    n_test = int(trainer.test_x.shape[0])
    if test_images is not None and not 0 < test_images <= n_test:
        raise ValueError(f"cannot evaluate {test_images} test images: the test set has {n_test}")
    index, x = test_subset(trainer.test_x, test_images, trainer.backend.xp)
    if len(index) == n_test:
        test = trainer.evaluate()  # the whole set: the figures the epoch's metrics report
        y = trainer.test_labels
    else:
        test, y = _evaluate_subset(trainer, index, x)
    summary: dict[str, Any] = {
        "epoch": trainer.epoch,
        # What was evaluated, so that a later look can tell whether this is still the run's
        # current state (summarize_runs.py marks it stale otherwise).
        "checkpoint_sha256": params_sha256(trainer.state_dict()["params"]),
        "test_images": len(index),
        "test_neg_elbo": test["neg_elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "test_kl_per_dim": [float(v) for v in test["kl_per_dim"]],
        "active_units": test["active_units"],
    }
    if iw_samples > 0:
        labels = y if trainer.config.conditional else None
        rng = trainer.backend.rng(derived_seed(trainer.config.seed, IW_EPS, trainer.epoch))
        shown = None
        if progress or log_interval:
            label = f"IW estimate (K = {iw_samples}), test images"
            shown = Progress(len(index), label, bar=progress, log_interval=log_interval)
        log_px = iw_log_likelihood(trainer.model, x, labels, k=iw_samples, rng=rng, progress=shown)
        summary["iw_samples"] = iw_samples
        summary["test_iw_nll"] = float(-log_px.mean())
    return summary


def _evaluate_subset(trainer: Trainer, index: numpy.ndarray, x: Any) -> tuple[dict[str, Any], Any]:
    """:meth:`Trainer.evaluate` on the test rows ``index`` (``x``): the same noise stream (the
    epoch's), the same batches and threshold of active units. Returns the metrics and the
    rows' labels (None for an unlabelled set)."""
    labels = trainer.test_labels
    if labels is not None:
        labels = labels[trainer.backend.xp.asarray(index)]
    y = labels if trainer.config.n_classes else None  # as Trainer.evaluate picks them
    config = trainer.config
    rng = trainer.backend.rng(derived_seed(config.seed, EVAL_EPS, trainer.epoch))
    result = evaluate_elbo(trainer.model, x, y, rng, config.eval_batch_size)
    mu = posterior_means(trainer.model, x, y, config.eval_batch_size)
    result["active_units"], result["mean_variance"] = active_units(mu)
    return result, labels


def write_evaluation(run_dir: Path, summary: dict[str, Any]) -> None:
    """Keep ``summary``: one more line of ``evaluations.jsonl``, and ``evaluation.json``.

    Each file is rewritten whole through a temporary file and renamed (as metrics.jsonl is), so
    a reader, or a process killed mid-write, sees the old file or the new one, never a part.
    The history goes first: an evaluation in evaluation.json is always also in the history.
    """
    history = run_dir / EVALUATIONS
    kept = history.read_text() if history.is_file() else ""
    if kept and not kept.endswith("\n"):
        kept += "\n"  # written by hand, perhaps; each evaluation stays on its own line
    earlier = _unkept_evaluation(run_dir, kept)
    if earlier is not None:
        kept += json.dumps(earlier) + "\n"
    write_atomic(history, lambda f: f.write(kept + json.dumps(summary) + "\n"), mode="w")
    write_json(run_dir / EVALUATION, summary)


def _unkept_evaluation(run_dir: Path, kept: str) -> dict[str, Any] | None:
    """The evaluation in ``run_dir``'s evaluation.json if the history ``kept`` lacks it: one
    written before evaluations.jsonl existed. It goes into the history before it is
    replaced."""
    path = run_dir / EVALUATION
    try:
        latest = json.loads(path.read_text())
    except (OSError, ValueError):  # none, or not JSON: nothing to keep
        return None
    lines = kept.splitlines()
    # Compared as written (json.dumps of the same values), so that a NaN equals itself.
    return None if lines and lines[-1] == json.dumps(latest) else latest


def format_evaluation(summary: dict[str, Any]) -> str:
    line = (
        f"test negative ELBO {summary['test_neg_elbo']:.3f} nats "
        f"(recon {summary['test_recon']:.3f}, KL {summary['test_kl']:.3f}), "
        f"active units {summary['active_units']}/{len(summary['test_kl_per_dim'])}"
    )
    if "test_iw_nll" in summary:
        line += f", IW NLL (K={summary['iw_samples']}) {summary['test_iw_nll']:.3f} nats"
    return line


def on_host_for_display(trainer: Trainer, images: Any) -> numpy.ndarray:
    """Decoder means as a figure shows them: host arrays clipped to [0, 1] (a Gaussian
    decoder's mean is not squashed)."""
    return numpy.clip(trainer.backend.to_host(images), 0.0, 1.0)


def _data_values(trainer: Trainer) -> int:
    """How many values one example of the run's data has (784 for MNIST)."""
    return int(trainer.test_x.shape[1])


def _not_an_image(values: int) -> str:
    """Why an image figure is left out for data of ``values`` values per example."""
    return f"they draw images, and the data's {values} values per example are not a square image"


def _trained_objective(trainer: Trainer) -> str:
    """The objective trained on in words where it is not the plain ELBO (e.g. "beta = 4"),
    else ""; the same phrases as a study's variant labels."""
    keys = ("beta", "kl_warmup", "free_bits", "objective", "k", "estimator")
    settings = trainer.config.to_json()
    label = describe_variant({key: settings[key] for key in keys if key in settings})
    return "" if label == "plain VAE" else label


def write_samples(
    trainer: Trainer,
    path: Path,
    title: str = "Samples from the prior",
    log: Callable[[str], None] | None = None,
) -> Path | None:
    """64 decoded prior samples; the same draws of z in every figure of a run (seeded by the
    run's seed), so that snapshots of different epochs compare.

    Square images are drawn as an 8 x 8 grid and data of two values per example as points over
    the test data; for any other data nothing is drawn, ``log`` (default: print) says so in one
    line and None is returned.
    """
    model, backend, cfg = trainer.model, trainer.backend, trainer.config
    values = _data_values(trainer)
    if plots.image_side(values) is None and values != 2:
        (log or _print_now)(f"{path.name} skipped: {_not_an_image(values)}")
        return None
    rng = numpy.random.default_rng(cfg.seed)
    z = backend.asarray(rng.standard_normal((64, model.latent_dim)))
    y = backend.xp.asarray(numpy.arange(64) % 10) if cfg.conditional else None
    title += f" ({plots.class_word(values)} = index mod 10)" if cfg.conditional else ""
    samples = on_host_for_display(trainer, model.decode(z, y))
    if values == 2:
        data = on_host_for_display(trainer, trainer.test_x)
        plots.plot_point_samples(samples, data, path, title)
    else:
        plots.plot_samples(samples, path, title)
    return path


def _print_now(line: str) -> None:
    print(line, flush=True)


def write_figures(
    trainer: Trainer, run_dir: str | os.PathLike[str], log: Callable[[str], None] | None = None
) -> list[Path]:
    """Draw the figures of a run into ``run_dir``; returns the paths written.

    Every figure that fits the data is drawn: the image figures for square images (any side),
    points for data of two values per example (samples and reconstructions), and for any data
    the curves, the KL per dimension and, for 2-D latents, the posterior means. The image
    figures that do not fit are named in one line given to ``log`` (default: print), so that a
    run of toy data finishes instead of stopping at its figures.
    """
    run_dir = Path(run_dir)
    model, backend, cfg = trainer.model, trainer.backend, trainer.config
    values = _data_values(trainer)
    images = plots.image_side(values) is not None
    skipped = []
    written = []

    def shown(images: Any) -> numpy.ndarray:
        return on_host_for_display(trainer, images)

    if images or values == 2:
        write_samples(trainer, run_dir / "samples.png")  # it draws both shapes
        written.append(run_dir / "samples.png")
        x = trainer.test_x[:32]
        y = trainer.test_labels[:32] if cfg.conditional else None
        recon = shown(model.reconstruct(x, y))
        draw = plots.plot_reconstructions if images else plots.plot_point_reconstructions
        draw(shown(x), recon, run_dir / "reconstructions.png")
        written.append(run_dir / "reconstructions.png")
    else:
        skipped += ["samples.png", "reconstructions.png"]

    if trainer.history:
        plots.plot_curves(trainer.history, run_dir / "curves.png", _trained_objective(trainer))
        written.append(run_dir / "curves.png")

    written += _variant_figures(trainer, run_dir, shown, skipped)

    if model.latent_dim == 2:
        xp = backend.xp
        y = trainer.test_labels if cfg.conditional else None
        mu, _ = model.encode(trainer.test_x, y)
        labels = None if trainer.test_labels is None else backend.to_host(trainer.test_labels)
        plots.plot_latent_means(
            backend.to_host(mu), labels, run_dir / "latent_means.png", plots.class_word(values)
        )
        written.append(run_dir / "latent_means.png")
        if images:
            n = 20
            z = backend.asarray(plots.manifold_latents(n))
            y = xp.asarray(numpy.zeros(n * n, dtype=numpy.int64)) if cfg.conditional else None
            plots.plot_manifold(shown(model.decode(z, y)), n, run_dir / "manifold.png")
            written.append(run_dir / "manifold.png")
        else:
            skipped.append("manifold.png")
    if skipped:
        shape = _not_an_image(values)
        if values == 2:  # said beside the refusal, so that the line reads as the whole story
            shape += "; samples.png and reconstructions.png show the data as points instead"
        (log or _print_now)(f"figures skipped: {', '.join(skipped)} ({shape})")
    return written


def _variant_figures(
    trainer: Trainer, run_dir: Path, shown: Callable[[Any], Any], skipped: list[str]
) -> list[Path]:
    """KL per dimension, traversals, interpolation; per-class samples for a conditional model.

    The KL per dimension fits any data; the others draw images, so for data that is not a
    square image their names are appended to ``skipped`` instead.
    """
    model, backend, cfg = trainer.model, trainer.backend, trainer.config
    xp = backend.xp
    written = []
    test = trainer.evaluate()
    plots.plot_kl_per_dim(test["kl_per_dim"], test["mean_variance"], run_dir / "kl_per_dim.png")
    written.append(run_dir / "kl_per_dim.png")
    data_values = _data_values(trainer)
    if plots.image_side(data_values) is None:
        skipped += ["traversal.png", "interpolation.png"]
        skipped += list(CONDITIONAL_FIGURES) if cfg.conditional else []
        return written

    fixed_y: Callable[[int], Any] = lambda n: None  # noqa: E731
    if cfg.conditional:
        digit = int(backend.to_host(trainer.test_labels[0]))
        fixed_y = lambda n: xp.full(n, digit, dtype=xp.int64)  # noqa: E731

    dims = [int(j) for j in numpy.argsort(-test["kl_per_dim"])[: min(8, model.latent_dim)]]
    values = numpy.linspace(-3, 3, 11)
    z = numpy.zeros((len(dims) * len(values), model.latent_dim))
    for r, j in enumerate(dims):
        z[r * len(values) : (r + 1) * len(values), j] = values
    traversal = shown(model.decode(backend.asarray(z), fixed_y(len(z))))
    kl = [float(test["kl_per_dim"][j]) for j in dims]
    plots.plot_traversal(traversal, dims, values, run_dir / "traversal.png", kl)
    written.append(run_dir / "traversal.png")

    # Two test digits; for a conditional model two of the same class, decoded with that label.
    b = min(1, trainer.test_x.shape[0] - 1)
    if cfg.conditional:
        labels = backend.to_host(trainer.test_labels)
        same = numpy.flatnonzero(labels == labels[0])
        b = int(same[1]) if len(same) > 1 else 0
    ends = xp.concatenate([trainer.test_x[0:1], trainer.test_x[b : b + 1]])  # stays on the device
    mu, _ = model.encode(ends, fixed_y(2))
    t = backend.asarray(numpy.linspace(0, 1, 10)[:, None])
    path_z = (1 - t) * mu[0:1] + t * mu[1:2]
    middle = shown(model.decode(path_z, fixed_y(10)))
    row = numpy.concatenate([shown(ends[0:1]), middle, shown(ends[1:2])])
    plots.plot_interpolation(row, run_dir / "interpolation.png")
    written.append(run_dir / "interpolation.png")

    if cfg.conditional:
        written += write_conditional_figures(trainer, run_dir, shown)
    return written
