#!/usr/bin/env python
"""Reparameterization against score-function gradients; see --help.

The program is numpy_vae.cli.gradient_variance.
"""

import sys

from numpy_vae.cli.gradient_variance import main

if __name__ == "__main__":
    sys.exit(main())
