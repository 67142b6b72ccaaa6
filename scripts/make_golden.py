#!/usr/bin/env python
"""Write the golden files tests/fixtures/golden_<variant>.npz; see --help.

The program is numpy_vae.cli.make_golden.
"""

import sys

from numpy_vae.cli.make_golden import main

if __name__ == "__main__":
    sys.exit(main())
