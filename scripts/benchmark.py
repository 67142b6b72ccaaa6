"""Time a training epoch of numpy-vae against PyTorch and against the matrix-multiply floor.

    python scripts/benchmark.py                       # default 784-400-20 model, batch 128
    python scripts/benchmark.py --batch-size 256 --hidden 512 256 --latent 32
    python scripts/benchmark.py --sweep               # batch sizes and hidden widths, markdown
    python scripts/benchmark.py --mnist --json bench.json

See numpy_vae/benchmark.py for what is measured and how.
"""

from numpy_vae.benchmark import main

if __name__ == "__main__":
    main()
