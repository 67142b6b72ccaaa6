"""The command line of ``scripts/evaluate.py``.

Evaluate a training run's checkpoint on the test set of the data it was trained on (recorded
in the run's config.json): negative ELBO, its parts, KL per latent dimension, active units, and
the importance-weighted log-likelihood estimate (Burda et al. 2016). Writes
RUN_DIR/evaluation.json, which records what it evaluated (epoch, checkpoint and data hashes, K,
test images), and appends the same to RUN_DIR/evaluations.jsonl, which keeps every evaluation.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from numpy_vae.backend import BACKENDS, BackendUnavailable, get_backend
from numpy_vae.cli.common import (
    Parser,
    add_progress_flags,
    fail,
    load_run_dataset,
    nonnegative_int,
    positive_int,
    progress_bar,
)
from numpy_vae.training.checkpoint import load_checkpoint
from numpy_vae.training.data import default_data_dir
from numpy_vae.training.runs import (
    CHECKPOINT,
    evaluate_run,
    format_evaluation,
    write_evaluation,
    write_figures,
)
from numpy_vae.training.trainer import TrainConfig, Trainer


def evaluate_parser() -> argparse.ArgumentParser:
    p = Parser(prog="evaluate.py", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", type=Path, help="a run folder written by train_mnist.py")
    p.add_argument(
        "--iw-samples",
        type=nonnegative_int,
        default=1000,
        help="importance samples per test image for the log-likelihood estimate (0: skip)",
    )
    p.add_argument(
        "--test-images",
        type=positive_int,
        metavar="N",
        help="evaluate on this many test images, drawn at random once: the same ones every "
        "time, as the studies draw theirs (default: all)",
    )
    p.add_argument("--figures", action="store_true", help="also redraw the run's figures")
    add_progress_flags(p, "test images of the importance-weighted estimate")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="evaluate on this array module instead of the run's own (checkpoints hold host "
        "arrays and load into any backend; the noise draws then differ)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="MNIST cache folder, for a run trained on MNIST",
    )
    p.add_argument(
        "--data-file",
        type=Path,
        help="the run's data file, if not where the run recorded it (its arrays must have the "
        "recorded hash); default: the data the run was trained on",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
        # The run's own data (recorded in its config.json), never simply MNIST: a run trained on
        # a file is evaluated on that file.
        dataset, record = load_run_dataset(args.run_dir, args.data_dir, args.data_file)
        trainer = Trainer(config, dataset)
        n_test = int(trainer.test_x.shape[0])
        if args.test_images is not None and args.test_images > n_test:
            # Refused, not quietly all of them: the figures would not be what was asked for.
            return fail(
                parser.prog, f"--test-images {args.test_images}: the test set has {n_test} images"
            )
        trainer.load_state_dict(state)
        start = time.perf_counter()
        bar = progress_bar(args)
        evaluation = evaluate_run(
            trainer, args.iw_samples, bar, args.log_interval, args.test_images
        )
        summary = {**evaluation, "data": record["source"], "data_sha256": record["sha256"]}
        summary["seconds"] = time.perf_counter() - start
        evaluated = f"{args.run_dir} after epoch {trainer.epoch}"
        if summary["test_images"] < n_test:  # a subset's figures are not the test set's
            evaluated += f", {summary['test_images']} of {n_test} test images"
        print(f"{evaluated}: {format_evaluation(summary)}")
        write_evaluation(args.run_dir, summary)
        if args.figures:
            for path in write_figures(trainer, args.run_dir):
                print(f"wrote {path}")
    except (ValueError, OSError) as err:
        return fail(parser.prog, str(err).replace("\n", " "))
    return 0
