import pytest
import torch

from renderocc.core.grid import VoxelGrid
from renderocc.render.extent import extent_max, extent_min
from renderocc.render.sampling import trilinear_corners

GRID = VoxelGrid(lower=(-2.0, -1.6, -0.8), upper=(2.0, 1.6, 0.8), voxel_size=0.4)  # 10 x 8 x 4


def _field_over_extents(density: torch.Tensor, grid: VoxelGrid, offsets: torch.Tensor) -> torch.Tensor:
    """The renderer's trilinear field of density [1, X, Y, Z] at every voxel centre + offsets [P, 3] (in
    voxels) -> [X, Y, Z, P]."""
    axes = [torch.arange(n, dtype=torch.float64) for n in grid.shape]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    lower = torch.tensor(grid.lower, dtype=torch.float64)
    points = lower + (centres[..., None, :] + 0.5 + offsets) * grid.voxel_size
    index, weight = trilinear_corners(points, grid)
    return (density.flatten()[index] * weight).sum(-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_extent_extremes_are_the_fields_over_each_voxel_in_float64(seed):
    g = torch.Generator().manual_seed(seed)
    density = torch.randn(1, *GRID.shape, generator=g, dtype=torch.float64) * 5
    # a 5-point lattice per axis holds the 27 corners of the voxel's octants, where the extremes lie
    lattice = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64)
    offsets = torch.cartesian_prod(lattice, lattice, lattice)
    values = _field_over_extents(density, GRID, offsets)
    torch.testing.assert_close(extent_max(density)[0], values.amax(-1))
    torch.testing.assert_close(extent_min(density)[0], values.amin(-1))
    # and no point inside a voxel goes past them
    inside = _field_over_extents(density, GRID, torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5)
    assert (inside <= extent_max(density)[0, ..., None] + 1e-12).all()
    assert (inside >= extent_min(density)[0, ..., None] - 1e-12).all()


def test_extent_min_erodes_a_block_by_half_a_voxel_and_passes_gradients_to_the_minimum():
    density = torch.zeros(1, 6, 6, 6, dtype=torch.float64)
    density[0, 1:5, 1:5, 1:5] = 10.0
    density.requires_grad_()
    eroded = extent_min(density)
    # the block's inner voxels keep 10; its outer shell reaches halfway to the empty neighbours (5 on a face,
    # 2.5 on an edge, 1.25 at a corner); outside it stays 0
    values = eroded.detach()[0]
    assert float(values[2, 2, 2]) == 10.0
    assert float(values[1, 2, 2]) == 5.0 and float(values[1, 1, 2]) == 2.5 and float(values[1, 1, 1]) == 1.25
    assert float(values[0, 2, 2]) == 0.0
    assert float(extent_max(density.detach())[0, 0, 2, 2]) == 5.0  # dilated the other way
    eroded[0, 1, 2, 2].backward()
    # the gradient goes to the voxels around the minimum: a mean that reaches the empty voxel outside, which
    # is what pulls it up when the rendering wants the face voxel opaque
    grad = density.grad[0]
    assert float(grad.sum()) == pytest.approx(1.0) and (grad >= 0).all()
    assert float(grad[0, 2, 2]) > 0 and float(grad[2:].abs().sum()) == 0.0
