#!/usr/bin/env bash
# The variant study of docs/09-beta-and-conditional.md: six 10-epoch runs on MNIST, each evaluated with the
# importance-weighted log-likelihood (K = 1000), then one table and one figure.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${K:-1000}
# --log-interval: a progress line (elapsed, ETA) every 200 batches and every 200 test images of
# the IW estimate, since the output is not a terminal when the script is logged.
run() { python scripts/train_mnist.py --log-interval 200 --iw-samples "$K" --name "$@"; }
run study-plain
run study-beta4 --beta 4
run study-beta0.5 --beta 0.5
run study-warmup --kl-warmup 5
run study-freebits --free-bits 0.5
run study-conditional --conditional
python scripts/summarize_runs.py runs/study-plain runs/study-beta4 runs/study-beta0.5 \
    runs/study-warmup runs/study-freebits runs/study-conditional --figure docs/study.png
