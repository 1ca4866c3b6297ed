import os
import pickle
from pathlib import Path

import numpy as np

from renderocc.core.workers import THREAD_VARIABLES, spawn_pool

_BLOB: np.ndarray | None = None


def _keep(blob: np.ndarray) -> None:
    global _BLOB
    _BLOB = blob


def _blob_sum(_: int) -> int:
    return int(_BLOB.sum(dtype=np.int64))


def test_spawn_pool_workers_run_one_thread_and_the_parent_keeps_its_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with spawn_pool(1, os.getpid, ()) as pool:
        seen = pool.map(os.getenv, THREAD_VARIABLES)
    assert seen == ["1"] * len(THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def test_spawn_pool_sends_large_initargs_through_a_file():
    """Every worker gets the initargs, though their start-up messages stay far under a pipe's 64 KiB (so
    the workers start side by side); the file is gone after the block."""
    blob = np.random.default_rng(0).integers(0, 255, 2_000_000, dtype=np.uint8)
    with spawn_pool(2, _keep, (blob,)) as pool:
        sums = pool.map(_blob_sum, range(4), chunksize=1)
        shipped = pool._initargs  # what each worker's start-up message carries
    assert sums == [int(blob.sum(dtype=np.int64))] * 4
    assert len(pickle.dumps(shipped)) < 1024
    assert not Path(shipped[0]).exists()
