#!/usr/bin/env python
"""The estimator experiment: reparameterization against the score function. See ``--help``.

The estimators and the experiment live in ``numpy_vae.estimators``.
"""

import os
import sys

# OpenBLAS's idle threads otherwise busy-wait after every matrix product (numpy_vae/parallel.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

from numpy_vae.estimators import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
