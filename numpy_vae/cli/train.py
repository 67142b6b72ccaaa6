"""The command line of ``scripts/train_mnist.py``: train a VAE, resume a run."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.backend import BACKENDS, DTYPES, get_backend
from numpy_vae.cli.common import (
    PROTOCOLS,
    RUN_FAILURES,
    Parser,
    add_model_flags,
    add_progress_flags,
    explicit_flags,
    fail,
    failure_status,
    finite_float,
    is_folder_name,
    load_dataset,
    load_run_dataset,
    model_config_from_args,
    nonnegative_int,
    positive_int,
    progress_bar,
    stored_config,
)
from numpy_vae.config import MODEL_FIELDS
from numpy_vae.training.checkpoint import load_checkpoint
from numpy_vae.training.data import (
    BINARIZE_MODES,
    PIXEL_CONVENTIONS,
    data_record,
    default_data_dir,
    default_runs_dir,
)
from numpy_vae.training.presets import INITS, LR_SCHEDULES
from numpy_vae.training.runs import (
    CHECKPOINT,
    CONFIG,
    evaluate_run,
    format_evaluation,
    sigterm_interrupts,
    train_run,
    write_evaluation,
)
from numpy_vae.training.trainer import TrainConfig

# The TrainConfig fields that a flag of the same name sets as it is (the model's fields go through
# model_config_from_args): one list, so that a new one reaches both the new run's configuration
# and the refusal to change it when resuming.
CONFIG_FLAGS = (
    "batch_size",
    "lr",
    "seed",
    "kl_warmup",
    "binarize",
    "backend",
    "dtype",
    "init",
    "lr_schedule",
    "adam_eps",
)
# Flags that define a run; a resumed run keeps the stored values and only --epochs may change.
RUN_FLAGS = (*CONFIG_FLAGS, *MODEL_FIELDS, "protocol")


def train_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="train_mnist.py",
        description="Train a VAE on MNIST with numpy-vae. Defaults reproduce the classic PyTorch "
        "example: 784-400-20, ReLU, Bernoulli likelihood, Adam 1e-3, batch 128, 10 epochs.",
    )
    run = p.add_argument_group("run")
    run.add_argument("--name", help="run folder name under --runs-dir (default: the start time)")
    runs_help = "parent of run folders ($NUMPY_VAE_RUNS, else ./runs)"
    run.add_argument("--runs-dir", type=Path, default=default_runs_dir(), help=runs_help)
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint (only --epochs may change), on "
        "the data its config.json records (a --data-file given must hold the same arrays); "
        "a run stopped before its first checkpoint starts again, one stopped after its last "
        "epoch gets its figures",
    )
    run.add_argument(
        "--epochs",
        type=positive_int,
        help="total epochs to train (default: 10; when resuming, the run's own total)",
    )
    run.add_argument(
        "--figures-every",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="every N epochs also draw RUN/samples_epoch_<epoch>.png, the same 64 prior draws "
        "each time (0: only the final figures)",
    )
    add_progress_flags(run, "batches, and every N test images of the --iw-samples estimate")
    run.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip (and count) a batch whose loss or gradient is not finite instead of stopping "
        "(may also be switched on when resuming)",
    )
    run.add_argument(
        "--iw-samples",
        type=nonnegative_int,
        default=0,
        help="after training, estimate the test log-likelihood with this many importance "
        "samples per image and write evaluation.json (0: skip; scripts/evaluate.py does it later)",
    )

    run.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        help="a published setting's defaults: burda2016 is Burda et al. 2016's one-stochastic-"
        "layer MNIST model and schedule (784-200-200-50 tanh, dynamic binarization, batch 20, "
        "Glorot init, Adam eps 1e-4, lr 1e-3 * 10^(-i/7) for 3^i epochs, 3,280 epochs); choose "
        "the row with --objective and --k, and truncate with --epochs (stages end at epochs "
        "1, 4, 13, 40, 121, ...); flags given beside it win",
    )

    opt = p.add_argument_group("optimization")
    opt.add_argument("--batch-size", type=positive_int, default=128, help="examples per step")
    opt.add_argument("--lr", type=finite_float(0, False), default=1e-3, help="Adam learning rate")
    opt.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="constant, or burda2016: lr * 10^(-i/7) for 3^i epochs, i = 0..7",
    )
    opt.add_argument(
        "--adam-eps",
        type=finite_float(0, False),
        default=1e-8,
        help="Adam's epsilon (PyTorch's default; Burda et al. use 1e-4)",
    )
    opt.add_argument(
        "--init",
        choices=INITS,
        default="torch",
        help="initial parameters: torch (torch.nn.Linear's uniform) or burda2016 (Glorot "
        "weights, zero biases, output bias the logit of the mean training pixel)",
    )
    opt.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seeds the initial weights, shuffling, binarization and noise",
    )

    model = add_model_flags(p.add_argument_group("model"))
    model.add_argument(
        "--kl-warmup",
        type=finite_float(0, True),
        default=0.0,
        help="epochs over which the KL weight rises linearly from 0 to beta, "
        "updated every step (0: off)",
    )

    data = p.add_argument_group("data and arithmetic")
    data.add_argument(
        "--binarize",
        choices=BINARIZE_MODES,
        default="none",
        help="none: grey levels k/255; dynamic: a fresh Bernoulli draw every "
        "epoch; threshold: k/255 > 0.5",
    )
    data.add_argument(
        "--backend",
        default="numpy",
        help="array module: numpy (CPU) or cupy (NVIDIA GPU; pip install cupy-cuda12x). "
        "'strict' is a CPU test device that refuses implicit host transfers (slow; for tests)",
    )
    data.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point type")
    data.add_argument(
        "--reference",
        action="store_true",
        help="train through the specification (numpy_vae.VAE and Adam in textbook form) instead "
        "of the fast path: slower, the same numbers to rounding (may also be switched on when "
        "resuming)",
    )
    data.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="where MNIST is cached ($NUMPY_VAE_DATA, else ./data); the default is created "
        "and MNIST fetched on first use, a folder named here must exist",
    )
    data.add_argument(
        "--data-file",
        type=Path,
        help="an .npz used instead of MNIST: train_images/test_images (N, D) of "
        f"{PIXEL_CONVENTIONS}; optionally integer train_labels/test_labels in 0..9 (the run "
        "records its path and a hash of its arrays)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/train_mnist.py``; returns the exit status."""
    parser = train_parser()
    args = parser.parse_args(argv)
    if args.protocol is not None:  # the preset's values become the defaults; flags still win
        parser.set_defaults(**PROTOCOLS[args.protocol])
        args = parser.parse_args(argv)
    prog = parser.prog
    if args.name is not None and not is_folder_name(args.name):
        return fail(
            prog,
            f"--name must be one folder name (no '/', not '.' or '..'), got {args.name!r}: the "
            "run goes in RUNS_DIR/NAME; to put it elsewhere, use --runs-dir",
        )
    if args.backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        return fail(prog, f"unknown backend {args.backend!r}; choose one of {choices}")
    given = explicit_flags(parser, argv)
    try:
        if args.resume is not None:
            if "name" in given or "runs_dir" in given:
                return fail(prog, "--resume RUN_DIR names the run folder; drop --name/--runs-dir")
            flag_of = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
            changed = sorted(flag_of[f] for f in given & set(RUN_FLAGS))
            if changed:
                return fail(
                    prog,
                    f"{', '.join(changed)} cannot change when resuming: a resumed run keeps "
                    "its stored configuration (only --epochs may be raised)",
                )
            run_dir = args.resume
            if (run_dir / CHECKPOINT).is_file():
                state = load_checkpoint(run_dir / CHECKPOINT)
                stored, done = state["config"], state["epoch"]
            elif (run_dir / CONFIG).is_file():  # stopped before its first epoch was saved
                stored, done = stored_config(run_dir / CONFIG), 0
                print(f"{run_dir}: no epoch was saved; starting the run again from its {CONFIG}")
            else:
                return fail(
                    prog,
                    f"{run_dir} has neither {CHECKPOINT} nor {CONFIG}: no run to resume there",
                )
            epochs = stored["epochs"] if "epochs" not in given else args.epochs
            if done > epochs:
                return fail(
                    prog,
                    f"{run_dir} has already trained {done} epochs; --epochs is the total to "
                    f"reach, so pass at least {done}",
                )
            stored = {**stored, "epochs": epochs}
            if args.skip_nonfinite:
                stored["skip_nonfinite"] = True
            if args.reference:  # both paths write the same checkpoint: either resumes it
                stored["reference"] = True
            config = TrainConfig.from_json(stored)
        else:
            if "gaussian_sigma" in given and args.likelihood != "gaussian":
                return fail(prog, "--gaussian-sigma needs --likelihood gaussian")
            config = TrainConfig(
                **model_config_from_args(args).model_json(),
                **{name: getattr(args, name) for name in CONFIG_FLAGS},
                epochs=10 if args.epochs is None else args.epochs,
                skip_nonfinite=args.skip_nonfinite,
                reference=args.reference,
            )
            name = args.name or time.strftime("%Y-%m-%d_%H-%M-%S")
            run_dir = args.runs_dir / name
            if (run_dir / CHECKPOINT).exists():
                return fail(
                    prog,
                    f"{run_dir} already holds a run; use --resume {run_dir} or another --name",
                )
        get_backend(config.backend, config.dtype)  # fail now, not after loading the data
        if args.resume is not None:
            # The run's own data, whatever --data-dir defaults to: the recorded file (or MNIST),
            # or a --data-file with the recorded hash.
            dataset, record = load_run_dataset(run_dir, args.data_dir, args.data_file)
        else:
            dataset, source = load_dataset(args.data_dir, args.data_file)
            record = data_record(dataset, source, args.data_file)
        source = record["source"]
        if config.n_classes and dataset.train_labels is None:
            return fail(prog, f"--conditional needs labels, and {source} has none")
        print(f"run folder: {run_dir}   data: {source}")
        bar = progress_bar(args)
        with sigterm_interrupts():  # SIGTERM ends the run as Ctrl-C does
            trainer = train_run(
                config,
                dataset,
                run_dir,
                resume=args.resume is not None and (run_dir / CHECKPOINT).is_file(),
                progress=bar,
                extra_config={"data": source},
                log_interval=args.log_interval,
                figures_every=args.figures_every,
                record=record,
            )
        if args.iw_samples:
            evaluation = evaluate_run(trainer, args.iw_samples, bar, args.log_interval)
            summary = {**evaluation, "data": source, "data_sha256": record["sha256"]}
            write_evaluation(run_dir, summary)
            print(format_evaluation(summary))
    except RUN_FAILURES as err:
        return failure_status(prog, err)
    except KeyboardInterrupt:  # before training started: nothing to save
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"done: {run_dir}")
    return 0
