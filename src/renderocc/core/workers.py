"""Process pools for per-sample data work: spawned workers that run one BLAS / OpenMP thread each."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from pathlib import Path

# Read by OpenBLAS, MKL and OpenMP when a worker imports numpy (or torch). Left unset, each of N workers
# starts a thread per core for its small matrix products, N x cores threads in all: on 2 cores two 2D-label
# workers took 5.1-10.8 ms a sample (median 7.4 over 7 runs) against 5.1-5.6 (5.2) with one thread each.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _initialize_from(path: str) -> None:
    initializer, initargs = pickle.loads(Path(path).read_bytes())
    initializer(*initargs)


@contextmanager
def spawn_pool(workers: int, initializer: Callable[..., None], initargs: tuple) -> Iterator[Pool]:
    """A pool of `workers` spawned processes (safe beside CUDA and threads), each with one BLAS / OpenMP
    thread and `initializer(*initargs)` run first; this process's own environment is as it was once the
    workers have started. Terminated, and its temporary file removed, on leaving the block."""
    # A spawned worker reads its start-up message only after importing the main module (torch and all,
    # seconds), and the parent's write of a message over a pipe's 64 KiB waits for that read: initargs sent
    # that way start the workers one after another. An H200 host's 14 2D-label workers, sent a 1,150-sample
    # index, took 109-163 s to start (twenty-second session). Through a file, the message stays small and
    # the workers import side by side.
    with tempfile.TemporaryDirectory(prefix="renderocc-pool-") as tmp:
        path = Path(tmp) / "initargs.pickle"
        path.write_bytes(pickle.dumps((initializer, initargs), protocol=pickle.HIGHEST_PROTOCOL))
        saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
        try:  # the workers start here, and copy the environment as it is now
            pool = mp.get_context("spawn").Pool(workers, initializer=_initialize_from, initargs=(str(path),))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        with pool:
            yield pool
