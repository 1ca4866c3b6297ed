"""Sensor simulation on the exact world: camera RGB / semantic / depth renders and the 32-beam LiDAR sweep."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from renderocc.synth import raycast, shading
from renderocc.synth.rig import Camera
from renderocc.synth.world import World

MAX_CAMERA_DIST = 160.0  # m; beyond it the haze has turned everything into sky colour anyway
MAX_LIDAR_DIST = 70.0  # m, the HDL-32E's useful range
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)  # HDL-32E beam elevations, ring 0 lowest
LIDAR_AZIMUTHS = 1084  # steps per revolution (~0.33 deg): ~34.7k rays, ~30k returns in a street
SKY = -1


@dataclass
class RayHits:
    """What R rays see: distance t [R] (inf: sky), material [R] (-1: sky), primitive [R] (-1: ground/sky),
    instance [R] (-1: none), world hit point [R, 3] and normal [R, 3]; for texturing, the hit point in the
    primitive frame `local` [R, 3], the box face axis `face` [R] (-1 curved, 2 ground), the base `color`
    [R, 3] and the primitive's `half` extents [R, 3]."""

    t: torch.Tensor
    material: torch.Tensor
    prim: torch.Tensor
    instance: torch.Tensor
    point: torch.Tensor
    normal: torch.Tensor
    local: torch.Tensor
    face: torch.Tensor
    color: torch.Tensor
    half: torch.Tensor


def trace(
    world: World,
    centers: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    bundles: torch.Tensor,
    bundle_time: torch.Tensor,
    ray_time: torch.Tensor,
    max_dist: float,
    candidates: torch.Tensor | None = None,
) -> RayHits:
    """Cast rays [R, 3] against primitives (centres [T, M, 3] at T times) and the ground plane.

    bundles [B, S] / bundle_time [B] / candidates [B, M]: see raycast.cast; ray_time [R] indexes T per ray.
    """
    prims = world.prims
    t_ground = raycast.ground_distance(rays_o, rays_d)
    t_ground = torch.where(t_ground <= max_dist, t_ground, torch.full_like(t_ground, math.inf))
    hits = raycast.cast(prims, centers, rays_o, rays_d, bundles, bundle_time, max_dist, t_ground, candidates)
    on_prim = hits.t < t_ground
    t = torch.minimum(hits.t, t_ground)
    prim = torch.where(on_prim, hits.prim, torch.full_like(hits.prim, -1))
    point = rays_o + t.nan_to_num(posinf=0.0)[:, None] * rays_d
    ground_mat = world.layout.lookup(point[:, :2], world.default_ground)
    sky = ~torch.isfinite(t)
    p = prim.clamp_min(0)
    material = torch.where(on_prim, prims.material[p], ground_mat)
    material = torch.where(sky, torch.full_like(material, SKY), material)
    instance = torch.where(on_prim, prims.instance[p], torch.full_like(prim, -1))
    # surface detail only for rays that hit a primitive
    normal = torch.zeros_like(rays_d)
    normal[:, 2] = 1.0
    local = point.clone()
    face = torch.full_like(prim, 2)
    half = torch.full_like(rays_d, 1e3)
    color = shading.ground_albedo(material.clamp_min(0))
    sel = on_prim.nonzero().squeeze(1)
    if len(sel):
        ps = prim[sel]
        c = centers[ray_time[sel], ps]
        n, q, f = raycast.surface(prims, ps, c, rays_o[sel], rays_d[sel], t[sel])
        normal[sel], local[sel], face[sel] = n, q, f
        half[sel] = prims.half[ps]
        color[sel] = prims.color[ps]
    return RayHits(t, material, prim, instance, point, normal, local, face, color, half)


def camera_rays(
    cameras: list[Camera], cam2world: torch.Tensor, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through pixel centres of every camera, camera-major then row-major.

    cam2world [C, 4, 4] -> rays_o, unit rays_d [C * H' * W', 3], H' = ceil(H / stride).
    """
    device = cam2world.device
    h, w = cameras[0].image_size
    v, u = torch.meshgrid(
        torch.arange(0, h, stride, device=device, dtype=torch.float32) + 0.5,
        torch.arange(0, w, stride, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    K_inv = torch.linalg.inv(torch.tensor(np.stack([c.intrinsics for c in cameras]), dtype=torch.float32))
    d_cam = uv1[None] @ K_inv.to(device).transpose(-1, -2)  # [C, P, 3]
    d = d_cam @ cam2world[:, :3, :3].transpose(-1, -2)
    d = d / d.norm(dim=-1, keepdim=True)
    o = cam2world[:, None, :3, 3].expand_as(d)
    return o.reshape(-1, 3), d.reshape(-1, 3)


def render_cameras(
    world: World,
    cameras: list[Camera],
    cam2world: torch.Tensor,
    times: torch.Tensor,
    tables: dict[str, torch.Tensor],
    tile: int = 16,
) -> dict[str, torch.Tensor]:
    """Render C cameras, camera c at time times[c] (s) with pose cam2world[c] [4, 4].

    Returns rgb uint8 [C, H, W, 3], semantics uint8 [C, H, W] (Occ3D class, 255 sky), lidarseg uint8
    [C, H, W] (255 sky), depth float [C, H, W] (camera z, 0 for sky), distance float [C, H, W] (along the ray,
    inf for sky), instance long [C, H, W].
    """
    h, w = cameras[0].image_size
    num = len(cameras)
    rays_o, rays_d = camera_rays(cameras, cam2world)
    bundles = torch.cat([raycast.grid_bundles(h, w, (tile, tile), c * h * w) for c in range(num)]).to(
        rays_o.device
    )
    per_cam = bundles.shape[0] // num
    bundle_time = torch.arange(num, device=rays_o.device).repeat_interleave(per_cam)
    ray_time = torch.arange(num, device=rays_o.device).repeat_interleave(h * w)
    centers = world.prims.centers_at(times)
    intrinsics = torch.tensor(
        np.stack([c.intrinsics for c in cameras]), dtype=torch.float32, device=rays_o.device
    )
    corners = raycast.bounding_corners(world.prims, centers)
    candidates = raycast.screen_candidates(corners, torch.linalg.inv(cam2world), intrinsics, (h, w), tile)
    hits = trace(world, centers, rays_o, rays_d, bundles, bundle_time, ray_time, MAX_CAMERA_DIST, candidates)
    sky = hits.material < 0
    mat = hits.material.clamp_min(0)
    rgb = shading.albedo(tables["texture"][mat], hits.color, hits.point, hits.local, hits.face, hits.half)
    rgb = shading.shade(rgb, hits.normal, rays_d, hits.t.nan_to_num(posinf=0.0), world.lighting)
    rgb = torch.where(sky[:, None], shading.sky(rays_d, world.lighting), rgb)
    noise = shading.hash01(
        *(torch.arange(len(rgb), device=rgb.device)[None] * torch.tensor([[1], [7], [13]], device=rgb.device))
    )
    rgb = (rgb * 255.0 + (noise[:, None] - 0.5) * 6.0).clamp(0, 255).round().to(torch.uint8)
    optical_axis = cam2world[:, :3, 2].repeat_interleave(h * w, 0)
    depth = torch.where(sky, torch.zeros_like(hits.t), hits.t * (rays_d * optical_axis).sum(-1))
    semantics = torch.where(sky, torch.full_like(mat, 255), tables["occ"][mat])
    lidarseg = torch.where(sky, torch.full_like(mat, 255), tables["lidarseg"][mat])
    shape = (num, h, w)
    return {
        "rgb": rgb.reshape(*shape, 3),
        "semantics": semantics.to(torch.uint8).reshape(shape),
        "lidarseg": lidarseg.to(torch.uint8).reshape(shape),
        "depth": depth.reshape(shape),
        "distance": hits.t.reshape(shape),
        "instance": hits.instance.reshape(shape),
    }


def lidar_directions(device: torch.device | str = "cpu") -> torch.Tensor:
    """Unit beam directions in the LIDAR_TOP frame [32, A, 3] (ring-major), azimuth measured from lidar +y."""
    elev = torch.deg2rad(torch.tensor(LIDAR_ELEVATIONS_DEG, dtype=torch.float32, device=device))[:, None]
    az = torch.arange(LIDAR_AZIMUTHS, device=device, dtype=torch.float32)[None] * (
        2 * math.pi / LIDAR_AZIMUTHS
    )
    return torch.stack(
        [
            torch.cos(elev) * torch.sin(az),
            torch.cos(elev) * torch.cos(az),
            torch.sin(elev).expand(-1, az.shape[1]),
        ],
        -1,
    )


def lidar_sweep(
    world: World, lidar2world: torch.Tensor, time: float, tables: dict[str, torch.Tensor], seed: int
) -> dict[str, torch.Tensor]:
    """One 360-degree sweep at `time` (s) from pose lidar2world [4, 4], motion-compensated to that instant
    as nuScenes sweeps are.

    Returns the returned points only: points [N, 3] in the lidar frame, world points [N, 3], intensity [N],
    ring [N] (long), lidarseg [N] (long), instance [N] (long), and rays_o / rays_d of all rays in the world.
    """
    device = lidar2world.device
    dirs = lidar_directions(device).reshape(-1, 3)
    rays_d = dirs @ lidar2world[:3, :3].T
    rays_o = lidar2world[:3, 3].expand_as(rays_d).contiguous()
    bundles = raycast.grid_bundles(len(LIDAR_ELEVATIONS_DEG), LIDAR_AZIMUTHS, (8, 32)).to(device)
    centers = world.prims.centers_at(torch.tensor([time], device=device))
    zeros = torch.zeros(bundles.shape[0], dtype=torch.long, device=device)
    hits = trace(
        world, centers, rays_o, rays_d, bundles, zeros, torch.zeros_like(rays_d[:, 0]).long(), MAX_LIDAR_DIST
    )
    keep = (hits.material >= 0).nonzero().squeeze(1)
    ring = torch.arange(len(LIDAR_ELEVATIONS_DEG), device=device).repeat_interleave(LIDAR_AZIMUTHS)[keep]
    mat = hits.material[keep]
    cos_inc = (hits.normal[keep] * rays_d[keep]).sum(-1).abs()
    jitter = shading.hash01(keep, torch.full_like(keep, seed), torch.full_like(keep, 17))
    intensity = (
        (tables["reflectivity"][mat] * (0.35 + 0.65 * cos_inc) * (0.85 + 0.3 * jitter)).clamp(0, 255).round()
    )
    t = hits.t[keep]
    points = dirs[keep] * t[:, None]
    return {
        "points": points,
        "world_points": hits.point[keep],
        "intensity": intensity,
        "ring": ring,
        "lidarseg": tables["lidarseg"][mat],
        "instance": hits.instance[keep],
        "rays_o": rays_o,
        "rays_d": rays_d,
        "t": hits.t,
    }
