"""Benchmark: speed of the software voxel renderer, the full PNG panel and the HTML viewer page.

    python benchmarks/vis.py                     # a procedural street grid (dense, like Occ3D without a mask)
    python benchmarks/vis.py --dataroot D        # the first GT frame of a dataset (with its camera images)
    python benchmarks/vis.py --threads 1 2 --repeats 5

Each row is the median over --repeats runs after one warm-up run. "panel" is render_frame at --size with
prediction and GT (two 3D views, two BEVs, six camera JPEGs decoded and resized, PNG not written).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from renderocc.core import FREE, VoxelGrid
from renderocc.vis.frames import find_frames, load_grid
from renderocc.vis.panel import CAMERA_LAYOUT, PanelLayout, render_frame
from renderocc.vis.view import ViewerFrame, build_viewer_html, visible_voxels
from renderocc.vis.voxel_render import bev_image, cast_rays, chase_camera, render_voxels


def street_grid(seed: int = 0) -> np.ndarray:
    """uint8 [200, 200, 16]: road, sidewalks, terrain, building rows, trees and parked cars."""
    rng = np.random.default_rng(seed)
    sem = np.full((200, 200, 16), FREE, np.uint8)
    sem[:, :, 1] = 14  # terrain
    sem[:, 85:115, 1] = 11  # road along x
    sem[85:115, :, 1] = 11  # crossing road along y
    sem[:, 75:85, 1:3] = 13
    sem[:, 115:125, 1:3] = 13
    for side in (slice(30, 72), slice(128, 170)):
        for x0 in range(0, 200, 24):
            if 80 < x0 < 115:
                continue
            sem[x0 : x0 + 20, side, 2 : rng.integers(8, 16)] = 15
    for _ in range(60):
        x, y = rng.integers(0, 196), rng.choice([rng.integers(72, 76), rng.integers(124, 128)])
        sem[x : x + 4, y : y + 4, 4:10] = 16
        sem[x + 1 : x + 3, y + 1 : y + 3, 2:4] = 16
    for _ in range(25):
        x, y = rng.integers(0, 190), rng.choice([86, 90, 104, 108])
        sem[x : x + 11, y : y + 5, 2:6] = rng.choice([4, 4, 4, 10, 3])
    return sem


def camera_images(root: Path, size: tuple[int, int]) -> dict[str, Path]:
    """Six noisy JPEGs of the nuScenes size (noise is the worst case for JPEG decoding)."""
    rng = np.random.default_rng(0)
    paths = {}
    for channel in (c for row in CAMERA_LAYOUT for c in row):
        paths[channel] = root / f"{channel}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[channel], quality=90)
    return paths


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", type=Path, help="a dataset with gts/ (and nuScenes tables for images)")
    parser.add_argument("--size", type=int, nargs=2, default=(900, 1600), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    grid = VoxelGrid()
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataroot is not None:
            record = find_frames(gt_dir=args.dataroot, dataroot=args.dataroot)[0]
            gt, _ = load_grid(record.gt_path, grid)
            images = record.camera_paths or camera_images(Path(tmp), (900, 1600))
            source = f"{args.dataroot} {record.token}"
        else:
            gt, images, source = (
                street_grid(),
                camera_images(Path(tmp), (900, 1600)),
                "procedural street grid",
            )
        pred = np.where(gt == 4, 10, gt).astype(np.uint8)
        layout = PanelLayout(width=args.size[1], height=args.size[0])
        _, _, view_w, view_h = layout.view_box(0, 2)
        camera = chase_camera(view_w, view_h)
        rays_o, rays_d, _ = camera.rays()
        occupied = torch.from_numpy(gt != FREE)
        frames = [
            ViewerFrame(str(i), {"prediction": visible_voxels(pred), "ground truth": visible_voxels(gt)})
            for i in range(10)
        ]
        print(
            f"input: {source}, {int(occupied.sum())} occupied voxels; panel {args.size[0]}x{args.size[1]}, "
            f"3D view {view_h}x{view_w}"
        )
        print(f"{'threads':>7}  {'case':<34} {'median s':>9} {'per s':>8}")
        for threads in args.threads:
            torch.set_num_threads(threads)
            cases = {
                f"cast_rays ({view_h}x{view_w} rays)": lambda: cast_rays(occupied, rays_o, rays_d, grid),
                f"render_voxels ({view_h}x{view_w})": lambda: render_voxels(gt, camera, grid),
                "bev_image (200x200)": lambda: bev_image(gt, scale=1, grid=grid),
                f"render_frame panel ({args.size[0]}x{args.size[1]})": lambda: render_frame(
                    pred, gt, images=images, grid=grid, size=tuple(args.size)
                ),
                "build_viewer_html (10 frames)": lambda: build_viewer_html(frames, grid=grid),
            }
            for name, fn in cases.items():
                seconds = timed(fn, args.repeats)
                print(f"{threads:>7}  {name:<34} {seconds:>9.3f} {1 / seconds:>8.2f}")


if __name__ == "__main__":
    main()
