"""Rays, cameras, depth maps and voxel labels of a loaded sample describe the same scene.

The checks walk rays through the ground-truth voxels: a ray built from a pixel label must end, at its
labelled depth, in a voxel of its class (or half a voxel further: a LiDAR point on a voxel face may round
to the free side), and pass through free space up to 80 % of that depth (a tighter bound fails
legitimately for rays grazing the ground, which enter its voxel layer early).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from renderocc.config import DataConfig
from renderocc.core.classes import DYNAMIC_CLASSES, FREE
from renderocc.core.grid import VoxelGrid
from renderocc.data import TENSOR_KEYS, OccDataset, collate

GRID = VoxelGrid()  # the Occ3D box the synthetic gts use


def voxel_class(semantics: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """GT class [P] at points [P, 3]; free outside the grid."""
    idx = GRID.points_to_index(points).clamp(
        min=torch.zeros(3, dtype=torch.long), max=torch.tensor(GRID.shape) - 1
    )
    return torch.where(GRID.contains(points), semantics.long()[idx[:, 0], idx[:, 1], idx[:, 2]], FREE)


def agreement(
    semantics: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    depth: torch.Tensor,
    cls: torch.Tensor | None = None,
    see_through: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per ray [R]: whether it ends inside the grid, whether it is in free space at 80 % of its depth
    (voxels of `see_through` classes count as free), and whether it ends in a voxel of class `cls`
    (default: any occupied voxel)."""
    end = rays_o + depth[:, None] * rays_d
    before = voxel_class(semantics, rays_o + 0.8 * depth[:, None] * rays_d)
    free = (before == FREE) | torch.isin(before, torch.tensor(see_through, dtype=torch.long))
    beyond = end + 0.5 * GRID.voxel_size * rays_d
    at_end = torch.stack([voxel_class(semantics, end), voxel_class(semantics, beyond)])
    hit = (at_end == cls).any(0) if cls is not None else (at_end != FREE).any(0)
    return GRID.contains(end), free, hit


def check_rays(item: dict, select: torch.Tensor, see_through: tuple[int, ...] = ()) -> None:
    rays = (item[k][select] for k in ("rays_o", "rays_d", "ray_depth", "ray_class"))
    inside, free, hit = agreement(item["voxel_semantics"], *rays, see_through=see_through)
    free, hit = free[inside].float().mean(), hit[inside].float().mean()
    assert inside.sum() > 500
    assert free > 0.95, f"only {free:.0%} of rays cross free space before their depth"
    assert hit > 0.93, f"only {hit:.0%} of rays end in a voxel of their class"


def _cfg(**changes) -> DataConfig:
    return dataclasses.replace(DataConfig(image_size=(96, 176), max_rays=4000, prev_frames=1), **changes)


def test_item_layout_and_collate(prepared) -> None:
    dataset = OccDataset(prepared, _cfg(), "train", train=True)
    batch = collate([dataset[0], dataset[1]])
    T, N, H, W, R = 2, 6, 96, 176, 4000
    expected = {
        "imgs": ((2, T, N, 3, H, W), torch.float32),
        "intrinsics": ((2, T, N, 3, 3), torch.float32),
        "img_aug": ((2, T, N, 3, 3), torch.float32),
        "cam2ego": ((2, T, N, 4, 4), torch.float32),
        "ego2keyego": ((2, T, 4, 4), torch.float32),
        "bev_aug": ((2, 4, 4), torch.float32),
        "depth_map": ((2, N, H, W), torch.float32),
        "rays_o": ((2, R, 3), torch.float32),
        "rays_d": ((2, R, 3), torch.float32),
        "ray_depth": ((2, R), torch.float32),
        "ray_class": ((2, R), torch.int64),
        "ray_frame": ((2, R), torch.int64),
        "ray_valid": ((2, R), torch.bool),
        "voxel_semantics": ((2, 200, 200, 16), torch.uint8),
        "mask_camera": ((2, 200, 200, 16), torch.bool),
        "mask_lidar": ((2, 200, 200, 16), torch.bool),
    }
    assert set(TENSOR_KEYS) <= set(expected)
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert len(batch["sample_token"]) == 2 and len(batch["scene_name"]) == 2
    assert batch["ray_valid"].any(1).all() and (batch["depth_map"] > 0).any()
    assert batch["ray_depth"][batch["ray_valid"]].max() <= DataConfig().max_depth
    assert batch["imgs"].abs().max() < 3.0  # ImageNet-normalised, not raw 0..255
    torch.testing.assert_close(batch["ego2keyego"][:, 0], torch.eye(4).expand(2, 4, 4))


def test_key_frame_rays_hit_their_labelled_voxels(prepared) -> None:
    dataset = OccDataset(prepared, _cfg(ray_frame_offsets=(0,)), "val", train=False)
    item = dataset[len(dataset) // 2]
    check_rays(item, item["ray_valid"])


def test_neighbour_rays_of_static_classes_hit_key_frame_voxels(prepared) -> None:
    dataset = OccDataset(prepared, _cfg(ray_frame_offsets=(-2, -1, 1, 2)), "train", train=False)
    sample = next(i for i, s in enumerate(dataset.samples) if prepared.neighbour(int(s), -1) is not None)
    item = dataset[sample]
    neighbour = item["ray_valid"] & (item["ray_frame"] != 0)
    existing = {o for o in (-2, -1, 1, 2) if prepared.neighbour(int(dataset.samples[sample]), o) is not None}
    assert set(item["ray_frame"][neighbour].tolist()) == existing  # clipped at the scene's ends
    assert neighbour.sum() > 500
    assert not np.isin(item["ray_class"][neighbour].numpy(), DYNAMIC_CLASSES).any()
    # Cars of the key frame stand where a neighbour frame saw the road: they may block its rays.
    check_rays(item, neighbour, see_through=DYNAMIC_CLASSES)
    # The previous frame's rays start at its cameras as the temporal poses place them (prev_frames=1).
    centres = (item["ego2keyego"][1] @ item["cam2ego"][1])[:, :3, 3]
    origins = item["rays_o"][item["ray_valid"] & (item["ray_frame"] == -1)]
    assert torch.cdist(origins, centres).min(1).values.max() < 1e-3


def _augmented_item(dataset: OccDataset, flips: tuple[float, float]) -> dict:
    """The first training draw of item 0 whose BEV flips are `flips` (diagonal signs of x, y)."""
    for seed in range(64):
        torch.manual_seed(seed)
        item = dataset[0]
        if tuple(item["bev_aug"].diagonal()[:2].tolist()) == flips:
            return item
    raise AssertionError(f"no BEV flip {flips} drawn in 64 tries")


@pytest.mark.parametrize("flips", [(-1.0, 1.0), (1.0, -1.0)], ids=["flip-x", "flip-y"])
def test_augmented_cameras_depth_map_and_voxels_agree(prepared, flips: tuple[float, float]) -> None:
    cfg = _cfg(ray_frame_offsets=(0,), rotate_deg=10.0)
    item = _augmented_item(OccDataset(prepared, cfg, "val", train=True), flips)
    assert (item["img_aug"][0, :, 0, 0] < 0).any() and (item["img_aug"][0, :, 0, 0] > 0).any()  # image flips
    assert (item["img_aug"][0, :, 0, 1].abs() > 1e-3).all()  # rotations
    # Pixels of the augmented depth map, unprojected through img_aug @ K and the BEV-flipped cam2ego,
    # must land on occupied voxels of the flipped labels.
    K = item["img_aug"][0] @ item["intrinsics"][0]
    cam, v, u = torch.nonzero(item["depth_map"] > 0, as_tuple=True)
    z = item["depth_map"][cam, v, u]
    pix = torch.stack([u + 0.5, v + 0.5, torch.ones_like(z)], -1)
    points_cam = torch.einsum("pij,pj->pi", torch.linalg.inv(K)[cam], pix) * z[:, None]
    pose = item["cam2ego"][0][cam]
    points = torch.einsum("pij,pj->pi", pose[:, :3, :3], points_cam) + pose[:, :3, 3]
    rays_o, rays_d = pose[:, :3, 3], torch.nn.functional.normalize(points - pose[:, :3, 3], dim=-1)
    depth = (points - rays_o).norm(dim=-1)
    inside, free, hit = agreement(item["voxel_semantics"], rays_o, rays_d, depth)
    assert inside.sum() > 300
    assert free[inside].float().mean() > 0.95 and hit[inside].float().mean() > 0.93
    # and the BEV-flipped rays meet the flipped voxels too
    check_rays(item, item["ray_valid"])


def test_evaluation_is_deterministic_and_unaugmented(prepared) -> None:
    dataset = OccDataset(prepared, _cfg(), "val", train=False)
    a, b = dataset[0], dataset[0]
    for key in ("imgs", "rays_o", "ray_class", "depth_map"):
        assert torch.equal(a[key], b[key]), key
    torch.testing.assert_close(a["bev_aug"], torch.eye(4))
