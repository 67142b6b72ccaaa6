#!/usr/bin/env python
"""Check the CuPy backend against NumPy on a machine with a GPU. See ``--help``.

The checks live in ``numpy_vae.devicecheck``. Without CuPy or a GPU this prints one line saying
what is missing and exits with status 2.
"""

import sys

from numpy_vae.devicecheck import main

if __name__ == "__main__":
    sys.exit(main())
