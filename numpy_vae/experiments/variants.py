"""The variants study (``scripts/variants_study.sh``): finished runs side by side, each labelled
by what sets it apart from the classic VAE, as the table of docs/09-beta-and-conditional.md.

:func:`summarize_runs` reads a row per run folder (its ``config.json``, last metrics and, when
present and still current, ``evaluation.json``); :func:`format_study_table` prints them as
Markdown, an evaluation of an earlier state of the run marked stale, and
:func:`numpy_vae.training.plots.plot_study` draws them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from numpy_vae.training.checkpoint import CheckpointError, load_checkpoint, params_sha256
from numpy_vae.training.labels import describe_variant
from numpy_vae.training.runs import CHECKPOINT, CONFIG, EVALUATION, METRICS


def summarize_runs(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per run: its variant flags and its current test figures.

    The run's current state is the last epoch in ``metrics.jsonl``. Its figures come from
    ``evaluation.json`` when that evaluated this state, else from ``metrics.jsonl``; an
    evaluation of another state (an earlier epoch, another checkpoint, other data) is not shown
    as current: ``test_iw_nll`` is then ``None`` and ``stale_evaluation`` says what it evaluated
    (e.g. ``"epoch 2"``; ``None`` when the evaluation is current or there is none).
    """
    rows = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        config_path, metrics_path = run_dir / CONFIG, run_dir / METRICS
        if not config_path.is_file() or not metrics_path.is_file():
            raise ValueError(f"{run_dir} is not a run folder (no {CONFIG} or {METRICS})")
        config = json.loads(config_path.read_text())
        last = json.loads(metrics_path.read_text().splitlines()[-1])
        evaluation_path = run_dir / EVALUATION
        evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}
        stale = stale_evaluation(run_dir, config, last["epoch"], evaluation)
        if stale is not None:
            evaluation = {}  # the metrics of the current epoch instead
        rows.append(
            {
                "run": run_dir.name,
                "variant": describe_variant(config),
                "epochs": last["epoch"],
                "test_neg_elbo": evaluation.get("test_neg_elbo", last["test_neg_elbo"]),
                "test_iw_nll": evaluation.get("test_iw_nll"),
                "iw_samples": evaluation.get("iw_samples"),
                "test_recon": evaluation.get("test_recon", last["test_recon"]),
                "test_kl": evaluation.get("test_kl", last["test_kl"]),
                "active_units": evaluation.get("active_units", last.get("active_units")),
                "latent_dim": config["latent_dim"],
                "stale_evaluation": stale,
            }
        )
    return rows


def stale_evaluation(
    run_dir: Path, config: dict[str, Any], epoch: int, evaluation: dict[str, Any]
) -> str | None:
    """What ``evaluation`` evaluated, if that is no longer the run's current state.

    Parameters
    ----------
    run_dir : pathlib.Path
    config : dict
        The run's ``config.json``.
    epoch : int
        The run's last epoch (``metrics.jsonl``).
    evaluation : dict
        Its ``evaluation.json`` (empty if none).

    Returns
    -------
    str or None
        ``"epoch N"`` for an evaluation of another epoch, ``"another checkpoint of epoch N"``
        for one of other parameters (a run trained again), ``"other data"`` for one of other
        data; ``None`` if it is current, or there is none. What an older evaluation does not
        record (a hash) is not checked.
    """
    if not evaluation:
        return None
    evaluated = evaluation.get("epoch")
    if evaluated != epoch:
        return f"epoch {evaluated}"
    recorded_data = (config.get("dataset") or {}).get("sha256")
    if (
        evaluation.get("data_sha256")
        and recorded_data
        and evaluation["data_sha256"] != recorded_data
    ):
        return "other data"
    if evaluation.get("checkpoint_sha256"):
        try:
            params = load_checkpoint(run_dir / CHECKPOINT)["params"]
        except CheckpointError:  # nothing to compare with; the epoch has matched
            return None
        if params_sha256(params) != evaluation["checkpoint_sha256"]:
            return f"another checkpoint of epoch {evaluated}"
    return None


def format_study_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`summarize_runs` rows."""
    lines = [
        "| variant | epochs | test -ELBO | IW NLL | recon | KL | active units |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        iw = "n/a" if r["test_iw_nll"] is None else f"{r['test_iw_nll']:.2f} (K={r['iw_samples']})"
        if r.get("stale_evaluation"):  # an evaluation exists, but of another state of the run
            iw += f" (stale: {r['stale_evaluation']})"
        lines.append(
            f"| {r['variant']} | {r['epochs']} | {r['test_neg_elbo']:.2f} | {iw} | "
            f"{r['test_recon']:.2f} | "
            f"{r['test_kl']:.2f} | {r['active_units']}/{r['latent_dim']} |"
        )
    return "\n".join(lines)
