"""Dataset statistics: voxels and LiDAR points per Occ3D class, printed as a table so skewed worlds show."""

from __future__ import annotations

import numpy as np

from renderocc.core.classes import LIDARSEG_TO_OCC3D, OCC3D_CLASSES


class SceneStats:
    """Running counts over keyframes: voxels per class (all / in mask_camera) and LiDAR points per class."""

    def __init__(self) -> None:
        self.voxels = np.zeros(len(OCC3D_CLASSES), np.int64)
        self.voxels_camera = np.zeros(len(OCC3D_CLASSES), np.int64)
        self.points = np.zeros(len(OCC3D_CLASSES), np.int64)
        self.keyframes = 0
        self.lidar_points = 0

    def update(self, semantics: np.ndarray, mask_camera: np.ndarray, lidarseg: np.ndarray) -> None:
        """semantics uint8 [X, Y, Z]; mask_camera uint8 [X, Y, Z]; lidarseg uint8 [N] (32-class index)."""
        n = len(OCC3D_CLASSES)
        self.voxels += np.bincount(semantics.ravel(), minlength=n)[:n]
        self.voxels_camera += np.bincount(semantics[mask_camera.astype(bool)], minlength=n)[:n]
        self.points += np.bincount(LIDARSEG_TO_OCC3D[lidarseg], minlength=n)[:n]
        self.keyframes += 1
        self.lidar_points += len(lidarseg)

    def merge(self, other: SceneStats) -> None:
        """Add another run's counts (a scene simulated in another process)."""
        self.voxels += other.voxels
        self.voxels_camera += other.voxels_camera
        self.points += other.points
        self.keyframes += other.keyframes
        self.lidar_points += other.lidar_points

    def table(self) -> str:
        lines = [
            f"{'class':<22}{'voxels':>12}{'in cam mask':>14}{'lidar pts':>12}",
            "-" * 60,
        ]
        for k, name in enumerate(OCC3D_CLASSES):
            lines.append(f"{name:<22}{self.voxels[k]:>12,}{self.voxels_camera[k]:>14,}{self.points[k]:>12,}")
        lines.append("-" * 60)
        per = max(self.keyframes, 1)
        lines.append(f"{self.keyframes} keyframes, {self.lidar_points / per:,.0f} lidar points per sweep")
        return "\n".join(lines)
