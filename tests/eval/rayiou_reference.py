"""A plain float64 voxel walker, one ray at a time: the reference that `first_hits` is checked against."""

from __future__ import annotations

import math

import numpy as np

from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid


def walk_ray(labels: np.ndarray, grid: VoxelGrid, origin, direction) -> tuple[int, float]:
    """(class, depth in metres) of the first non-free voxel that one ray passes through.

    Amanatides & Woo, written for clarity: the next face on each axis is recomputed from the voxel at every
    step (no running sums), ties go to z, then y, then x. A miss: (FREE, distance to the box exit), or
    (FREE, 0.0) for a ray that never enters the box.
    """
    n = grid.shape
    q = [(float(origin[a]) - grid.lower[a]) / grid.voxel_size for a in range(3)]
    d = [float(direction[a]) for a in range(3)]
    if all(x == 0 for x in d):
        return FREE, 0.0
    t_in, t_out = 0.0, math.inf
    for a in range(3):
        if d[a] == 0:
            if not 0 <= q[a] < n[a]:
                return FREE, 0.0
            continue
        t0, t1 = (0 - q[a]) / d[a], (n[a] - q[a]) / d[a]
        t_in, t_out = max(t_in, min(t0, t1)), min(t_out, max(t0, t1))
    inside = all(0 <= q[a] < n[a] for a in range(3))
    if not inside and not t_in < t_out:
        return FREE, 0.0
    v = [min(max(math.floor(q[a] + t_in * d[a]), 0), n[a] - 1) for a in range(3)]
    while all(0 <= v[a] < n[a] for a in range(3)):
        faces = [((v[a] + (d[a] >= 0)) - q[a]) / d[a] if d[a] != 0 else math.inf for a in range(3)]
        axis = 2
        for a in (1, 0):
            if faces[a] < faces[axis]:
                axis = a
        label = int(labels[v[0], v[1], v[2]])
        if label != FREE:
            return label, faces[axis] * grid.voxel_size
        v[axis] += 1 if d[axis] >= 0 else -1
    return FREE, t_out * grid.voxel_size


def walk_rays(labels: np.ndarray, grid: VoxelGrid, rays_o: np.ndarray, rays_d: np.ndarray):
    """walk_ray over rays [R, 3] -> class int64 [R], depth float64 [R]."""
    hits = [walk_ray(labels, grid, o, d) for o, d in zip(rays_o, rays_d)]
    return np.array([h[0] for h in hits], np.int64), np.array([h[1] for h in hits], np.float64)
