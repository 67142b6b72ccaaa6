#!/usr/bin/env python
"""Evaluate a run's checkpoint on the test set; see --help.

The program is numpy_vae.cli.evaluate.
"""

import sys

from numpy_vae.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
