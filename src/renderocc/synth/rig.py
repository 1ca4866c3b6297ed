"""The nuScenes sensor rig: six cameras and the roof LiDAR, with intrinsics for any image size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# (channel, yaw of the optical axis in the ego frame [deg], horizontal FOV [deg], sensor2ego translation [m]).
# Yaws and mounting positions follow the nuScenes rig; FOVs are the rounded values of the brief.
_CAMERAS = (
    ("CAM_FRONT_LEFT", 55.0, 70.0, (1.52, 0.49, 1.51)),
    ("CAM_FRONT", 0.0, 70.0, (1.70, 0.02, 1.51)),
    ("CAM_FRONT_RIGHT", -55.0, 70.0, (1.55, -0.49, 1.50)),
    ("CAM_BACK_RIGHT", -110.0, 70.0, (1.03, -0.48, 1.56)),
    ("CAM_BACK", 180.0, 110.0, (0.03, 0.00, 1.51)),
    ("CAM_BACK_LEFT", 110.0, 70.0, (1.04, 0.48, 1.56)),
)
CAMERA_NAMES: tuple[str, ...] = tuple(c[0] for c in _CAMERAS)

# Cameras fire when the spinning LiDAR sweeps past them, a few ms after the LiDAR timestamp (nuScenes).
CAMERA_DELAYS_US: tuple[int, ...] = (8_000, 12_000, 17_000, 30_000, 38_000, 45_000)

LIDAR_NAME = "LIDAR_TOP"
# LIDAR_TOP as in nuScenes: on the roof, x right, y forward, z up (a -90 deg yaw from the ego frame).
LIDAR_TRANSLATION = (0.943, 0.0, 1.84)


@dataclass(frozen=True)
class Camera:
    """One pinhole camera: `intrinsics` [3, 3] for (H, W) `image_size`, `sensor2ego` [4, 4] (x right, y down,
    z forward in the camera frame)."""

    name: str
    image_size: tuple[int, int]
    intrinsics: np.ndarray
    sensor2ego: np.ndarray
    hfov_deg: float


def camera_rotation(yaw_deg: float) -> np.ndarray:
    """Camera-to-ego rotation [3, 3] of a level camera whose optical axis points at `yaw_deg`."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return np.stack([right, down, forward], axis=1)


def intrinsics_for(image_size: tuple[int, int], hfov_deg: float) -> np.ndarray:
    """Pinhole K [3, 3]: square pixels, principal point at the image centre, the given horizontal FOV."""
    h, w = image_size
    f = (w / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def nuscenes_rig(image_size: tuple[int, int] = (450, 800)) -> list[Camera]:
    """The six nuScenes cameras in nuScenes order, for images of (H, W) = `image_size`."""
    h, w = image_size
    if h < 8 or w < 8:
        raise ValueError(
            f"image size {h}x{w} is too small; use at least 8x8 pixels (e.g. --image-size 450 800)"
        )
    cameras = []
    for name, yaw, hfov, translation in _CAMERAS:
        sensor2ego = np.eye(4)
        sensor2ego[:3, :3] = camera_rotation(yaw)
        sensor2ego[:3, 3] = translation
        cameras.append(Camera(name, (h, w), intrinsics_for((h, w), hfov), sensor2ego, hfov))
    return cameras


def lidar_sensor2ego() -> np.ndarray:
    """LIDAR_TOP sensor2ego [4, 4]: lidar x = ego -y (right), lidar y = ego x (forward), z up."""
    pose = np.eye(4)
    pose[:3, :3] = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    pose[:3, 3] = LIDAR_TRANSLATION
    return pose
