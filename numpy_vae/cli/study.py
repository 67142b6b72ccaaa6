"""What the command lines of the studies share: the flags every study has, the two reports of
its measured rows (``--table``, ``--figures``), and the run of its rows, which ends with the
exit status of :func:`run_study` (a one-line error for bad input; an interrupted row continued
by the same command).

A study (``burda_study.py``, ``collapse_study.py``, ``completion_study.py``,
``disentanglement_study.py``) trains a row per setting into a folder of its own under
``--runs-dir`` and measures it at its end; what is measured is read back, not trained again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import TypeVar

from numpy_vae.cli.common import (
    RUN_FAILURES,
    add_progress_flags,
    fail,
    failure_status,
    load_dataset,
    nonnegative_int,
    positive_int,
    progress_bar,
)
from numpy_vae.training.data import default_data_dir, default_runs_dir
from numpy_vae.training.runs import Terminated, sigterm_interrupts


def add_rows(parser: argparse.ArgumentParser, rows: Sequence[str]) -> None:
    """Add ``--rows``: which of a study's ``rows`` to run (all by default), read back with
    :func:`chosen_rows`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The study's parser.
    rows : sequence of str
        The study's rows, in their order.
    """
    parser.add_argument(
        "--rows", default=",".join(rows), help=f"comma-separated rows, from {', '.join(rows)}"
    )


def add_budget(
    parser: argparse.ArgumentParser,
    epochs: int | None = None,
    *,
    iw_k: int | None = None,
    test_images: int | None = None,
    measured: str = "",
) -> None:
    """Add the flags that give every row of a study the same budget, each where the study has
    it: ``--epochs`` (of training), ``--iw-k`` (importance samples of the test NLL estimate) and
    ``--test-images`` (the random subset of the test set that every row is measured on).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The study's parser.
    epochs : int, optional
        The default of ``--epochs``; without one, no such flag (a study trained in stages).
    iw_k : int, optional
        The default of ``--iw-k``; without one, no such flag.
    test_images : int, optional
        The default of ``--test-images``; None: all of them (say so in ``measured``).
    measured : str
        What the test images measure, for the help of ``--test-images``; empty: no such flag.
    """
    if epochs is not None:
        parser.add_argument(
            "--epochs", type=positive_int, default=epochs, help="the budget of every row, in epochs"
        )
    if iw_k is not None:
        parser.add_argument(
            "--iw-k", type=positive_int, default=iw_k, help="importance samples for the test NLL"
        )
    if measured:
        parser.add_argument(
            "--test-images",
            type=positive_int,
            default=test_images,
            help=f"test images (drawn at random once, the same for every row) for {measured}",
        )


def add_flags(
    parser: argparse.ArgumentParser,
    runs: str | None,
    figures: str | None,
    *,
    seed_of: str = "every row",
    mnist: bool = True,
    into: str = "DIR",
    table: str = "the measured rows' table",
    steps: str = "batches",
) -> None:
    """Add the flags every study has, after its own: ``--seed``, ``--runs-dir`` and
    ``--data-dir``, ``--table`` and ``--figures`` (:func:`make_reports` makes the two reports,
    neither of which trains anything), ``--no-progress`` and ``--log-interval``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The study's parser.
    runs : str, optional
        A row's folder under ``--runs-dir`` with seed 0 ("collapse_<row>"): ``--seed S`` seeds
        every row and names its folder ``<runs>_seed<S>``, so that the same rows repeated with
        another seed are kept beside the first. None: the study has no ``--seed``.
    figures : str, optional
        What the figures flag draws, for its help ("kl_per_dim.png and samples.png"); None: the
        study has the table only.
    seed_of : str
        What the seed seeds, for its help ("every row and of the data sample").
    mnist : bool
        Whether the rows train on MNIST, and so whether there is ``--data-dir`` (the MNIST cache
        that :func:`run_rows` reads).
    into : str
        ``DIR``: ``--figures DIR``, a folder of figures; ``PNG``: ``--figure PNG``, one file.
        Either way it is read back as ``args.figures``.
    table : str
        What ``--table`` prints, for its help.
    steps : str
        What ``--log-interval N`` counts (:func:`numpy_vae.cli.common.add_progress_flags`).
    """
    if runs is not None:
        parser.add_argument(
            "--seed",
            type=nonnegative_int,
            default=0,
            help=f"seed of {seed_of} (0: runs/{runs}; S: runs/{runs}_seed<S>)",
        )
    parser.add_argument(
        "--runs-dir", type=Path, default=default_runs_dir(), help="parent of the runs"
    )
    if mnist:
        parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="MNIST cache")
    parser.add_argument("--table", action="store_true", help=f"train nothing: print {table}")
    if figures is not None:
        parser.add_argument(
            "--figures" if into == "DIR" else "--figure",
            dest="figures",
            type=Path,
            metavar=into,
            help=f"train nothing: draw {figures} of the measured rows into {into}",
        )
    add_progress_flags(parser, steps)


Found = TypeVar("Found", bound=Sized)


def make_reports(
    prog: str,
    args: argparse.Namespace,
    found: Found,
    where: str,
    table: Callable[[Found], str],
    draw: Callable[[argparse.Namespace, Found], Sequence[Path]] | None = None,
    what: str = "row",
) -> int:
    """Make the reports that a study's command line asks for (:func:`add_flags`): print the
    table of its measured rows (``--table``), draw their figures (``--figures``); return the
    exit status.

    Parameters
    ----------
    prog : str
        The program's name, for its one-line errors.
    args : argparse.Namespace
        The parsed command line: ``args.table`` and ``args.figures`` say what to make.
    found : sized
        The measured rows the reports are of (those asked for); none is an error.
    where : str
        Where they were looked for, for that error ("runs/collapse_<row>/").
    table : callable
        ``table(found)``: the study's table, printed as it is.
    draw : callable, optional
        ``draw(args, found)``: draws the figures into ``args.figures`` and returns the paths it
        wrote; None where the study draws its figures elsewhere (or has none).
    what : str
        What a measured row is called in the error ("stage").

    Returns
    -------
    int
        0, or 2 with a one-line error when nothing is measured or a figure cannot be drawn or
        written.
    """
    if not found:
        return fail(prog, f"no measured {what} under {where}")
    if args.table:
        print(table(found))
    if draw is not None and args.figures:
        try:
            written = draw(args, found)
        except (ValueError, OSError) as err:
            return fail(prog, str(err).replace("\n", " "))
        print(f"wrote {' and '.join(str(path) for path in written)}")
    return 0


def chosen_rows(text: str, known: Sequence[str]) -> list[str]:
    """The rows a study's ``--rows`` names, in the order given.

    Parameters
    ----------
    text : str
        The flag's value: comma-separated row names (blanks around them are ignored).
    known : sequence of str
        The study's rows.

    Returns
    -------
    list of str
        The rows named.

    Raises
    ------
    ValueError
        When a name is not one of ``known``, or none is given; the message is the program's
        one-line error.
    """
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rows if r not in known]
    if unknown or not rows:
        raise ValueError(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return rows


Result = TypeVar("Result")


def run_rows(
    prog: str,
    args: argparse.Namespace,
    rows: Sequence[str],
    run_row: Callable[..., Result],
    budget: int,
    report: Callable[[str, Result], Iterable[str]],
    measuring: str,
    seed: int = 0,
) -> int:
    """Train and measure each of a study's ``rows`` on MNIST in turn, print the lines that
    ``report`` makes of each row's measurement, and return the exit status of :func:`run_study`.

    The studies of :mod:`numpy_vae.experiments` (``burda``, ``collapse``) share the signature of
    ``run_row`` and the flags that feed it, so that their command lines share this loop.

    Parameters
    ----------
    prog : str
        The program's name, for its one-line errors.
    args : argparse.Namespace
        The parsed command line; it has ``--iw-k`` and ``--test-images`` (:func:`add_budget`),
        ``--runs-dir``, ``--data-dir`` and the progress flags (:func:`add_flags`).
    rows : sequence of str
        The rows to run, in order (:func:`chosen_rows`).
    run_row : callable
        The study's ``run_row(row, dataset, runs_dir, budget, *, iw_k, test_images, seed,
        progress, log_interval)``: trains a row (resuming its checkpoint) and measures it.
    budget : int
        Its fourth argument: how far each row trains (stages, epochs).
    report : callable
        ``report(row, measured)``: the lines printed for what ``run_row`` returned.
    measuring : str
        What an interruption stops the measurement of, for its message.
    seed : int, optional
        The seed of every row.

    Returns
    -------
    int
        The exit status.
    """

    def body() -> None:
        dataset, _ = load_dataset(args.data_dir, None)
        bar = progress_bar(args)
        for row in rows:
            measured = run_row(
                row,
                dataset,
                args.runs_dir,
                budget,
                iw_k=args.iw_k,
                test_images=args.test_images,
                seed=seed,
                progress=bar,
                log_interval=args.log_interval,
            )
            for line in report(row, measured):
                print(line, flush=True)  # each row's lines as soon as it is measured

    return run_study(prog, body, measuring)


def run_study(prog: str, body: Callable[[], None], measuring: str) -> int:
    """Run a study's ``body`` (training runs, each measured at its end) and return the exit
    status: 0 when it ends; 2 with a one-line error for bad input or a file problem; 1 for a
    diverged run; 130 (143 for SIGTERM) when interrupted. An interrupted training keeps its last
    checkpoint; an interrupted measurement of ``measuring`` writes nothing. Either way the same
    command continues."""
    try:
        with sigterm_interrupts():
            body()
    except RUN_FAILURES as err:
        return failure_status(prog, err)
    except (KeyboardInterrupt, Terminated) as err:
        print(
            f"\nstopped while measuring {measuring} (nothing of it was written); the same "
            "command continues from the last checkpoint and measures it again",
            file=sys.stderr,
        )
        return 143 if isinstance(err, Terminated) else 130
    return 0
