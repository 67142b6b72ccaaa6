"""Train numpy-vae and a plain PyTorch twin side by side and report how closely they agree.

    python scripts/compare_torch.py                       # default variant, 100 steps, float64
    python scripts/compare_torch.py --variant all --json runs/parity.json
    python scripts/compare_torch.py --dtype float32       # the drift, reported without a bound
    python scripts/compare_torch.py --mnist               # real MNIST instead of synthetic images

Both start from the same weights and see the same batches, noise and KL weight. In float64 the
script exits with status 1 if the first loss or any first gradient differs by more than 1e-12
(relative), or any parameter after the last Adam step by more than 1e-10. Needs
`pip install torch==2.13.0` (CPU build).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from numpy_vae.checks.variants import VARIANTS
from numpy_vae.cli.common import (
    Parser,
    add_network_flags,
    existing_data_dir,
    fail,
    nonnegative_int,
    positive_int,
)
from numpy_vae.training.atomic import write_json
from numpy_vae.training.data import default_data_dir


def parser() -> argparse.ArgumentParser:
    """The command line; it answers ``--help`` without PyTorch."""
    p = Parser(prog="compare_torch.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--variant",
        choices=[*VARIANTS, "all"],
        default="default",
        help="the setting both implementations train (numpy_vae.checks.variants): default is the "
        "PyTorch example (ReLU, Bernoulli, beta 1), the others vary its objective or model (beta, "
        "KL warm-up, free bits, a conditional or Gaussian model, multi-sample bounds and their "
        "gradient estimators, MADE decoders); all compares every one in turn",
    )
    p.add_argument("--steps", type=positive_int, default=100, help="Adam steps")
    p.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="precision of both: in float64 the agreement bounds apply (exit status 1 if one "
        "fails); in float32 the drift is reported without a bound (default: float64)",
    )
    add_network_flags(p, (400,), latent_dim=20, batch_size=128, lr=1e-3)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="weights, data and noise")
    p.add_argument(
        "--every", type=nonnegative_int, default=10, help="print every k-th step (0: none)"
    )
    p.add_argument("--mnist", action="store_true", help="real MNIST instead of synthetic images")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="MNIST cache folder")
    p.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Compare, print the table; 0 if every bound holds, 1 if one fails, 2 on bad usage."""
    p = parser()
    args = p.parse_args(argv)
    try:
        import torch

        from numpy_vae.checks.torch_twin import TRAINED_BOUND, StepRow, compare_training
    except ImportError:
        return fail(p.prog, "needs PyTorch: pip install torch==2.13.0 (the CPU build)")
    from numpy_vae.training.data import load_mnist, scale_images

    if args.threads:
        torch.set_num_threads(args.threads)
    data = None
    if args.mnist:
        try:
            mnist = load_mnist(existing_data_dir(args.data_dir))  # a typo must not download
        except (OSError, ValueError) as err:
            return fail(p.prog, str(err))
        data = (scale_images(mnist.train_images, dtype=np.float64), mnist.train_labels)
    hidden = args.hidden
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]

    def log(row: StepRow) -> None:
        if args.every and (row.step == 1 or row.step % args.every == 0 or row.step == args.steps):
            clamped = f"  clamped {row.clamped:2d}" if row.clamped else ""
            print(
                f"  step {row.step:4d}  w {row.kl_weight:5.3f}  loss {row.loss:12.4f}  "
                f"loss diff {row.loss_diff:.2e}  max grad diff {row.grad_diff:.2e}  "
                f"max param diff {row.param_diff:.2e}{clamped}"
            )

    reports = []
    for variant in variants:
        print(
            f"{variant}: {VARIANTS[variant].description} ({args.dtype}, "
            f"784-{'-'.join(map(str, args.hidden))}-"
            f"{args.latent_dim}, batch {args.batch_size}, {'MNIST' if args.mnist else 'synthetic'})"
        )
        report = compare_training(
            variant,
            steps=args.steps,
            dtype=args.dtype,
            hidden_dims=hidden,
            latent_dim=args.latent_dim,
            batch_size=args.batch_size,
            data=data,
            seed=args.seed,
            lr=args.lr,
            log=log,
        )
        reports.append(report)
        worst = max(report.trained, key=report.trained.get)
        print(
            f"  first step: loss parts {report.max_one_step_loss:.2e}, gradients "
            f"{report.max_one_step_grad:.2e}; after {args.steps} steps: parameters "
            f"{report.max_trained_param:.2e} ({worst}); "
            f"time numpy {report.seconds['numpy']:.1f} s, torch {report.seconds['torch']:.1f} s"
        )
        for failure in report.failures:
            print(f"  FAIL {failure}")

    print()
    width = max(12, *(len(r.variant) for r in reports))  # the longest variant name sets it
    print(
        f"{'variant':{width}s} {'loss (1 step)':>14s} {'grads (1 step)':>15s} "
        f"{f'params ({args.steps} steps)':>20s}  status"
    )
    for r in reports:
        status = "ok" if r.ok else "FAIL"
        if args.dtype != "float64":
            status = "no bound (float32)"
        print(
            f"{r.variant:{width}s} {r.max_one_step_loss:14.2e} {r.max_one_step_grad:15.2e} "
            f"{r.max_trained_param:20.2e}  {status}"
        )
    if args.dtype == "float64" and args.steps != 100:
        print(f"(the {TRAINED_BOUND:g} parameter bound is meant for 100 steps)")
    if args.json:
        figures = {"args": {k: str(v) for k, v in vars(args).items()}}
        figures["reports"] = [r.to_json() for r in reports]
        try:
            write_json(args.json, figures)  # atomically: never a half-written report
        except OSError as err:
            return fail(p.prog, f"cannot write {args.json} ({err})")
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in reports) else 1
