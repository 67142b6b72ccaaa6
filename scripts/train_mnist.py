#!/usr/bin/env python
"""Train a VAE on MNIST. See ``--help``; the logic lives in ``numpy_vae.cli``."""

import os
import sys

# OpenBLAS's idle threads otherwise busy-wait ~0.1 s after every matrix product, on the cores
# that the training step's elementwise work runs on; it reads this only when NumPy loads it.
# See numpy_vae/parallel.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

from numpy_vae.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
