"""Differentiable volume rendering of occupancy grids along camera rays, and the losses it supervises."""

from renderocc.render.losses import (
    class_weights_from_counts,
    rendering_losses,
    silog_loss,
    transmittance_entropy,
)
from renderocc.render.output import RenderOutput
from renderocc.render.volume import volume_render
from renderocc.render.voxel_losses import pool_voxel_labels, voxel_losses

__all__ = [
    "RenderOutput",
    "class_weights_from_counts",
    "pool_voxel_labels",
    "rendering_losses",
    "silog_loss",
    "transmittance_entropy",
    "volume_render",
    "voxel_losses",
]
