"""Splitting elementwise work over threads: the ranges, the results, errors, and fork safety."""

import multiprocessing
import os

import numpy as np
import pytest

from numpy_vae.fast.parallel import default_threads, run_split, split_ranges


@pytest.mark.parametrize("n,parts,align", [(10, 3, 1), (1000, 2, 16), (5, 8, 1), (33, 2, 16)])
def test_ranges_cover_everything_once_in_order(n, parts, align):
    ranges = split_ranges(n, parts, align)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (_, hi), (lo, _) in zip(ranges[:-1], ranges[1:], strict=True):
        assert hi == lo and lo % align == 0
    assert all(hi > lo for lo, hi in ranges) and len(ranges) <= parts


def test_run_split_matches_one_call_and_keeps_small_work_in_this_thread():
    x = np.random.default_rng(0).standard_normal(100_003)
    out = np.empty_like(x)
    results = run_split(lambda lo, hi: np.exp(x[lo:hi], out=out[lo:hi]) is not None, x.size, 3, 10)
    assert results == [True] * 3
    np.testing.assert_array_equal(out, np.exp(x))
    assert len(run_split(lambda lo, hi: (lo, hi), 50, 4, 100)) == 1  # below the minimum size
    assert default_threads() >= 1


def test_an_error_in_any_range_is_raised_after_all_ranges_finished():
    finished = []

    def work(lo, hi):
        if lo > 0:
            raise ValueError("boom")
        finished.append(lo)

    with pytest.raises(ValueError, match="boom"):
        run_split(work, 100, 2, 1)
    assert finished == [0]


def _child(queue):
    x = np.arange(100_000, dtype=np.float64)
    out = np.empty_like(x)
    run_split(lambda lo, hi: np.sqrt(x[lo:hi], out=out[lo:hi]), x.size, 2, 10)
    queue.put(bool(np.array_equal(out, np.sqrt(x))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_works_in_a_forked_child():
    """A forked child inherits the pool object but not its threads; it must make a new pool."""
    run_split(lambda lo, hi: None, 100, 2, 1)  # make sure the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung: it used the parent's pool, which has no threads")
    assert queue.get(timeout=5) is True


def test_threads_only_when_blas_threads_do_not_spin(monkeypatch):
    """Splitting elementwise work is a loss while OpenBLAS's idle threads spin on the cores."""
    import numpy_vae.fast.parallel as parallel

    for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    openblas = "openblas" in str(np.show_config(mode="dicts")["Build Dependencies"]["blas"])
    assert parallel.blas_threads_spin()
    assert parallel.default_threads() == 1
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "18")
    assert parallel.blas_threads_spin() is not openblas
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    assert parallel.blas_threads_spin()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert parallel.blas_threads_spin() is not openblas
    monkeypatch.setattr(parallel, "blas_threads_spin", lambda: False)
    assert parallel.default_threads() == 1  # one BLAS thread asked for: one core meant


def test_default_threads_follow_the_blas_thread_setting(monkeypatch):
    """At most the cores, MAX_DEFAULT_THREADS and the first BLAS thread variable set."""
    import numpy_vae.fast.parallel as parallel

    monkeypatch.setattr(parallel, "blas_threads_spin", lambda: False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for var in parallel.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert parallel.blas_thread_setting() is None
    assert parallel.default_threads() == parallel.MAX_DEFAULT_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.default_threads() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # OpenBLAS's own variable comes first
    assert parallel.blas_thread_setting() == 2 and parallel.default_threads() == 2
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "many")  # not a count: the next one counts
    assert parallel.blas_thread_setting() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert parallel.blas_thread_setting() is None
    assert parallel.default_threads() == parallel.MAX_DEFAULT_THREADS
