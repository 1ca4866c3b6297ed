"""LSS view transformer: camera-aware depth distribution and context per pixel, lifted into the voxel grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import invert_pose
from renderocc.models.neck import conv_bn_relu
from renderocc.models.stereo import StereoDepthRefiner, plane_sweep_grid
from renderocc.models.voxel_pool import (
    depth_bin_centers,
    feature_pixel_rays,
    frustum_points,
    pool_index,
    voxel_pool,
)

CAMERA_PARAMS = 22  # fx, fy, cx, cy; image augmentation 2x3; cam2ego 3x4
# What a frame's pass as key frame leaves for the next frame's, which takes it as its history frame:
# neck features (for stereo), and the depth logits (before stereo) and context of its depth net.
HISTORY = ("features", "depth_logits", "context")


def camera_parameters(intrinsics: torch.Tensor, img_aug: torch.Tensor, cam2ego: torch.Tensor) -> torch.Tensor:
    """The vector the depth net is conditioned on. [..., 3, 3], [..., 3, 3], [..., 4, 4] -> [..., 22]."""
    focal_centre = torch.stack(
        [intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]], -1
    )
    return torch.cat([focal_centre, img_aug[..., :2, :].flatten(-2), cam2ego[..., :3, :].flatten(-2)], -1)


class DepthNet(nn.Module):
    """Depth logits and context features from neck features, gated by the camera parameters (as BEVDepth).

    forward: features [S, Cin, h, w], camera params [S, 22] -> depth logits [S, D, h, w],
    context [S, C, h, w].
    """

    def __init__(self, in_channels: int, mid_channels: int, context_channels: int, depth_bins: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(in_channels, mid_channels)
        self.camera_norm = nn.BatchNorm1d(CAMERA_PARAMS)
        self.depth_gate = nn.Sequential(
            nn.Linear(CAMERA_PARAMS, mid_channels),
            nn.ReLU(inplace=True),
            nn.Linear(mid_channels, mid_channels),
        )
        self.context_gate = nn.Sequential(
            nn.Linear(CAMERA_PARAMS, mid_channels),
            nn.ReLU(inplace=True),
            nn.Linear(mid_channels, mid_channels),
        )
        self.depth_head = nn.Sequential(
            conv_bn_relu(mid_channels, mid_channels), nn.Conv2d(mid_channels, depth_bins, 1)
        )
        self.context_head = nn.Sequential(
            conv_bn_relu(mid_channels, mid_channels), nn.Conv2d(mid_channels, context_channels, 1)
        )

    def forward(self, features: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(features)
        camera = self.camera_norm(camera.float()).to(x.dtype)
        depth = self.depth_head(x * torch.sigmoid(self.depth_gate(camera))[..., None, None])
        context = self.context_head(x * torch.sigmoid(self.context_gate(camera))[..., None, None])
        return depth, context


class ViewTransformer(nn.Module):
    """Per-frame depth + context, optional stereo refinement, and lifting into each frame's own ego grid.

    Frames after the key frame (index 0) run without gradients unless `prev_frame_grad` (as BEVDet4D:
    they only provide history). Stereo refines frame t with frame t + 1 (the one before it in time).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        voxel_channels: int,
        depth_bins: tuple[float, float, float],
        grid: VoxelGrid,
        image_size: tuple[int, int],
        stereo: bool,
        stereo_channels: int,
        prev_frame_grad: bool,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.depth_bins = depth_bins
        self.image_size = tuple(image_size)
        self.prev_frame_grad = prev_frame_grad
        self.register_buffer("depths", depth_bin_centers(depth_bins), persistent=False)
        self.depth_net = DepthNet(in_channels, mid_channels, voxel_channels, len(self.depths))
        self.stereo = (
            StereoDepthRefiner(in_channels, stereo_channels, len(self.depths), mid_channels)
            if stereo
            else None
        )

    def forward(
        self, features: torch.Tensor, batch: dict, history: dict[str, torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """features [B, T, N, Cin, h, w] -> T voxel feature volumes [B, Cv, X, Y, Z] (frame t in ego frame t,
        fp32, channels-last), key-frame depth logits [B, N, D, h, w], and the key frame's `HISTORY` entries.

        history: the last frame's `HISTORY` entries from its own pass as key frame; `features` then hold the
        key frame alone, and the history frame's depth net is not run again (it saw the same features and
        camera). Its volume is pooled from them, as it would be from recomputed ones.
        """
        B, Tf, N, _, h, w = features.shape
        T = Tf + (history is not None)
        intrinsics, img_aug, cam2ego = (
            batch["intrinsics"][:, :T],
            batch["img_aug"][:, :T],
            batch["cam2ego"][:, :T],
        )
        camera = camera_parameters(intrinsics, img_aug, cam2ego)  # [B, T, N, 22]
        points = frustum_points(intrinsics, img_aug, cam2ego, self.depths, self.image_size, (h, w))
        frames = [features[:, t].flatten(0, 1) for t in range(Tf)]  # [B*N, Cin, h, w] each
        if history is not None:
            frames.append(history["features"].flatten(0, 1))
        volumes, key_logits, key_history = [], None, {}
        for t in range(T):  # T is 1 or 2: frames differ only in whether they carry gradients
            with torch.set_grad_enabled(torch.is_grad_enabled() and (t == 0 or self.prev_frame_grad)):
                if t < Tf:
                    logits, context = self.depth_net(frames[t], camera[:, t].flatten(0, 1))
                else:
                    logits, context = history["depth_logits"].flatten(0, 1), history["context"].flatten(0, 1)
                if t == 0:  # as the next frame's history frame: its depth before stereo with its own history
                    key_history = {
                        "features": frames[0].view(B, N, *frames[0].shape[1:]),
                        "depth_logits": logits.view(B, N, -1, h, w),
                        "context": context.view(B, N, -1, h, w),
                    }
                if self.stereo is not None and t + 1 < T:
                    grid = self._sweep_grid(batch, t, (h, w))
                    logits = self.stereo(logits, frames[t], frames[t + 1], grid)
                logits = logits.view(B, N, -1, h, w)
                key_logits = logits if t == 0 else key_logits
                volumes.append(
                    voxel_pool(
                        logits.float().softmax(2),
                        context.view(B, N, -1, h, w),
                        pool_index(points[:, t], self.grid),
                        self.grid.shape,
                    )
                )
        return volumes, key_logits, key_history

    def _sweep_grid(self, batch: dict, t: int, feature_size: tuple[int, int]) -> torch.Tensor:
        """grid_sample coordinates [B*N, D, h, w, 2] of frame t's depth hypotheses in frame t + 1's images."""
        intrinsics, img_aug, cam2ego = (
            batch["intrinsics"].float(),
            batch["img_aug"].float(),
            batch["cam2ego"].float(),
        )
        ego2keyego = batch["ego2keyego"].float()
        # camera t -> ego t -> key ego -> ego t+1 -> camera t+1
        cam2keyego = ego2keyego[:, t, None] @ cam2ego[:, t]
        keyego2prevcam = invert_pose(cam2ego[:, t + 1]) @ invert_pose(ego2keyego[:, t + 1, None])
        cam2prevcam = (keyego2prevcam @ cam2keyego).flatten(0, 1)
        rays = feature_pixel_rays(intrinsics[:, t], img_aug[:, t], self.image_size, feature_size).flatten(
            0, 1
        )
        prev_proj = (img_aug[:, t + 1] @ intrinsics[:, t + 1]).flatten(0, 1)
        return plane_sweep_grid(rays, self.depths, cam2prevcam, prev_proj, self.image_size)

    def depth_loss(self, depth_logits: torch.Tensor, depth_map: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the depth distribution against the LiDAR depth bin, unweighted.

        depth_logits [B, N, D, h, w], depth_map [B, N, H, W] (z-depth, 0 = no label). Each feature cell
        takes the nearest LiDAR return inside it (min-pool over the stride) and its nearest bin; cells
        without a return or outside the bins are ignored. Returns a scalar (0 with a graph if none is left).
        """
        B, N, D, h, w = depth_logits.shape
        H, W = depth_map.shape[-2:]
        if H % h or W % w:
            raise ValueError(f"depth_map: size {H}x{W} is not a multiple of the feature size {h}x{w}")
        depth = torch.where(depth_map > 0, depth_map, torch.full_like(depth_map, float("inf"))).flatten(0, 1)
        nearest = -F.max_pool2d(-depth.unsqueeze(1), kernel_size=(H // h, W // w)).squeeze(1)  # [B*N, h, w]
        start, _, step = self.depth_bins
        target = torch.round((nearest - start) / step)
        valid = torch.isfinite(target) & (target >= 0) & (target < D)
        # a masked mean rather than indexing by `valid`, which would make the host wait for the GPU
        logits = depth_logits.flatten(0, 1).float()  # [B*N, D, h, w]
        labels = torch.where(valid, target, torch.zeros_like(target)).long()
        ce = F.cross_entropy(logits, labels, reduction="none")
        return torch.where(valid, ce, torch.zeros_like(ce)).sum() / valid.sum().clamp_min(1)
