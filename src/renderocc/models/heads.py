"""Per-voxel heads (density, semantic logits) and the occupancy read-out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from renderocc.core.classes import FREE


class VoxelHeads(nn.Module):
    """Two per-voxel MLPs on channel-last features.

    forward: features [B, C, X, Y, Z] -> density [B, X, Y, Z] (>= 0, softplus), semantics [B, X, Y, Z, K]
    (channel-last contiguous, so the renderer gathers all logits of a voxel from one place).
    """

    def __init__(
        self, in_channels: int, hidden: int, num_classes: int, density_init: float | None = None
    ) -> None:
        super().__init__()
        self.density = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.Softplus(), nn.Linear(hidden, 1), nn.Softplus()
        )
        if density_init is not None:
            if density_init <= 0:
                raise ValueError(f"model.density_init must be > 0 (a softplus output), got {density_init}")
            # inverse softplus, so the head starts out near density_init wherever the features are
            nn.init.constant_(self.density[2].bias, density_init + math.log(-math.expm1(-density_init)))
        self.semantics = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.Softplus(), nn.Linear(hidden, num_classes)
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.permute(0, 2, 3, 4, 1)
        return self.density(x).squeeze(-1).contiguous(), self.semantics(x).contiguous()


def occupancy_readout(
    density: torch.Tensor, semantics: torch.Tensor, threshold: float | Sequence[float] | torch.Tensor = 8.5
) -> torch.Tensor:
    """Occ3D labels: argmax class where density > threshold, else free (17).

    density [B, X, Y, Z], semantics [B, X, Y, Z, K] -> uint8 [B, X, Y, Z]. threshold: one number, or one per
    height layer [Z].
    """
    labels = semantics.argmax(-1).to(torch.uint8)
    if not isinstance(threshold, int | float):  # one per layer; a number needs no host-to-device copy
        threshold = torch.as_tensor(threshold, dtype=density.dtype, device=density.device)
    return torch.where(density > threshold, labels, torch.full_like(labels, FREE))
