#!/usr/bin/env python
"""Train a VAE on MNIST; see --help.

The program is numpy_vae.cli.train.
"""

import os
import sys

# OpenBLAS reads this only when NumPy loads it: its idle threads then spin briefly instead of
# ~0.1 s after every product (see numpy_vae/fast/parallel.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

from numpy_vae.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
