"""Headless software rendering of semantic voxel grids: vectorised voxel ray casting and bird's-eye views."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from renderocc.core import FREE, OCC3D_COLORS, VoxelGrid, pixel_rays

BACKGROUND = (22, 25, 31)  # RGB of pixels that hit nothing; dark so that every Occ3D colour stands out
EGO_COLOR = (235, 235, 235)
# The ego vehicle in its own frame (rear-axle origin, nuScenes Renault Zoe size), drawn for orientation:
# Occ3D removes the ego's own voxels, so without it the viewer cannot tell where the car is.
EGO_BOX = ((-0.9, -0.87, -0.2), (3.2, 0.87, 1.4))
LIGHT_DIR = (-0.45, 0.35, 1.0)  # towards the light, ego frame: from above, slightly behind-left
AMBIENT = 0.38
DEFAULT_GRID = VoxelGrid()  # Occ3D-nuScenes: 200 x 200 x 16 voxels of 0.4 m


@dataclass(frozen=True)
class ViewCamera:
    """A pinhole camera in the ego frame: intrinsics [3, 3], cam2ego [4, 4] (x right, y down, z forward)."""

    intrinsics: torch.Tensor
    cam2ego: torch.Tensor
    width: int
    height: int

    def rays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ego-frame rays through pixel centres: rays_o [H*W, 3], unit rays_d [H*W, 3], pixel angle (rad)."""
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32) + 0.5,
            torch.arange(self.width, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        uv = torch.stack([u, v], -1).reshape(-1, 2)
        rays_o, rays_d, _ = pixel_rays(uv, self.intrinsics, self.cam2ego)
        return rays_o, rays_d, 1.0 / self.intrinsics[1, 1]


def look_at_camera(
    eye: tuple[float, float, float],
    target: tuple[float, float, float],
    width: int,
    height: int,
    fov_y_deg: float = 45.0,
) -> ViewCamera:
    """A camera at `eye` (metres, ego frame) looking at `target` with z up and a vertical field of view."""
    eye_t, target_t = torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    forward = target_t - eye_t
    if forward.norm() < 1e-6:
        raise ValueError("look_at_camera: eye and target coincide; move the eye away from the target")
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    if right.norm() < 1e-6:  # looking straight down: keep image "up" pointing along ego +x
        right = torch.tensor([0.0, -1.0, 0.0])
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.stack([right, down, forward], 1)
    cam2ego[:3, 3] = eye_t
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    intrinsics = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return ViewCamera(intrinsics, cam2ego, width, height)


def chase_camera(
    width: int,
    height: int,
    eye: tuple[float, float, float] = (-38.0, 0.0, 34.0),
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    fov_y_deg: float = 36.0,
) -> ViewCamera:
    """The oblique view from behind and above the ego. The defaults frame the Occ3D grid from about 18 m
    behind the ego (bottom edge) to its far end 40 m ahead (top edge), the ego in the middle."""
    return look_at_camera(eye, target, width, height, fov_y_deg)


@dataclass
class RayHits:
    """First hits of N rays. voxel long [N, 3] (-1 where missed), axis long [N] (face entered: 0 x, 1 y,
    2 z), sign [N] (+1 when the ray travels towards +axis), t float [N] (metres along the ray, inf if missed).
    """

    voxel: torch.Tensor
    axis: torch.Tensor
    sign: torch.Tensor
    t: torch.Tensor

    @property
    def hit(self) -> torch.Tensor:
        return torch.isfinite(self.t)


def chebyshev_distance(occupied: torch.Tensor, cap: int = 16) -> torch.Tensor:
    """Chessboard distance, in voxels, from each voxel to the nearest occupied one, capped at `cap`.

    occupied bool [X, Y, Z] -> uint8 [X, Y, Z] (0 on occupied voxels). Every voxel within distance k - 1
    of a voxel at distance k is empty, which is what lets a ray jump over empty space. Outside the array
    counts as empty.
    """
    dist = torch.zeros(occupied.shape, dtype=torch.uint8)
    reached = occupied.clone()
    for _ in range(cap):
        dist += ~reached
        # One chessboard dilation = a 3-wide max filter along each axis in turn (separable).
        for axis in range(3):
            n = reached.shape[axis]
            grown = reached.clone()
            grown.narrow(axis, 1, n - 1).logical_or_(reached.narrow(axis, 0, n - 1))
            grown.narrow(axis, 0, n - 1).logical_or_(reached.narrow(axis, 1, n - 1))
            reached = grown
    return dist


def cast_rays(
    occupied: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor, grid: VoxelGrid, cap: int = 12
) -> RayHits:
    """Exact first occupied voxel along each ray, vectorised over rays.

    occupied bool [X, Y, Z]; rays_o, rays_d [N, 3] in the ego frame (metres). A voxel-exact traversal in
    the spirit of Amanatides & Woo's DDA, accelerated by a chessboard distance field: from a voxel at
    distance k the ray leaves the cube of 2k - 1 empty voxels around it in one jump (k = 1 is one DDA step),
    so crossing open air costs a few iterations instead of one per voxel. The loop runs over jumps, each
    advancing all still-active rays at once; rays that hit or leave the grid are dropped as they finish.
    `cap` bounds the jump size (2 cap - 1 voxels) and the distance field's cost.
    """
    if occupied.shape != grid.shape:
        raise ValueError(f"cast_rays: occupancy shape {tuple(occupied.shape)} != grid shape {grid.shape}")
    n = rays_o.shape[0]
    out = RayHits(
        voxel=torch.full((n, 3), -1, dtype=torch.long),
        axis=torch.zeros(n, dtype=torch.long),
        sign=torch.ones(n, dtype=torch.long),
        t=torch.full((n,), math.inf),
    )
    if not occupied.any():
        return out
    # A jump ends at most `cap` voxels outside the grid, so a margin of cap + 1 voxels around it makes
    # every voxel a ray can reach a valid index: no bounds checks in the loop. Rays only look up margin
    # voxels when rounding puts them outside before t_far; distance 1 there means a plain DDA step.
    pad = cap + 1
    dist = torch.nn.functional.pad(chebyshev_distance(occupied, cap), (pad,) * 6, value=1)
    dims = torch.tensor(grid.shape, dtype=torch.float32)
    strides = torch.tensor([dist.shape[1] * dist.shape[2], dist.shape[2], 1], dtype=torch.float32)
    dist_flat = dist.reshape(-1)

    # Grid units: the box is [0, dims) and a voxel has side 1.
    p0 = (rays_o - grid.lower_tensor()) / grid.voxel_size
    d = torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    inv_d = 1.0 / d
    t0, t1 = (0 - p0) * inv_d, (dims - p0) * inv_d
    t_near, entry_axis = torch.minimum(t0, t1).max(1)
    t_far = torch.maximum(t0, t1).min(1).values
    t_near = t_near.clamp(min=0.0)
    active = torch.nonzero(t_near < t_far).squeeze(1)
    p0, d, inv_d, t_near, t_far = p0[active], d[active], inv_d[active], t_near[active], t_far[active]
    sign = torch.sign(d)
    forward = (sign + 1) / 2  # 1 where the ray runs towards +axis, else 0
    voxel = torch.floor(p0 + d * (t_near + 1e-4).unsqueeze(1))
    voxel = torch.minimum(voxel.clamp(min=0), dims - 1)
    # All per-ray state in one float32 table (integers are exact in float32 far beyond these sizes), one
    # row per quantity so that each is a contiguous block and dropping finished rays is a single gather.
    P0, D, INV_D = slice(0, 3), slice(3, 6), slice(6, 9)  # origin (+ margin), direction, 1 / direction
    SIGN, FWD, VOX = slice(9, 12), slice(12, 15), slice(15, 18)  # step sign, sign > 0, voxel (+ margin)
    T_FAR, T, AXIS, RAY = 18, 19, 20, 21  # grid exit, entry t and axis of the current voxel, ray index
    state = torch.cat(
        [p0 + pad, d, inv_d, sign, forward, voxel + pad]
        + [x.float()[:, None] for x in (t_far, t_near, entry_axis[active], active)],
        1,
    ).T.contiguous()
    arange3 = torch.arange(3)[:, None]

    for _ in range(int(grid.shape[0] + grid.shape[1] + grid.shape[2]) + 1):
        voxel = state[VOX]
        k = dist_flat.index_select(0, (strides @ voxel).long())
        hit = k == 0
        if hit.any():
            done = state.index_select(1, torch.nonzero(hit).squeeze(1))
            rows, axis = done[RAY].long(), done[AXIS].long()
            out.voxel[rows] = (done[VOX].T - pad).long()
            out.axis[rows] = axis
            out.sign[rows] = done[SIGN].gather(0, axis[None]).squeeze(0).long()
            out.t[rows] = done[T] * grid.voxel_size
        fwd = state[FWD]
        reach = k.float() - 1  # the cube voxel +- reach holds only empty voxels
        bound = voxel + fwd + state[SIGN] * reach  # the face of that cube the ray leaves through
        t, axis = ((bound - state[P0]) * state[INV_D]).min(0)
        crossed = axis == arange3
        # The voxel entered: on the crossed axis the one just past the cube's face, elsewhere the one the
        # exit point lies in, kept within the cube and never behind the current voxel: at a corner the
        # exit point may round into the voxel just left, and the ray would step back and forth forever.
        sign = state[SIGN]
        ahead = torch.minimum((sign * (torch.floor(state[P0] + state[D] * t) - voxel)).clamp_(min=0), reach)
        state[VOX] = torch.where(crossed, bound + fwd - 1, voxel + sign * ahead)
        state[T] = t
        state[AXIS] = axis.float()
        keep = torch.nonzero(~hit & (t < state[T_FAR])).squeeze(1)
        if len(keep) == 0:
            break
        state = state.index_select(1, keep)
    return out


def _ray_box(
    rays_o: torch.Tensor, rays_d: torch.Tensor, box: tuple[tuple[float, ...], tuple[float, ...]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray/box intersection (slab test). rays [N, 3] -> entry distance t [N] (inf if missed), axis, sign."""
    d = torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0 = (torch.tensor(box[0]) - rays_o) / d
    t1 = (torch.tensor(box[1]) - rays_o) / d
    t_near, axis = torch.minimum(t0, t1).max(1)
    t_far = torch.maximum(t0, t1).min(1).values
    sign = torch.where(d.gather(1, axis.unsqueeze(1)).squeeze(1) > 0, 1, -1)
    t = torch.where((t_near < t_far) & (t_near > 0), t_near, torch.full_like(t_near, math.inf))
    return t, axis, sign


def shade_faces(axis: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Lambertian brightness of the face a ray entered: its normal points against the ray. -> float [N]."""
    light = torch.tensor(LIGHT_DIR) / torch.tensor(LIGHT_DIR).norm()
    cos = -sign.float() * light[axis]
    return AMBIENT + (1 - AMBIENT) * cos.clamp(min=0.0)


def render_voxels(
    semantics: np.ndarray | torch.Tensor,
    camera: ViewCamera,
    grid: VoxelGrid = DEFAULT_GRID,
    mask: np.ndarray | torch.Tensor | None = None,
    draw_ego: bool = True,
    edges: bool = True,
) -> np.ndarray:
    """Shaded picture of a semantic grid seen by `camera`.

    semantics uint8 [X, Y, Z] (0..16 classes, 17 free); mask [X, Y, Z] (voxels where it is 0 are hidden,
    e.g. outside mask_camera) -> RGB uint8 [H, W, 3]. Faces are shaded by their normal; voxel edges are
    darkened where they are wider than a pixel so that neighbouring voxels of one class stay distinguishable.
    """
    sem = torch.as_tensor(np.asarray(semantics)).long()
    if sem.shape != grid.shape:
        raise ValueError(f"render_voxels: semantics shape {tuple(sem.shape)} != grid shape {grid.shape}")
    if sem.numel() and int(sem.max()) > FREE:
        raise ValueError(f"render_voxels: semantics hold class {int(sem.max())}; valid are 0..{FREE}")
    occupied = sem != FREE
    if mask is not None:
        occupied &= torch.as_tensor(np.asarray(mask)).bool()
    rays_o, rays_d, pixel_angle = camera.rays()
    hits = cast_rays(occupied, rays_o, rays_d, grid)
    hit = hits.hit
    colors = torch.as_tensor(OCC3D_COLORS, dtype=torch.float32)
    v = hits.voxel.clamp(min=0)
    albedo = colors[sem[v[:, 0], v[:, 1], v[:, 2]]]
    t, axis, sign = hits.t, hits.axis, hits.sign
    if draw_ego:
        t_ego, axis_ego, sign_ego = _ray_box(rays_o, rays_d, EGO_BOX)
        ego = t_ego < t
        t, axis, sign = (
            torch.where(ego, t_ego, t),
            torch.where(ego, axis_ego, axis),
            torch.where(ego, sign_ego, sign),
        )
        albedo[ego] = torch.tensor(EGO_COLOR, dtype=torch.float32)
        hit = hit | ego
    shade = shade_faces(axis, sign)
    if edges:
        shade = shade * _edge_factor(rays_o, rays_d, t, axis, pixel_angle, grid)
    rgb = torch.where(
        hit.unsqueeze(1), albedo * shade.unsqueeze(1), torch.tensor(BACKGROUND, dtype=torch.float32)
    )
    return rgb.clamp(0, 255).round().to(torch.uint8).reshape(camera.height, camera.width, 3).numpy()


def _edge_factor(
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    t: torch.Tensor,
    axis: torch.Tensor,
    pixel_angle: float | torch.Tensor,
    grid: VoxelGrid,
) -> torch.Tensor:
    """Darkening [N] of hit points lying within about a pixel of a voxel edge of the entered face."""
    t_safe = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    hit_vox = (rays_o + rays_d * t_safe.unsqueeze(1) - grid.lower_tensor()) / grid.voxel_size
    frac = hit_vox - torch.floor(hit_vox)
    dist = torch.minimum(frac, 1 - frac)
    dist = dist.scatter(1, axis.unsqueeze(1), 1.0)  # the entered axis lies on the face plane itself
    footprint = t_safe * pixel_angle / grid.voxel_size  # one pixel's width, in voxels, at the hit
    # Far away a voxel spans few pixels and outlines would swamp the colour: fade them out.
    strength = 0.28 * (1 - footprint / 0.25).clamp(0, 1)
    on_edge = dist.min(1).values < 0.8 * footprint.clamp(min=0.02)
    return 1 - strength * on_edge.float()


def bev_image(
    semantics: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    scale: int = 2,
    draw_ego: bool = True,
    grid: VoxelGrid = DEFAULT_GRID,
) -> np.ndarray:
    """Bird's-eye view: the top-most visible voxel of each column, darker the lower it lies.

    semantics uint8 [X, Y, Z], mask [X, Y, Z] -> RGB uint8 [X*scale, Y*scale, 3] with ego +x up and +y left
    (as seen from above), so the picture matches the chase view.
    """
    sem = torch.as_tensor(np.asarray(semantics)).long()
    occupied = sem != FREE
    if mask is not None:
        occupied &= torch.as_tensor(np.asarray(mask)).bool()
    depth = sem.shape[2]
    z_index = torch.arange(depth).expand_as(sem)
    top = torch.where(occupied, z_index, -1).max(2).values  # [X, Y]
    any_hit = top >= 0
    top_cls = sem.gather(2, top.clamp(min=0).unsqueeze(2)).squeeze(2)
    colors = torch.as_tensor(OCC3D_COLORS, dtype=torch.float32)
    height_shade = 0.45 + 0.55 * top.clamp(min=0).float() / max(depth - 1, 1)
    rgb = colors[top_cls] * height_shade.unsqueeze(-1)
    rgb = torch.where(any_hit.unsqueeze(-1), rgb, torch.tensor(BACKGROUND, dtype=torch.float32))
    if draw_ego:
        lo = grid.points_to_index(torch.tensor(EGO_BOX[0])).clamp(min=0)
        hi = grid.points_to_index(torch.tensor(EGO_BOX[1]))
        rgb[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = torch.tensor(EGO_COLOR, dtype=torch.float32)
    # Rows run from +x (top) to -x, columns from +y (left) to -y.
    img = rgb.flip(0, 1).round().to(torch.uint8)
    img = img.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return img.numpy()
