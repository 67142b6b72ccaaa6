"""Checkpoints: one ``.npz`` of host arrays, written atomically, read without pickle.

Layout (all keys plain strings; no object arrays, so ``allow_pickle=False`` reads it):

==================  ==============================================================
``format``          format version (int)
``config``          the run's :class:`numpy_vae.train.TrainConfig` as a JSON string
``history``         the per-epoch metrics so far, a JSON list
``epoch``, ``step`` epochs completed, optimizer steps taken
``param/<name>``    every model parameter (host array, model dtype)
``adam/step``       Adam's step count
``adam/m``          first moments, flat, laid out like the model's flat parameters
``adam/v``          second moments, likewise
==================  ==============================================================

Random-number state is not stored (CuPy's could not be): each epoch's generators are derived
from the configured seed and the epoch number (see :mod:`numpy_vae.train`), which the checkpoint
does hold. Arrays are always host arrays, so a checkpoint written on the GPU loads on the CPU
and the other way round.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy

from .atomic import write_atomic

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (from :meth:`Trainer.state_dict`) to ``path`` atomically.

    The file is written under a temporary name in the same folder and renamed over ``path``
    only once complete, so a crash never leaves a half-written checkpoint behind.
    """
    arrays: dict[str, Any] = {
        "format": numpy.asarray(FORMAT),
        "config": numpy.asarray(json.dumps(state["config"])),
        "history": numpy.asarray(json.dumps(state["history"])),
        "epoch": numpy.asarray(state["epoch"]),
        "step": numpy.asarray(state["step"]),
        "adam/step": numpy.asarray(state["adam_step"]),
        "adam/m": state["adam_m"],
        "adam/v": state["adam_v"],
    }
    for name, value in state["params"].items():
        arrays[f"param/{name}"] = value
    write_atomic(path, lambda f: numpy.savez(f, **arrays))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` into the ``state_dict`` form.

    Raises
    ------
    CheckpointError
        If the file is missing, not a checkpoint, truncated, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there (was the run started?)")
    try:
        with numpy.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from err
    required = {"format", "config", "history", "epoch", "step", "adam/step", "adam/m", "adam/v"}
    missing = required - set(data)
    if missing:
        raise CheckpointError(f"{path}: not a numpy-vae checkpoint (missing {sorted(missing)})")
    if int(data["format"]) != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {int(data['format'])}, expected {FORMAT}")
    return {
        "config": json.loads(str(data["config"])),
        "history": json.loads(str(data["history"])),
        "epoch": int(data["epoch"]),
        "step": int(data["step"]),
        "adam_step": int(data["adam/step"]),
        "adam_m": data["adam/m"],
        "adam_v": data["adam/v"],
        "params": {k[len("param/") :]: v for k, v in data.items() if k.startswith("param/")},
    }
