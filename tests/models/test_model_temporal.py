"""Temporal alignment: identity for a still ego, whole-voxel shifts and rotations for a moving one."""

import math

import torch

from renderocc.core.grid import VoxelGrid
from renderocc.models.temporal import TemporalFusion, warp_to_key

GRID = VoxelGrid(lower=(-4.0, -4.0, -1.0), upper=(4.0, 4.0, 0.6), voxel_size=0.8)  # 10 x 10 x 2


def pose(yaw_deg: float = 0.0, translation=(0.0, 0.0, 0.0)) -> torch.Tensor:
    yaw = math.radians(yaw_deg)
    out = torch.eye(4)
    out[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    out[:3, 3] = torch.tensor(translation)
    return out.unsqueeze(0)


def test_still_ego_is_identity():
    volume = torch.randn(1, 3, *GRID.shape)
    torch.testing.assert_close(warp_to_key(volume, pose(), GRID), volume, atol=1e-5, rtol=0)


def test_forward_motion_shifts_by_whole_voxels():
    volume = torch.randn(1, 3, *GRID.shape)
    # the previous ego was 2 voxels behind the key ego: its voxel i holds what the key grid sees at i - 2
    warped = warp_to_key(volume, pose(translation=(-2 * GRID.voxel_size, 0.0, 0.0)), GRID)
    torch.testing.assert_close(warped[:, :, :-2], volume[:, :, 2:], atol=1e-5, rtol=0)
    assert warped[:, :, -2:].abs().max() == 0  # seen by the key frame, not by the previous one
    lateral = warp_to_key(volume, pose(translation=(0.0, GRID.voxel_size, 0.0)), GRID)
    torch.testing.assert_close(lateral[:, :, :, 1:], volume[:, :, :, :-1], atol=1e-5, rtol=0)


def test_yaw_rotates_the_grid():
    volume = torch.randn(1, 2, *GRID.shape)
    warped = warp_to_key(volume, pose(yaw_deg=90.0), GRID)
    # key point (x, y) was at (y, -x) in the previous frame: warped[i, j] = volume[j, X - 1 - i]
    expected = volume.transpose(2, 3).flip(2)
    torch.testing.assert_close(warped, expected, atol=1e-4, rtol=0)


def test_fusion_concatenates_key_first():
    volumes = [torch.randn(2, 3, *GRID.shape) for _ in range(2)]
    ego2keyego = torch.cat([pose(), pose()]).unsqueeze(0).expand(2, 2, 4, 4)
    fused = TemporalFusion(GRID)(volumes, ego2keyego)
    assert fused.shape == (2, 6, *GRID.shape) and fused.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(fused[:, :3], volumes[0])
    torch.testing.assert_close(fused[:, 3:], volumes[1], atol=1e-5, rtol=0)
