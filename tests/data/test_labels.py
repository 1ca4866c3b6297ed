"""Projection of LiDAR points into 2D labels: nearest point per pixel, behind and border points dropped."""

import numpy as np

from renderocc.data.labels import project_to_cameras


def test_projection_keeps_nearest_and_drops_border_and_behind() -> None:
    K = np.array([[[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]]])
    lidar2cam = np.eye(4)[None]
    points = np.array(
        [
            [0.0, 0.0, 10.0],  # pixel (50, 40)
            [0.0, 0.0, 5.0],  # same pixel, nearer: kept instead
            [0.105, 0.2, 5.0],  # pixel (52.1, 44) -> (52, 44)
            [0.0, 0.0, -5.0],  # behind the camera
            [-0.495, 0.0, 1.0],  # u = 0.5: within 1 px of the border
            [0.492, 0.0, 1.0],  # u = 99.2: within 1 px of the right border (width 100)
        ],
        dtype=np.float32,
    )
    cls = np.array([11, 4, 15, 1, 2, 3], dtype=np.uint8)
    labels = project_to_cameras(points, cls, lidar2cam, K, np.array([[80, 100]]))
    order = np.argsort(labels.u)
    assert labels.u[order].tolist() == [50, 52] and labels.v[order].tolist() == [40, 44]
    assert labels.cls[order].tolist() == [4, 15]
    np.testing.assert_allclose(labels.depth[order].astype(np.float32), [5.0, 5.0], rtol=1e-3)
    assert labels.u.dtype == np.uint16 and labels.depth.dtype == np.float16 and labels.cls.dtype == np.uint8
    assert labels.cam_start.tolist() == [0, 2]
