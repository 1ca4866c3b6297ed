"""Lifting geometry and the voxel-pooling op."""

import torch
from model_fixtures import camera_to_ego, intrinsics_for

from renderocc.core.camera import unproject
from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import transform_points
from renderocc.models.voxel_pool import depth_bin_centers, frustum_points, pool_index, voxel_pool

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
    volume = voxel_pool(depth_probs, context, pool_index(points, GRID), GRID.shape)
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
    volume = voxel_pool(depth_probs, context, pool_index(points, GRID), GRID.shape)
    torch.testing.assert_close(volume.sum(), depth_probs[inside.view(depth_probs.shape)].sum())


def test_batched_samples_are_separate_and_outside_points_are_dropped():
    intrinsics, img_aug, cam2ego = augmented_camera(yaw_deg=0.0)
    depths = depth_bin_centers((1.0, 45.0, 1.0))
    points = frustum_points(intrinsics, img_aug, cam2ego, depths, IMAGE_SIZE, FEATURE_SIZE)
    index = pool_index(torch.cat([points, points]), GRID)
    voxels = GRID.shape[0] * GRID.shape[1] * GRID.shape[2]
    inside = GRID.contains(points)[0]
    assert (index[1][inside] >= voxels).all() and (index[:, ~inside] == 2 * voxels).all()
    depth_probs = torch.rand(2, 1, len(depths), *FEATURE_SIZE)
    context = torch.randn(2, 1, 4, *FEATURE_SIZE)
    volume = voxel_pool(depth_probs, context, index, GRID.shape)
    single = voxel_pool(depth_probs[1:], context[1:], pool_index(points, GRID), GRID.shape)
    torch.testing.assert_close(volume[1:], single)
    assert volume.is_contiguous(memory_format=torch.channels_last_3d)


def test_pool_matches_a_float64_loop_and_its_gradients_finite_differences():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh inputs every run
    S, N, D, C, h, w, voxels = 2, 2, 3, 3, 2, 2, (2, 2, 2)
    rows = 2 * 2 * 2
    depth = torch.rand(S, N, D, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    context = torch.randn(S, N, C, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, rows + 1, (S, N, D, h, w), generator=gen)  # row `rows` (outside) included
    index = torch.where(index < rows, index + torch.arange(S).view(S, 1, 1, 1, 1) * rows, S * rows)
    expected = torch.zeros(S * rows + 1, C, dtype=torch.float64)
    for s, n, d, i, j in torch.cartesian_prod(*(torch.arange(k) for k in (S, N, D, h, w))).tolist():
        expected[index[s, n, d, i, j]] += depth[s, n, d, i, j] * context[s, n, :, i, j]
    expected = expected[:-1].view(S, *voxels, C).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(voxel_pool(depth, context, index, voxels).double(), expected.detach())
    assert torch.autograd.gradcheck(lambda d, c: voxel_pool(d, c, index, voxels), (depth, context))
