"""RayIoU sanity: a perfect prediction scores 100, a shifted or empty one scores less, in the right order."""

import pytest
import torch

from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid
from renderocc.eval.rayiou import RayIoUMeter, first_hits

GRID = VoxelGrid(lower=(-20.0, -20.0, -1.0), upper=(20.0, 20.0, 5.4), voxel_size=0.4)  # 100 x 100 x 16


def scene() -> torch.Tensor:
    labels = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    labels[:, :, 0] = 11  # road
    labels[70:80, 40:60, 1:5] = 4  # a car 8 m ahead
    labels[:, 85:, :] = 15  # a wall on the left
    return labels


def test_first_hit_depth_and_class_of_known_surface():
    origin = torch.tensor([[0.0, 0.0, 0.5]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    cls, depth = first_hits(scene(), GRID, origin.expand(3, 3), rays_d)  # 0.2 m steps: depth within 0.1 m
    assert cls.tolist() == [4, 11, FREE]
    assert depth[0] == pytest.approx(8.0, abs=0.1001)  # car face at x = 8 m
    assert depth[1] == pytest.approx(1.1, abs=0.1001)  # road top at z = -0.6 m
    assert depth[2] == pytest.approx(4.9, abs=1e-5)  # leaves the box at z = 5.4 m


def score(pred: torch.Tensor) -> dict:
    meter = RayIoUMeter(GRID, azimuth_step_deg=4.0)
    meter.update(pred, scene(), torch.tensor([[0.0, 0.0, 1.84], [2.0, 0.0, 1.84]]))
    return meter.compute()


def test_rayiou_perfect_shifted_and_empty():
    perfect = score(scene())
    assert perfect["rayiou"] == pytest.approx(100.0)
    shifted = score(torch.roll(scene(), 5, 0))  # everything 2 m further ahead / behind
    assert 0 < shifted["rayiou"] < 100
    # a 2 m error passes only the 4 m threshold for the car
    assert shifted["per_class_rayiou"]["car"] < 100
    assert shifted["rayiou@1"] <= shifted["rayiou@2"] <= shifted["rayiou@4"]
    assert score(torch.full(GRID.shape, FREE, dtype=torch.uint8))["rayiou"] == 0.0
