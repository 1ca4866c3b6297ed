"""The extremes of the trilinear density field over each voxel's extent."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def extent_max(density: torch.Tensor) -> torch.Tensor:
    """The maximum of the trilinear field of density [B, X, Y, Z] over each voxel's extent -> [B, X, Y, Z].

    The field is the renderer's (metric convention): values at voxel centres, trilinear between them,
    clamped at the grid's border. It is trilinear on each of the eight octants of a voxel, so its extremes
    over the voxel lie on the octants' corners: the 27 points at the centre, the faces, the edges and the
    corners, where it is the mean of 1, 2, 4 or 8 centres. Exact, not sampled.
    """
    shape = density.shape[1:]
    # the half-voxel lattice: index 2i is voxel i's centre, 2i + 1 the midpoint to voxel i + 1
    size = [2 * n - 1 for n in shape]
    fine = F.interpolate(density[:, None], size=size, mode="trilinear", align_corners=True)
    # each voxel's 27 points are 2i - 1, 2i, 2i + 1 on every axis; past the border the field is clamped, so
    # the points inside hold its extremes there
    return F.max_pool3d(fine, 3, stride=2, padding=1)[:, 0]


def extent_min(density: torch.Tensor) -> torch.Tensor:
    """The minimum of the trilinear field of density [B, X, Y, Z] over each voxel's extent -> [B, X, Y, Z]:
    the density eroded by half a voxel on every side (`extent_max`)."""
    return -extent_max(-density)
