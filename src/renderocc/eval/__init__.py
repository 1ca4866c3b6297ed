"""Occ3D evaluation: voxel mIoU over the camera mask and the ray-based RayIoU, of a model or of files."""

from renderocc.eval.miou import MIoUMeter, confusion_matrix, iou_per_class, mean_iou, resample_labels
from renderocc.eval.rayiou import RayIoUMeter, first_hits, lidar_ray_directions

__all__ = [
    "MIoUMeter",
    "RayIoUMeter",
    "confusion_matrix",
    "first_hits",
    "iou_per_class",
    "lidar_ray_directions",
    "mean_iou",
    "resample_labels",
]
