#!/usr/bin/env python
"""beta-VAE on procedural dSprites, a row per beta, measured by two metrics; see --help.

The program is numpy_vae.cli.disentanglement_study.
"""

import sys

from numpy_vae.cli.disentanglement_study import main

if __name__ == "__main__":
    sys.exit(main())
