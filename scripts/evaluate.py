#!/usr/bin/env python
"""Evaluate a training run's checkpoint on the test set. See ``--help``."""

import sys

from numpy_vae.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
