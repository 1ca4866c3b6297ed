"""Temporal stereo: a cost volume between key and previous-frame features along the depth hypotheses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from renderocc.models.neck import conv_bn_relu


def plane_sweep_grid(
    rays: torch.Tensor,
    depths: torch.Tensor,
    key2prev: torch.Tensor,
    prev_pixel_proj: torch.Tensor,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Where each (depth hypothesis, key feature cell) appears in the previous image, as grid_sample coords.

    rays [S, h, w, 3] (key camera, unit z), depths [D], key2prev [S, 4, 4] (key camera -> previous camera),
    prev_pixel_proj [S, 3, 3] (augmented intrinsics of the previous camera) -> grid [S, D, h, w, 2] in [-1, 1]
    (align_corners=False over the image extent, which is also the feature extent); points behind the
    previous camera go to -2 so that zero padding drops them.
    """
    H, W = image_size
    rays_prev = torch.einsum("sij,shwj->shwi", key2prev[:, :3, :3], rays)  # rotation part, per unit depth
    points = depths.view(1, -1, 1, 1, 1) * rays_prev.unsqueeze(1) + key2prev[:, None, None, None, :3, 3]
    uvw = torch.einsum("sij,sdhwj->sdhwi", prev_pixel_proj, points)
    z = uvw[..., 2:3]
    uv = uvw[..., :2] / z.clamp(min=1e-3)
    grid = torch.cat([uv[..., :1] * (2 / W), uv[..., 1:] * (2 / H)], -1) - 1  # no host-to-device copy
    return torch.where(z > 1e-3, grid, torch.full_like(grid, -2.0))


class StereoDepthRefiner(nn.Module):
    """Refines depth logits with a correlation cost volume against the previous frame.

    The previous frame's features are sampled where each depth hypothesis of a key pixel projects
    (homography through the relative pose), correlated with the key feature, and a small conv net maps
    (logits, cost) to a residual on the logits. Its last layer starts at zero: no stereo, no change.
    """

    def __init__(self, in_channels: int, stereo_channels: int, depth_bins: int, hidden: int) -> None:
        super().__init__()
        self.project = nn.Sequential(
            conv_bn_relu(in_channels, stereo_channels), nn.Conv2d(stereo_channels, stereo_channels, 1)
        )
        self.refine = nn.Sequential(
            conv_bn_relu(2 * depth_bins, hidden), nn.Conv2d(hidden, depth_bins, 3, padding=1)
        )
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def cost_volume(
        self, key_features: torch.Tensor, prev_features: torch.Tensor, grid: torch.Tensor
    ) -> torch.Tensor:
        """key/prev features [S, Cin, h, w], grid [S, D, h, w, 2] -> mean correlation [S, D, h, w]."""
        key = F.normalize(self.project(key_features), dim=1)
        prev = F.normalize(self.project(prev_features), dim=1)
        S, D, h, w, _ = grid.shape
        sampled = F.grid_sample(prev, grid.view(S, D * h, w, 2).to(prev.dtype), align_corners=False)
        return (sampled.view(S, -1, D, h, w) * key.unsqueeze(2)).sum(1)

    def forward(
        self,
        depth_logits: torch.Tensor,
        key_features: torch.Tensor,
        prev_features: torch.Tensor,
        grid: torch.Tensor,
    ) -> torch.Tensor:
        """depth_logits [S, D, h, w] -> refined [S, D, h, w]."""
        cost = self.cost_volume(key_features, prev_features, grid)
        return depth_logits + self.refine(torch.cat([depth_logits, cost.to(depth_logits.dtype)], 1))
