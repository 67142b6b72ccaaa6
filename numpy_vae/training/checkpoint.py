"""Checkpoints: one ``.npz`` of host arrays, written atomically, read without pickle.

Layout (all keys plain strings; no object arrays, so ``allow_pickle=False`` reads it):

==================  ==============================================================
``format``          format version (int)
``config``          the run's :class:`numpy_vae.training.trainer.TrainConfig` as a JSON string
``history``         the per-epoch metrics so far, a JSON list
``epoch``, ``step`` epochs completed, optimizer steps taken
``param/<name>``    every model parameter (host array, model dtype)
``adam/step``       Adam's step count
``adam/m``          first moments, flat, laid out like the model's flat parameters
``adam/v``          second moments, likewise
==================  ==============================================================

Random-number state is not stored (CuPy's could not be): each epoch's generators are derived
from the configured seed and the epoch number (see :mod:`numpy_vae.training.trainer`), which
the checkpoint does hold. Arrays are always host arrays, so a checkpoint written on the GPU
loads on the CPU and the other way round.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy

from numpy_vae.model import VAE
from numpy_vae.training.atomic import write_atomic
from numpy_vae.training.trainer import TrainConfig

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


def params_sha256(params: dict[str, numpy.ndarray]) -> str:
    """SHA-256 of a checkpoint's parameters: each by name (in sorted order), dtype, shape and
    little-endian bytes.

    An evaluation records it, so that a later look at the run can tell whether the checkpoint
    it evaluated is still the run's (a run trained further, or again from the start, is not).

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        ``state["params"]`` of :func:`load_checkpoint` or of ``Trainer.state_dict()``.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256()
    for name in sorted(params):
        values = numpy.asarray(params[name])
        digest.update(f"{name} {values.dtype.newbyteorder('<').str} {values.shape};".encode())
        digest.update(numpy.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")))
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` into the ``state_dict`` form.

    Nothing in the file is executed (``allow_pickle=False``), and everything is checked before
    it is returned: the format version, the configuration (it must validate as a
    :class:`~numpy_vae.training.trainer.TrainConfig`), the counters, and every array's type,
    shape and finiteness. Whether the parameters fit a given model is checked by
    :meth:`numpy_vae.training.trainer.Trainer.load_state_dict`.

    Raises
    ------
    CheckpointError
        If the file is missing, not a checkpoint, truncated, corrupted, of another format
        version, or inconsistent; the message names what does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there (was the run started?)")
    try:
        loaded = numpy.load(path, allow_pickle=False)
        if not isinstance(loaded, numpy.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded as f:
            data = {key: f[key] for key in f.files}
    except Exception as err:  # untrusted bytes: any failure to parse them means the same
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupted ({_one_line(err)})"
        ) from err
    try:
        return _parse(data)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err


def _parse(data: dict[str, numpy.ndarray]) -> dict[str, Any]:
    """Check the arrays of a checkpoint and turn them into the ``state_dict`` form."""
    required = {"format", "config", "history", "epoch", "step", "adam/step", "adam/m", "adam/v"}
    missing = required - set(data)
    if missing:
        raise ValueError(f"not a numpy-vae checkpoint (missing {', '.join(sorted(missing))})")
    version = _count(data, "format")
    if version != FORMAT:
        raise ValueError(
            f"checkpoint format {version}, this numpy-vae reads format {FORMAT}; "
            "use the numpy-vae version that wrote it"
        )
    config = _json(data, "config", dict)
    try:
        TrainConfig.from_json(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"its configuration is invalid ({_one_line(err)})") from None
    history = _json(data, "history", list)
    epoch, step, adam_step = (_count(data, k) for k in ("epoch", "step", "adam/step"))
    if len(history) != epoch or not all(isinstance(h, dict) for h in history):
        raise ValueError(f"its history does not list {epoch} epochs of metrics")
    if adam_step != step:
        raise ValueError(f"Adam has taken {adam_step} steps but training {step}")
    dtype = numpy.dtype(config["dtype"])
    params = {k[len("param/") :]: v for k, v in data.items() if k.startswith("param/")}
    if not params:
        raise ValueError("it holds no parameters")
    size = 0
    for name, value in params.items():
        _check_array(f"parameter {name}", value, dtype)
        size += value.size
    for key in ("adam/m", "adam/v"):
        _check_array(key, data[key], dtype)
        if data[key].shape != (size,):
            raise ValueError(f"{key} has shape {data[key].shape}, the parameters need ({size},)")
    if (data["adam/v"] < 0).any():
        raise ValueError("adam/v holds negative second moments")
    return {
        "config": config,
        "history": history,
        "epoch": epoch,
        "step": step,
        "adam_step": adam_step,
        "adam_m": data["adam/m"],
        "adam_v": data["adam/v"],
        "params": params,
    }


def _count(data: dict[str, numpy.ndarray], key: str) -> int:
    value = data[key]
    if value.shape != () or value.dtype.kind not in "iu" or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value.dtype} {value.shape}")
    return int(value)


def _json(data: dict[str, numpy.ndarray], key: str, kind: type) -> Any:
    value = data[key]
    if value.shape != () or value.dtype.kind != "U":
        raise ValueError(f"{key} must be a JSON string, got {value.dtype} {value.shape}")
    try:
        parsed = json.loads(str(value))
    except ValueError:
        raise ValueError(f"{key} is not valid JSON") from None
    if not isinstance(parsed, kind):
        raise ValueError(f"{key} must hold a JSON {kind.__name__}")
    return parsed


def _check_array(what: str, value: numpy.ndarray, dtype: numpy.dtype) -> None:
    if value.dtype != dtype:
        raise ValueError(f"{what} is {value.dtype}, the configuration says {dtype}")
    if value.size == 0 or not numpy.isfinite(value).all():
        raise ValueError(f"{what} is empty or holds NaN/infinite values")


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


MODEL_FORMAT = "numpy-vae model v1"


def save_model(model: VAE, path: str | os.PathLike[str]) -> Path:
    """Write a model (its constructor arguments, dtype and parameters) to ``path`` (``.npz``),
    atomically; :func:`load_model` reads it back. Returns the path."""
    path = Path(path)
    arrays: dict[str, Any] = {
        "format": numpy.asarray(MODEL_FORMAT),
        "config": numpy.asarray(json.dumps(model.config())),
        "dtype": numpy.asarray(numpy.dtype(model.dtype).name),
    }
    for name, value in model.state_dict().items():
        arrays[f"param/{name}"] = value
    write_atomic(path, lambda f: numpy.savez(f, **arrays))
    return path


def load_model(
    path: str | os.PathLike[str],
    dtype: str | None = None,
    backend: str = "numpy",
    fast: bool = False,
) -> VAE:
    """A model from a file of :func:`save_model`, a run's ``checkpoint.npz``, or a run folder.

    Parameters
    ----------
    path : path
        The file, or a run folder (its ``checkpoint.npz`` is read).
    dtype : {"float32", "float64"}, optional
        Default: the dtype it was saved (trained) in.
    backend : {"numpy", "cupy", "strict"}
        Where its arrays live.
    fast : bool
        A :class:`numpy_vae.fast.FastVAE` (training's fast path) instead of the specification's
        :class:`numpy_vae.VAE`; the numbers are the same to rounding.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, or not a model or checkpoint.
    """
    from numpy_vae.backend import get_backend
    from numpy_vae.fast import FastVAE

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    try:
        with numpy.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read a model from it ({_one_line(err)})") from None
    if "format" in data and data["format"].dtype.kind == "U":  # a save_model file
        if str(data["format"]) != MODEL_FORMAT:
            raise CheckpointError(f"{path}: unknown model format {str(data['format'])!r}")
        config = _json(data, "config", dict)
        input_dim, seed = config.pop("input_dim"), config.pop("seed")
        saved_dtype = str(data["dtype"])
        params = {k[len("param/") :]: v for k, v in data.items() if k.startswith("param/")}
    else:  # a training checkpoint
        state = load_checkpoint(path)
        train = TrainConfig.from_json(state["config"])
        params, seed, saved_dtype = state["params"], train.seed, train.dtype
        config = train.model_config().model_json()
        input_dim = params["encoder.0.weight"].shape[1] - train.n_classes
    try:
        model = (FastVAE if fast else VAE)(
            input_dim, **config, backend=get_backend(backend, dtype or saved_dtype), seed=seed
        )
        model.load_state_dict(params)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: {_one_line(err)}") from None
    return model
