#!/usr/bin/env python
"""Check every gradient of a VAE against finite differences. See ``--help``.

The check and the report live in ``numpy_vae.gradreport``. Exit status: 0 all pass, 1 a
gradient is wrong, 2 bad usage.
"""

import os
import sys

# The check is thousands of small matrix products: one BLAS thread is faster than a pool (and
# OpenBLAS reads this only when NumPy loads it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from numpy_vae.gradreport import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
