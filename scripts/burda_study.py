#!/usr/bin/env python
"""Burda et al. (2016) Table 1, row by row; see --help.

The program is numpy_vae.cli.burda_study.
"""

import sys

from numpy_vae.cli.burda_study import main

if __name__ == "__main__":
    sys.exit(main())
