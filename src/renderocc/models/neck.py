"""FPN-style neck: fuses the stride-32 features into the stride-16 ones, `neck_channels` out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FPNNeck(nn.Module):
    """Lateral 1x1 projections, top-down upsample-and-add, then a 3x3 smoothing conv.

    forward: c4 [B, C4, h, w], c5 [B, C5, ceil(h/2), ceil(w/2)] -> [B, neck_channels, h, w].
    """

    def __init__(self, in_channels: tuple[int, int], out_channels: int) -> None:
        super().__init__()
        self.lateral4 = nn.Conv2d(in_channels[0], out_channels, 1)
        self.lateral5 = nn.Conv2d(in_channels[1], out_channels, 1)
        self.smooth = conv_bn_relu(out_channels, out_channels)

    def forward(self, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        # size= rather than scale_factor: odd stride-16 maps (e.g. 11 wide) give ceil-sized stride-32 maps.
        top = F.interpolate(self.lateral5(c5), size=c4.shape[-2:], mode="bilinear", align_corners=False)
        return self.smooth(self.lateral4(c4) + top)
