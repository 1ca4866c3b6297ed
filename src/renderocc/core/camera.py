"""Pinhole cameras (x right, y down, z forward): projection, unprojection and pixel rays."""

from __future__ import annotations

import torch

# The nuScenes surround rig in the order every batch stacks its cameras ([..., N=6, ...]).
CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
)


def project(points_cam: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera points [..., N, 3] with K [..., 3, 3] -> pixels (u, v) [..., N, 2], z-depth [..., N].

    Points at or behind the camera get non-finite pixels; callers mask with depth > 0.
    """
    uvw = points_cam @ intrinsics.transpose(-1, -2)
    depth = uvw[..., 2]
    return uvw[..., :2] / depth.unsqueeze(-1), depth


def unproject(uv: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame points from pixels [..., N, 2] and z-depth [..., N] with K [..., 3, 3] -> [..., N, 3]."""
    ones = torch.ones_like(uv[..., :1])
    rays = torch.cat([uv, ones], -1) @ torch.linalg.inv(intrinsics).transpose(-1, -2)
    return rays * depth.unsqueeze(-1)


def pixel_rays(
    uv: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays through pixels in the ego frame.

    uv [..., N, 2], K [..., 3, 3], cam2ego [..., 4, 4] -> rays_o [..., N, 3], unit rays_d [..., N, 3], and
    `z_to_dist` [..., N], the factor turning a z-depth label into a distance along the unit ray.
    """
    dirs_cam = unproject(uv, torch.ones_like(uv[..., 0]), intrinsics)
    z_to_dist = dirs_cam.norm(dim=-1)
    rays_d = (dirs_cam / z_to_dist.unsqueeze(-1)) @ cam2ego[..., :3, :3].transpose(-1, -2)
    rays_o = cam2ego[..., None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d, z_to_dist
