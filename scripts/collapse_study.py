#!/usr/bin/env python
"""Posterior collapse with a MADE decoder, and its remedies, row by row; see --help.

The program is numpy_vae.cli.collapse_study.
"""

import sys

from numpy_vae.cli.collapse_study import main

if __name__ == "__main__":
    sys.exit(main())
