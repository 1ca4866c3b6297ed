"""Plane-sweep geometry of the stereo cost volume and the refiner's start-up behaviour."""

import torch
from model_fixtures import intrinsics_for

from renderocc.core.camera import project
from renderocc.models.stereo import StereoDepthRefiner, plane_sweep_grid
from renderocc.models.voxel_pool import depth_bin_centers, feature_pixel_rays

IMAGE_SIZE, FEATURE_SIZE = (64, 176), (4, 11)


def test_static_camera_samples_the_same_cell_at_every_depth():
    K = intrinsics_for(IMAGE_SIZE).view(1, 3, 3)
    rays = feature_pixel_rays(K, torch.eye(3).view(1, 3, 3), IMAGE_SIZE, FEATURE_SIZE)
    depths = depth_bin_centers((1.0, 45.0, 4.0))
    grid = plane_sweep_grid(rays, depths, torch.eye(4).view(1, 4, 4), K, IMAGE_SIZE)
    h, w = FEATURE_SIZE
    cell_x = (torch.arange(w) + 0.5) / w * 2 - 1  # align_corners=False centres of the feature cells
    cell_y = (torch.arange(h) + 0.5) / h * 2 - 1
    torch.testing.assert_close(grid[0, :, :, :, 0], cell_x.expand(len(depths), h, w), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        grid[0, :, :, :, 1], cell_y.view(h, 1).expand(len(depths), h, w), atol=1e-5, rtol=0
    )


def test_moving_camera_samples_where_the_hypothesis_projects():
    K = intrinsics_for(IMAGE_SIZE).view(1, 3, 3)
    rays = feature_pixel_rays(K, torch.eye(3).view(1, 3, 3), IMAGE_SIZE, FEATURE_SIZE)
    depths = torch.tensor([5.0, 20.0])
    key2prev = torch.eye(4).view(1, 4, 4).clone()
    key2prev[0, :3, 3] = torch.tensor([0.5, 0.0, 1.0])  # previous camera was 1 m back, 0.5 m to the left
    grid = plane_sweep_grid(rays, depths, key2prev, K, IMAGE_SIZE)
    point = rays[0, 1, 3] * depths[1] + key2prev[0, :3, 3]
    uv, _ = project(point.view(1, 3), K[0])
    expected = uv[0] / torch.tensor([IMAGE_SIZE[1], IMAGE_SIZE[0]]) * 2 - 1
    torch.testing.assert_close(grid[0, 1, 1, 3], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(grid[0, 0, 1, 3], grid[0, 1, 1, 3])  # near and far hypotheses differ


def test_refiner_starts_as_identity_and_has_gradients():
    refiner = StereoDepthRefiner(8, 4, 6, 16)
    logits = torch.randn(2, 6, *FEATURE_SIZE)
    key, prev = torch.randn(2, 8, *FEATURE_SIZE, requires_grad=True), torch.randn(2, 8, *FEATURE_SIZE)
    grid = torch.rand(2, 6, *FEATURE_SIZE, 2) * 2 - 1
    refined = refiner(logits, key, prev, grid)
    torch.testing.assert_close(refined, logits)
    refined.sum().backward()
    assert refiner.refine[-1].weight.grad.abs().sum() > 0
