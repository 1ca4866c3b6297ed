import pytest
import torch

from renderocc.core import VoxelGrid


def test_occ3d_defaults():
    grid = VoxelGrid()
    assert grid.shape == (200, 200, 16)
    centers = grid.voxel_centers()
    assert centers.shape == (200, 200, 16, 3)
    torch.testing.assert_close(centers[0, 0, 0], torch.tensor([-39.8, -39.8, -0.8]))
    torch.testing.assert_close(centers[-1, -1, -1], torch.tensor([39.8, 39.8, 5.2]))


def test_index_round_trip_and_contains():
    grid = VoxelGrid()
    index = torch.stack([torch.randint(0, n, (1000,)) for n in grid.shape], -1)
    centers = grid.index_to_points(index)
    assert torch.equal(grid.points_to_index(centers), index)
    assert grid.contains(centers).all()
    outside = torch.tensor([[40.0, 0, 0], [0, -40.01, 0], [0, 0, 5.4], [0, 0, -1.0]])
    assert grid.contains(outside).tolist() == [False, False, False, True]
    # the flat index addresses the same voxel as [x, y, z] in a row-major tensor of the grid's shape
    volume = torch.arange(grid.shape[0] * grid.shape[1] * grid.shape[2]).view(grid.shape)
    assert torch.equal(grid.flat_index(index), volume[index[:, 0], index[:, 1], index[:, 2]])


def test_normalize_maps_box_to_unit_cube():
    grid = VoxelGrid()
    corners = torch.tensor([grid.lower, grid.upper])
    torch.testing.assert_close(grid.normalize(corners), torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))


def test_coarser_grid_and_bad_extent():
    assert VoxelGrid(voxel_size=0.8).shape == (100, 100, 8)
    with pytest.raises(ValueError, match="whole number"):
        VoxelGrid(voxel_size=0.3)
    with pytest.raises(ValueError, match="must exceed"):
        VoxelGrid(lower=(0, 0, 0), upper=(0, 1, 1))


def test_corner_tensors_are_made_once_per_device_and_dtype():
    # a corner rebuilt from the Python tuple on every call is a host-to-device copy that waits for the GPU
    grid = VoxelGrid()
    assert grid.lower_tensor() is grid.lower_tensor("cpu") is grid.lower_tensor(torch.device("cpu"))
    assert grid.upper_tensor(dtype=torch.float64) is grid.upper_tensor(dtype=torch.float64)
    assert grid.upper_tensor(dtype=torch.float64) is not grid.upper_tensor()
    assert grid.lower_tensor(dtype=torch.float64).tolist() == [-40.0, -40.0, -1.0]
    assert VoxelGrid(voxel_size=0.8).lower_tensor() is grid.lower_tensor()  # same corner, same tensor


@pytest.mark.parametrize("grid", [VoxelGrid(), VoxelGrid(voxel_size=1.6)], ids=["occ3d", "demo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_at_the_float_neighbours_of_every_face_get_an_index_in_range_iff_contained(grid, dtype):
    # (x - lower) / voxel_size rounds up to the voxel count for the float just below the upper face
    # (39.999996 in float32 -> 200): an index out of range for a point that `contains` accepts
    points = []
    for axis in range(3):
        for face in (grid.lower[axis], grid.upper[axis]):
            f = torch.tensor(face, dtype=dtype)
            for x in (torch.nextafter(f, f - 1), f, torch.nextafter(f, f + 1)):
                p = torch.tensor(grid.lower, dtype=dtype).add(grid.voxel_size / 2)  # inside on other axes
                p[axis] = x
                points.append(p)
    points = torch.stack(points)
    index = grid.points_to_index(points)
    in_range = ((index >= 0) & (index < torch.tensor(grid.shape))).all(-1)
    assert torch.equal(in_range, grid.contains(points))
    assert grid.contains(points).sum() == 3 * 3  # per axis: the lower face, just above it, just below upper
    volume = torch.zeros(grid.shape)
    volume[index[in_range].unbind(-1)] = 1  # the read that raised IndexError for x = 39.999996
    # the index a point gets is its voxel's: the voxel's centre is within half a voxel of it
    centres = grid.index_to_points(index[in_range], dtype)
    assert ((centres - points[in_range]).abs() <= grid.voxel_size / 2 + 1e-5).all()
