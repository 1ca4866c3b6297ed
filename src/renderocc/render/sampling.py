"""Ray-box intersection and the sample layouts shared by every renderer implementation.

"metric" convention: samples of a ray lie at t_k = t_near + (k + 0.5) * step_size for k = 0 ..
n_samples - 1, where [t_near, t_far] is the ray's intersection with the grid box (t_near clipped to 0, so a
ray starting inside the box begins at its origin) and n_samples counts the t_k that fall before t_far. Both
implementations take (t_near, n_samples) from here, so they visit exactly the same points. "reference"
convention: a fixed list of distances from the origin, pulled into a background shell beyond a sphere
(`reference_samples`, `render.conventions`).
"""

from __future__ import annotations

import torch

from renderocc.core.grid import VoxelGrid, constant
from renderocc.render.conventions import Convention


def ray_box_intersection(
    rays_o: torch.Tensor, rays_d: torch.Tensor, grid: VoxelGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of rays against the grid box.

    rays_o, rays_d [..., 3] -> (t_near [...], t_far [...]) with t_near >= 0. Rays that miss the box,
    or whose box segment lies behind the origin, get t_far <= t_near. A direction component of exactly
    zero (a ray parallel to a pair of faces) constrains nothing when the origin lies between those faces
    and misses the box otherwise. A zero direction (a padding ray) misses: it would otherwise get an
    endless segment, and the renderer would march it until its transmittance ran out.
    """
    lo, hi = grid.lower_tensor(rays_o.device, rays_o.dtype), grid.upper_tensor(rays_o.device, rays_o.dtype)
    parallel = rays_d == 0
    safe_d = torch.where(parallel, torch.ones_like(rays_d), rays_d)
    t_lo = (lo - rays_o) / safe_d
    t_hi = (hi - rays_o) / safe_d
    inside_slab = (rays_o >= lo) & (rays_o <= hi)
    inf = torch.full_like(t_lo, float("inf"))
    t_enter = torch.where(parallel, torch.where(inside_slab, -inf, inf), torch.minimum(t_lo, t_hi))
    t_exit = torch.where(parallel, torch.where(inside_slab, inf, -inf), torch.maximum(t_lo, t_hi))
    t_near = t_enter.amax(-1).clamp_min(0.0)
    t_far = torch.where(parallel.all(-1), torch.zeros_like(t_near), t_exit.amin(-1))
    return t_near, t_far


def sample_counts(t_near: torch.Tensor, t_far: torch.Tensor, step_size: float) -> torch.Tensor:
    """Number of samples t_near + (k + 0.5) * step_size that fall before t_far; int32 [...], 0 on a miss."""
    span = (t_far - t_near).clamp_min(0.0)
    return torch.ceil(span / step_size - 0.5).clamp_min(0).to(torch.int32)


def sample_positions(
    rays_o: torch.Tensor, rays_d: torch.Tensor, t_near: torch.Tensor, num_samples: int, step_size: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `num_samples` sample points of each ray.

    rays_o, rays_d [..., 3], t_near [...] -> (t [..., K], points [..., K, 3]) with K = num_samples.
    """
    k = torch.arange(num_samples, device=rays_o.device, dtype=rays_o.dtype)
    t = t_near.unsqueeze(-1) + (k + 0.5) * step_size
    points = rays_o.unsqueeze(-2) + t.unsqueeze(-1) * rays_d.unsqueeze(-2)
    return t, points


def trilinear_corners(points: torch.Tensor, grid: VoxelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat voxel indices and weights of the 8 voxel centres around each point.

    Values live at voxel centres; a point's continuous index u = (p - lower) / voxel_size - 0.5 is clamped
    to [0, n - 1] per axis, so points in the outer half voxel take the border value (clamp-to-edge).
    points [..., 3] -> (index int64 [..., 8] into a [X * Y * Z] flattening, weight [..., 8]); corner
    j has offset (j >> 2 & 1, j >> 1 & 1, j & 1) in (x, y, z).
    """
    shape = torch.tensor(grid.shape, device=points.device)
    lo = grid.lower_tensor(points.device, points.dtype)
    u = (points - lo) / grid.voxel_size - 0.5
    u = torch.minimum(u.clamp_min(0.0), (shape - 1).to(points.dtype))
    i0 = torch.minimum(torch.floor(u).long(), shape - 1)
    i1 = torch.minimum(i0 + 1, shape - 1)
    f1 = u - i0.to(points.dtype)
    f0 = 1.0 - f1
    _, ny, nz = grid.shape
    index = []
    weight = []
    for j in range(8):
        bits = ((j >> 2) & 1, (j >> 1) & 1, j & 1)
        ix, iy, iz = (i1[..., a] if b else i0[..., a] for a, b in enumerate(bits))
        wx, wy, wz = (f1[..., a] if b else f0[..., a] for a, b in enumerate(bits))
        index.append((ix * ny + iy) * nz + iz)
        weight.append(wx * wy * wz)
    return torch.stack(index, -1), torch.stack(weight, -1)


def reference_samples(
    rays_o: torch.Tensor, rays_d: torch.Tensor, conv: Convention, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `num_samples` candidate samples of the "reference" convention (`render.conventions`).

    rays_o [..., 3] in units of conv.radius around conv.center, unit rays_d [..., 3] -> (x [K] the depth
    coordinate R t / (1 + t), the same for every ray; q [..., K, 3] the points pulled into the background
    shell, same units as rays_o; kept bool [..., K]: inside the sphere, or past the crowding test's distance
    since the last kept sample). Nothing here is differentiable.
    """
    t = constant(conv.t, rays_o.device, rays_o.dtype)[:num_samples]
    q = rays_o.unsqueeze(-2) + t.unsqueeze(-1) * rays_d.unsqueeze(-2)
    norm = q.norm(dim=-1, keepdim=True)
    inner = norm <= 1
    q = torch.where(inner, q, q / norm * ((1 + conv.background) - conv.background / norm))
    kept = inner.squeeze(-1).clone()
    hop = (q[..., 1:, :] - q[..., :-1, :]).norm(dim=-1)  # from sample k - 1 to k
    travelled = hop.new_zeros(hop.shape[:-1])  # [...]: also with a single sample (no hops)
    for k in range(1, num_samples):  # a running sum that restarts: sequential by nature
        travelled = travelled + hop[..., k - 1]
        over = travelled > conv.merge_distance
        travelled = torch.where(over, torch.zeros_like(travelled), travelled)
        kept[..., k] |= over
    return conv.radius * t / (1 + t), q, kept
