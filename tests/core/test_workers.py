import os

from renderocc.core.workers import THREAD_VARIABLES, spawn_pool


def test_spawn_pool_workers_run_one_thread_and_the_parent_keeps_its_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with spawn_pool(1, os.getpid, ()) as pool:
        seen = pool.map(os.getenv, THREAD_VARIABLES)
    assert seen == ["1"] * len(THREAD_VARIABLES)
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "OPENBLAS_NUM_THREADS" not in os.environ
