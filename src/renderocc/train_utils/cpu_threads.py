"""Intra-op threads on a CPU that other work shares.

An op split over all cores waits at its end for the slowest thread; when other processes keep a core busy,
that thread is the one the scheduler took off, and every op waits milliseconds for its turn. The CPU demo's
training step (thousands of small ops) ran 2.6x faster on one thread than on two with one of the 2 cores
busy elsewhere, while on idle cores two threads are faster. `CpuThreads` measures how many cores the rest of
the machine takes and uses the ones left.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")
_now = time.monotonic


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    fields = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    """CPU seconds of this process and its live child processes (the data loader's workers)."""
    total = time.process_time()
    for child in multiprocessing.active_children():
        try:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


class CpuThreads:
    """Every `interval_s` (checked by `update`, once per step): as many intra-op threads as cores were left
    by other processes over that interval, between 1 and the number torch started with.

    A no-op where there is nothing to choose (one thread) or nothing to measure (no /proc/stat).
    """

    def __init__(self, interval_s: float = 5.0) -> None:
        self.full = torch.get_num_threads()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.interval_s = interval_s
        self.enabled = self.full > 1 and PROC_STAT.exists()
        self.foreign = 0.0  # cores the rest of the machine took over the last interval
        if self.enabled:
            self._mark = (_now(), _machine_busy_s(), _own_s())

    def update(self) -> int:
        """Re-choose the thread count when the interval is over; returns the current count."""
        if not self.enabled:
            return torch.get_num_threads()
        now = _now()
        last, busy0, own0 = self._mark
        if now - last >= self.interval_s:
            busy, own = _machine_busy_s(), _own_s()
            self.foreign = max(0.0, (busy - busy0) - (own - own0)) / (now - last)
            self._mark = (now, busy, own)
            threads = max(1, min(self.full, round(self.cores - self.foreign)))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
        return torch.get_num_threads()

    def restore(self) -> None:
        """Back to the thread count torch started with."""
        if self.enabled:
            torch.set_num_threads(self.full)
