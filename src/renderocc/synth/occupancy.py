"""Occ3D ground truth from the exact geometry: voxel semantics and the LiDAR / camera visibility masks.

Voxelisation rule ("any occupancy" with priorities), as Occ3D builds its labels from the surface points
inside each voxel: a primitive claims every 0.4 m voxel it reaches into (by more than MARGIN, so solids
that only touch a voxel's face stay out of it), so a LiDAR point on a surface always lies in an occupied
voxel. The tests are exact: separating axes for boxes, nearest points for cylinders and ellipsoids. The
ground claims a voxel if one of its 2 x 2 x 2 sub-sample points (centre +- voxel/4) lies in the 0.2 m skin
just below the road surface (z in [-0.2, 0)). Among the claims the class of highest PRIORITY wins, so small
objects survive next to the road or a building.
"""

from __future__ import annotations

import math

import torch

from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid
from renderocc.synth.world import BOX, ELLIPSOID, World

# Occ3D class -> priority (higher wins when several classes claim one voxel).
PRIORITY = torch.tensor([8, 9, 12, 6, 7, 6, 12, 13, 11, 6, 6, 1, 2, 3, 0, 5, 4])
GROUND_SKIN = 0.2  # m below the surface that counts as ground
MARGIN = 1e-3  # m a solid must reach into a voxel to claim it


def column_overlaps(
    kind: torch.Tensor, d: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, half: torch.Tensor, vs: float
) -> torch.Tensor:
    """Whether vertical boxes / cylinders reach more than MARGIN into square voxel columns, in xy.

    kind [N] (BOX or CYLINDER); d [N, 2] column centre minus primitive centre; cos, sin [N] of the
    primitive's yaw in the same frame; half [N, 3] (cylinder: radius first); vs the voxel size -> bool [N].
    """
    a = vs / 2 - MARGIN  # half side of the column shrunk by the margin
    c, s = cos.abs(), sin.abs()
    # box and square are convex polygons: they overlap iff no axis of either separates them
    u = cos * d[:, 0] + sin * d[:, 1]
    v = -sin * d[:, 0] + cos * d[:, 1]
    in_box = (
        (d[:, 0].abs() < c * half[:, 0] + s * half[:, 1] + a)
        & (d[:, 1].abs() < s * half[:, 0] + c * half[:, 1] + a)
        & (u.abs() < half[:, 0] + a * (c + s))
        & (v.abs() < half[:, 1] + a * (c + s))
    )
    # cylinder: the column's point nearest the axis lies within the radius
    in_cyl = ((d.abs() - a).clamp_min(0) ** 2).sum(-1) < half[:, 0] ** 2
    return torch.where(kind == BOX, in_box, in_cyl)


def ellipsoid_overlaps(
    d: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, half: torch.Tensor, vs: float
) -> torch.Tensor:
    """Whether ellipsoids (yawed about z) reach more than MARGIN into cubic voxels.

    d [N, 3] voxel centre minus ellipsoid centre; cos, sin [N] of the yaw; half [N, 3] semi-axes -> bool
    [N]. Exact: in the ellipsoid's frame scaled to the unit ball the voxel becomes a parallelogram (xy)
    times an interval (z), so the squared distance from the ball's centre splits into the two parts.
    """
    a = vs / 2 - MARGIN
    dz = ((d[:, 2].abs() - a).clamp_min(0) / half[:, 2]) ** 2
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=d.device) * a
    xy = d[:, None, :2] + corners  # [N, 4, 2], counter-clockwise
    local = torch.stack(
        [
            cos[:, None] * xy[..., 0] + sin[:, None] * xy[..., 1],
            -sin[:, None] * xy[..., 0] + cos[:, None] * xy[..., 1],
        ],
        -1,
    )
    poly = local / half[:, None, :2]  # still counter-clockwise: the scaling is positive
    edge = poly.roll(-1, dims=1) - poly
    # the origin is inside iff it lies left of every edge
    cross = edge[..., 0] * -poly[..., 1] - edge[..., 1] * -poly[..., 0]
    inside = (cross >= 0).all(1)
    t = ((-poly * edge).sum(-1) / (edge * edge).sum(-1)).clamp(0, 1)
    dxy = (poly + t[..., None] * edge).pow(2).sum(-1).amin(1)
    return torch.where(inside, torch.zeros_like(dz), dxy) + dz < 1.0


def _probe_offsets(voxel_size: float, device) -> torch.Tensor:
    o = torch.tensor([-0.25, 0.25], device=device) * voxel_size
    return torch.stack(torch.meshgrid(o, o, o, indexing="ij"), -1).reshape(8, 3)


def voxelize(
    world: World, grid: VoxelGrid, ego2world: torch.Tensor, time: float, occ_of_material: torch.Tensor
) -> torch.Tensor:
    """Occ3D semantics uint8 [X, Y, Z] (FREE = 17 empty) of the world at `time` (s) in the ego frame
    `ego2world` [4, 4] (planar: yaw only)."""
    device = ego2world.device
    shape = grid.shape
    vs = grid.voxel_size
    lower = grid.lower_tensor(device)
    priority = PRIORITY.to(device)
    code = torch.full((shape[0] * shape[1] * shape[2],), -1, dtype=torch.long, device=device)
    offsets = _probe_offsets(vs, device)

    # ground skin: layers with a probe in z in [-GROUND_SKIN, 0)
    z_probe = grid.index_to_points(
        torch.stack([torch.zeros(shape[2]), torch.zeros(shape[2]), torch.arange(shape[2])], -1).to(device)
    )[:, 2]
    layers = [
        z for z in range(shape[2]) if any(-GROUND_SKIN <= float(z_probe[z]) + s * vs / 4 < 0 for s in (-1, 1))
    ]
    centers = grid.voxel_centers(device)[:, :, 0, :2].reshape(-1, 2)  # [X*Y, 2]
    probes_xy = centers[:, None] + offsets[None, ::2, :2]  # the 4 distinct xy probes [X*Y, 4, 2]
    probes_w = probes_xy @ ego2world[:2, :2].T + ego2world[:2, 3]
    ground_occ = occ_of_material[world.layout.lookup(probes_w, world.default_ground)]  # [X*Y, 4]
    ground_code = (priority[ground_occ] * 32 + ground_occ).amax(1)
    code_xyz = code.view(shape[0] * shape[1], shape[2])
    for z in layers:
        code_xyz[:, z] = torch.maximum(code_xyz[:, z], ground_code)

    # primitives near the ego
    prims = world.prims
    world2ego = torch.linalg.inv(ego2world)
    c_w = prims.centers_at(torch.tensor([time], device=device))[0]
    c_e = c_w @ world2ego[:3, :3].T + world2ego[:3, 3]
    ego_yaw = math.atan2(float(ego2world[1, 0]), float(ego2world[0, 0]))
    yaw_e = prims.yaw - ego_yaw
    cos, sin = torch.cos(yaw_e), torch.sin(yaw_e)
    ext = torch.stack(
        [
            cos.abs() * prims.half[:, 0] + sin.abs() * prims.half[:, 1],
            sin.abs() * prims.half[:, 0] + cos.abs() * prims.half[:, 1],
            prims.half[:, 2],
        ],
        -1,
    )
    n = torch.tensor(shape, device=device)
    lo = torch.floor((c_e - ext - lower) / vs).long().clamp_min(0)
    hi = torch.minimum(torch.floor((c_e + ext - lower) / vs).long(), n - 1)
    size = (hi - lo + 1).clamp_min(0)
    cls_prim = occ_of_material[prims.material]
    code_prim = priority[cls_prim] * 32 + cls_prim

    def claim(pid: torch.Tensor, idx: torch.Tensor) -> None:
        flat = (idx[:, 0] * shape[1] + idx[:, 1]) * shape[2] + idx[:, 2]
        code.scatter_reduce_(0, flat, code_prim[pid], reduce="amax")

    # Boxes and vertical cylinders are separable (overlap = overlap in xy and in z): test each voxel column
    # once and each layer once.
    layer_z = lower[2] + (torch.arange(shape[2], device=device) + 0.5) * vs
    layer_in = (layer_z[None] - c_e[:, 2, None]).abs() < prims.half[:, 2, None] + vs / 2 - MARGIN  # [M, Z]
    separable = (prims.kind != ELLIPSOID) & (size.prod(-1) > 0)
    pid, cell = _cells(separable.nonzero().squeeze(1), lo[:, :2], size[:, :2])
    if len(pid):
        d = lower[:2] + (cell.float() + 0.5) * vs - c_e[pid, :2]
        column_in = column_overlaps(prims.kind[pid], d, cos[pid], sin[pid], prims.half[pid], vs)
        pid, cell = pid[column_in], cell[column_in]
        col, z = (layer_in[pid]).nonzero(as_tuple=True)
        claim(pid[col], torch.cat([cell[col], z[:, None]], -1))
    # ellipsoids (pedestrians, tree crowns)
    pid, cell = _cells(((prims.kind == ELLIPSOID) & (size.prod(-1) > 0)).nonzero().squeeze(1), lo, size)
    if len(pid):
        d = lower + (cell.float() + 0.5) * vs - c_e[pid]
        hit = ellipsoid_overlaps(d, cos[pid], sin[pid], prims.half[pid], vs)
        claim(pid[hit], cell[hit])
    return _decode(code, shape)


def _cells(ids: torch.Tensor, lo: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every integer cell of the boxes lo[ids] + [0, size[ids]) (2D or 3D): owner ids [N] and cells [N, D]."""
    cnt = size[ids].prod(-1)
    pid = torch.repeat_interleave(ids, cnt)
    k = torch.arange(int(cnt.sum()), device=ids.device) - torch.repeat_interleave(
        torch.cumsum(cnt, 0) - cnt, cnt
    )
    sz = size[pid]
    digits = []
    for axis in reversed(range(sz.shape[1])):  # mixed-radix decomposition of k, last axis fastest
        digits.append(k % sz[:, axis])
        k = k // sz[:, axis]
    return pid, lo[pid] + torch.stack(digits[::-1], -1)


def _decode(code: torch.Tensor, shape) -> torch.Tensor:
    return torch.where(code >= 0, code % 32, torch.full_like(code, FREE)).to(torch.uint8).reshape(shape)


def traverse(
    occupied: torch.Tensor,
    grid: VoxelGrid,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    t_end: torch.Tensor,
    step: float | None = None,
) -> torch.Tensor:
    """Voxels visited by rays until (and including) the first occupied voxel, or until t_end.

    occupied bool [X, Y, Z]; rays_o, unit rays_d [R, 3] in the grid's frame; t_end [R] (inf: to the grid
    exit). Rays are sampled every `step` (default half a voxel). Returns bool [X, Y, Z].
    """
    device = rays_o.device
    step = step or grid.voxel_size / 2
    shape = occupied.shape
    lower, upper = grid.lower_tensor(device), grid.upper_tensor(device)
    inv = 1.0 / torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t1, t2 = (lower - rays_o) * inv, (upper - rays_o) * inv
    t_in = torch.minimum(t1, t2).amax(-1).clamp_min(0)
    # 5 cm past a hit reaches into the surface's voxel; the last sample may overshoot by less than a step
    t_out = torch.minimum(torch.maximum(t1, t2).amin(-1), t_end + 0.05)
    count = torch.where(
        t_out > t_in, torch.ceil((t_out - t_in) / step).long() + 1, torch.zeros_like(t_in).long()
    )
    # sample k of a ray sits at start + k * stride, in voxel units
    start = (rays_o + t_in[:, None] * rays_d - lower) / grid.voxel_size
    stride = rays_d * (step / grid.voxel_size)
    visited = torch.zeros(shape[0] * shape[1] * shape[2], dtype=torch.bool, device=device)
    occ_flat = occupied.reshape(-1)
    n = torch.tensor(shape, device=device)
    # rays sorted by sample count and cut into groups of similar length, each marched as a dense
    # [rays, samples] block (padding costs less than gathering per sample)
    order = torch.argsort(count)
    order = order[count[order] > 0]
    group = 4096
    for g in range(0, len(order), group):
        rays = order[g : g + group]
        cnt = count[rays]
        k = torch.arange(int(cnt.max()), device=device)
        idx = torch.floor(start[rays, None] + k[None, :, None] * stride[rays, None]).long()  # [G, K, 3]
        inside = ((idx >= 0) & (idx < n)).all(-1) & (k[None] < cnt[:, None])
        flat = (idx[..., 0] * shape[1] + idx[..., 1]) * shape[2] + idx[..., 2]
        flat = torch.where(inside, flat, 0)
        occ = occ_flat[flat] & inside
        # first occupied sample of each ray (K when none); everything up to it is traversed
        first = torch.where(occ.any(1), occ.int().argmax(1), len(k))
        keep = inside & (k[None] <= first[:, None])
        visited[flat[keep]] = True
    return visited.reshape(shape)


def camera_visibility(
    grid: VoxelGrid, distance: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor
) -> torch.Tensor:
    """Voxels seen by at least one camera: traversed by a camera ray up to and including the voxel where the
    ray meets its first surface (Occ3D's camera visibility).

    distance [C, H, W] is each pixel's exact distance to the first surface along its ray (inf: sky);
    intrinsics [C, 3, 3]; cam2ego [C, 4, 4] in the grid's frame. Two cheap, exact pieces replace marching
    every pixel ray through the grid: (1) a voxel is traversed by the ray through its centre iff that ray
    enters the voxel's cube before the surface of the pixel it projects to; (2) the voxel holding each
    pixel's surface point is the first occupied voxel of that pixel's ray. Returns bool [X, Y, Z].
    """
    device = distance.device
    centers = grid.voxel_centers(device).reshape(-1, 3)
    num, h, w = distance.shape
    visible = torch.zeros(len(centers), dtype=torch.bool, device=device)
    half = grid.voxel_size / 2
    tan_x = (intrinsics[:, 0, 2] + 1) / intrinsics[:, 0, 0]  # frustum half-widths, a pixel of margin
    tan_y = (intrinsics[:, 1, 2] + 1) / intrinsics[:, 1, 1]
    for c in range(num):  # six cameras; the work inside is vectorised over all voxels
        p = (centers - cam2ego[c, :3, 3]) @ cam2ego[c, :3, :3]  # camera frame (R^T applied to row vectors)
        z = p[:, 2]
        sel = (
            ((z > 0.05) & (p[:, 0].abs() <= z * tan_x[c]) & (p[:, 1].abs() <= z * tan_y[c]))
            .nonzero()
            .squeeze(1)
        )
        p = p[sel]
        dist = p.norm(dim=-1)
        rel = centers[sel] - cam2ego[c, :3, 3]
        t_enter = dist - half * dist / rel.abs().amax(-1)  # the centre ray enters the voxel's cube here
        u = (p[:, 0] / p[:, 2] * intrinsics[c, 0, 0] + intrinsics[c, 0, 2]).long().clamp(0, w - 1)
        v = (p[:, 1] / p[:, 2] * intrinsics[c, 1, 1] + intrinsics[c, 1, 2]).long().clamp(0, h - 1)
        visible[sel] |= t_enter <= distance[c].reshape(-1)[v * w + u]
    # the voxel of every pixel's surface point, reached 2 cm past the surface
    v, u = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    rays = uv1[None] @ torch.linalg.inv(intrinsics).transpose(-1, -2) @ cam2ego[:, :3, :3].transpose(-1, -2)
    rays = rays / rays.norm(dim=-1, keepdim=True)  # [C, H*W, 3]
    d = distance.reshape(num, -1)
    hit = torch.isfinite(d)
    points = cam2ego[:, None, :3, 3] + (d.nan_to_num(posinf=0.0) + 0.02)[..., None] * rays
    points = points[hit]
    in_grid = grid.contains(points)
    idx = grid.points_to_index(points[in_grid])
    shape = grid.shape
    visible[(idx[:, 0] * shape[1] + idx[:, 1]) * shape[2] + idx[:, 2]] = True
    return visible.reshape(shape)
