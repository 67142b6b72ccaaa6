"""Time a training epoch of numpy-vae against PyTorch and against the matrix-multiply floor.

    python scripts/benchmark.py                       # default 784-400-20 model, batch 128
    python scripts/benchmark.py --batch-size 256 --hidden 512 256 --latent 32
    python scripts/benchmark.py --sweep               # batch sizes and hidden widths, markdown
    python scripts/benchmark.py --mnist --json bench.json

See numpy_vae/benchmark.py for what is measured and how.
"""

import os

# OpenBLAS's idle threads otherwise busy-wait ~0.1 s after every matrix product, on the cores
# that the training step's elementwise work runs on; it reads this only when NumPy loads it.
# See numpy_vae/parallel.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

from numpy_vae.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
