"""Optional 3D supervision (the "2D+3D" and "3D only" settings): free/occupied and semantic voxel losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from renderocc.config import LossConfig
from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid


def pool_voxel_labels(
    voxel_semantics: torch.Tensor, mask_camera: torch.Tensor, label_grid: VoxelGrid, grid: VoxelGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Occ3D labels on `label_grid` pooled to the (equal or coarser) model `grid`.

    voxel_semantics uint8 [B, X', Y', Z'] (0..16 classes, 17 free), mask_camera bool [B, X', Y', Z'] ->
    (labels int64 [B, X, Y, Z], observed bool [B, X, Y, Z]). Each model voxel covers f^3 label voxels
    (f = grid.voxel_size / label_grid.voxel_size, an integer; same box). Only camera-observed label voxels
    vote. A model voxel is observed if any of its label voxels is, occupied if any observed one is
    occupied (so one-voxel-thick ground and poles survive pooling), and then takes the most frequent
    occupied class; otherwise it is free.
    """
    if label_grid.lower != grid.lower or label_grid.upper != grid.upper:
        raise ValueError(
            f"voxel losses: label grid box {label_grid.lower}..{label_grid.upper} differs from the "
            f"model grid box {grid.lower}..{grid.upper}; use grids over the same box"
        )
    ratio = grid.voxel_size / label_grid.voxel_size
    f = round(ratio)
    if f < 1 or abs(ratio - f) > 1e-6:
        raise ValueError(
            f"voxel losses: model voxel_size {grid.voxel_size} is not a whole multiple of the label "
            f"voxel_size {label_grid.voxel_size}"
        )
    b = voxel_semantics.shape[0]
    if tuple(voxel_semantics.shape[1:]) != label_grid.shape or voxel_semantics.shape != mask_camera.shape:
        raise ValueError(
            f"voxel losses: voxel_semantics {list(voxel_semantics.shape)} and mask_camera "
            f"{list(mask_camera.shape)} must both be [B, {', '.join(map(str, label_grid.shape))}]"
        )
    x, y, z = grid.shape
    # Class histogram per model voxel by one scatter-add over (model voxel, class) keys of observed voxels.
    coarse = torch.arange(x * y * z, device=voxel_semantics.device).view(x, 1, y, 1, z, 1)
    coarse = coarse.expand(x, f, y, f, z, f).reshape(x * f, y * f, z * f)  # each model voxel's f^3 labels
    batch = torch.arange(b, device=voxel_semantics.device).view(b, 1, 1, 1) * (x * y * z)
    key = (batch + coarse) * (FREE + 1) + voxel_semantics.long().clamp(0, FREE)
    # unobserved voxels add 0: a fixed-size sum, where indexing by the mask would make the host wait
    counts = torch.zeros(b * x * y * z * (FREE + 1), device=key.device, dtype=torch.int32)
    counts = counts.index_add_(0, key.flatten(), mask_camera.flatten().to(torch.int32))
    counts = counts.view(b, x, y, z, FREE + 1)
    observed = counts.sum(-1) > 0
    occupied_counts = counts[..., :FREE]
    free = torch.full_like(observed, FREE, dtype=torch.long)
    labels = torch.where(occupied_counts.sum(-1) > 0, occupied_counts.argmax(-1), free)
    return labels, observed


def voxel_losses(
    density: torch.Tensor,
    semantics: torch.Tensor,
    voxel_semantics: torch.Tensor,
    mask_camera: torch.Tensor,
    grid: VoxelGrid,
    cfg: LossConfig,
    label_grid: VoxelGrid | None = None,
    class_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """3D losses on camera-visible voxels, already weighted by cfg.

    density [B, X, Y, Z] (network output), semantics [B, X, Y, Z, C] logits on `grid`; labels on
    `label_grid` (default: the Occ3D grid), pooled by `pool_voxel_labels`. "occupancy_3d": binary
    cross-entropy with logit density - cfg.occupancy_threshold, so its decision boundary is the
    inference rule (occupied where density > threshold). "semantic_3d": cross-entropy of the logits on
    occupied voxels (optional class_weights [C]). Terms with weight 0 are left out.
    """
    labels, observed = pool_voxel_labels(voxel_semantics, mask_camera.bool(), label_grid or VoxelGrid(), grid)
    if labels.shape != density.shape:
        raise ValueError(
            f"voxel losses: density {list(density.shape)} is not on the model grid {list(labels.shape)}"
        )
    # masked means over all voxels rather than indexing by the masks: no host wait, so a step with 3D
    # supervision replays as a CUDA graph too; an empty mask gives 0 (with a graph)
    losses: dict[str, torch.Tensor] = {}
    if cfg.occupancy_3d:
        occupied = (labels != FREE).to(density.dtype)
        bce = F.binary_cross_entropy_with_logits(
            density - cfg.occupancy_threshold, occupied, reduction="none"
        )
        bce = (bce * observed).sum() / observed.sum().clamp_min(1)
        losses["occupancy_3d"] = cfg.occupancy_3d * bce
    if cfg.semantic_3d:
        target = observed & (labels != FREE)
        classes = semantics.shape[-1]
        weight = None if class_weights is None else class_weights.to(semantics.device, semantics.dtype)
        labels = labels.clamp(max=classes - 1)  # free voxels: any class, masked out below
        ce = F.cross_entropy(semantics.flatten(0, -2), labels.flatten(), weight=weight, reduction="none")
        # cross_entropy's mean with class weights divides by the summed weights of the targets
        norm = target.flatten() if weight is None else target.flatten() * weight[labels.flatten()]
        ce = (ce * target.flatten()).sum() / norm.sum().clamp_min(1e-12)
        losses["semantic_3d"] = cfg.semantic_3d * ce
    return losses
