"""A run's label: what sets its configuration apart from the classic VAE, in a few words.

The variants study's table (:mod:`numpy_vae.experiments.variants`) and a run's own figures
(``curves.png``, :mod:`numpy_vae.training.runs`) name runs the same way.
"""

from __future__ import annotations

from typing import Any

from numpy_vae.training.trainer import RETIRED_KEYS, TrainConfig, unknown_keys_message

#: Settings left out of a run's label: those that do not change what it computes, and the
#: number of epochs (a column of its own in the study table).
UNLABELLED = {
    "eval_batch_size",
    "skip_nonfinite",
    "reference",
    "backend",
    "gaussian_sigma",
    "epochs",
}


def describe_variant(config: dict[str, Any]) -> str:
    """A short label of everything that sets a run apart from the classic VAE (the defaults of
    :class:`TrainConfig`), so that runs which differ in any setting get different labels.

    Raises
    ------
    ValueError
        ``config`` is of an earlier version (:data:`numpy_vae.training.trainer.RETIRED_KEYS`),
        which this labelling would misread.
    """
    retired = set(config) & set(RETIRED_KEYS)
    if retired:
        raise ValueError(unknown_keys_message(retired))
    defaults = TrainConfig().to_json()
    phrases = {
        "beta": lambda v: f"beta = {v:g}",
        "kl_warmup": lambda v: f"KL warm-up {v:g} epochs",
        "free_bits": lambda v: f"free bits {v:g}",
        "n_classes": lambda v: "conditional" if v == 10 else f"conditional ({v} classes)",
        "likelihood": lambda v: f"{v} (sigma {config.get('gaussian_sigma', 1.0):g})",
        "binarize": lambda v: f"binarized ({v})",
        "hidden_dims": lambda v: "hidden " + ",".join(str(w) for w in v),
        "latent_dim": lambda v: f"latent dim {v}",
        "batch_size": lambda v: f"batch {v}",
        "objective": lambda v: {"vae": "k-sample VAE bound", "iwae": "IWAE bound"}.get(v, v),
        "k": lambda v: f"K = {v}",
        "estimator": lambda v: {"stl": "STL", "dreg": "DReG"}.get(v, v) + " estimator",
        "adam_eps": lambda v: f"Adam eps {v:g}",
        "lr_schedule": lambda v: f"{v} learning-rate stages",
        "init": lambda v: f"{v} initialization",
    }
    parts = []
    for key, default in defaults.items():
        if key in UNLABELLED or key not in config or config[key] == default:
            continue
        value = config[key]
        parts.append(phrases[key](value) if key in phrases else f"{key} {value}")
    return ", ".join(parts) or "plain VAE"
