import pytest
import torch
import torch.nn.functional as F

from renderocc.core.grid import VoxelGrid
from renderocc.render.sampling import ray_box_intersection, sample_counts, trilinear_corners

GRID = VoxelGrid(lower=(-2.0, -1.0, 0.0), upper=(2.0, 1.0, 1.0), voxel_size=0.5)


def test_intersection_through_inside_and_missing_rays():
    rays_o = torch.tensor([[-5.0, 0.0, 0.5], [0.0, 0.0, 0.5], [-5.0, 3.0, 0.5], [5.0, 0.0, 0.5], [0, 0, 5.0]])
    rays_d = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.0, 0.8]]
    )
    t_near, t_far = ray_box_intersection(rays_o, rays_d, GRID)
    torch.testing.assert_close(t_near[:2], torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(t_far[:2], torch.tensor([7.0, 2.0]))
    # parallel to the y faces but outside them; pointing away from the box; above and rising
    assert (t_far[2:] <= t_near[2:]).all()
    assert sample_counts(t_near, t_far, 0.5).tolist() == [8, 4, 0, 0, 0]


def test_ray_in_a_face_plane_counts_as_inside():
    rays_o = torch.tensor([[-3.0, -1.0, 0.0]])  # on the y = lower and z = lower faces
    t_near, t_far = ray_box_intersection(rays_o, torch.tensor([[1.0, 0.0, 0.0]]), GRID)
    assert (t_near.item(), t_far.item()) == (1.0, 5.0)


def test_padding_rays_with_zero_direction_miss():
    # the loader pads a short ray list with rays_o = rays_d = 0: inside the box, but not a ray
    rays_o = torch.zeros(2, 3)
    rays_d = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t_near, t_far = ray_box_intersection(rays_o, rays_d, GRID)
    assert sample_counts(t_near, t_far, 0.5).tolist() == [0, 4]


def test_sample_counts_keep_samples_before_the_exit():
    t_near = torch.zeros(4)
    t_far = torch.tensor([1.0, 1.05, 0.95, 0.0])
    # samples at 0.1, 0.3, ..., strictly before t_far
    assert sample_counts(t_near, t_far, 0.2).tolist() == [5, 5, 5, 0]


def test_trilinear_matches_grid_sample_border_convention():
    """Values at voxel centres with clamp-to-edge equal grid_sample(align_corners=False, border)."""
    torch.manual_seed(0)
    values = torch.randn(*GRID.shape, dtype=torch.float64)
    lo, hi = GRID.lower_tensor(dtype=torch.float64), GRID.upper_tensor(dtype=torch.float64)
    points = lo - 0.3 + (hi - lo + 0.6) * torch.rand(500, 3, dtype=torch.float64)  # also outside the box
    index, weight = trilinear_corners(points, GRID)
    ours = (values.flatten()[index] * weight).sum(-1)
    coords = GRID.normalize(points).view(1, 1, 1, -1, 3)  # grid_sample wants (x -> W, y -> H, z -> D)
    expected = F.grid_sample(
        values.permute(2, 1, 0)[None, None], coords, align_corners=False, padding_mode="border"
    ).flatten()
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(weight.sum(-1), torch.ones(500, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(1, 3, 2), (2, 1, 1)])
def test_trilinear_on_single_voxel_axes(shape):
    grid = VoxelGrid(lower=(0.0, 0.0, 0.0), upper=tuple(0.5 * n for n in shape), voxel_size=0.5)
    values = torch.arange(float(torch.tensor(shape).prod())).view(shape)
    points = torch.rand(50, 3) * torch.tensor(grid.upper)
    index, weight = trilinear_corners(points, grid)
    assert index.min() >= 0 and index.max() < values.numel()
    interp = (values.flatten()[index] * weight).sum(-1)
    assert interp.min() >= values.min() and interp.max() <= values.max()
