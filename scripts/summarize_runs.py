#!/usr/bin/env python
"""A markdown table (and figure) comparing finished runs; see --help.

The program is numpy_vae.cli.summarize_runs.
"""

import sys

from numpy_vae.cli.summarize_runs import main

if __name__ == "__main__":
    sys.exit(main())
