"""CpuThreads: the intra-op thread count follows the cores that other processes leave (a simulated clock and
CPU counters, so nothing here depends on the machine's load)."""

from __future__ import annotations

import torch

from renderocc.train_utils import cpu_threads


def test_threads_follow_the_cores_that_other_processes_leave(monkeypatch, tmp_path):
    clock = {"now": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(cpu_threads, "_now", lambda: clock["now"])
    monkeypatch.setattr(cpu_threads, "_machine_busy_s", lambda: clock["busy"])
    monkeypatch.setattr(cpu_threads, "_own_s", lambda: clock["own"])
    monkeypatch.setattr(cpu_threads, "PROC_STAT", tmp_path)  # exists, as on Linux
    start = torch.get_num_threads()

    def interval(seconds: float, own_cores: float, other_cores: float) -> int:
        clock["now"] += seconds
        clock["own"] += seconds * own_cores
        clock["busy"] += seconds * (own_cores + other_cores)
        return guard.update()

    try:
        torch.set_num_threads(2)
        guard = cpu_threads.CpuThreads(interval_s=5.0)
        guard.cores = 2  # a 2-core machine, whatever runs the test
        assert interval(5.0, 2.0, 1.0) == 1  # another process kept a core busy: one thread
        assert guard.foreign == 1.0
        assert interval(2.0, 1.0, 0.0) == 1  # within the interval: no new choice
        assert interval(3.0, 1.0, 0.1) == 2  # the machine is idle again: both cores
        assert interval(5.0, 2.0, 0.4) == 2  # a little other work: still both
        assert interval(5.0, 2.0, 0.7) == 1
        guard.restore()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(start)


def test_nothing_to_choose_with_one_thread(monkeypatch):
    start = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        guard = cpu_threads.CpuThreads()
        assert not guard.enabled and guard.update() == 1
    finally:
        torch.set_num_threads(start)
