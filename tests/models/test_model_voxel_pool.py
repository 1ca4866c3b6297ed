"""Lifting geometry and the voxel-pooling op."""

import torch
from model_fixtures import camera_to_ego, intrinsics_for

from renderocc.core.camera import unproject
from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import transform_points
from renderocc.models.voxel_pool import (
    VoxelPoolPlanner,
    _VoxelPoolFunction,
    depth_bin_centers,
    frustum_points,
    plan_voxel_pool,
    voxel_pool,
)

IMAGE_SIZE, FEATURE_SIZE = (64, 176), (4, 11)
GRID = VoxelGrid(lower=(-20.0, -20.0, -1.0), upper=(20.0, 20.0, 5.4), voxel_size=0.8)


def augmented_camera(yaw_deg: float):
    """One camera [1, 1, ...] whose image was resized by 0.5 and cropped by (10, 4) pixels."""
    intrinsics = intrinsics_for((128, 352))
    img_aug = torch.tensor([[0.5, 0.0, -10.0], [0.0, 0.5, -4.0], [0.0, 0.0, 1.0]])
    return intrinsics.view(1, 1, 3, 3), img_aug.view(1, 1, 3, 3), camera_to_ego(yaw_deg).view(1, 1, 4, 4)


def test_depth_bins_match_the_paper():
    bins = depth_bin_centers((1.0, 45.0, 0.5))
    assert len(bins) == 88 and bins[0] == 1.0 and bins[-1] == 44.5


def test_pixel_features_land_in_the_voxel_the_pixel_looks_through():
    intrinsics, img_aug, cam2ego = augmented_camera(yaw_deg=-55.0)
    depths = depth_bin_centers((1.0, 21.0, 1.0))
    row, col, bin_ = 2, 7, 9
    # where the centre of feature cell (2, 7) at depth bin 9 is, computed through the core camera model
    pixel_aug = torch.tensor([(col + 0.5) * 16.0, (row + 0.5) * 16.0, 1.0])
    pixel = torch.linalg.solve(img_aug[0, 0], pixel_aug)[:2]
    point_cam = unproject(pixel.view(1, 2), depths[bin_].view(1), intrinsics[0, 0])
    point_ego = transform_points(cam2ego[0, 0], point_cam)[0]
    assert GRID.contains(point_ego)
    expected_voxel = tuple(GRID.points_to_index(point_ego).tolist())

    points = frustum_points(intrinsics, img_aug, cam2ego, depths, IMAGE_SIZE, FEATURE_SIZE)
    torch.testing.assert_close(points[0, 0, bin_, row, col], point_ego, atol=1e-4, rtol=0)

    depth_probs = torch.zeros(1, 1, len(depths), *FEATURE_SIZE)
    depth_probs[:, :, bin_] = 1.0  # every pixel is certain its surface is at bin 9
    context = torch.zeros(1, 1, 3, *FEATURE_SIZE)
    context[0, 0, :, row, col] = torch.tensor([0.0, 2.0, 0.0])  # only pixel (2, 7) carries a feature
    volume = voxel_pool(depth_probs, context, plan_voxel_pool(points, GRID))
    assert volume.shape == (1, 3, *GRID.shape)
    lit = torch.nonzero(volume[0, 1])
    assert [tuple(v) for v in lit.tolist()] == [expected_voxel]
    assert volume[0, 1][expected_voxel] == 2.0
    assert volume[0, 0].abs().sum() == 0 and volume[0, 2].abs().sum() == 0


def test_pool_conserves_mass_of_points_inside_the_grid():
    intrinsics, img_aug, cam2ego = augmented_camera(yaw_deg=0.0)
    depths = depth_bin_centers((1.0, 45.0, 1.0))
    points = frustum_points(intrinsics, img_aug, cam2ego, depths, IMAGE_SIZE, FEATURE_SIZE)
    inside = GRID.contains(points)
    assert 0 < inside.sum() < inside.numel()  # the far bins leave the grid
    depth_probs = torch.rand(1, 1, len(depths), *FEATURE_SIZE)
    context = torch.ones(1, 1, 1, *FEATURE_SIZE)
    volume = voxel_pool(depth_probs, context, plan_voxel_pool(points, GRID))
    torch.testing.assert_close(volume.sum(), depth_probs[inside.view(depth_probs.shape)].sum())


def test_plan_is_sorted_and_batched_samples_are_separate():
    intrinsics, img_aug, cam2ego = augmented_camera(yaw_deg=0.0)
    depths = depth_bin_centers((1.0, 45.0, 1.0))
    points = frustum_points(intrinsics, img_aug, cam2ego, depths, IMAGE_SIZE, FEATURE_SIZE)
    plan = plan_voxel_pool(torch.cat([points, points]), GRID)
    assert (plan.voxel_index.diff() >= 0).all()
    depth_probs = torch.rand(2, 1, len(depths), *FEATURE_SIZE)
    context = torch.randn(2, 1, 4, *FEATURE_SIZE)
    volume = voxel_pool(depth_probs, context, plan)
    single = voxel_pool(depth_probs[1:], context[1:], plan_voxel_pool(points, GRID))
    torch.testing.assert_close(volume[1:], single)


def test_pool_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(0)
    depth = torch.rand(12, dtype=torch.float64, generator=gen, requires_grad=True)
    context = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    point_index = torch.tensor([0, 3, 5, 7, 11])
    pixel_index = torch.tensor([0, 3, 1, 3, 2])
    voxel_index = torch.tensor([0, 0, 2, 4, 4])
    assert torch.autograd.gradcheck(
        lambda d, c: _VoxelPoolFunction.apply(d, c, point_index, pixel_index, voxel_index, 6),
        (depth, context),
    )


def test_planner_reuses_the_plan_until_the_geometry_changes():
    intrinsics, img_aug, cam2ego = augmented_camera(yaw_deg=0.0)
    planner, depths = VoxelPoolPlanner(GRID), depth_bin_centers((1.0, 45.0, 1.0))
    first = planner(intrinsics, img_aug, cam2ego, depths, IMAGE_SIZE, FEATURE_SIZE)
    assert planner(intrinsics.clone(), img_aug, cam2ego, depths.clone(), IMAGE_SIZE, FEATURE_SIZE) is first
    moved = cam2ego.clone()
    moved[..., 0, 3] += 3.0
    second = planner(intrinsics, img_aug, moved, depths, IMAGE_SIZE, FEATURE_SIZE)
    assert second is not first and not torch.equal(second.voxel_index, first.voxel_index)
