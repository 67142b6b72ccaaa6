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
import json
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from numpy_vae.checks.torch_twin import VARIANTS

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="default")
    parser.add_argument("--steps", type=int, default=100, help="Adam steps (default 100)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--hidden", default="400", help="hidden widths, comma-separated")
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=10, help="print every k-th step (0: none)")
    parser.add_argument("--mnist", action="store_true", help="use MNIST (numpy_vae.training.data)")
    parser.add_argument("--data-dir", default="data", help="MNIST folder (with --mnist)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from numpy_vae.checks.torch_twin import TRAINED_BOUND, VARIANTS, StepRow, compare_training
    from numpy_vae.training.data import load_mnist, scale_images

    if args.threads:
        torch.set_num_threads(args.threads)
    data = None
    if args.mnist:
        mnist = load_mnist(args.data_dir)
        data = (scale_images(mnist.train_images, dtype=np.float64), mnist.train_labels)
    hidden = tuple(int(h) for h in args.hidden.split(","))
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
            f"{variant}: {VARIANTS[variant].description} ({args.dtype}, 784-{args.hidden}-"
            f"{args.latent}, batch {args.batch_size}, {'MNIST' if args.mnist else 'synthetic'})"
        )
        report = compare_training(
            variant,
            steps=args.steps,
            dtype=args.dtype,
            hidden_dims=hidden,
            latent_dim=args.latent,
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
    print(
        f"{'variant':12s} {'loss (1 step)':>14s} {'grads (1 step)':>15s} "
        f"{f'params ({args.steps} steps)':>20s}  status"
    )
    for r in reports:
        status = "ok" if r.ok else "FAIL"
        if args.dtype != "float64":
            status = "no bound (float32)"
        print(
            f"{r.variant:12s} {r.max_one_step_loss:14.2e} {r.max_one_step_grad:15.2e} "
            f"{r.max_trained_param:20.2e}  {status}"
        )
    if args.dtype == "float64" and args.steps != 100:
        print(f"(the {TRAINED_BOUND:g} parameter bound is meant for 100 steps)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {"args": {k: str(v) for k, v in vars(args).items()}}
        figures["reports"] = [r.to_json() for r in reports]
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in reports) else 1
