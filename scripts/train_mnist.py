#!/usr/bin/env python
"""Train a VAE on MNIST. See ``--help``; the logic lives in ``numpy_vae.cli``."""

import sys

from numpy_vae.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
