"""The command line of ``scripts/gradient_variance.py``: the estimator experiment, and with
``--snr`` the signal-to-noise study of the IWAE gradient (:mod:`numpy_vae.experiments.snr`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from numpy_vae.bounds import ESTIMATORS
from numpy_vae.cli.common import (
    Parser,
    add_progress_flags,
    explicit_flags,
    fail,
    finite_float,
    int_at_least,
    load_run_dataset,
    nonnegative_int,
    positive_int,
    progress_bar,
)
from numpy_vae.experiments.estimators import (
    SAMPLE_COUNTS,
    check_closed_form,
    decoder_case,
    gradient_variance,
)
from numpy_vae.experiments.snr import (
    GaussianCase,
    NetworkCase,
    SNRStudy,
    check_signs,
    network_case,
    plot_snr,
    snr_study,
)
from numpy_vae.training.atomic import write_json
from numpy_vae.training.data import Dataset, default_data_dir, default_runs_dir
from numpy_vae.training.progress import Progress
from numpy_vae.training.runs import recorded_data


def parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/gradient_variance.py``."""

    def estimators(text: str) -> list[str]:
        values = text.split(",")
        unknown = [v for v in values if v not in ESTIMATORS]
        if unknown or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(
                f"expected distinct names from {','.join(ESTIMATORS)}, got {text!r}"
            )
        return values

    def counts(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected integers like 1,10,100, got {text!r}"
            ) from None
        if min(values) < 1:
            raise argparse.ArgumentTypeError(f"sample counts must be positive, got {text!r}")
        return values

    p = Parser(
        prog="gradient_variance.py",
        description="Estimate the gradient of E_q[log p(x|z)] with respect to mu and logvar "
        "with the reparameterization trick and with the score function (REINFORCE), for "
        "K = 1 to 1000 samples: print the variance of each against K, draw it (log-log), and "
        "check both estimators on a quadratic with a closed-form expectation. Exit status 1 if "
        "that check fails, 2 on bad usage. With --snr: the signal-to-noise ratio of the IWAE "
        "gradient of the inference and generative networks against K, for the plain, STL and "
        "DReG estimators (Rainforth et al. 2018, Tucker et al. 2018), on a linear-Gaussian "
        "model in closed form and on a trained VAE (--run, or a small one trained first); exit "
        "status 1 if the closed form's slopes do not have the signs of the theory.",
    )
    p.add_argument(
        "--run",
        type=Path,
        metavar="RUN_DIR",
        help="use this training run's model, on the data it was trained on (recorded in its "
        "config.json: its data file, or MNIST)",
    )
    p.add_argument(
        "--image",
        type=int,
        default=0,
        help="test image: of the run's data with --run, else of MNIST (if MNIST is cached)",
    )
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="MNIST cache folder")
    p.add_argument(
        "--data-file",
        type=Path,
        help="with --run: the run's data file, if not where the run recorded it (its arrays "
        "must have the recorded hash); default: the data the run was trained on",
    )
    p.add_argument(
        "--sample-counts", type=counts, default=list(SAMPLE_COUNTS), help="the values of K"
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=100,
        help="independent K-sample estimates at the largest K",
    )
    p.add_argument("--latent-dim", type=positive_int, default=4, help="L of the closed-form case")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="noise, the closed-form case, the model"
    )
    p.add_argument(
        "--plot",
        type=Path,
        help="figure path (default: gradient_variance.png in the --run folder, or in "
        "$NUMPY_VAE_RUNS, else ./runs, for an untrained model)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    add_progress_flags(p, "rows of z through the decoder (with --snr: draws of eps times K)")
    snr = p.add_argument_group("the SNR study (--snr)")
    snr.add_argument(
        "--snr",
        action="store_true",
        help="the SNR study instead of the variance study (figure default: snr.png where "
        "gradient_variance.png would go)",
    )
    snr.add_argument(
        "--estimators",
        type=estimators,
        default=["reparam", "dreg", "stl"],
        help="encoder gradient estimators, comma-separated",
    )
    snr.add_argument(
        "--draws", type=int_at_least(2), default=100, help="draws of eps per K, trained model"
    )
    snr.add_argument(
        "--batch-size", type=positive_int, default=4, help="minibatch of the trained model"
    )
    snr.add_argument(
        "--max-params",
        type=positive_int,
        default=2000,
        help="parameters per network whose draws are kept (a uniform sample), trained model",
    )
    snr.add_argument(
        "--train-epochs",
        type=positive_int,
        default=5,
        help="epochs of the small model trained when there is no --run",
    )
    snr.add_argument(
        "--gaussian-draws",
        type=int_at_least(2),
        default=1000,
        help="draws of eps per K, linear-Gaussian model",
    )
    snr.add_argument(
        "--gaussian-batch",
        type=positive_int,
        default=64,
        help="minibatch of the linear-Gaussian model (of its 1024 points)",
    )
    snr.add_argument(
        "--perturbation",
        type=finite_float(0, inclusive=True),
        default=0.02,
        help="standard deviation of the noise added to the linear-Gaussian model's optimum",
    )
    return p


#: The destinations of the flags that belong to one of the two studies only.
VARIANCE_ONLY = ("repeats", "image", "latent_dim")
SNR_ONLY = ("estimators", "draws", "batch_size", "max_params", "train_epochs",
            "gaussian_draws", "gaussian_batch", "perturbation")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/gradient_variance.py``; returns the exit status."""
    from numpy_vae.training.plots import plot_gradient_variance

    p = parser()
    args = p.parse_args(argv)
    given = explicit_flags(p, argv)
    wrong = sorted(given & set(SNR_ONLY if not args.snr else VARIANCE_ONLY))
    if wrong:
        flags = ", ".join("--" + d.replace("_", "-") for d in wrong)
        study = "variance study (without --snr)" if args.snr else "SNR study (--snr)"
        return fail(p.prog, f"{flags} belong(s) to the {study}")
    if not args.snr and args.repeats < 2:  # the cheap checks before loading any data
        return fail(p.prog, "--repeats must be at least 2")
    if args.snr and len(args.sample_counts) < 2:
        return fail(p.prog, "--snr needs at least two sample counts")
    if args.data_file is not None and args.run is None:
        return fail(p.prog, "--data-file needs --run (it is another copy of a run's data)")
    try:
        data, source = run_data(args.run, args.data_dir, args.data_file)
    except (ValueError, OSError) as err:
        return fail(p.prog, str(err).splitlines()[0])
    if data is not None:  # refused now, not after the closed-form case has run
        n_test = len(data.test_images)
        if args.snr and args.batch_size > n_test:
            what = f"--batch-size {args.batch_size}: {source} has {n_test} test images"
            return fail(p.prog, what)
        if not args.snr and not 0 <= args.image < n_test:
            return fail(p.prog, f"--image must lie in [0, {n_test}) (the test images of {source})")
    if args.snr:
        return snr_main(p, args, data, source)

    def variance_study() -> bool:
        closed, passed, lines = check_closed_form(args.latent_dim, args.repeats, args.seed)
        print("\n".join(lines))
        print()
        objective, mu, logvar, what = decoder_case(
            args.run, args.image, args.data_dir, args.seed, data, source
        )
        # Each estimator passes every draw through the decoder once (values or gradients).
        rows = 2 * args.repeats * max(args.sample_counts)
        bar = progress_bar(args)
        if bar or args.log_interval:
            label = "decoder passes, rows of z"
            objective.progress = Progress(rows, label, bar=bar, log_interval=args.log_interval)
        study = gradient_variance(
            objective, mu, logvar, args.sample_counts, args.repeats, args.seed
        )
        print(f"f(z) = log p(x|z): {what}; q = N(mu, exp(logvar)) from its encoder")
        print(
            f"variance of the K-sample gradient estimate (mean over the {mu.size} coordinates), "
            f"from {study.samples:,} draws cut into blocks of K:"
        )
        if objective.progress is not None:
            objective.progress.close()
        print(study.table())
        # Beside the run it studies: an untrained model's figure never overwrites a run's.
        plot = args.plot or (args.run or default_runs_dir()) / "gradient_variance.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_gradient_variance(study, plot, what)
        print(f"wrote {plot}")
        if args.json is not None:
            _write_json(args.json, {"closed_form": closed.to_json(), "closed_form_passed": passed,
                                    "decoder": {**study.to_json(), "case": what}})  # fmt: skip
        return passed

    return _timed(p, variance_study)


def run_data(
    run: Path | None, data_dir: Path, data_file: Path | None
) -> tuple[Dataset | None, str]:
    """The data that ``--run`` was trained on (:func:`load_run_dataset`: its recorded file, or
    MNIST), and its name in words; ``None`` without ``--run``, or for a run that records no
    data and is given no ``--data-file`` (then the studies take MNIST if cached, as before).

    Raises
    ------
    ValueError
        In one line: the recorded data cannot be loaded, or is not what the run was trained on.
    """
    if run is None or (data_file is None and recorded_data(run) is None):
        return None, ""
    dataset, record = load_run_dataset(run, data_dir, data_file)
    return dataset, str(record["source"])


def snr_main(
    p: argparse.ArgumentParser,
    args: argparse.Namespace,
    data: Dataset | None = None,
    source: str = "",
) -> int:
    """The ``--snr`` study: both cases, their tables and slopes, the figure, the JSON;
    ``data``: the run's own data (:func:`run_data`), named ``source``."""
    if len(args.sample_counts) < 2:
        return fail(p.prog, "--snr needs at least two sample counts")
    bar = progress_bar(args)

    def run(case: GaussianCase | NetworkCase, draws: int, what: str) -> SNRStudy:
        total = draws * sum(args.sample_counts)  # snr_study counts draws times K
        progress = None
        if bar or args.log_interval:
            progress = Progress(total, what, bar=bar, log_interval=args.log_interval)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress.update(done[0])

        study = snr_study(case, args.sample_counts, draws, args.estimators, args.seed, done=tick)
        if progress is not None:
            progress.close()
        return study

    def snr() -> bool:
        gaussian = GaussianCase.rainforth(
            batch=args.gaussian_batch, perturbation=args.perturbation, seed=args.seed
        )
        closed = run(gaussian, args.gaussian_draws, "linear-Gaussian, draws x K")
        print(f"SNR of the IWAE gradient: {closed.case}")
        print(closed.table())
        print(_cost(closed, f"{gaussian.dim} noise values each, vectorized over the draws"))
        passed, lines = check_signs(closed)
        print("\n".join(lines))
        print()
        if args.run is None:
            print(
                f"training a small model ({args.train_epochs} epochs; --run RUN_DIR to study a run)"
            )
        case = network_case(
            args.run, args.data_dir, args.batch_size, args.seed, args.max_params,
            args.train_epochs, log=print, data=data, source=source,
        )  # fmt: skip
        network = run(case, args.draws, "trained model, draws x K")
        print(f"SNR of the IWAE gradient: {case.description}")
        print(
            f"(each network's SNR over {network.curves['generative'].parameters} decoder and "
            f"{min(network.curves[f'inference/{e}'].parameters for e in args.estimators)} "
            "encoder parameters, a uniform sample of each)"
        )
        print(network.table())
        print(_cost(network, f"one model step per draw and estimator ({len(args.estimators)})"))
        print("signs (for information: a trained model need not be where the limits hold):")
        print("\n".join(check_signs(network)[1][:-1]))
        plot = args.plot or (args.run or default_runs_dir()) / "snr.png"
        plot_snr([("(a) linear-Gaussian model, closed form", closed),
                  ("(b) " + ("the run's VAE" if args.run else "a small trained VAE"), network)],
                 plot)  # fmt: skip
        print(f"wrote {plot}")
        if args.json is not None:
            _write_json(args.json, {"gaussian": closed.to_json(), "gaussian_passed": passed,
                                    "network": network.to_json()})  # fmt: skip
        return passed

    return _timed(p, snr)


def _timed(p: argparse.ArgumentParser, study: Callable[[], bool]) -> int:
    """Run a study: its time, and the exit status (0, or 1 when its closed-form check failed;
    2 with a one-line error for bad input or a file that cannot be read or written)."""
    start = time.perf_counter()
    try:
        passed = study()
    except (ValueError, OSError) as err:
        return fail(p.prog, str(err).splitlines()[0])
    print(f"{time.perf_counter() - start:.1f} s")
    return 0 if passed else 1


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data)  # atomically: never a half-written file
    print(f"wrote {path}")


def _cost(study: SNRStudy, how: str) -> str:
    """What a study cost: in all, and per sample of z (draws x minibatch x K) at the smallest
    and the largest K, where a fixed cost per call and the arithmetic per sample dominate."""
    per = [
        t / (study.draws * study.batch * k) * 1e6
        for t, k in zip(study.seconds_per_k, study.sample_counts, strict=True)
    ]
    k = study.sample_counts
    return (
        f"took {study.seconds:.1f} s; per sample of z ({how}): {per[0]:.3g} us at K = {k[0]}, "
        f"{per[-1]:.3g} us at K = {k[-1]}"
    )
