#!/usr/bin/env python
"""Check every gradient of a VAE against finite differences; see --help.

The program is numpy_vae.cli.gradcheck.
"""

import os
import sys

# The check is thousands of small matrix products: one BLAS thread is faster than a pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from numpy_vae.cli.gradcheck import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
