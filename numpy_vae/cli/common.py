"""What every command line shares: one-line errors, argument types, the model flags, the data.

Bad input ends a program with a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy

from numpy_vae.config import ModelConfig, Range
from numpy_vae.experiments.burda import BURDA2016
from numpy_vae.training.data import (
    DataError,
    Dataset,
    default_data_dir,
    load_mnist,
)
from numpy_vae.training.data import data_record as make_data_record
from numpy_vae.training.runs import (
    CONFIG,
    Interrupted,
    check_data,
    recorded_data,
)
from numpy_vae.training.trainer import RETIRED_KEYS, Diverged, TrainConfig

#: The presets of ``--protocol``: TrainConfig fields (a flag given beside the preset wins). The
#: module of each also registers the preset's learning-rate schedule and initialization with
#: :mod:`numpy_vae.training.presets` when imported (here), so every program of the command line
#: can build a trainer for a stored configuration that names them (a resumed or evaluated run).
PROTOCOLS = {"burda2016": BURDA2016}


class DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each default shown once, as it is typed: not for switches and unset
    options, not where the help text already says it, widths as ``400`` or ``512,256``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        switch = action.nargs == 0  # store_true, store_const: the help says what it switches
        if switch or "default" in text or default in (None, argparse.SUPPRESS) or not text:
            return text
        if isinstance(default, tuple | list):
            default = ",".join(str(v) for v in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), whose ``--help`` shows each
    default once (:class:`DefaultsOnce`, unless another ``formatter_class`` is given), and
    which makes the program's output line-buffered (:func:`line_buffered_output`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsOnce)
        invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if invoked.startswith("numpy-vae-"):  # an installed command: its messages use its name
            kwargs["prog"] = invoked
        super().__init__(*args, **kwargs)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        line_buffered_output()  # a program's first act: every line it prints shows at once
        return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_at_least(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return flag_type(Range("int", minimum), what)


def finite_float(low: float, inclusive: bool) -> Any:
    """An argparse type: a finite number ``> low`` (or ``>= low``)."""
    return flag_type(Range("float", low, inclusive))


def add_model_flags(group: Any) -> Any:
    """Add one flag per field of :class:`numpy_vae.config.ModelConfig` to an argparse parser or
    group, and return it; ``train_mnist.py`` and ``gradcheck.py`` share them.

    Generated from the fields: ``--latent-dim`` for ``latent_dim``, the field's help text, its
    default, and an argument type that checks the field's range. ``hidden_dims`` is
    ``--hidden 512,256``; ``n_classes`` is the switch ``--conditional`` (ten digit classes).
    Read the values back with :func:`model_config_from_args`.
    """
    for f in dataclasses.fields(ModelConfig):
        valid, cli = f.metadata["range"], f.metadata["cli"]
        flag = cli.get("flag", "--" + f.name.replace("_", "-"))
        if "const" in cli:  # a switch
            group.add_argument(
                flag,
                dest=f.name,
                action="store_const",
                const=cli["const"],
                default=f.default,
                help=f.metadata["help"],
            )
        elif valid.kind == "bool":  # a switch that turns the default around
            group.add_argument(
                flag,
                dest=f.name,
                action="store_false" if f.default else "store_true",
                help=f.metadata["help"],
            )
        elif valid.kind == "choice":
            group.add_argument(
                flag,
                dest=f.name,
                choices=valid.choices,
                default=f.default,
                help=f.metadata["help"],
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                type=flag_type(valid),
                default=f.default,
                metavar=f.name.upper() if valid.kind != "widths" else "W1,W2,...",
                help=f.metadata["help"] + (", comma-separated" if valid.kind == "widths" else ""),
            )
    return group


def add_progress_flags(group: Any, steps: str) -> None:
    """``--no-progress`` and ``--log-interval N`` (a plain progress line every N ``steps``)."""
    group.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is drawn on a terminal)"
    )
    group.add_argument(
        "--log-interval",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="off a terminal (a log file, a pipe), print a progress line with elapsed time and "
        f"ETA every N {steps} (0: none)",
    )


def progress_bar(args: argparse.Namespace) -> bool:
    """Whether to draw a progress bar, by the flags of :func:`add_progress_flags`: not with
    ``--no-progress``, and only where standard error is a terminal (in a log file or a pipe a
    redrawn bar is noise; ``--log-interval`` prints plain lines there instead)."""
    return not args.no_progress and sys.stderr.isatty()


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The :class:`ModelConfig` of the flags that :func:`add_model_flags` added."""
    return ModelConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ModelConfig)})


def flag_type(valid: Range, expected: str | None = None) -> Any:
    """An argparse type that parses a flag's text and checks it against a range (``expected``:
    the range in the words of the error message, default ``valid.describe()``)."""
    expected = expected or valid.describe()
    if valid.kind == "widths":
        expected = "comma-separated widths like 400 or 512,256"

    def parse(text: str) -> Any:
        try:
            if valid.kind == "widths":
                value: Any = tuple(int(w) for w in text.split(","))
            elif valid.kind == "int":
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            return valid.check("value", value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}") from None

    return parse


positive_int, nonnegative_int = int_at_least(1), int_at_least(0)
#: ``--hidden 512,256``: comma-separated positive widths.
hidden_widths = flag_type(Range("widths"))


def load_dataset(
    data_dir: Path | None = None, data_file: Path | None = None
) -> tuple[Dataset, str]:
    """The data set of a command line: MNIST from ``data_dir``, or the arrays of ``data_file``.

    Both go through the :class:`Dataset` constructor, which checks the pixels
    (:data:`numpy_vae.training.data.PIXEL_CONVENTIONS`).

    Parameters
    ----------
    data_dir : pathlib.Path, optional
        The MNIST folder (``--data-dir``), default :func:`default_data_dir`; unused when
        ``data_file`` is given. Only the default cache may be missing: it is created on first
        use; any other folder must exist (:func:`existing_data_dir`).
    data_file : pathlib.Path, optional
        An ``.npz`` of ``train_images``, ``test_images`` and optionally ``train_labels`` and
        ``test_labels`` (``--data-file``), used instead of MNIST.

    Returns
    -------
    tuple of Dataset and str
        The data set, and where it came from in words.

    Raises
    ------
    DataError
        In one line, when the folder or the file cannot give a valid data set.
    """
    if data_file is None:
        mnist = load_mnist(existing_data_dir(data_dir))
        dataset = Dataset(
            mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels
        )
        return dataset, f"MNIST ({mnist.source})"
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    try:
        with open(data_file, "rb") as f:
            head = f.read(6)
    except OSError as err:
        raise DataError(f"{data_file}: cannot read it ({err.strerror or err})") from None
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
        raise DataError(
            f"{data_file}: not an .npz archive (the zip of named arrays that numpy.savez "
            "writes); give uint8 train_images and test_images, and optionally train_labels "
            "and test_labels"
        )
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


def load_run_dataset(
    run_dir: Path, data_dir: Path | None = None, data_file: Path | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """The data set of a run being reopened (``--resume``, ``evaluate.py``): the data its
    ``config.json`` records, or ``data_file`` if it has the recorded hash.

    Without ``data_file``, the recorded file is loaded again, or MNIST from ``data_dir`` if the
    run was trained on MNIST. A run without a ``config.json`` gets the data as given, as
    :func:`load_dataset` loads it.

    Parameters
    ----------
    run_dir : pathlib.Path
    data_dir : pathlib.Path, optional
        ``--data-dir``, for MNIST.
    data_file : pathlib.Path, optional
        ``--data-file``: another copy of the run's data (e.g. moved elsewhere).

    Returns
    -------
    tuple of Dataset and dict
        The data, and its record (:func:`numpy_vae.training.data.data_record`).

    Raises
    ------
    DataError, numpy_vae.training.runs.DataMismatch
        In one line: the recorded file is missing, a run from before the records needs
        ``--data-file``, or the data is not what the run was trained on.
    """
    recorded = recorded_data(run_dir)
    given_file = data_file
    if data_file is None and recorded is not None and recorded["path"] is not None:
        if recorded["sha256"] is None:  # a run from before the records: nothing to check
            raise DataError(
                f"{run_dir} was trained on {recorded['source']}, and its {CONFIG} (from before "
                "data records) holds no hash of it: pass that file with --data-file"
            )
        data_file = Path(recorded["path"])
        if not data_file.is_file():
            raise DataError(
                f"{run_dir} was trained on {data_file}, which is missing: put it back, or pass "
                f"a copy with --data-file (its arrays must have sha256 "
                f"{recorded['sha256'][:12]}...)"
            )
    dataset, source = load_dataset(data_dir, data_file)
    record = make_data_record(dataset, source, data_file)
    if recorded is not None:
        advice = "train a new run on it instead"
        if recorded["path"] is None and data_file is None:
            advice = "use the --data-dir that the run was trained with"
        elif given_file is not None:
            advice = "leave out --data-file to use the recorded data, or " + advice
        check_data(run_dir, recorded, record, advice)
    return dataset, record


def existing_data_dir(data_dir: Path | None) -> Path:
    """The folder that MNIST is loaded from: ``data_dir``, which must be an existing folder
    unless it is the default cache.

    A typo in ``--data-dir`` must not quietly create a folder and download MNIST into it, so a
    folder that is named must exist; only the default cache (:func:`default_data_dir`) is created
    on first use, as the loader does for it.

    Parameters
    ----------
    data_dir : pathlib.Path, optional
        The folder named on the command line; ``None`` for the default.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    DataError
        In one line, when ``data_dir`` is not the default and is not an existing folder.
    """
    default = default_data_dir()
    if data_dir is None:
        return default
    data_dir = Path(data_dir)
    # Compared as absolute paths, so that "--data-dir ./data" is the default "data" too.
    if data_dir.absolute() == default.absolute() and not data_dir.exists():
        return data_dir
    if not data_dir.exists():
        raise DataError(
            f"--data-dir {data_dir} does not exist; create it first (mkdir -p {data_dir}) to "
            "fetch MNIST there, or leave out --data-dir to use the default cache "
            f"{default.absolute()}"
        )
    if not data_dir.is_dir():
        raise DataError(
            f"--data-dir {data_dir} is not a folder; give the folder of the MNIST cache"
        )
    return data_dir


def line_buffered_output() -> None:
    """Flush standard output and error at every line, also into a file or a pipe (where Python
    would otherwise buffer them until the process ends): every line a user waits for shows."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def is_folder_name(name: str) -> bool:
    """Whether ``name`` is one path component: a folder inside the folder it is joined to."""
    separators = {"/", os.sep, os.altsep or "/", "\0"}
    return bool(name) and name not in (".", "..") and not any(s in name for s in separators)


def stored_config(path: Path) -> dict[str, Any]:
    """The training configuration in a run's ``config.json`` (which also says where the data came
    from)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the run's configuration ({err})") from err
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not a run configuration")
    # The retired keys of older runs stay, so that TrainConfig.from_json refuses them with the
    # conversion instead of a run being silently resumed without them.
    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(RETIRED_KEYS)
    return {k: v for k, v in stored.items() if k in known}


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


#: What a training program turns into an exit status with :func:`failure_status`.
RUN_FAILURES = (ValueError, OSError, Diverged, Interrupted)


def failure_status(prog: str, err: BaseException) -> int:
    """The exit status of a training program ended by one of :data:`RUN_FAILURES`, its
    message on standard error: 2 with a one-line error for bad input or a file problem
    (DataError and CheckpointError are ValueErrors); 1 for a diverged run; 130, or 143 for
    SIGTERM (128 + the signal's number, as a shell reports), for an interrupted training."""
    if isinstance(err, Diverged):
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    if isinstance(err, Interrupted):
        print(f"\n{err}", file=sys.stderr)
        return 143 if err.terminated else 130
    return fail(prog, str(err).replace("\n", " "))


def add_network_flags(
    group: Any,
    hidden: Sequence[int],
    latent_dim: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    *,
    widths_of: str = "of the encoder",
    z: str = "z",
) -> None:
    """Add ``--hidden W1,W2,...`` and, each where it is given a default, ``--latent-dim``,
    ``--batch-size`` and ``--lr``: the network and optimizer flags of a command that builds a
    network of its own (the benchmark, the PyTorch comparison, the studies), declared once so
    that each is spelled, checked and explained alike everywhere. ``train_mnist.py`` and
    ``gradcheck.py`` take every model field instead (:func:`add_model_flags`).

    Parameters
    ----------
    group : argparse.ArgumentParser or argument group
        Where the flags go.
    hidden : sequence of int
        The default hidden widths.
    latent_dim, batch_size : int, optional
        The defaults of ``--latent-dim`` and ``--batch-size``; without one, no such flag.
    lr : float, optional
        The default of ``--lr`` (Adam's learning rate); without one, no such flag.
    widths_of : str
        Whose widths ``--hidden`` gives, for its help ("of every network").
    z : str
        Whose size ``--latent-dim`` gives, for its help ("the CVAE's z").
    """
    group.add_argument(
        "--hidden",
        type=hidden_widths,
        default=hidden,
        metavar="W1,W2,...",
        help=f"hidden widths {widths_of}, comma-separated",
    )
    if latent_dim is not None:
        group.add_argument(
            "--latent-dim", type=positive_int, default=latent_dim, help=f"size of {z}"
        )
    if batch_size is not None:
        group.add_argument(
            "--batch-size", type=positive_int, default=batch_size, help="examples per step"
        )
    if lr is not None:
        group.add_argument(
            "--lr", type=finite_float(0, False), default=lr, help="Adam learning rate"
        )


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
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
