"""Helpers of the deployment tests: the preset they export, the tiny dataset's frames, read-out thresholds."""

from __future__ import annotations

import torch

from renderocc.config import get_preset

# the demo preset with the temporal stereo that the r50 and Swin-B presets have, so that the export covers it
PRESET = get_preset("demo").replace(model=dict(stereo=True))


def layer_medians(density: torch.Tensor) -> torch.Tensor:
    """Each z layer's median density [Z] of density [1, X, Y, Z], between two values (a threshold equal to a
    voxel's density would leave that voxel to rounding)."""
    return torch.quantile(density[0].flatten(0, 1), 0.5, dim=0, interpolation="midpoint")


def frames(prepared, split: str, preset=PRESET) -> list[dict]:
    """Every frame of a split of the prepared tiny dataset as a batch of one."""
    from renderocc.train_utils.data import eval_loader

    return list(eval_loader(prepared, preset.data, split, 1, 0, with_gts=False))
