#!/usr/bin/env python
"""Time a training epoch against PyTorch and the GEMM floor; see --help.

The program is numpy_vae.cli.benchmark.
"""

import sys

from numpy_vae.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
