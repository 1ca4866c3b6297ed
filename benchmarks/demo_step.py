"""Training speed of the CPU demo's setting: `renderocc train` as `renderocc demo` runs it on a CPU.

    python benchmarks/demo_step.py --dataroot D [--steps 60] [--repeats 3]

The demo preset with the demo's CPU overrides (fewer rays, no history frame), batch 2, the demo's loader
processes (its CPU_LOADER_WORKERS: 0, loading in the training process; one in checkouts before it), on the
CPU; steps/s per 10-step window from the run's metrics.jsonl (the first window, with start-up, left out).
Runs with only the training API, so the same script times an earlier checkout (PYTHONPATH=that/src) for a
before/after on the same data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from renderocc import demo
from renderocc.config import get_preset
from renderocc.demo import CPU_OVERRIDES
from renderocc.train import TrainOptions, train


def run_once(dataroot: str, version: str, steps: int, workers: int) -> list[float]:
    """steps/s of each 10-step window after the first, of one fresh run of `steps` steps."""
    preset = get_preset("demo").replace(**CPU_OVERRIDES)
    preset = preset.replace(train={"max_iters": steps, "val_every": 10**9, "checkpoint_every": 10**9})
    with tempfile.TemporaryDirectory() as out:
        # as the demo: adaptive CPU threads where the checkout has them
        fields = TrainOptions.__dataclass_fields__
        adapt = {"adapt_cpu_threads": True} if "adapt_cpu_threads" in fields else {}
        opts = TrainOptions(
            dataroot, out, version, device="cpu", num_workers=workers, progress=False, **adapt
        )
        train(preset, opts)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] / preset.train.batch_size for r in records if "samples_per_s" in r]
    return rates[1:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-synthetic")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    workers = getattr(demo, "CPU_LOADER_WORKERS", 1)  # checkouts before it loaded in one process
    parser.add_argument(
        "--workers", type=int, default=workers, help=f"loader processes (the demo's: {workers})"
    )
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        rates = run_once(args.dataroot, args.version, args.steps, args.workers)
        rows.append((statistics.median(rates), min(rates), max(rates), time.perf_counter() - tic))
    print(f"CPU demo setting, {args.steps} steps per run, steps/s per 10-step window")
    print(f"{'run':>4}{'median':>9}{'min':>8}{'max':>8}{'wall s':>9}")
    for i, (median, low, high, wall) in enumerate(rows, 1):
        print(f"{i:>4}{median:>9.2f}{low:>8.2f}{high:>8.2f}{wall:>9.0f}")
    print(f"median of runs: {statistics.median(r[0] for r in rows):.2f} steps/s")


if __name__ == "__main__":
    main()
