"""How much of each class's camera-visible voxels the 2D labels reach: per class, the occupied voxels that
hold at least one sampled ray's LiDAR point, their mean distance, each class's share of the sampled rays, the
share of its rays whose LiDAR point lies in a voxel that the Occ3D labels call free, and the share of its
voxels that the sampled rays cross before their points and none ends in ("crossed": the 2D labels call them
free, as the line-of-sight term and the calibration's votes read them, `eval.calibrate.ray_votes`), also
with the key frame's rays alone ("by key": objects do not move under those).

The reason for the space and class balance of the ray sampling (`DataConfig.ray_balance_cell`,
`class_balance_power`): far ground (terrain, other_flat) gets few LiDAR points per voxel, so few labelled
pixels, while the 3D metric counts every voxel alike. Run on a prepared synthetic set, e.g. the demo's:

    python docs/study/label_coverage.py --data renderocc-demo/data --samples 8
    python docs/study/label_coverage.py --data renderocc-demo/data --samples 8 --reference-sampling

Numbers in BENCHMARKS.md (2026-11-24, balanced ray sampling) came from the demo data (8 scenes x 12 frames).
"""

import argparse
import dataclasses

import torch

from renderocc.config import get_preset
from renderocc.core.classes import FREE, NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.core.grid import VoxelGrid
from renderocc.data.dataset import OccDataset
from renderocc.eval.calibrate import FREE_VOTE, ray_votes
from renderocc.train_utils.data import open_index


def said_free_by(item: dict, grid: VoxelGrid, rays: torch.Tensor) -> torch.Tensor:
    """bool [X * Y * Z]: the voxels that the sample's labelled rays where `rays` [R] holds cross and none
    of them ends in."""
    batch = {k: v[None] for k, v in item.items() if k.startswith("ray")}
    batch["ray_valid"] = batch["ray_valid"] & rays[None]
    return ray_votes(batch, grid)[0] == FREE_VOTE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset root (with Occ3D gts)")
    parser.add_argument("--preset", default="r50-256x704", help="preset whose data config samples the rays")
    parser.add_argument("--samples", type=int, default=8, help="training samples to look at, evenly spaced")
    parser.add_argument("--reference-sampling", action="store_true", help="reference class weight only")
    args = parser.parse_args()

    cfg = get_preset(args.preset).data
    if args.reference_sampling:
        cfg = dataclasses.replace(cfg, ray_balance_cell=None, class_balance_power=0.0)
    dataset = OccDataset(open_index(args.data), cfg, "train", train=False)
    grid = VoxelGrid()  # Occ3D's 0.4 m grid, whatever the preset trains on
    n = NUM_SEMANTIC
    voxels, reached, distance = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    rays, in_free, crossed, crossed_key = torch.zeros(n), torch.zeros(n), torch.zeros(n), torch.zeros(n)
    centres = grid.voxel_centers().reshape(-1, 3)
    for i in range(0, len(dataset), max(1, len(dataset) // args.samples)):
        item = dataset[i]
        labelled = item["ray_valid"] & (item["ray_depth"] > 0)
        points = item["rays_o"][labelled] + item["ray_depth"][labelled, None] * item["rays_d"][labelled]
        ray_class = item["ray_class"][labelled]
        rays += torch.bincount(ray_class, minlength=n)
        inside = grid.contains(points)
        point_voxel = grid.flat_index(grid.points_to_index(points[inside]))
        hit = torch.zeros(centres.shape[0], dtype=torch.bool)
        hit[point_voxel] = True
        semantics = item["voxel_semantics"].flatten().long()
        in_free += torch.bincount(ray_class[inside][semantics[point_voxel] == FREE], minlength=n)
        seen = item["mask_camera"].flatten().bool() & (semantics != FREE)
        said_free = said_free_by(item, grid, torch.ones_like(labelled))
        said_free_key = said_free_by(item, grid, item["ray_frame"] == 0)
        ranges = centres[:, :2].norm(dim=-1)
        for c in range(n):
            of_class = seen & (semantics == c)
            voxels[c] += of_class.sum()
            reached[c] += (of_class & hit).sum()
            crossed[c] += (of_class & said_free).sum()
            crossed_key[c] += (of_class & said_free_key).sum()
            distance[c] += ranges[of_class].sum()
    header = ("voxels", "reached", "mean m", "voxel %", "ray %", "in free", "crossed", "by key")
    print(f"{'class':22s}", *(f"{h:>8s}" for h in header))
    for c in range(n):
        print(
            f"{OCC3D_CLASSES[c]:22s} {voxels[c]:8.0f} {100 * reached[c] / voxels[c].clamp_min(1):7.1f}% "
            f"{distance[c] / voxels[c].clamp_min(1):7.1f} {100 * voxels[c] / voxels.sum():7.2f}% "
            f"{100 * rays[c] / rays.sum():5.2f}% {100 * in_free[c] / rays[c].clamp_min(1):7.1f}%"
            f" {100 * crossed[c] / voxels[c].clamp_min(1):7.1f}%"
            f" {100 * crossed_key[c] / voxels[c].clamp_min(1):7.1f}%"
        )


if __name__ == "__main__":
    main()
