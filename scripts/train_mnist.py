#!/usr/bin/env python
"""Train a VAE on MNIST; see --help.

The program is numpy_vae.cli.train.
"""

import sys

from numpy_vae.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
