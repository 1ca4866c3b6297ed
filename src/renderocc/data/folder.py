"""The folder format: any camera rig, 2D labels from points and/or label images, read into the sample index.

Layout (docs/data_format.md has every field):

    DATAROOT/dataset.json                     {"format": "renderocc-folder", "format_version": 1,
                                               "splits": {"train": [scenes], "val": [scenes]}}
    DATAROOT/classes.json                     optional class map (renderocc.data.classmap)
    DATAROOT/scenes/<scene>/calib.json        the rig: cameras (intrinsics, sensor2ego, distortion) and
                                              point sensors (sensor2ego)
    DATAROOT/scenes/<scene>/<frame>/frame.json  timestamp, ego2world, per camera its image and label
                                              images, point files, the optional Occ3D-style labels.npz

This module reads and checks it; `folder_labels` turns a frame into the same per-pixel labels the nuScenes
path makes (renderocc.data.labels) and `folder_prepare` writes the index, so the loader and everything
after it read both alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from renderocc.core.files import read_json
from renderocc.data.classmap import ClassMap, load_class_map
from renderocc.data.undistort import check_distortion

FORMAT = "renderocc-folder"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
CLASSES_FILE = "classes.json"
CALIB_FILE = "calib.json"
FRAME_FILE = "frame.json"
VERSION = "folder"  # the index's version name: DATAROOT/renderocc/folder
RIGID_TOL = 1e-4


def is_folder_dataset(dataroot: str | Path) -> bool:
    return (Path(dataroot) / DATASET_FILE).is_file()


@dataclass
class CameraSpec:
    """One camera of one frame: files (absolute), calibration, and the size its image really has."""

    name: str
    image: Path
    intrinsics: np.ndarray  # [3, 3] of the image as stored
    sensor2ego: np.ndarray  # [4, 4]
    ego2world: np.ndarray  # [4, 4] ego pose at the camera's timestamp
    image_hw: tuple[int, int]
    distortion: tuple[str, np.ndarray] | None = None
    pinhole: np.ndarray | None = None  # [3, 3] intrinsics after undistortion (default: `intrinsics`)
    depth: Path | None = None
    classes: Path | None = None

    @property
    def out_intrinsics(self) -> np.ndarray:
        return self.intrinsics if self.pinhole is None else self.pinhole


@dataclass
class PointsSpec:
    """A file of labelled points (sensor frame) and the sensor's pose."""

    file: Path
    sensor2ego: np.ndarray
    ego2world: np.ndarray


@dataclass
class FrameSpec:
    token: str
    scene: str
    folder: Path
    timestamp: int
    ego2world: np.ndarray
    cameras: list[CameraSpec]
    points: list[PointsSpec] = field(default_factory=list)
    occupancy: Path | None = None


# ---------------------------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> dict:
    data = read_json(path, what, "write it as docs/data_format.md describes")
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object; see docs/data_format.md")
    return data


def _matrix(value: object, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != shape or not np.isfinite(array).all():
        raise ValueError(
            f"{where} must be a finite {shape[0]}x{shape[1]} matrix (nested lists), got {value!r:.80}"
        )
    return array


def _pose(value: object, where: str) -> np.ndarray:
    """A rigid 4x4 pose: orthonormal rotation with det +1, last row 0 0 0 1; errors name `where`."""
    pose = _matrix(value, (4, 4), where)
    R = pose[:3, :3]
    if (
        np.abs(pose[3] - [0, 0, 0, 1]).max() > RIGID_TOL
        or np.abs(R.T @ R - np.eye(3)).max() > RIGID_TOL
        or np.linalg.det(R) < 0
    ):
        raise ValueError(
            f"{where} is not a rigid pose (orthonormal rotation with determinant +1, last row 0 0 0 1); "
            "give the 4x4 sensor-to-target transform in metres, without scale or shear"
        )
    return pose


def _intrinsics(value: object, hw: tuple[int, int], where: str, image: Path) -> np.ndarray:
    K = _matrix(value, (3, 3), where)
    h, w = hw
    if K[0, 0] <= 0 or K[1, 1] <= 0 or np.abs(K[2] - [0, 0, 1]).max() > 1e-9 or K[1, 0] != 0:
        raise ValueError(
            f"{where} must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {K.tolist()}"
        )
    if not (0 < K[0, 2] < w and 0 < K[1, 2] < h):
        raise ValueError(
            f"{where}: principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside the {w}x{h} image {image}; "
            "the intrinsics belong to another image size: scale fx, cx and fy, cy by the size ratios"
        )
    return K


def _image_hw(path: Path, what: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} {path} not found; add the file or fix its name in {FRAME_FILE}"
        ) from None
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{what} {path} cannot be read ({err}); replace the file") from None


def _file(folder: Path, value: object, where: str, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a file name relative to {folder}, got {value!r}")
    path = folder / value
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found ({where}); add the file or fix its name")
    return path


def read_dataset(
    dataroot: str | Path, with_gts: bool = True
) -> tuple[dict[str, list[str]], list[FrameSpec], ClassMap]:
    """Parse and check dataset.json, the class map and every scene's calib.json and frames' frame.json.

    Returns the splits (scene names), the frames (scene by scene, each in time order) and the class map.
    """
    root = Path(dataroot).resolve()
    meta = _read_json(root / DATASET_FILE, "dataset description")
    where = root / DATASET_FILE
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f'{where}: expected "format": "{FORMAT}", "format_version": {FORMAT_VERSION}, got '
            f"{meta.get('format')!r} v{meta.get('format_version')!r}"
        )
    splits = meta.get("splits")
    if (
        not isinstance(splits, dict)
        or set(splits) - {"train", "val"}
        or not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in splits.values())
        or not splits.get("train")
    ):
        raise ValueError(
            f'{where}: "splits" must be {{"train": [scene, ...], "val": [scene, ...]}} with train non-empty'
        )
    splits = {"train": list(splits["train"]), "val": list(splits.get("val", []))}
    twice = set(splits["train"]) & set(splits["val"])
    if twice:
        raise ValueError(f"{where}: scene {sorted(twice)[0]!r} is in both splits; put each scene in one")
    classes_path = root / CLASSES_FILE
    classmap = load_class_map(classes_path if classes_path.is_file() else None)
    frames: list[FrameSpec] = []
    for scene in tqdm([*splits["train"], *splits["val"]], desc="read scenes", unit="scene", leave=False):
        frames += _read_scene(root, scene, with_gts)
    tokens: dict[str, FrameSpec] = {}
    for f in frames:
        if f.token in tokens:
            raise ValueError(
                f"frames {tokens[f.token].folder} and {f.folder} share the token {f.token!r}; "
                f'give one of them another "token" in its {FRAME_FILE}'
            )
        tokens[f.token] = f
    names = [c.name for c in frames[0].cameras]
    for f in frames:
        if [c.name for c in f.cameras] != names:
            raise ValueError(
                f"{f.folder / FRAME_FILE}: cameras {[c.name for c in f.cameras]} differ from {names} of "
                f"{frames[0].folder}; every frame needs the same cameras"
            )
    has_occ = [f.occupancy is not None for f in frames]
    if with_gts and any(has_occ) and not all(has_occ):
        lacking = frames[has_occ.index(False)]
        raise ValueError(
            f'{lacking.folder / FRAME_FILE} gives no "occupancy" while other frames do; give labels.npz for '
            "every frame or none (or prepare with --no-gts)"
        )
    return splits, frames, classmap


def _read_scene(root: Path, scene: str, with_gts: bool) -> list[FrameSpec]:
    folder = root / "scenes" / scene
    if not folder.is_dir():
        raise FileNotFoundError(
            f"scene folder {folder} not found (listed in {root / DATASET_FILE}); add it or remove the name"
        )
    calib = _read_json(folder / CALIB_FILE, "rig calibration")
    cams = calib.get("cameras")
    if not isinstance(cams, dict) or not cams:
        raise ValueError(f'{folder / CALIB_FILE}: "cameras" must map camera names to their calibration')
    sensors = calib.get("points", {})
    if not isinstance(sensors, dict):
        raise ValueError(
            f'{folder / CALIB_FILE}: "points" must map point sensor names to {{"sensor2ego": ...}}'
        )
    frame_dirs = sorted(p.parent for p in folder.glob(f"*/{FRAME_FILE}"))
    if not frame_dirs:
        raise FileNotFoundError(f"scene {folder} holds no <frame>/{FRAME_FILE}; add its frames")
    frames = [_read_frame(d, scene, cams, sensors, with_gts) for d in frame_dirs]
    frames.sort(key=lambda f: f.timestamp)
    for a, b in zip(frames, frames[1:]):
        if a.timestamp == b.timestamp:
            raise ValueError(
                f"frames {a.folder} and {b.folder} have the same timestamp {a.timestamp}; "
                "timestamps order a scene, give each frame its own"
            )
    return frames


def _read_frame(folder: Path, scene: str, calib: dict, sensors: dict, with_gts: bool) -> FrameSpec:
    path = folder / FRAME_FILE
    frame = _read_json(path, "frame description")
    timestamp = frame.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise ValueError(f'{path}: "timestamp" must be an integer (microseconds), got {timestamp!r}')
    ego2world = _pose(frame.get("ego2world"), f"{path}: ego2world")
    entries = frame.get("cameras", {})
    if not isinstance(entries, dict) or set(entries) - set(calib):
        extra = sorted(set(entries) - set(calib)) if isinstance(entries, dict) else entries
        raise ValueError(f"{path}: cameras {extra} are not in the scene's {CALIB_FILE}; calibrate them there")
    for name, entry in [*calib.items(), *entries.items()]:
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: cameras.{name} (or its entry in {CALIB_FILE}) must be a JSON object")
    cameras = [
        _read_camera(folder, name, {**calib[name], **entries.get(name, {})}, ego2world, path)
        for name in calib
    ]
    points_entries = frame.get("points", {})
    if not isinstance(points_entries, dict):
        raise ValueError(f'{path}: "points" must map point sensor names to {{"file": ...}}')
    points = []
    for name, entry in points_entries.items():
        where = f"{path}: points.{name}"
        entry = {**sensors.get(name, {}), **entry} if isinstance(entry, dict) else entry
        if not isinstance(entry, dict) or "sensor2ego" not in entry:
            raise ValueError(
                f'{where} needs "file" and a "sensor2ego" (here or under points.{name} in {CALIB_FILE})'
            )
        points.append(
            PointsSpec(
                _file(folder, entry.get("file"), f"{where}.file", "point file"),
                _pose(entry["sensor2ego"], f"{where}.sensor2ego"),
                _pose(entry["ego2world"], f"{where}.ego2world") if "ego2world" in entry else ego2world,
            )
        )
    occupancy = None
    if with_gts and frame.get("occupancy") is not None:
        occupancy = _file(folder, frame["occupancy"], f"{path}: occupancy", "occupancy labels")
    token = frame.get("token", f"{scene}_{folder.name}")
    if not isinstance(token, str) or not token or "/" in token or token.startswith("."):
        raise ValueError(f'{path}: "token" must be a non-empty file-name-safe string, got {token!r}')
    return FrameSpec(token, scene, folder, timestamp, ego2world, cameras, points, occupancy)


def _read_camera(folder: Path, name: str, entry: dict, ego2world: np.ndarray, frame_path: Path) -> CameraSpec:
    where = f"{frame_path}: cameras.{name}"
    image = _file(folder, entry.get("image", f"{name}.jpg"), f"{where}.image", "image")
    hw = _image_hw(image, "image")
    declared = (entry.get("height"), entry.get("width"))
    if any(d is not None for d in declared) and declared != hw:
        raise ValueError(
            f"image {image} is {hw[1]}x{hw[0]} but camera {name} declares width {declared[1]}, "
            f"height {declared[0]}; "
            "fix the declared size (and the intrinsics if they belong to another size) or replace the image"
        )
    K = _intrinsics(entry.get("intrinsics"), hw, f"{where}.intrinsics", image)
    spec = CameraSpec(
        name, image, K, _pose(entry.get("sensor2ego"), f"{where}.sensor2ego"),
        _pose(entry["ego2world"], f"{where}.ego2world") if "ego2world" in entry else ego2world, hw,
    )  # fmt: skip
    if entry.get("distortion") is not None:
        model = entry.get("distortion_model", "opencv")
        spec.distortion = (model, check_distortion(model, entry["distortion"], f"{where}.distortion"))
        if entry.get("pinhole_intrinsics") is not None:
            spec.pinhole = _intrinsics(entry["pinhole_intrinsics"], hw, f"{where}.pinhole_intrinsics", image)
    if (entry.get("depth") is None) != (entry.get("classes") is None):
        raise ValueError(f'{where}: label images come in pairs; give both "depth" and "classes", or neither')
    if entry.get("depth") is not None:
        spec.depth = _file(folder, entry["depth"], f"{where}.depth", "depth label image")
        spec.classes = _file(folder, entry["classes"], f"{where}.classes", "class label image")
        for path in (spec.depth, spec.classes):
            if _image_hw(path, "label image") != hw:
                got = _image_hw(path, "label image")
                raise ValueError(
                    f"label image {path} is {got[1]}x{got[0]} but its camera image {image} is "
                    f"{hw[1]}x{hw[0]}; "
                    "label images must have the camera image's size"
                )
    return spec
