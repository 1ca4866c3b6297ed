"""Benchmark: DataLoader samples/s of the training Dataset at several image sizes and worker counts.

    python benchmarks/loader.py                          # makes a small synthetic set at 900x1600
    python benchmarks/loader.py --dataroot D --version V # a prepared nuScenes(-format) dataset
    python benchmarks/loader.py --workers 2 16 --sizes 256x704 512x1408

Each cell is the median over --repeats windows of --batches batches (at least 3 x workers), after a
warm-up that includes worker start-up. Training mode (augmentation and ray sampling on), with preset
r50-256x704's data settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from renderocc.config import get_preset
from renderocc.data import OccDataset, collate, default_index_dir, load_index, prepare


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def make_synthetic(root: Path, args: argparse.Namespace) -> tuple[Path, str]:
    from renderocc.synth import generate

    dataroot = root / "synthetic"
    generate(
        dataroot,
        scenes=args.synth_scenes,
        frames=args.synth_frames,
        image_size=tuple(args.synth_image_size),
        seed=0,
        val_scenes=1,
    )
    return dataroot, "v1.0-synthetic"


def measure(dataset: OccDataset, workers: int, args: argparse.Namespace) -> list[float]:
    """samples/s of each of `repeats` windows.

    Workers finish their batches in bursts of about `workers` batches, so the warm-up drains the first
    burst and every window spans at least 3 bursts; otherwise a window could time a burst alone.
    """
    window = max(args.batches, 3 * workers)
    warmup = max(args.warmup, workers + 1)
    total = (warmup + args.repeats * window) * args.batch_size
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=RandomSampler(dataset, replacement=True, num_samples=total),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=2 if workers > 0 else None,
    )
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(window):
            next(batches)
        rates.append(window * args.batch_size / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", type=Path, default=None)
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument(
        "--index", type=Path, default=None, help="index folder (default: DATAROOT/renderocc/V)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(256, 704), (512, 1408)])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10, help="batches per timed window (>= 3 x workers)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prepare-workers", type=int, default=2)
    parser.add_argument("--synth-scenes", type=int, default=2)
    parser.add_argument("--synth-frames", type=int, default=6)
    parser.add_argument("--synth-image-size", type=int, nargs=2, default=[900, 1600], metavar=("H", "W"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.dataroot is None:
            args.dataroot, args.version = make_synthetic(Path(tmp), args)
        index_dir = args.index or default_index_dir(args.dataroot, args.version)
        if not (index_dir / "index.json").is_file():
            prepare(args.dataroot, args.version, out=index_dir, workers=args.prepare_workers)
        index = load_index(index_dir, args.dataroot, args.version)
        base = get_preset("r50-256x704").data
        rows = []
        for size in args.sizes:
            cfg = dataclasses.replace(base, image_size=size)
            dataset = OccDataset(index, cfg, "train", train=True)
            for workers in args.workers:
                rates = measure(dataset, workers, args)
                rows.append(
                    (f"{size[0]}x{size[1]}", workers, statistics.median(rates), min(rates), max(rates))
                )
                print(f"  {rows[-1][0]} workers={workers}: {rows[-1][2]:.1f} samples/s", flush=True)

    print(
        f"\nDataLoader, batch {args.batch_size}, T={1 + base.prev_frames} frames x 6 cameras, "
        f"rays from offsets {base.ray_frame_offsets}, max_rays {base.max_rays}"
    )
    print(
        f"{'image size':>11} | {'workers':>7} | {'samples/s (median)':>18} | "
        f"{'min':>6} | {'max':>6} | ms/sample"
    )
    print("-" * 75)
    for name, workers, med, lo, hi in rows:
        print(f"{name:>11} | {workers:>7} | {med:>18.1f} | {lo:>6.1f} | {hi:>6.1f} | {1000 / med:>9.1f}")


if __name__ == "__main__":
    main()
