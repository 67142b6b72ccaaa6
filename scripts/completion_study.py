#!/usr/bin/env python
"""MNIST quadrant completion, the baseline against the CVAE, a row each; see --help.

The program is numpy_vae.cli.completion_study.
"""

import sys

from numpy_vae.cli.completion_study import main

if __name__ == "__main__":
    sys.exit(main())
