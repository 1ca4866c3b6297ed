"""Occ3D mIoU: an 18x18 confusion matrix over camera-visible voxels, per-class IoU and their mean."""

from __future__ import annotations

import math

import torch

from renderocc.core.classes import FREE, OCC3D_CLASSES
from renderocc.core.grid import VoxelGrid

NUM_CLASSES = len(OCC3D_CLASSES)  # 18: the 17 semantic classes and free


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Counts of (gt, pred) label pairs over the voxels where `mask` is set.

    pred, gt: integer labels 0..17 [..., X, Y, Z]; mask: bool (or 0/1) of the same shape.
    Returns int64 [18, 18], rows = ground truth, columns = prediction.
    """
    if pred.shape != gt.shape or mask.shape != gt.shape:
        raise ValueError(
            f"confusion_matrix: pred {tuple(pred.shape)}, gt {tuple(gt.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape; resample the prediction to the label grid"
        )
    keep = mask.bool()
    pairs = gt[keep].long() * NUM_CLASSES + pred[keep].long()
    return torch.bincount(pairs, minlength=NUM_CLASSES**2).view(NUM_CLASSES, NUM_CLASSES)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU = TP / (TP + FP + FN) per class from a [18, 18] confusion matrix -> float64 [18].

    A class with neither ground truth nor prediction among the counted voxels has no IoU (NaN).
    """
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def mean_iou(confusion: torch.Tensor) -> float:
    """mIoU in percent: mean IoU over classes 0..16 (free excluded; it still enters as FP / FN).

    Classes with no IoU (absent from both ground truth and prediction) are left out of the mean, as the
    Occ3D evaluation does (nanmean); with no defined class at all the result is NaN.
    """
    ious = iou_per_class(confusion)[:FREE]
    defined = ious[~ious.isnan()]
    return float(defined.mean() * 100) if len(defined) else math.nan


def resample_labels(labels: torch.Tensor, src: VoxelGrid, dst: VoxelGrid) -> torch.Tensor:
    """Nearest-neighbour resampling of a label grid onto another grid of the same frame.

    labels [..., *src.shape] -> [..., *dst.shape]: each dst voxel takes the label of the src voxel that
    contains its centre, and FREE where that centre lies outside the src box. Used to score a model
    whose grid is coarser than the labels' (the demo's 0.8 m voxels against Occ3D's 0.4 m).
    """
    if tuple(labels.shape[-3:]) != src.shape:
        raise ValueError(
            f"resample_labels: labels end in {tuple(labels.shape[-3:])}, src grid is {src.shape}"
        )
    if src == dst:
        return labels
    centers = dst.voxel_centers(labels.device)  # [X', Y', Z', 3]
    index = src.points_to_index(centers)
    inside = src.contains(centers)
    i, j, k = (index[..., axis].clamp(0, n - 1) for axis, n in enumerate(src.shape))  # no host-to-device copy
    out = labels[..., i, j, k]
    return torch.where(inside, out, torch.full_like(out, FREE))


def format_table(per_class_iou: dict[str, float], title: str = "IoU") -> str:
    """A fixed-width per-class table (percent), one class per line."""
    width = max(len(name) for name in per_class_iou)
    lines = [f"{'class':<{width}}  {title:>7}"]
    lines += [f"{name:<{width}}  {iou:7.2f}" for name, iou in per_class_iou.items()]
    return "\n".join(lines)


class MIoUMeter:
    """Accumulates the Occ3D confusion matrix over frames; `all_reduce` sums it across processes."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask_camera: torch.Tensor) -> None:
        """pred, gt [B, X, Y, Z] labels 0..17 on the label grid; mask_camera [B, X, Y, Z]."""
        self.confusion += confusion_matrix(pred, gt, mask_camera).to(self.confusion.device)

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion)

    def compute(self) -> dict:
        """{"miou": percent, "per_class_iou": {class name: percent}} for classes 0..16."""
        ious = iou_per_class(self.confusion.cpu())[:FREE] * 100
        return {
            "miou": mean_iou(self.confusion.cpu()),
            "per_class_iou": {name: float(iou) for name, iou in zip(OCC3D_CLASSES[:FREE], ious)},
        }
