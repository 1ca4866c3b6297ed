"""Temporal fusion: previous frames' voxel features resampled into the key ego frame and concatenated."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import invert_pose, transform_points


def warp_to_key(volume: torch.Tensor, ego2keyego: torch.Tensor, grid: VoxelGrid) -> torch.Tensor:
    """Resample a voxel volume living in frame t's ego grid at the key grid's voxel centres.

    volume [B, C, X, Y, Z] (frame t), ego2keyego [B, 4, 4] (frame t ego -> key ego) -> [B, C, X, Y, Z] in the
    key frame; trilinear, zeros where the key voxel was outside frame t's grid.
    """
    B = volume.shape[0]
    centres = grid.voxel_centers(volume.device)  # [X, Y, Z, 3] in the key ego frame
    X, Y, Z, _ = centres.shape
    points = transform_points(invert_pose(ego2keyego.float()), centres.view(1, -1, 3).expand(B, -1, -1))
    # grid_sample indexes a [B, C, D, H, W] input with (w, h, d) coordinates: our (z, y, x).
    coords = grid.normalize(points).flip(-1).view(B, X, Y, Z, 3)
    return F.grid_sample(volume, coords.to(volume.dtype), mode="bilinear", align_corners=False)


class TemporalFusion(nn.Module):
    """Aligns frames 1..T-1 to the key frame and concatenates: T volumes [B, C, X, Y, Z] -> [B, T*C, X, Y, Z]
    (channels-last, as the 3D encoder runs)."""

    def __init__(self, grid: VoxelGrid) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, volumes: Sequence[torch.Tensor], ego2keyego: torch.Tensor) -> torch.Tensor:
        frames = [volumes[0]]
        frames += [warp_to_key(volumes[t], ego2keyego[:, t], self.grid) for t in range(1, len(volumes))]
        return torch.cat([f.contiguous(memory_format=torch.channels_last_3d) for f in frames], 1)
