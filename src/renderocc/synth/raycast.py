"""Exact ray casting against the world: analytic ray/primitive intersection, culling of ray bundles by
bounding cones and screen footprints, and the ground plane, batched in torch (CPU or CUDA)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from renderocc.synth.world import BOX, CYLINDER, ELLIPSOID, Primitives

_INF = float("inf")
_PRIM_BITS = 21  # primitive index bits in the packed (distance, primitive) sort key
_PAIR_CHUNK = 1 << 22  # ray/primitive tests per batch, bounds temporary memory


def _to_local(
    o: torch.Tensor, d: torch.Tensor, center: torch.Tensor, yaw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays o, d [N, 3] into the frames of primitives with `center` [N, 3] and `yaw` [N]."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    p = o - center
    p_local = torch.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], -1)
    d_local = torch.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1)
    return p_local, d_local


def _box(px, py, pz, dx, dy, dz, hx, hy, hz) -> torch.Tensor:
    """Slab test in the box frame; rays p + t d and half extents h as broadcastable components (e.g. p, h
    [P, 1] and d [P, S]) -> entry distance (inf on a miss or from inside). A zero direction component gives
    infinite slab distances, which the min/max handle as intended."""
    t_near, t_far = None, None
    for p, d, h in ((px, dx, hx), (py, dy, hy), (pz, dz, hz)):
        inv = 1.0 / d
        t1, t2 = (-h - p) * inv, (h - p) * inv
        lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_near = lo if t_near is None else torch.maximum(t_near, lo)
        t_far = hi if t_far is None else torch.minimum(t_far, hi)
    return torch.where((t_far >= t_near) & (t_near > 0), t_near, _INF)


def _box_axis(p: torch.Tensor, d: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Axis [N] of the box face through which rays p, d [N, 3] enter boxes of half extents h [N, 3]."""
    inv = 1.0 / d
    return torch.minimum((-h - p) * inv, (h - p) * inv).nan_to_num(nan=-_INF).argmax(dim=-1)


def _cylinder(px, py, pz, dx, dy, dz, r, hz) -> torch.Tensor:
    """Vertical capped cylinder (radius r, half height hz), components as in `_box` -> distance."""
    a = dx * dx + dy * dy
    b = px * dx + py * dy
    disc = b * b - a * (px * px + py * py - r * r)
    t_side = (-b - disc.clamp_min(0).sqrt()) / a.clamp_min(1e-12)
    side_ok = (disc >= 0) & (a > 1e-12) & (t_side > 0) & ((pz + t_side * dz).abs() <= hz)
    t_cap = (torch.where(dz < 0, hz, -hz) - pz) / dz  # the cap facing the ray; dz = 0 gives no cap hit
    x, y = px + t_cap * dx, py + t_cap * dy
    cap_ok = (t_cap > 0) & (x * x + y * y <= r * r)
    return torch.minimum(torch.where(side_ok, t_side, _INF), torch.where(cap_ok, t_cap, _INF))


def _ellipsoid(px, py, pz, dx, dy, dz, hx, hy, hz) -> torch.Tensor:
    """Ellipsoid with semi-axes h in its frame, components as in `_box` -> distance."""
    ax, ay, az = px / hx, py / hy, pz / hz
    bx, by, bz = dx / hx, dy / hy, dz / hz
    a = bx * bx + by * by + bz * bz
    b = ax * bx + ay * by + az * bz
    disc = b * b - a * (ax * ax + ay * ay + az * az - 1.0)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc >= 0) & (t > 0), t, _INF)


def surface(
    prims: Primitives,
    prim: torch.Tensor,
    centers: torch.Tensor,
    o: torch.Tensor,
    d: torch.Tensor,
    t: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Surface at hits of rays [N] on primitives `prim` [N] at distance t [N]: world normal [N, 3], local hit
    point [N, 3] (primitive frame) and the local face axis [N] (0, 1, 2; -1 for curved surfaces)."""
    kind = prims.kind[prim]
    yaw = prims.yaw[prim]
    p, dl = _to_local(o, d, centers, yaw)
    half = prims.half[prim]
    q = p + t[:, None] * dl
    axis = _box_axis(p, dl, half)
    face = torch.where(kind == BOX, axis, torch.full_like(axis, -1))
    n_box = torch.zeros_like(q).scatter_(1, axis[:, None], -torch.sign(dl.gather(1, axis[:, None])))
    cap = (kind == CYLINDER) & ((q[:, 2].abs() - half[:, 2]).abs() < 1e-3)
    n_cyl = torch.where(
        cap[:, None],
        torch.stack([0 * q[:, 0], 0 * q[:, 0], torch.sign(q[:, 2])], -1),
        torch.stack([q[:, 0], q[:, 1], 0 * q[:, 2]], -1),
    )
    face = torch.where(cap, torch.full_like(face, 2), face)
    n_ell = q / half**2
    n_local = torch.where(
        (kind == BOX)[:, None], n_box, torch.where((kind == CYLINDER)[:, None], n_cyl, n_ell)
    )
    n_local = n_local / n_local.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    c, s = torch.cos(yaw), torch.sin(yaw)
    normal = torch.stack(
        [c * n_local[:, 0] - s * n_local[:, 1], s * n_local[:, 0] + c * n_local[:, 1], n_local[:, 2]], -1
    )
    return normal, q, face


def bounding_corners(prims: Primitives, centers: torch.Tensor) -> torch.Tensor:
    """Corners [T, M, 8, 3] of each primitive's oriented bounding box, for primitive centres [T, M, 3]."""
    signs = torch.tensor(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
        dtype=centers.dtype,
        device=centers.device,
    )
    local = signs[None] * prims.half[:, None]  # [M, 8, 3]
    c, s = torch.cos(prims.yaw)[:, None], torch.sin(prims.yaw)[:, None]
    rotated = torch.stack(
        [c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1], local[..., 2]], -1
    )
    return centers[:, :, None] + rotated[None]


def screen_candidates(
    corners: torch.Tensor,
    world2cam: torch.Tensor,
    intrinsics: torch.Tensor,
    image_size: tuple[int, int],
    tile: int,
) -> torch.Tensor:
    """Conservative tile/primitive overlap from projected bounding boxes, for `grid_bundles` tiles.

    corners [C, M, 8, 3] world corners per camera (primitives at that camera's time); world2cam [C, 4, 4];
    intrinsics [C, 3, 3]. Boxes entirely behind a camera are dropped; boxes crossing its image plane keep
    every tile (the cone test still culls them). Returns bool [C * tiles_y * tiles_x, M].
    """
    h, w = image_size
    p = corners @ world2cam[:, None, :3, :3].transpose(-1, -2) + world2cam[:, None, None, :3, 3]
    z = p[..., 2]
    in_front = z > 0.05
    zc = z.clamp_min(0.05)
    u = p[..., 0] / zc * intrinsics[:, None, None, 0, 0] + intrinsics[:, None, None, 0, 2]
    v = p[..., 1] / zc * intrinsics[:, None, None, 1, 1] + intrinsics[:, None, None, 1, 2]
    all_front, any_front = in_front.all(-1), in_front.any(-1)  # [C, M]
    u0 = torch.where(all_front, u.amin(-1), -math.inf)
    u1 = torch.where(all_front, u.amax(-1), math.inf)
    v0 = torch.where(all_front, v.amin(-1), -math.inf)
    v1 = torch.where(all_front, v.amax(-1), math.inf)
    tx = torch.arange(0, w, tile, device=corners.device, dtype=corners.dtype)
    ty = torch.arange(0, h, tile, device=corners.device, dtype=corners.dtype)
    col = (tx[None, :, None] <= u1[:, None]) & (tx[None, :, None] + tile >= u0[:, None])  # [C, nx, M]
    row = (ty[None, :, None] <= v1[:, None]) & (ty[None, :, None] + tile >= v0[:, None])  # [C, ny, M]
    overlap = row[:, :, None] & col[:, None] & any_front[:, None, None]
    return overlap.reshape(-1, corners.shape[1])


def grid_bundles(rows: int, cols: int, tile: tuple[int, int], offset: int = 0) -> torch.Tensor:
    """Ray indices [B, th * tw] of tiles over a row-major rows x cols ray grid (edge tiles repeat their last
    row/column, which is harmless for min-reductions)."""
    th, tw = tile
    r = torch.arange(0, rows, th)[:, None] + torch.arange(th)[None]
    c = torch.arange(0, cols, tw)[:, None] + torch.arange(tw)[None]
    r, c = r.clamp_max(rows - 1), c.clamp_max(cols - 1)
    idx = r[:, None, :, None] * cols + c[None, :, None, :]  # [nr, nc, th, tw]
    return idx.reshape(-1, th * tw) + offset


@dataclass
class Hits:
    """Result of casting R rays: distance [R] (inf: nothing in range), primitive [R] (-1: ground or sky)."""

    t: torch.Tensor
    prim: torch.Tensor


def _pair_distances(
    prims: Primitives,
    kind: int,
    m: torch.Tensor,
    origin: torch.Tensor,
    center: torch.Tensor,
    dirs: torch.Tensor,
) -> torch.Tensor:
    """Distances [P, S] from P bundle origins [P, 3] along ray directions dirs [3, P, S] (components first)
    to primitives m [P] of one `kind` centred at center [P, 3]; inf on a miss. Per-pair quantities stay
    [P, 1] and broadcast over the bundle's rays."""
    yaw = prims.yaw[m]
    c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    rel = origin - center
    px = c * rel[:, :1] + s * rel[:, 1:2]
    py = -s * rel[:, :1] + c * rel[:, 1:2]
    pz = rel[:, 2:3]
    dx, dy, dz = c * dirs[0] + s * dirs[1], -s * dirs[0] + c * dirs[1], dirs[2]
    h = prims.half[m]
    hx, hy, hz = h[:, :1], h[:, 1:2], h[:, 2:3]
    if kind == BOX:
        return _box(px, py, pz, dx, dy, dz, hx, hy, hz)
    if kind == CYLINDER:
        return _cylinder(px, py, pz, dx, dy, dz, hx, hz)
    return _ellipsoid(px, py, pz, dx, dy, dz, hx, hy, hz)


def cast(
    prims: Primitives,
    centers: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    bundles: torch.Tensor,
    bundle_time: torch.Tensor,
    max_dist: float,
    t_limit: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
) -> Hits:
    """Nearest primitive hit of every ray.

    prims: M primitives; centers [T, M, 3] their centres at T times; rays_o, rays_d [R, 3] (unit directions);
    bundles [B, S] ray indices sharing one origin; bundle_time [B] index into T. Each bundle is tested only
    against primitives whose bounding sphere meets the bundle's bounding cone before the bundle's farthest
    useful distance: `max_dist`, or less where every ray of the bundle already stops at t_limit [R] (e.g.
    the ground). Hits beyond a ray's t_limit may be dropped. `candidates` [B, M] (bool), if given, is a
    further conservative bundle/primitive mask (e.g. screen-space footprints of the primitives).
    """
    device = rays_o.device
    num_rays = rays_o.shape[0]
    key = torch.full((num_rays,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    if len(prims) == 0:
        return Hits(torch.full((num_rays,), _INF, device=device), torch.full((num_rays,), -1, device=device))
    # bounding cone of each bundle
    origin = rays_o[bundles[:, 0]]  # [B, 3]
    dirs = rays_d[bundles]  # [B, S, 3]
    axis = dirs.mean(1)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    half_angle = torch.acos(((dirs * axis[:, None]).sum(-1)).clamp(-1, 1).amin(1))  # [B]
    # primitives in range of any bundle origin, then cone vs. bounding sphere
    radius = prims.bounding_radius()  # [M]
    mid = origin.mean(0)
    spread = (origin - mid).norm(dim=-1).max()
    near = ((centers - mid).norm(dim=-1) - radius - spread < max_dist).any(0).nonzero().squeeze(1)
    v = centers[:, near][bundle_time] - origin[:, None]  # [B, M', 3]
    dist = v.norm(dim=-1).clamp_min(1e-6)
    angle = torch.acos(((v * axis[:, None]).sum(-1) / dist).clamp(-1, 1))
    r = radius[near][None]
    reach = torch.full_like(half_angle, max_dist)
    if t_limit is not None:
        reach = reach.minimum(t_limit[bundles].amax(1))
    overlap = ((dist <= r) | (angle <= half_angle[:, None] + torch.asin((r / dist).clamp(max=1.0)))) & (
        dist - r < reach[:, None]
    )
    if candidates is not None:
        overlap &= candidates[:, near]
    pair_b, pair_near = overlap.nonzero(as_tuple=True)
    dirs_soa = dirs.permute(2, 0, 1).contiguous()  # [3, B, S]: contiguous components for the kernels
    pair_m = near[pair_near]
    kind = prims.kind[pair_m]
    per_chunk = max(1, _PAIR_CHUNK // bundles.shape[1])
    for k in (BOX, CYLINDER, ELLIPSOID):
        sel = (kind == k).nonzero().squeeze(1)
        for start in range(0, len(sel), per_chunk):
            idx = sel[start : start + per_chunk]
            b, m = pair_b[idx], pair_m[idx]
            t = _pair_distances(prims, k, m, origin[b], centers[bundle_time[b], m], dirs_soa[:, b])
            t = torch.where(t <= max_dist, t, torch.full_like(t, _INF))
            # positive float32 bit patterns sort like the floats: pack (distance, primitive) in one int64 key
            packed = (t.view(torch.int32).to(torch.int64) << _PRIM_BITS) | m[:, None]
            key.scatter_reduce_(0, bundles[b].reshape(-1), packed.reshape(-1), reduce="amin")
    prim = key & ((1 << _PRIM_BITS) - 1)
    t = (key >> _PRIM_BITS).to(torch.int32).view(torch.float32)
    hit = torch.isfinite(t)
    return Hits(
        torch.where(hit, t, torch.full_like(t, _INF)), torch.where(hit, prim, torch.full_like(prim, -1))
    )


def ground_distance(rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
    """Distance [R] along rays to the ground plane z = 0 (inf for rays not going down)."""
    down = rays_d[:, 2] < -1e-6
    t = -rays_o[:, 2] / torch.where(down, rays_d[:, 2], torch.full_like(rays_d[:, 2], -1.0))
    return torch.where(down & (t > 0), t, torch.full_like(t, _INF))
