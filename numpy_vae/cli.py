"""Command lines of ``scripts/train_mnist.py`` and ``scripts/evaluate.py``.

The scripts only call :func:`train_main` and :func:`evaluate_main`; everything here is importable
and tested in-process. Bad input ends the program with a one-line message and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy

from .atomic import write_json
from .backend import BACKENDS, DTYPES, BackendUnavailable, get_backend
from .checkpoint import load_checkpoint
from .data import BINARIZE_MODES, DataError, load_mnist
from .layers import ACTIVATIONS
from .model import LIKELIHOODS
from .runs import (
    CHECKPOINT,
    CONFIG,
    Interrupted,
    evaluate_run,
    format_evaluation,
    train_run,
    write_figures,
)
from .train import Dataset, Diverged, TrainConfig, Trainer

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


_positive_int, _nonnegative_int = _int(1), _int(0)


def _float(low: float, inclusive: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'>=' if inclusive else '>'} {low:g}, got {text!r}"
            ) from None
        ok = value >= low if inclusive else value > low
        if not (ok and numpy.isfinite(value)):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>=' if inclusive else '>'} {low:g}, got {text}"
            )
        return value

    return parse


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths like 400 or 512,256, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"hidden widths must be positive, got {text!r}")
    return widths


# Flags that define a run; a resumed run keeps the stored values and only --epochs may change.
RUN_FLAGS = (
    "batch_size",
    "lr",
    "seed",
    "hidden",
    "latent_dim",
    "activation",
    "likelihood",
    "gaussian_sigma",
    "conditional",
    "beta",
    "free_bits",
    "kl_warmup",
    "binarize",
    "backend",
    "dtype",
)


def add_model_flags(model: Any) -> Any:
    """Add the flags that define the model (``--hidden`` ... ``--free-bits``) to an argparse
    parser or group, and return it; shared by ``train_mnist.py`` and ``gradcheck.py`` so that
    the flags mean the same in both."""
    model.add_argument(
        "--hidden",
        type=_hidden,
        default=(400,),
        help="hidden widths of the encoder, comma-separated (the decoder mirrors them)",
    )
    model.add_argument("--latent-dim", type=_positive_int, default=20, help="size of z")
    model.add_argument(
        "--activation", choices=sorted(ACTIVATIONS), default="relu", help="hidden activation"
    )
    model.add_argument(
        "--likelihood", choices=LIKELIHOODS, default="bernoulli", help="decoder distribution p(x|z)"
    )
    model.add_argument(
        "--gaussian-sigma",
        type=_float(0, False),
        default=1.0,
        help="fixed standard deviation of the Gaussian likelihood",
    )
    model.add_argument(
        "--conditional",
        action="store_true",
        help="conditional VAE: the one-hot digit label is fed to encoder and decoder",
    )
    model.add_argument(
        "--beta", type=_float(0, True), default=1.0, help="weight of the KL term (beta-VAE)"
    )
    model.add_argument(
        "--free-bits",
        type=_float(0, True),
        default=0.0,
        help="free-bits allowance in nats per latent dimension (0: off)",
    )
    return model


def train_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="train_mnist.py",
        description="Train a VAE on MNIST with numpy-vae. Defaults reproduce the classic PyTorch "
        "example: 784-400-20, ReLU, Bernoulli likelihood, Adam 1e-3, batch 128, 10 epochs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--name", help="run folder name under --runs-dir (default: the start time)")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent of run folders")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint (only --epochs may change); "
        "a run stopped before its first checkpoint starts again, one stopped after its last "
        "epoch gets its figures",
    )
    run.add_argument(
        "--epochs",
        type=_positive_int,
        help="total epochs to train (default: 10; when resuming, the run's own total)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip (and count) a batch whose loss or gradient is not finite instead of stopping "
        "(may also be switched on when resuming)",
    )
    run.add_argument(
        "--iw-samples",
        type=_nonnegative_int,
        default=0,
        help="after training, estimate the test log-likelihood with this many importance "
        "samples per image and write evaluation.json (0: skip; scripts/evaluate.py does it later)",
    )

    opt = p.add_argument_group("optimization")
    opt.add_argument("--batch-size", type=_positive_int, default=128, help="examples per step")
    opt.add_argument("--lr", type=_float(0, False), default=1e-3, help="Adam learning rate")
    opt.add_argument(
        "--seed",
        type=_nonnegative_int,
        default=0,
        help="seeds the initial weights, shuffling, binarization and noise",
    )

    model = add_model_flags(p.add_argument_group("model"))
    model.add_argument(
        "--kl-warmup",
        type=_float(0, True),
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
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where MNIST is cached (fetched on first use)",
    )
    data.add_argument(
        "--data-file",
        type=Path,
        help="an .npz with uint8 train_images/test_images (N, D) and, optionally, integer "
        "train_labels/test_labels in 0..9, used instead of MNIST",
    )
    return p


def load_dataset(data_dir: Path, data_file: Path | None) -> tuple[Dataset, str]:
    """MNIST from ``data_dir`` (fetched if needed), or the arrays of ``data_file``."""
    if data_file is None:
        mnist = load_mnist(data_dir)
        dataset = Dataset(
            mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels
        )
        return dataset, f"MNIST ({mnist.source})"
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    try:
        loaded = numpy.load(data_file, allow_pickle=False)
        if not isinstance(loaded, numpy.lib.npyio.NpzFile):
            raise DataError(f"{data_file}: holds a single .npy array, not an .npz of named arrays")
        with loaded as f:
            missing = [k for k in keys[::2] if k not in f.files]
            if missing:
                raise DataError(f"{data_file}: missing arrays {', '.join(missing)}")
            labelled = [k in f.files for k in keys[1::2]]
            if any(labelled) and not all(labelled):
                raise DataError(f"{data_file}: has labels for one split only; give both or none")
            arrays = [f[k] if k in f.files else None for k in keys]
    except DataError:
        raise
    except Exception as err:  # untrusted bytes: any failure to parse them means the same
        raise DataError(f"{data_file}: cannot read it as an .npz ({err})") from err
    try:
        return Dataset(*arrays), str(data_file)
    except ValueError as err:
        raise DataError(f"{data_file}: {err}") from err


def _stored_config(path: Path) -> dict[str, Any]:
    """The training configuration in a run's ``config.json`` (which also says where the data came
    from)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the run's configuration ({err})") from err
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not a run configuration")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in stored.items() if k in known}


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/train_mnist.py``; returns the exit status."""
    parser = train_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        return _fail(prog, f"unknown backend {args.backend!r}; choose one of {choices}")
    given = _explicit_flags(parser, argv)
    try:
        if args.resume is not None:
            if "name" in given or "runs_dir" in given:
                return _fail(prog, "--resume RUN_DIR names the run folder; drop --name/--runs-dir")
            changed = sorted(f"--{f.replace('_', '-')}" for f in given & set(RUN_FLAGS))
            if changed:
                return _fail(
                    prog,
                    f"{', '.join(changed)} cannot change when resuming: a resumed run keeps "
                    "its stored configuration (only --epochs may be raised)",
                )
            run_dir = args.resume
            if (run_dir / CHECKPOINT).is_file():
                state = load_checkpoint(run_dir / CHECKPOINT)
                stored, done = state["config"], state["epoch"]
            elif (run_dir / CONFIG).is_file():  # stopped before its first epoch was saved
                stored, done = _stored_config(run_dir / CONFIG), 0
                print(f"{run_dir}: no epoch was saved; starting the run again from its {CONFIG}")
            else:
                return _fail(
                    prog,
                    f"{run_dir} has neither {CHECKPOINT} nor {CONFIG}: no run to resume there",
                )
            epochs = stored["epochs"] if args.epochs is None else args.epochs
            if done > epochs:
                return _fail(
                    prog,
                    f"{run_dir} has already trained {done} epochs; --epochs is the total to "
                    f"reach, so pass at least {done}",
                )
            stored = {**stored, "epochs": epochs}
            if args.skip_nonfinite:
                stored["skip_nonfinite"] = True
            config = TrainConfig.from_json(stored)
        else:
            if "gaussian_sigma" in given and args.likelihood != "gaussian":
                return _fail(prog, "--gaussian-sigma needs --likelihood gaussian")
            config = TrainConfig(
                epochs=10 if args.epochs is None else args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                hidden_dims=args.hidden,
                latent_dim=args.latent_dim,
                activation=args.activation,
                likelihood=args.likelihood,
                gaussian_sigma=args.gaussian_sigma,
                conditional=args.conditional,
                beta=args.beta,
                free_bits=args.free_bits,
                kl_warmup=args.kl_warmup,
                binarize=args.binarize,
                backend=args.backend,
                dtype=args.dtype,
                skip_nonfinite=args.skip_nonfinite,
            )
            name = args.name or time.strftime("%Y-%m-%d_%H-%M-%S")
            run_dir = args.runs_dir / name
            if (run_dir / CHECKPOINT).exists():
                return _fail(
                    prog,
                    f"{run_dir} already holds a run; use --resume {run_dir} or another --name",
                )
        get_backend(config.backend, config.dtype)  # fail now, not after loading the data
        dataset, source = load_dataset(args.data_dir, args.data_file)
        if config.conditional and dataset.train_labels is None:
            return _fail(prog, f"--conditional needs labels, and {source} has none")
        print(f"run folder: {run_dir}   data: {source}")
        trainer = train_run(
            config,
            dataset,
            run_dir,
            resume=args.resume is not None and (run_dir / CHECKPOINT).is_file(),
            progress=not args.no_progress and sys.stderr.isatty(),
            extra_config={"data": source},
        )
        if args.iw_samples:
            summary = {**evaluate_run(trainer, args.iw_samples), "data": source}
            write_json(run_dir / "evaluation.json", summary)
            print(format_evaluation(summary))
    except (ValueError, OSError) as err:  # DataError and CheckpointError are ValueErrors
        return _fail(prog, str(err).replace("\n", " "))
    except Diverged as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started: nothing to save
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"done: {run_dir}")
    return 0


def _explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """Destinations of the options actually written on the command line."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            probe.add_argument(*action.option_strings, **kwargs)
    given, _ = probe.parse_known_args(argv)
    return set(vars(given))


def evaluate_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="evaluate.py",
        description="Evaluate a training run's checkpoint on the MNIST test set: negative ELBO, "
        "its parts, KL per latent dimension, active units, and the importance-weighted "
        "log-likelihood estimate (Burda et al. 2016). Writes RUN_DIR/evaluation.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="a run folder written by train_mnist.py")
    p.add_argument(
        "--iw-samples",
        type=_nonnegative_int,
        default=1000,
        help="importance samples per test image for the log-likelihood estimate (0: skip)",
    )
    p.add_argument("--figures", action="store_true", help="also redraw the run's figures")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="evaluate on this array module instead of the run's own (checkpoints hold host "
        "arrays and load into any backend; the noise draws then differ)",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="MNIST cache folder")
    p.add_argument("--data-file", type=Path, help="an .npz used instead of MNIST (see training)")
    return p


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/evaluate.py``; returns the exit status."""
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    try:
        state = load_checkpoint(args.run_dir / CHECKPOINT)
        config = TrainConfig.from_json(state["config"])
        if args.backend is not None:
            config.backend = args.backend
        try:
            get_backend(config.backend, config.dtype)  # fail now, not after loading the data
        except BackendUnavailable as err:
            raise BackendUnavailable(f"{err}; or evaluate on the CPU: --backend numpy") from None
        dataset, source = load_dataset(args.data_dir, args.data_file)
        trainer = Trainer(config, dataset)
        trainer.load_state_dict(state)
        start = time.perf_counter()
        summary = {**evaluate_run(trainer, args.iw_samples), "data": source}
        summary["seconds"] = time.perf_counter() - start
        print(f"{args.run_dir} after epoch {trainer.epoch}: {format_evaluation(summary)}")
        write_json(args.run_dir / "evaluation.json", summary)
        if args.figures:
            for path in write_figures(trainer, args.run_dir):
                print(f"wrote {path}")
    except (ValueError, OSError) as err:
        return _fail(parser.prog, str(err).replace("\n", " "))
    return 0
