"""The command line of ``scripts/check_gpu.py``: the CuPy backend against NumPy."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy

from numpy_vae.backend import BackendUnavailable, get_backend
from numpy_vae.cli.common import (
    Parser,
    finite_float,
    load_dataset,
    nonnegative_int,
    positive_int,
)
from numpy_vae.devices.gpucheck import (
    GRAD_TOLERANCE,
    LOCKSTEP_TOLERANCE,
    gradient_errors,
    lockstep,
    step_seconds,
    synthetic_dataset,
    train_epoch_losses,
)
from numpy_vae.training.data import Dataset
from numpy_vae.training.trainer import TrainConfig


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="check_gpu.py",
        description="Check numpy-vae's CuPy backend against NumPy: gradient checks on the GPU, "
        "lockstep parity, training drift with each backend's own random streams, step times.",
    )
    p.add_argument(
        "--steps", type=positive_int, default=300, help="training steps in the drift check"
    )
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples per step")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="the seed both backends are given"
    )
    p.add_argument(
        "--lockstep-steps", type=positive_int, default=20, help="steps of the parity check"
    )
    p.add_argument("--timing-steps", type=positive_int, default=50, help="steps timed per backend")
    p.add_argument(
        "--tolerance",
        type=finite_float(0, False),
        default=2.0,
        help="largest accepted difference of the epoch-mean and test losses (nats per example)",
    )
    p.add_argument(
        "--mnist", action="store_true", help="train on MNIST (default: synthetic MNIST-like data)"
    )
    p.add_argument(
        "--device",
        choices=("cupy", "strict"),
        default="cupy",
        help="backend checked against NumPy ('strict': the CPU test device, for the test suite)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks, print the report; 0 if all pass, 1 if one fails, 2 if no GPU."""
    args = parser().parse_args(argv)
    prog = "check_gpu.py"
    try:
        device64 = get_backend(args.device, "float64")
    except BackendUnavailable as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    host64 = get_backend("numpy", "float64")
    names = ("numpy", args.device)
    failures = []
    print(f"checking {device64.describe()} against {host64.describe()}")

    print("1. gradient checks on the device (float64, five-point central differences):")
    device_errors = gradient_errors(device64, args.seed)
    host_errors = gradient_errors(host64, args.seed)
    for label, error in device_errors.items():
        ok = error <= GRAD_TOLERANCE
        failures += [] if ok else [f"gradient check {label}"]
        print(
            f"   {label:<36} {args.device} {error:.1e}   numpy {host_errors[label]:.1e}   "
            f"{'ok' if ok else f'FAIL (> {GRAD_TOLERANCE:g})'}"
        )

    if args.mnist:
        data, source = load_dataset(None)
        data = Dataset(
            data.train_images[: args.steps * args.batch_size],
            data.train_labels[: args.steps * args.batch_size],
            data.test_images,
            data.test_labels,
        )
    else:
        data, source = synthetic_dataset(args.steps * args.batch_size, 2000, args.seed), "synthetic"

    rng = numpy.random.default_rng(args.seed)
    batches = [
        data.train_images[i * args.batch_size : (i + 1) * args.batch_size] / 255.0
        for i in range(min(args.lockstep_steps, args.steps))
    ]
    noise = [rng.standard_normal((len(x), 20)) for x in batches]
    (init_a, loss_a), (init_b, loss_b) = (
        lockstep(b, batches, noise, args.seed) for b in (host64, device64)
    )
    same_init = numpy.array_equal(init_a, init_b)
    worst = float(numpy.max(numpy.abs(loss_a - loss_b) / numpy.abs(loss_a)))
    ok = same_init and worst <= LOCKSTEP_TOLERANCE
    failures += [] if ok else ["lockstep parity"]
    print(
        f"2. lockstep with NumPy ({len(batches)} steps, same batches and noise, float64): initial "
        f"parameters {'equal' if same_init else 'DIFFERENT'}, largest relative loss difference "
        f"{worst:.1e} (expected rounding, ~1e-12)   {'ok' if ok else 'FAIL'}"
    )

    print(
        f"3. training drift: one epoch of {args.steps} steps, batch {args.batch_size}, float32, "
        f"seed {args.seed}, {source} data, each backend with its own random streams:"
    )
    runs = {}
    for name in names:
        config = TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed, backend=name)
        runs[name] = train_epoch_losses(config, data)
    (m_a, steps_a), (m_b, steps_b) = runs[names[0]], runs[names[1]]
    for name, (metrics, per_step) in runs.items():
        print(
            f"   {name:<6} first step {per_step[0]:8.2f}  last step {per_step[-1]:8.2f}  "
            f"epoch mean {metrics['train_loss']:8.3f}  test -ELBO {metrics['test_neg_elbo']:8.3f}"
            "  nats/example"
        )
    mean_diff = abs(m_a["train_loss"] - m_b["train_loss"])
    test_diff = abs(m_a["test_neg_elbo"] - m_b["test_neg_elbo"])
    step_diff = numpy.abs(steps_a - steps_b)
    ok = mean_diff <= args.tolerance and test_diff <= args.tolerance
    failures += [] if ok else ["training drift"]
    print(
        f"   per-step losses differ by sampling noise (mean {step_diff.mean():.2f}, largest "
        f"{step_diff.max():.2f} nats/example); epoch means differ by {mean_diff:.3f} and test "
        f"-ELBOs by {test_diff:.3f} (expected within about 1; accepted {args.tolerance:g})   "
        f"{'ok' if ok else 'FAIL'}"
    )

    seconds = {
        name: step_seconds(get_backend(name, "float32"), args.batch_size, args.timing_steps)
        for name in names
    }
    print(
        f"4. step time (784-400-20, batch {args.batch_size}, float32, forward + backward + "
        f"Adam): numpy {1e3 * seconds['numpy']:.2f} ms   {args.device} "
        f"{1e3 * seconds[args.device]:.2f} ms   ({seconds['numpy'] / seconds[args.device]:.1f}x)"
    )

    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("all checks passed")
    return 0
