"""nuScenes v1.0 table records (JSON rows the official devkit loads) for the synthetic dataset."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from renderocc.core.classes import LIDARSEG_CLASSES
from renderocc.core.transforms import matrix_to_quaternion
from renderocc.synth.rig import LIDAR_NAME, Camera
from renderocc.synth.world import World

ATTRIBUTES = (
    "vehicle.moving",
    "vehicle.stopped",
    "vehicle.parked",
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "pedestrian.moving",
)
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))
TABLE_NAMES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
    "lidarseg",
)


def token(*parts: object) -> str:
    """A deterministic 32-hex-digit token (nuScenes tokens have this form) from any key."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def pose_record(pose: np.ndarray) -> tuple[list[float], list[float]]:
    """(rotation (w, x, y, z), translation) lists of a 4x4 pose."""
    return matrix_to_quaternion(pose[:3, :3]).tolist(), pose[:3, 3].tolist()


class Tables:
    """Accumulates the rows of every table and writes them as <root>/<version>/<table>.json."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rows: dict[str, list[dict]] = {name: [] for name in TABLE_NAMES}
        self.rows["category"] = [
            {
                "token": token(seed, "category", name),
                "name": name,
                "description": f"nuScenes-lidarseg {name}",
                "index": index,
            }
            for index, name in enumerate(LIDARSEG_CLASSES)
        ]
        self.rows["attribute"] = [
            {"token": token(seed, "attribute", name), "name": name, "description": name}
            for name in ATTRIBUTES
        ]
        self.rows["visibility"] = [
            {"token": tok, "level": level, "description": f"visibility of whole object is {level[1:]}%"}
            for tok, level in VISIBILITY
        ]

    def category_token(self, name: str) -> str:
        return token(self.seed, "category", name)

    def attribute_token(self, name: str) -> str:
        return token(self.seed, "attribute", name)

    def add(self, table: str, row: dict) -> dict:
        self.rows[table].append(row)
        return row

    def link(self, table: str, rows: list[dict]) -> None:
        """Fill prev/next of consecutive rows (one sensor's sample_data, one scene's samples, one track)."""
        for a, b in zip(rows[:-1], rows[1:]):
            a["next"], b["prev"] = b["token"], a["token"]

    def write(self, root: Path, version: str) -> None:
        folder = root / version
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.rows.items():
            with open(folder / f"{name}.json", "w") as f:
                json.dump(rows, f, indent=0)


def add_log_and_calibration(
    tables: Tables, seed: int, index: int, log_token: str, cameras: list[Camera], lidar2ego: np.ndarray
) -> dict[str, dict]:
    """The log row of scene `index` and a calibrated_sensor row per sensor; returns the rows by channel."""
    tables.add(
        "log",
        {
            "token": log_token,
            "logfile": f"synthetic-{seed}-{index:04d}",
            "vehicle": "synthetic-ego",
            "date_captured": "2026-01-01",
            "location": "synthetic-city",
        },
    )
    calib = {}
    for cam in cameras:
        rot, trans = pose_record(cam.sensor2ego)
        calib[cam.name] = tables.add(
            "calibrated_sensor",
            {
                "token": token(seed, "calib", index, cam.name),
                "sensor_token": token(seed, "sensor", cam.name),
                "translation": trans,
                "rotation": rot,
                "camera_intrinsic": cam.intrinsics.tolist(),
            },
        )
    rot, trans = pose_record(lidar2ego)
    calib[LIDAR_NAME] = tables.add(
        "calibrated_sensor",
        {
            "token": token(seed, "calib", index, LIDAR_NAME),
            "sensor_token": token(seed, "sensor", LIDAR_NAME),
            "translation": trans,
            "rotation": rot,
            "camera_intrinsic": [],
        },
    )
    return calib


def add_sample_data(
    tables: Tables,
    seed: int,
    index: int,
    k: int,
    channel: str,
    sample_token: str,
    timestamp: int,
    ego2world: np.ndarray,
    world: World,
    calib_token: str,
    scene_name: str,
    fileformat: str,
    height: int,
    width: int,
) -> dict:
    """A keyframe sample_data row of `channel` with its own ego_pose row (ego2world [4, 4] at `timestamp`)."""
    sd_token = token(seed, "sample_data", index, k, channel)
    rot, trans = pose_record(world.world2global @ ego2world)
    tables.add("ego_pose", {"token": sd_token, "timestamp": timestamp, "rotation": rot, "translation": trans})
    ext = "jpg" if fileformat == "jpg" else "pcd.bin"
    return tables.add(
        "sample_data",
        {
            "token": sd_token,
            "sample_token": sample_token,
            "ego_pose_token": sd_token,
            "calibrated_sensor_token": calib_token,
            "timestamp": timestamp,
            "fileformat": fileformat,
            "is_key_frame": True,
            "height": height,
            "width": width,
            "filename": f"samples/{channel}/{scene_name}__{channel}__{timestamp}.{ext}",
            "prev": "",
            "next": "",
        },
    )


def add_annotations(
    tables: Tables,
    seed: int,
    world: World,
    sample_token: str,
    time: float,
    point_instance: np.ndarray,
    tracks: dict[int, list[dict]],
) -> None:
    """sample_annotation rows for the instances hit by at least one LiDAR point of this keyframe."""
    counts = np.bincount(point_instance[point_instance >= 0], minlength=len(world.instances))
    for inst in np.nonzero(counts)[0].tolist():
        obj = world.instances[inst]
        center = np.asarray(obj.center) + time * np.asarray(obj.velocity)
        box = np.eye(4)
        box[:3, :3] = np.array(
            [[math.cos(obj.yaw), -math.sin(obj.yaw), 0], [math.sin(obj.yaw), math.cos(obj.yaw), 0], [0, 0, 1]]
        )
        box[:3, 3] = center
        rot, trans = pose_record(world.world2global @ box)
        row = tables.add(
            "sample_annotation",
            {
                "token": token(seed, "ann", sample_token, inst),
                "sample_token": sample_token,
                "instance_token": "",
                "visibility_token": "4",
                "attribute_tokens": [tables.attribute_token(obj.attribute)] if obj.attribute else [],
                "translation": trans,
                "size": list(obj.size),
                "rotation": rot,
                "prev": "",
                "next": "",
                "num_lidar_pts": int(counts[inst]),
                "num_radar_pts": 0,
            },
        )
        tracks.setdefault(inst, []).append(row)
