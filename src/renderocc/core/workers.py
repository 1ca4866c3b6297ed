"""Process pools for per-sample data work: spawned workers that run one BLAS / OpenMP thread each."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from multiprocessing.pool import Pool

# Read by OpenBLAS, MKL and OpenMP when a worker imports numpy (or torch). Left unset, each of N workers
# starts a thread per core for its small matrix products, N x cores threads in all: on 2 cores two 2D-label
# workers took 5.1-10.8 ms a sample (median 7.4 over 7 runs) against 5.1-5.6 (5.2) with one thread each, and
# on an H200's 16-core host 14 of them made 10 samples/s, where one process on 2 cores makes about 100
# (twenty-first session; the host is not yet re-timed with this).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def spawn_pool(workers: int, initializer: Callable[..., None], initargs: tuple) -> Pool:
    """A pool of `workers` spawned processes (safe beside CUDA and threads), each with one BLAS / OpenMP
    thread; this process's own environment is as it was once the workers have started."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    try:  # the workers start here, and copy the environment as it is now
        return mp.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
