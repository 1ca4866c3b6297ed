"""The occupancy voxel grid: its box in the ego frame, voxel size, and point <-> voxel index maps."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


def constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A tuple of numbers (a box corner, a convention's sample table) as a tensor on a device, made once per
    (values, device, dtype): building it on every call is a host-to-device copy from pageable memory, which
    waits for the GPU to drain and cannot be captured in a CUDA graph. Shared: do not modify it."""
    if torch.compiler.is_compiling():  # traced by torch.compile: a constant of the compiled graph
        return torch.tensor(values, device=device, dtype=dtype)
    return _cached_constant(values, device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


@dataclass(frozen=True)
class VoxelGrid:
    """Axis-aligned voxel grid in the ego frame (x forward, y left, z up), indexed [x, y, z].

    Defaults are Occ3D-nuScenes: x, y in [-40, 40) m, z in [-1, 5.4) m, 0.4 m voxels, 200 x 200 x 16.
    """

    lower: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    upper: tuple[float, float, float] = (40.0, 40.0, 5.4)
    voxel_size: float = 0.4

    def __post_init__(self) -> None:
        for axis, (lo, hi) in enumerate(zip(self.lower, self.upper)):
            if not hi > lo:
                raise ValueError(f"VoxelGrid: upper[{axis}]={hi} must exceed lower[{axis}]={lo}")
            n = (hi - lo) / self.voxel_size
            if abs(n - round(n)) > 1e-6:
                raise ValueError(
                    f"VoxelGrid: extent {hi - lo} m on axis {axis} is not a whole number of "
                    f"{self.voxel_size} m voxels; adjust lower/upper or voxel_size"
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts (X, Y, Z)."""
        return tuple(round((hi - lo) / self.voxel_size) for lo, hi in zip(self.lower, self.upper))

    def lower_tensor(self, device: torch.device | str | None = None, dtype=torch.float32) -> torch.Tensor:
        """The lower corner [3] (a cached tensor shared by all callers: do not modify it in place)."""
        return constant(self.lower, torch.device(device or "cpu"), dtype)

    def upper_tensor(self, device: torch.device | str | None = None, dtype=torch.float32) -> torch.Tensor:
        """The upper corner [3] (a cached tensor shared by all callers: do not modify it in place)."""
        return constant(self.upper, torch.device(device or "cpu"), dtype)

    def points_to_index(self, points: torch.Tensor) -> torch.Tensor:
        """Integer voxel index of metric points. points [..., 3] -> long [..., 3].

        An axis's index is in range exactly where the point lies in [lower, upper) on that axis, so a point
        that `contains` accepts always has a valid index, and one it rejects never does.
        """
        lo = self.lower_tensor(points.device, points.dtype)
        hi = self.upper_tensor(points.device, points.dtype)
        index = torch.floor((points - lo) / self.voxel_size).long()
        # The division rounds: just below the upper face (x = 39.999996 in float32) it gives the voxel
        # count (200), and a point just outside can round into the box. Clamp to the side of the face.
        last = constant(tuple(n - 1 for n in self.shape), points.device, torch.long)
        index = torch.where(points < hi, torch.minimum(index, last), torch.maximum(index, last + 1))
        return torch.where(points >= lo, index.clamp_min(0), index.clamp_max(-1))

    def flat_index(self, index: torch.Tensor) -> torch.Tensor:
        """Position of voxel indices [..., 3] (in range) in the row-major [X * Y * Z] flattening -> [...]."""
        _, ny, nz = self.shape
        return (index[..., 0] * ny + index[..., 1]) * nz + index[..., 2]

    def index_to_points(self, index: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Metric centre of voxels. index [..., 3] -> [..., 3]."""
        lo = self.lower_tensor(index.device, dtype)
        return lo + (index.to(dtype) + 0.5) * self.voxel_size

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """Whether points [..., 3] lie inside the box [lower, upper). -> bool [...]."""
        lo = self.lower_tensor(points.device, points.dtype)
        hi = self.upper_tensor(points.device, points.dtype)
        return ((points >= lo) & (points < hi)).all(-1)

    def voxel_centers(self, device: torch.device | str | None = None, dtype=torch.float32) -> torch.Tensor:
        """Metric centres of every voxel, [X, Y, Z, 3]."""
        axes = [torch.arange(n, device=device) for n in self.shape]
        index = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
        return self.index_to_points(index, dtype)

    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        """Metric points [..., 3] -> grid_sample coordinates in [-1, 1] (align_corners=False), xyz order."""
        lo = self.lower_tensor(points.device, points.dtype)
        hi = self.upper_tensor(points.device, points.dtype)
        return (points - lo) / (hi - lo) * 2 - 1
