"""The command line of ``scripts/completion_study.py``: MNIST quadrant completion.

Trains a row per model (the baseline network, the CVAE with a learned prior, and Sohn et al.'s
GSNN and hybrid objective) and number of given quadrants (1, 2, 3), all with one budget, on MNIST
binarized at 0.5, and measures each on a fixed subset of the test images: the baseline's exact
negative conditional log-likelihood; the negative ELBO and the importance-sampled negative
conditional log-likelihood of the CVAE and the hybrid; the prior-sampled one of the GSNN and the
hybrid; each sampled estimate for each S of --iw-samples (nats per image). Stopped anywhere, the
same command continues (each row resumes from its checkpoint; a measured row is read back).
--table prints the measured rows beside Pyro's published table; --figures draws, for each number
of given quadrants, the visible part, the truth, the baseline's prediction and several
completions of the CVAE.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numpy_vae.cli.common import Parser, add_network_flags, fail, load_dataset, progress_bar
from numpy_vae.cli.study import add_budget, add_flags, chosen_rows, make_reports, run_study
from numpy_vae.experiments.completion_study import (
    BASE,
    GIVENS,
    IW_SAMPLES,
    MODELS,
    collect,
    load_row_model,
    markdown_table,
    plot_completions,
    run_name,
    run_row,
    study_data,
)


def positive_ints(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        )
    return values


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="completion_study.py", description=__doc__.split("\n\n", 1)[1])
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated models, from {', '.join(MODELS)} (default: all)",
    )
    p.add_argument(
        "--given",
        type=positive_ints,
        default=GIVENS,
        metavar="N1,N2,...",
        help="numbers of given quadrants, comma-separated, from 1, 2, 3 (default: 1,2,3)",
    )
    add_budget(p, BASE["epochs"], test_images=1000, measured="every measurement")
    add_network_flags(
        p,
        BASE["widths"],
        latent_dim=BASE["latent_dim"],
        batch_size=BASE["batch_size"],
        lr=BASE["lr"],
        widths_of="of every network",
        z="the CVAE's z",
    )
    p.add_argument(
        "--iw-samples",
        type=positive_ints,
        default=IW_SAMPLES,
        metavar="S1,S2,...",
        help="samples S of each sampled estimate, comma-separated (default: 1,10,100,1000)",
    )
    p.add_argument(
        "--data-file",
        type=Path,
        help="an .npz of uint8 train_images and test_images (square, even side) instead of MNIST",
    )
    add_flags(p, "completion_<model>_given<N>", "completion_given<N>.png")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/completion_study.py``; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    try:
        models = chosen_rows(args.models, MODELS)
    except ValueError as err:
        return fail(p.prog, str(err).replace("row(s)", "model(s)"))
    if not set(args.given) <= set(GIVENS):
        return fail(p.prog, f"--given: 1, 2 or 3 quadrants, got {','.join(map(str, args.given))}")
    if args.table:
        found = {k: r for k, r in collect(args.runs_dir, args.seed).items() if wanted(k, args)}
        where = f"{args.runs_dir}/{run_name('<model>', args.given[0], args.seed)}/"
        # The figures need the data set: they are drawn below, where it is loaded.
        status = make_reports(p.prog, args, found, where, markdown_table)
        if status or not args.figures:
            return status

    def body() -> None:
        dataset, source = load_dataset(args.data_dir, args.data_file)
        data = study_data(dataset.train_images, dataset.test_images, source)
        if args.figures:
            draw(args, models, data, p.prog)
            return
        bar = progress_bar(args)
        for n_given in args.given:
            for model in models:
                r = run_row(
                    model,
                    n_given,
                    data,
                    args.runs_dir,
                    seed=args.seed,
                    test_images=args.test_images,
                    iw_samples=args.iw_samples,
                    progress=bar,
                    log_interval=args.log_interval,
                    epochs=args.epochs,
                    widths=args.hidden,
                    latent_dim=args.latent_dim,
                    lr=args.lr,
                    batch_size=args.batch_size,
                )
                print(row_line(r), flush=True)

    return run_study(p.prog, body, "a row")


def wanted(key: tuple[str, int], args: argparse.Namespace) -> bool:
    model, n_given = key
    return model in args.models.split(",") and n_given in args.given


def draw(args: argparse.Namespace, models: list[str], data: Any, prog: str) -> None:
    """``--figures``: a figure per number of given quadrants with a trained row."""
    written = []
    for n_given in args.given:
        trained = {}
        for model in models:
            run_dir = args.runs_dir / run_name(model, n_given, args.seed)
            if (run_dir / "completion.json").is_file():
                trained[model], config = load_row_model(run_dir)
                if config["data_sha256"] != data.sha256:
                    raise ValueError(f"{run_dir} was trained on other data than {data.source}")
        if trained:
            path = args.figures / f"completion_given{n_given}.png"
            plot_completions(trained, data, n_given, path, seed=args.seed)
            written.append(str(path))
    if not written:
        where = f"{args.runs_dir}/{run_name('<model>', args.given[0], args.seed)}/"
        raise ValueError(f"no measured row under {where}")
    print(f"wrote {', '.join(written)}")


def row_line(r: dict[str, Any]) -> str:
    """The line ``main`` prints for a measured row: each figure it holds."""
    head = f"{r['model']} given {r['n_given']} (epoch {r['epoch']}): "
    if r["model"] == "baseline":
        return head + f"-log p(hidden|visible) {r['neg_cll']:.2f} ± {r['neg_cll_se']:.2f}"
    parts = [f"-ELBO {r['neg_elbo']:.2f} ± {r['neg_elbo_se']:.2f}"] if "neg_elbo" in r else []
    for key, how in (("neg_cll_iw", ""), ("neg_cll_mc", " (z from the prior)")):
        if key in r:
            figures = ", ".join(f"S={s} {v:.2f}" for s, v in r[key].items())
            parts.append(f"-log p(hidden|visible){how} {figures}")
    return head + "; ".join(parts)
