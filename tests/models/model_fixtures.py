"""Helpers for the model tests: a nuScenes-like six-camera rig, random batches and a small grid."""

from __future__ import annotations

import math

import torch

from renderocc.config import Preset
from renderocc.core.grid import VoxelGrid

CAMERA_YAWS_DEG = (55.0, 0.0, -55.0, -110.0, 180.0, 110.0)  # FRONT_LEFT, FRONT, FRONT_RIGHT, ...


def camera_to_ego(yaw_deg: float, height: float = 1.5) -> torch.Tensor:
    """cam2ego [4, 4] of a level camera (x right, y down, z forward) looking along ego yaw `yaw_deg`."""
    yaw = math.radians(yaw_deg)
    forward = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
    right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
    down = torch.tensor([0.0, 0.0, -1.0])
    pose = torch.eye(4)
    pose[:3, :3] = torch.stack([right, down, forward], 1)
    pose[:3, 3] = torch.tensor([1.0, 0.0, height])
    return pose


def intrinsics_for(image_size: tuple[int, int]) -> torch.Tensor:
    H, W = image_size
    return torch.tensor([[0.8 * W, 0.0, W / 2], [0.0, 0.8 * W, H / 2], [0.0, 0.0, 1.0]])


def make_batch(preset: Preset, batch_size: int = 1, seed: int = 0) -> dict:
    """A random batch with the real layout for `preset` (images, geometry, LiDAR depth); ego moves 1 m."""
    gen = torch.Generator().manual_seed(seed)
    H, W = preset.data.image_size
    B, T, N = batch_size, 1 + preset.data.prev_frames, len(CAMERA_YAWS_DEG)
    cam2ego = torch.stack([camera_to_ego(yaw) for yaw in CAMERA_YAWS_DEG]).expand(B, T, N, 4, 4).clone()
    ego2keyego = torch.eye(4).repeat(B, T, 1, 1)
    ego2keyego[:, 1:, 0, 3] = -1.0  # previous frames were 1 m behind
    depth_map = torch.rand(B, N, H, W, generator=gen) * 60
    depth_map[torch.rand(B, N, H, W, generator=gen) < 0.9] = 0  # sparse LiDAR
    return {
        "imgs": torch.randn(B, T, N, 3, H, W, generator=gen),
        "intrinsics": intrinsics_for((H, W)).expand(B, T, N, 3, 3).clone(),
        "img_aug": torch.eye(3).expand(B, T, N, 3, 3).clone(),
        "cam2ego": cam2ego,
        "ego2keyego": ego2keyego,
        "depth_map": depth_map,
    }


SMALL_GRID = VoxelGrid(lower=(-8.0, -8.0, -1.0), upper=(8.0, 8.0, 5.4), voxel_size=0.8)
