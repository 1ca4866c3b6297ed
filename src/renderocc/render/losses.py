"""Losses on rendered rays: SILog depth, class-weighted semantic cross-entropy, and the regularisers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from renderocc.config import LossConfig
from renderocc.data.batch import Batch
from renderocc.render.output import RenderOutput


def class_weights_from_counts(counts: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Class weights 1 / log(count) from per-class pixel counts (raw counts, not fractions).

    counts [C] -> float32 [C]. Rare classes get larger weights, but only logarithmically. Counts below e
    (absent classes) are clamped to e, i.e. weight 1, so the weights stay finite and positive.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(
            f"class_weights_from_counts: counts must be a 1-D per-class vector, got {list(counts.shape)}"
        )
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("class_weights_from_counts: counts must be finite and non-negative pixel counts")
    return (1.0 / torch.log(counts.clamp_min(math.e))).float()


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    variance_focus: float = 0.85,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Scale-invariant log depth loss sqrt(mean(d^2) - lambda mean(d)^2), d = log(pred + eps) - log(target).

    pred, target [...] metric depths, mask [...] bool (None: all) selects the labelled ones; 0 if none.
    eps keeps the gradient finite for rays that have not become opaque yet (rendered depth near 0); it is
    1 mm, negligible against real depths. Masking instead of indexing keeps the GPU free of host syncs.
    """
    if mask is None:
        mask = torch.ones_like(pred, dtype=torch.bool)
    d = torch.where(mask, torch.log(pred + eps) - torch.log(target.clamp_min(eps)), torch.zeros_like(pred))
    count = mask.sum()
    mean = d.sum() / count.clamp_min(1)
    mean_sq = d.square().sum() / count.clamp_min(1)
    return torch.sqrt((mean_sq - variance_focus * mean.square()).clamp_min(1e-12)) * (count > 0)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values [...] over mask [...] (0 if empty), without boolean indexing."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


def transmittance_entropy(opacity: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Binary entropy of the transmittance left after the last sample, T = 1 - opacity; [N] -> [N].

    Pushes every ray to end either fully opaque or fully transparent.
    """
    t = (1.0 - opacity).clamp(eps, 1.0 - eps)
    return -(t * torch.log(t) + (1.0 - t) * torch.log1p(-t))


def free_space_prior(density: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean over all voxels of softplus(density - threshold), density [B, X, Y, Z].

    2D labels only constrain voxels that labelled rays cross; the rest (above the scene, where the sky has no
    LiDAR label) would keep whatever density the network extrapolates, and read out as occupied above the
    threshold. This prior pulls every voxel below the read-out threshold (free) unless rays hold it up.
    """
    return F.softplus(density.float() - threshold).mean()


def rendering_losses(
    out: RenderOutput, batch: Batch, cfg: LossConfig, class_weights: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Weighted rendering losses over the valid rays of a batch.

    out: `volume_render` of batch["rays_o"], batch["rays_d"]; batch needs ray_depth [B, R], ray_class
    [B, R] (0..C-1) and ray_valid [B, R]; class_weights [C] (see `class_weights_from_counts`, None =
    uniform). Returns scalars already multiplied by their cfg weight, keyed "depth", "semantic",
    "entropy", "distortion"; a term whose weight is 0 is left out. Rays with ray_depth <= 0 carry no
    depth label and only enter the other terms. The semantic term is the class-weighted mean, as
    F.cross_entropy with weights. Nothing here waits for the GPU.
    """
    valid = batch["ray_valid"].bool()
    if valid.shape != out.depth.shape:
        raise ValueError(
            f"rendering_losses: batch['ray_valid'] {list(valid.shape)} does not match the rendered "
            f"rays {list(out.depth.shape)}"
        )
    ray_depth = batch["ray_depth"].to(out.depth.dtype)
    ray_class = batch["ray_class"].long()
    losses: dict[str, torch.Tensor] = {}
    if cfg.depth:
        has_depth = valid & (ray_depth > 0)
        losses["depth"] = cfg.depth * silog_loss(out.depth, ray_depth, has_depth, cfg.silog_variance_focus)
    if cfg.semantic:
        num_classes = out.semantics.shape[-1]
        labels = torch.where(valid, ray_class, torch.full_like(ray_class, -100))
        if not labels.is_cuda and ((labels >= num_classes) | (valid & (labels < 0))).any():
            raise ValueError(
                f"rendering_losses: batch['ray_class'] must lie in 0..{num_classes - 1} on valid rays"
            )
        weight = class_weights
        if weight is None:
            weight = torch.ones(num_classes, device=out.semantics.device)
        weight = weight.to(out.semantics.device, out.semantics.dtype)
        ce = F.cross_entropy(out.semantics.flatten(0, 1), labels.flatten(), weight=weight, reduction="none")
        norm = torch.where(valid, weight[labels.clamp_min(0)], torch.zeros_like(out.depth)).sum()
        losses["semantic"] = cfg.semantic * ce.sum() / norm.clamp_min(1e-12)
    if cfg.entropy:
        losses["entropy"] = cfg.entropy * _masked_mean(transmittance_entropy(out.opacity), valid)
    if cfg.distortion:
        losses["distortion"] = cfg.distortion * _masked_mean(out.distortion, valid)
    return losses
