#!/usr/bin/env python
"""numpy-vae against a plain PyTorch twin, step by step; see --help.

The program is numpy_vae.cli.compare_torch.
"""

import sys

from numpy_vae.cli.compare_torch import main

if __name__ == "__main__":
    sys.exit(main())
