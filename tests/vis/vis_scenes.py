"""Test scenes with known geometry and a tiny nuScenes-layout dataroot (tables, JPEGs, gts, predictions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from renderocc.core import FREE, VoxelGrid

GRID = VoxelGrid()
CAR, ROAD, PEDESTRIAN, VEGETATION = 4, 11, 7, 16
CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")


def box(sem: np.ndarray, lo: tuple[float, float, float], hi: tuple[float, float, float], cls: int) -> None:
    """Fill the voxels whose centres lie in the metric box [lo, hi) with class `cls`."""
    a = np.floor((np.array(lo) - GRID.lower) / GRID.voxel_size + 0.5).astype(int)
    b = np.floor((np.array(hi) - GRID.lower) / GRID.voxel_size + 0.5).astype(int)
    sem[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = cls


def street_scene(car_x: float = 10.0) -> np.ndarray:
    """A road (z in [-0.6, -0.2)), a car 4 m long straight ahead at car_x, a pedestrian to the right-front
    and a hedge on the left. uint8 [200, 200, 16]."""
    sem = np.full(GRID.shape, FREE, np.uint8)
    box(sem, (-40, -40, -0.6), (40, 40, -0.2), ROAD)
    box(sem, (car_x, -1.0, -0.2), (car_x + 4.0, 1.0, 1.4), CAR)
    box(sem, (12.0, -8.0, -0.2), (12.8, -7.2, 1.8), PEDESTRIAN)
    box(sem, (-20.0, 12.0, -0.2), (30.0, 14.0, 2.6), VEGETATION)
    return sem


def _jpeg(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 36), color).save(path, quality=95)


def write_dataroot(root: Path, frames: int = 3) -> Path:
    """One scene of `frames` keyframes in nuScenes layout: tables, one JPEG per camera, gts (mask_camera
    0 behind the ego), predictions (at root/preds: the GT with the car predicted as a truck). Sample
    tokens sort opposite to time, so that scene order can only come from the timestamps."""
    version = root / "v1.0-test"
    version.mkdir(parents=True)
    sensors = [{"token": f"sensor-{ch}", "channel": ch, "modality": "camera"} for ch in CHANNELS]
    calibs = [{"token": f"calib-{ch}", "sensor_token": f"sensor-{ch}"} for ch in CHANNELS]
    samples, sample_data = [], []
    (root / "preds").mkdir()
    for i in range(frames):
        token = f"tok{frames - i:02d}"
        samples.append({"token": token, "scene_token": "scene-a", "timestamp": 1_000_000 + 500_000 * i})
        for c, ch in enumerate(CHANNELS):
            filename = f"samples/{ch}/{token}_{ch}.jpg"
            _jpeg(root / filename, (40 * c, 200 - 30 * c, 120))
            sample_data.append(
                {
                    "token": f"sd-{token}-{ch}",
                    "sample_token": token,
                    "calibrated_sensor_token": f"calib-{ch}",
                    "filename": filename,
                    "is_key_frame": True,
                }
            )
        sem = street_scene(car_x=10.0 - 4.0 * i)  # the ego drives towards the car
        mask = np.ones(GRID.shape, np.uint8)
        mask[:100] = 0  # pretend no camera sees behind the ego (x < 0)
        gt_dir = root / "gts" / "scene-0042" / token
        gt_dir.mkdir(parents=True)
        np.savez_compressed(gt_dir / "labels.npz", semantics=sem, mask_lidar=mask, mask_camera=mask)
        pred = np.where(sem == CAR, 10, sem).astype(np.uint8)
        np.savez_compressed(root / "preds" / f"{token}.npz", semantics=pred)
    tables = {
        "scene.json": [{"token": "scene-a", "name": "scene-0042"}],
        "sample.json": samples,
        "sensor.json": sensors,
        "calibrated_sensor.json": calibs,
        "sample_data.json": sample_data,
    }
    for name, records in tables.items():
        (version / name).write_text(json.dumps(records))
    return root
