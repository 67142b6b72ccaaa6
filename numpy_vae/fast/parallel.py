"""Split elementwise NumPy work and compiled kernels over a few threads.

NumPy's ufuncs run on one core, but they release the GIL inside their inner loops (and the
kernels of :mod:`numpy_vae.fast.kernels` release it for their whole call), so two threads
working on *disjoint* slices of the same arrays run at the same time. Elementwise work
on disjoint slices gives bitwise the same result as one call over the whole array, so splitting
never changes a number; it only pays when each slice is large (a hand-over between threads costs
tens of microseconds, and the GIL is held between ufunc calls), which is why callers pass a
minimum slice size below which everything runs in the calling thread.

The matrix products need none of this: BLAS has its own threads. But those threads and ours
share the cores. OpenBLAS's idle threads busy-wait for ``2**OPENBLAS_THREAD_TIMEOUT`` CPU
cycles after every product (default ``2**28``, about 0.1 s: the whole training step) before
they sleep, and a thread of ours then fights them for a core; a sleeping BLAS thread, on the
other hand, has to be woken at the next product. With Adam as 12 NumPy passes (2.9 ms a
step) it paid to quiet them (``OPENBLAS_THREAD_TIMEOUT=18``, about 0.1 ms of spinning) and run
Adam in two threads. With Adam one compiled pass (0.35 ms) it no longer does: on the AVX-512
Xeon (2026-12-07, real MNIST, default model, six interleaved rounds of four epochs in fresh
processes, medians of the round medians) OpenBLAS's default spin with Adam in one thread took
1.58 s per epoch, ``OPENBLAS_THREAD_TIMEOUT=22`` (about 1.5 ms of spinning) with Adam in one
thread 1.58 s, and ``OPENBLAS_THREAD_TIMEOUT=18`` with Adam in two 1.69 s. So nothing here sets
the variable, and :func:`default_threads` is 1 unless the BLAS threads are known not to spin
(someone who sets a short timeout, or one BLAS thread, gets the split).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MAX_DEFAULT_THREADS = 4
#: Largest ``OPENBLAS_THREAD_TIMEOUT`` (log2 of the spin in CPU cycles) that counts as not spinning.
MAX_QUIET_BLAS_TIMEOUT = 22

_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}


#: The variables OpenBLAS reads its thread count from, in the order it tries them.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def default_threads() -> int:
    """Threads for splitting elementwise work: 1 if BLAS threads spin, else the cores this
    process may run on, at most ``MAX_DEFAULT_THREADS`` and at most the BLAS thread count the
    environment sets (:func:`blas_thread_setting`).

    More threads than that only add hand-over cost: between ufunc calls each thread needs the
    GIL, so the serial part grows with the number of threads. And whoever runs
    ``OPENBLAS_NUM_THREADS=1`` (e.g. two trainings side by side on two cores) means one core
    per process: Adam in two threads would then take the other run's core.
    """
    if blas_threads_spin():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores, blas_thread_setting() or cores))


def blas_thread_setting() -> int | None:
    """The BLAS thread count the environment sets, or None: as OpenBLAS reads it, the first
    of :data:`BLAS_THREAD_VARIABLES` that holds a positive integer."""
    for var in BLAS_THREAD_VARIABLES:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def blas_threads_spin() -> bool:
    """Whether NumPy's BLAS may keep threads busy-waiting on the cores after a product.

    False only when NumPy uses OpenBLAS and either runs it in one thread
    (``OPENBLAS_NUM_THREADS``, ``GOTO_NUM_THREADS`` or ``OMP_NUM_THREADS`` = 1) or has been told
    to spin briefly (``OPENBLAS_THREAD_TIMEOUT`` <= ``MAX_QUIET_BLAS_TIMEOUT``). Other BLAS
    libraries (MKL spins for 200 ms by default) are assumed to spin. The environment is read
    now; OpenBLAS read it when NumPy was imported, so set it before that.
    """
    import numpy

    try:
        name = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # an unusual build: assume the worst
        return True
    if "openblas" not in str(name).lower():
        return True
    if blas_thread_setting() == 1:
        return False
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip()
    return not (timeout.isdigit() and int(timeout) <= MAX_QUIET_BLAS_TIMEOUT)


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, made again after a ``fork`` (whose child
    inherits the pool object but none of its threads)."""
    pid, pool = _pools.get(workers, (None, None))
    if pool is None or pid != os.getpid():
        pool = ThreadPoolExecutor(workers, thread_name_prefix="numpy_vae")
        _pools[workers] = (os.getpid(), pool)
    return pool


def split_ranges(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``[0, n)`` cut into ``parts`` contiguous ranges of nearly equal size.

    Inner boundaries are multiples of ``align`` (e.g. 16 elements keep every slice of a float32
    vector 64-byte aligned for SIMD loops); empty ranges are dropped.
    """
    bounds = [0]
    for i in range(1, parts):
        bounds.append(min(n, (n * i // parts) // align * align))
    bounds.append(n)
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def run_split(
    fn: Callable[[int, int], Any], n: int, threads: int, min_size: int, align: int = 1
) -> list[Any]:
    """Call ``fn(lo, hi)`` on contiguous ranges covering ``[0, n)``, in parallel.

    At most ``threads`` ranges, each at least ``min_size`` long (so a small ``n`` is one call
    in this thread). The calling thread works on the first range while the pool works on the
    others. Returns the results in range order; an exception in any range is raised here.
    """
    parts = max(1, min(threads, n // max(1, min_size)))
    ranges = split_ranges(n, parts, align)
    if len(ranges) <= 1:
        return [fn(0, n)]
    futures = [_pool(parts - 1).submit(fn, lo, hi) for lo, hi in ranges[1:]]
    try:
        first = fn(*ranges[0])
    finally:
        rest = [f.result() for f in futures]  # wait even if the first range failed
    return [first, *rest]
