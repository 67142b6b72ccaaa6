#!/usr/bin/env python
"""Check the CuPy backend against NumPy on a GPU; see --help.

The program is numpy_vae.cli.check_gpu.
"""

import sys

from numpy_vae.cli.check_gpu import main

if __name__ == "__main__":
    sys.exit(main())
