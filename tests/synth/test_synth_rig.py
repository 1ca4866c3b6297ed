"""The nuScenes-like sensor rig: FOVs, optical axes and the LiDAR mounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from renderocc.synth.rig import CAMERA_NAMES, lidar_sensor2ego, nuscenes_rig


def test_camera_fovs_and_axes():
    cams = nuscenes_rig((450, 800))
    assert [c.name for c in cams] == list(CAMERA_NAMES)
    for cam in cams:
        K, R = cam.intrinsics, cam.sensor2ego[:3, :3]
        hfov = 2 * math.degrees(math.atan(K[0, 2] / K[0, 0]))
        assert hfov == pytest.approx(110.0 if cam.name == "CAM_BACK" else 70.0)
        assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
        assert np.allclose(R[:, 1], [0, 0, -1])  # image y points down
        assert 1.4 < cam.sensor2ego[2, 3] < 1.7
    front = {c.name: c.sensor2ego[:3, 2] for c in cams}
    assert np.allclose(front["CAM_FRONT"], [1, 0, 0]) and np.allclose(
        front["CAM_BACK"], [-1, 0, 0], atol=1e-9
    )
    assert front["CAM_FRONT_LEFT"][1] > 0 and front["CAM_FRONT_RIGHT"][1] < 0


def test_lidar_axes_and_small_images():
    pose = lidar_sensor2ego()
    assert np.allclose(pose[:3, 0], [0, -1, 0]) and np.allclose(pose[:3, 1], [1, 0, 0])  # x right, y forward
    assert nuscenes_rig((90, 160))[1].intrinsics[0, 2] == 80.0
    with pytest.raises(ValueError, match="too small"):
        nuscenes_rig((4, 4))
