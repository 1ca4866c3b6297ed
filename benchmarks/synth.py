"""Synthetic dataset generation speed: per-stage times of one keyframe and end-to-end keyframes/s.

.venv/bin/python benchmarks/synth.py --device cpu --image-size 225 400 --scenes 2 --frames 6
python benchmarks/synth.py --device cuda --image-size 450 800 --scenes 8 --frames 25 --workers 1 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from renderocc.core.grid import VoxelGrid
from renderocc.synth import generate, materials, occupancy, sensors
from renderocc.synth.city import build_world
from renderocc.synth.rig import lidar_sensor2ego, nuscenes_rig


def _timed(device: torch.device, fn, *args):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def stage_times(device: torch.device, image_size: tuple[int, int], repeats: int) -> dict[str, float]:
    """Median seconds of each simulation stage for one keyframe (no file writing)."""
    world = build_world(0, 0, 12).to(device)
    cameras = nuscenes_rig(image_size)
    tables = materials.material_tables(device)
    grid = VoxelGrid()
    f32 = torch.float32
    ego = torch.tensor(world.ego.pose(1.0), dtype=f32, device=device)
    sensor2ego = torch.tensor(np.stack([c.sensor2ego for c in cameras]), dtype=f32, device=device)
    intrinsics = torch.tensor(np.stack([c.intrinsics for c in cameras]), dtype=f32, device=device)
    cam2world = ego @ sensor2ego
    lidar2world = ego @ torch.tensor(lidar_sensor2ego(), dtype=f32, device=device)
    times = torch.full((len(cameras),), 1.0, device=device)
    samples: dict[str, list[float]] = {}
    for _ in range(repeats + 1):  # the first round warms up kernels and caches
        render, t_cam = _timed(device, sensors.render_cameras, world, cameras, cam2world, times, tables)
        sweep, t_lidar = _timed(device, sensors.lidar_sweep, world, lidar2world, 1.0, tables, 0)
        sem, t_vox = _timed(device, occupancy.voxelize, world, grid, ego, 1.0, tables["occ"])
        world2ego = torch.linalg.inv(ego)
        ok = torch.isfinite(sweep["t"])
        rays_o = sweep["rays_o"][ok] @ world2ego[:3, :3].T + world2ego[:3, 3]
        rays_d = sweep["rays_d"][ok] @ world2ego[:3, :3].T
        _, t_ml = _timed(device, occupancy.traverse, sem != 17, grid, rays_o, rays_d, sweep["t"][ok])
        cam2ego = world2ego @ cam2world
        _, t_mc = _timed(device, occupancy.camera_visibility, grid, render["distance"], intrinsics, cam2ego)
        stages = {"6 cameras": t_cam, "lidar sweep": t_lidar, "voxelize": t_vox, "mask_lidar": t_ml}
        stages["mask_camera"] = t_mc
        for name, t in stages.items():
            samples.setdefault(name, []).append(t)
    return {k: statistics.median(v[1:]) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, nargs=2, default=(225, 400))
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the stage timings")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="scenes at once (generate's workers), each timed"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    size = tuple(args.image_size)
    print(f"device={device} image={size[0]}x{size[1]} torch={torch.__version__}")
    print(f"{'stage (one keyframe)':<24}{'median ms':>12}")
    total = 0.0
    for name, t in stage_times(device, size, args.repeats).items():
        total += t
        print(f"{name:<24}{t * 1e3:>12.1f}")
    print(f"{'sum':<24}{total * 1e3:>12.1f}")
    keyframes = args.scenes * args.frames
    print(f"end to end: {keyframes} keyframes ({args.scenes} x {args.frames}), median of {args.repeats}")
    print(f"{'workers':>8}{'wall s':>9}{'keyframes/s':>13}{'1000 keyframes':>16}")
    for workers in args.workers:
        walls = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                generate(Path(tmp) / "d", args.scenes, args.frames, size, device=args.device, progress=False,
                         workers=workers)  # fmt: skip
                walls.append(time.perf_counter() - start)
        wall = statistics.median(walls)
        rate = keyframes / wall
        print(f"{workers:>8}{wall:>9.1f}{rate:>13.2f}{1000 / rate / 60:>12.1f} min")


if __name__ == "__main__":
    main()
