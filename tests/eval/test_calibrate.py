"""Read-out calibration from 2D labels: the rays' votes, the agreement counts, the chosen threshold."""

from __future__ import annotations

import math

import torch

from renderocc.config import get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.eval.calibrate import (
    FREE_VOTE,
    OCCUPIED_VOTE,
    agreement_counts,
    agreement_iou,
    calibrate,
    on_metric_scale,
    ray_votes,
)

GRID = VoxelGrid(lower=(-8.0, -8.0, -0.4), upper=(8.0, 8.0, 4.4), voxel_size=0.8)  # z centres 0, 0.8, ..


def _rays(points: list[list[float]], classes: list[int], valid: list[bool]) -> dict[str, torch.Tensor]:
    """Labelled rays from a camera at (0, 0, 1.6) to the given points."""
    hits = torch.tensor([points])
    rays_o = torch.tensor([0.0, 0.0, 1.6]).expand_as(hits).clone()
    depth = (hits - rays_o).norm(dim=-1)
    return {
        "rays_o": rays_o,
        "rays_d": (hits - rays_o) / depth.unsqueeze(-1),
        "ray_depth": depth,
        "ray_class": torch.tensor([classes]),
        "ray_valid": torch.tensor([valid]),
    }


def _voxel(grid: VoxelGrid, x: float, y: float, z: float) -> int:
    i, j, k = grid.points_to_index(torch.tensor([x, y, z])).tolist()
    return (i * grid.shape[1] + j) * grid.shape[2] + k


def test_votes_of_a_wall_ray_a_roof_ray_and_a_padding_ray():
    # a horizontal ray to a wall at x = 6 m; a ray to a roof above the box; an invalid (padding) ray
    batch = _rays([[6.0, 0.0, 1.6], [0.0, 6.0, 9.0], [-6.0, 0.0, 1.6]], [15, 15, 15], [True, True, False])
    votes = ray_votes(batch, GRID).view(GRID.shape)
    assert votes.shape == GRID.shape and votes.dtype == torch.uint8
    wall = votes[:, 10, 2]  # the wall ray's row of voxels (y = 0, z = 1.6)
    i_wall = GRID.points_to_index(torch.tensor([6.0, 0.0, 1.6]))[0]
    assert wall[i_wall] == OCCUPIED_VOTE
    assert (wall[10 : i_wall - 2] == FREE_VOTE).all()  # from the camera to two voxels (1.6 m) short of it
    assert (wall[i_wall - 1] == 0) and (wall[i_wall + 1 :] == 0).all()  # the clearance and behind the wall
    assert (wall[:10] == 0).all()  # the padding ray, which points the other way, votes nothing
    # the roof ray votes free up to where it leaves the box, and occupied nowhere
    assert votes.eq(OCCUPIED_VOTE).sum() == 1
    assert votes[10, 11:, :].eq(FREE_VOTE).any()


def test_a_voxel_crossed_by_one_ray_and_hit_by_another_is_occupied():
    # the first ray ends in a voxel that the second, longer one crosses on its way
    batch = _rays([[3.0, 0.0, 1.6], [6.0, 0.0, 1.6]], [15, 15], [True, True])
    votes = ray_votes(batch, GRID)
    assert votes[0, _voxel(GRID, 3.0, 0.0, 1.6)] == OCCUPIED_VOTE


def test_agreement_counts_and_iou_by_hand():
    votes = torch.tensor([OCCUPIED_VOTE, OCCUPIED_VOTE, FREE_VOTE, FREE_VOTE, 0], dtype=torch.uint8)
    density = torch.tensor([12.0, 7.0, 9.0, 3.0, 50.0])  # the unvoted voxel never counts
    counts = agreement_counts(density, votes, torch.tensor([5.0, 8.0, 10.0, 20.0]))
    assert counts.tolist() == [[2, 1, 0], [1, 1, 1], [1, 0, 1], [0, 0, 2]]
    torch.testing.assert_close(
        agreement_iou(counts), torch.tensor([2 / 3, 1 / 3, 1 / 2, 0.0], dtype=torch.float64)
    )


class _FixedDensity(torch.nn.Module):
    """A 'model' whose density is given per voxel, to test the search."""

    def __init__(self, density: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("density", density)

    def forward(self, batch: dict) -> dict:
        return {"density": self.density.expand(batch["rays_o"].shape[0], *self.density.shape[1:])}


def test_calibrate_picks_the_threshold_that_separates_the_votes():
    from renderocc.config import get_preset

    preset = get_preset("demo").replace(grid=GRID)
    g = torch.Generator().manual_seed(0)
    angle = torch.rand(40, generator=g) * 2 * math.pi
    walls = torch.stack([5 * angle.cos(), 5 * angle.sin(), torch.full_like(angle, 1.6)], -1)
    batch = _rays(walls.tolist(), [15] * 40, [True] * 40)
    votes = ray_votes(batch, GRID)
    # occupied votes at 14, free ones at 9: any threshold in [9, 14) separates them
    density = torch.where(votes == OCCUPIED_VOTE, 14.0, 9.0).view(1, *GRID.shape)
    result = calibrate(
        _FixedDensity(density), [batch], preset, torch.device("cpu"), torch.arange(2.0, 20.0, 0.5)
    )
    assert result["threshold"] == 9.0 and result["iou"] == 1.0 and result["frames"] == 1
    assert len(result["ious"]) == len(result["thresholds"]) == 36


def test_calibrate_picks_a_threshold_per_layer_and_falls_back_where_votes_are_few():
    from renderocc.config import get_preset

    preset = get_preset("demo").replace(grid=GRID)
    g = torch.Generator().manual_seed(1)
    angle = torch.rand(85, generator=g) * 2 * math.pi
    heights = torch.tensor([0.0] * 40 + [1.6] * 40 + [3.2] * 5)  # z layers 0, 2 and 4 (5 rays only)
    walls = torch.stack([5 * angle.cos(), 5 * angle.sin(), heights], -1)
    batch = _rays(walls.tolist(), [15] * 85, [True] * 85)
    votes = ray_votes(batch, GRID).view(1, *GRID.shape)
    # the ground layer's scale is lower: occupied 4 / free 1 there, 14 / 9 above, 20 / 16 in layer 4
    occupied = torch.tensor([4.0, 14.0, 14.0, 14.0, 20.0, 14.0])
    free = torch.tensor([1.0, 9.0, 9.0, 9.0, 16.0, 9.0])
    density = torch.where(votes == OCCUPIED_VOTE, occupied, free)
    result = calibrate(
        _FixedDensity(density), [batch], preset, torch.device("cpu"), torch.arange(2.0, 20.0, 0.5),
        min_layer_votes=10,
    )  # fmt: skip
    assert result["threshold"] == 9.0
    per_layer = (votes == OCCUPIED_VOTE).sum((0, 1, 2))  # occupied voxels per layer (rays share some)
    assert result["layer_votes"] == per_layer.tolist() and per_layer[0] > 10 and per_layer[4] == 5
    # layers 1, 3, 5 have no occupied votes and layer 4 too few: the global threshold there
    assert result["layer_thresholds"] == [2.0, 9.0, 9.0, 9.0, 9.0, 9.0]


def test_thresholds_of_the_reference_convention_are_shown_on_the_metric_scale_too():
    preset = get_preset("r50-256x704")
    assert on_metric_scale(8.5, preset) == ""  # the metric convention's own scale
    shown = on_metric_scale(8.5, preset.replace(render={"convention": "reference"}))
    assert "reference convention; 9.42 on the metric scale" in shown
