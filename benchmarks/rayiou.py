"""Benchmark: RayIoU's speed (frames/s) on the Occ3D grid with SparseOcc's 8 ray origins per frame.

    python benchmarks/rayiou.py                            # procedural streets, CPU (and CUDA if present)
    python benchmarks/rayiou.py --frames 24                # the demo's held-out frame count
    python benchmarks/rayiou.py --dataroot D --split val   # a prepared dataset's frames and origins

A frame is one `RayIoUMeter.update`: 39 x 360 rays from each origin walked through the ground truth and
the prediction together (exact voxel traversal), then counted. Without --dataroot the ground truth is a
procedural street (road, sidewalks, building rows, trees, cars; 200 x 200 x 16) seen from 8 origins 8.6 m
apart along the road, as SparseOcc's rule picks them from a drive; with it, the dataset's Occ3D labels and
`renderocc eval`'s origins. Predictions: the ground truth shifted 1.2 m forward ("shifted") and with 20%
of its voxels given a random label ("noisy"). Each row is the median over --repeats passes over the frames
after one warm-up frame. On a CPU the walk runs on one thread (see `first_hits`); "CPU s" is the process's
CPU time, which on a busy shared machine says more than the wall time (on an idle one they agree).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from renderocc.core import FREE, VoxelGrid
from renderocc.eval.rayiou import MAX_ORIGINS, RayIoUMeter

sys.path.insert(0, str(Path(__file__).parent))
from vis import street_grid  # noqa: E402  (the same procedural street as the renderer benchmark)


def street_frames(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(labels uint8 [200, 200, 16], origins [8, 3]) of `count` procedural streets."""
    origins = torch.tensor([[x, 0.0, 1.84] for x in np.linspace(-30.0, 30.0, MAX_ORIGINS)])
    return [(torch.from_numpy(street_grid(seed)), origins) for seed in range(count)]


def dataset_frames(dataroot: str, split: str, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(Occ3D labels, ray origins) of the first `count` frames of a prepared dataset's split."""
    from renderocc.eval.evaluate import lidar_origins, load_occ3d
    from renderocc.train_utils.data import open_index

    index = open_index(dataroot)
    samples = [int(s) for s in index.splits[split][:count]]
    return [
        (torch.from_numpy(load_occ3d(index.gts_path(s))["semantics"]), lidar_origins(index, s))
        for s in samples
    ]


def predictions(gt: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "shifted":  # 3 voxels forward, the back filled with free space
        pred = torch.roll(gt, 3, 0)
        pred[:3] = FREE
        return pred
    noisy = gt.clone()
    flip = torch.rand(gt.shape, generator=gen) < 0.2
    noisy[flip] = torch.randint(0, FREE + 1, (int(flip.sum()),), generator=gen, dtype=gt.dtype)
    return noisy


def seconds_per_pass(frames, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median wall and CPU time of one pass of RayIoUMeter.update over all frames (walked and counted)."""
    meter = RayIoUMeter(VoxelGrid(), device=device)
    frames = [(p.to(device), g.to(device), o.to(device)) for p, g, o in frames]
    meter.update(*frames[0])  # warm-up
    meter.walk_pending()
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        for frame in frames:
            meter.update(*frame)
        meter.walk_pending()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", help="a prepared dataset with Occ3D labels (default: procedural)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--frames", type=int, default=8, help="frames per pass")
    cuda = ["cuda"] if torch.cuda.is_available() else []
    parser.add_argument("--devices", nargs="+", default=["cpu", *cuda])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if args.dataroot:
        scenes = dataset_frames(args.dataroot, args.split, args.frames)
    else:
        scenes = street_frames(args.frames)
    gen = torch.Generator().manual_seed(0)
    origins = sum(len(o) for _, o in scenes) / len(scenes)
    print(f"{len(scenes)} frames, {origins:.1f} origins x 14,040 rays per frame, 200 x 200 x 16 grid")
    print("| device | prediction | frames/s | s per frame | CPU s per frame | s, 24 frames | s, 150 frames |")
    print("|---|---|---|---|---|---|---|")
    for device in map(torch.device, args.devices):
        for kind in ("shifted", "noisy"):
            frames = [(predictions(gt, kind, gen), gt, o) for gt, o in scenes]
            wall, cpu = (t / len(frames) for t in seconds_per_pass(frames, device, args.repeats))
            print(
                f"| {device.type} | {kind} | {1 / wall:.2f} | {wall:.3f} | {cpu:.3f} | {24 * wall:.1f} | "
                f"{150 * wall:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
