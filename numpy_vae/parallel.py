"""Split elementwise NumPy work over a few threads.

NumPy's ufuncs run on one core, but they release the GIL inside their inner loops, so two
threads working on *disjoint* slices of the same arrays run at the same time. Elementwise work
on disjoint slices gives bitwise the same result as one call over the whole array, so splitting
never changes a number; it only pays when each slice is large (a hand-over between threads costs
tens of microseconds, and the GIL is held between ufunc calls), which is why callers pass a
minimum slice size below which everything runs in the calling thread.

The matrix products need none of this: BLAS has its own threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MAX_DEFAULT_THREADS = 4

_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}


def default_threads() -> int:
    """The cores this process may run on, at most ``MAX_DEFAULT_THREADS``.

    More threads than that only add hand-over cost: between ufunc calls each thread needs the
    GIL, so the serial part grows with the number of threads.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


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
