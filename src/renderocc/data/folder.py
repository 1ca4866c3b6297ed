"""The folder format: any camera rig, 2D labels from points and/or label images, read into the sample index.

Layout (docs/data_format.md has every field):

    DATAROOT/dataset.json                     {"format": "renderocc-folder", "format_version": 1,
                                               "splits": {"train": [scenes], "val": [scenes]}}
    DATAROOT/classes.json                     optional class map (renderocc.data.classmap)
    DATAROOT/scenes/<scene>/calib.json        the rig: cameras (intrinsics, sensor2ego, distortion) and
                                              point sensors (sensor2ego)
    DATAROOT/scenes/<scene>/<frame>/frame.json  timestamp, ego2world, per camera its image and label
                                              images, point files, the optional Occ3D-style labels.npz

`prepare_folder` checks everything, undistorts, projects points and subsamples label images into the same
per-pixel labels the nuScenes path makes (renderocc.data.labels), so the loader and everything after it
read both alike.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from renderocc.core.classes import FREE, NUM_SEMANTIC
from renderocc.core.files import atomic_write
from renderocc.core.transforms import invert_pose
from renderocc.data.classmap import UNKNOWN, ClassMap, load_class_map
from renderocc.data.index import Index, default_index_dir, write_index
from renderocc.data.labels import (
    BORDER,
    MIN_DEPTH,
    FrameLabels,
    nearest_per_pixel,
    project_to_cameras,
)
from renderocc.data.undistort import check_distortion, remap_image, remap_labels, undistort_map

FORMAT = "renderocc-folder"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
CLASSES_FILE = "classes.json"
CALIB_FILE = "calib.json"
FRAME_FILE = "frame.json"
VERSION = "folder"  # the index's version name: DATAROOT/renderocc/folder
IMAGE_LABELS = 8_192  # default: labelled pixels kept per label image (a 32-beam LiDAR gives about 4,000)
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
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} {path} not found; write it as docs/data_format.md describes"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); fix the file") from None
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


# ----------------------------------------------------------------------------------------------- labels


def _read_points(spec: PointsSpec, classmap: ClassMap) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(spec.file, allow_pickle=False) as npz:
            points, classes = npz["points"], npz["classes"]
    except KeyError as err:
        raise ValueError(
            f"point file {spec.file} lacks {err}; it must hold 'points' [P, 3+] and 'classes' [P]"
        ) from None
    except (OSError, ValueError) as err:
        raise ValueError(
            f"point file {spec.file} cannot be read ({err}); write it with numpy.savez"
        ) from None
    if points.ndim != 2 or points.shape[1] < 3 or classes.shape != (len(points),):
        raise ValueError(
            f"point file {spec.file}: 'points' {points.shape} and 'classes' {classes.shape} "
            "must be [P, 3+] and [P]"
        )
    cls = classmap.to_model(classes, f"point file {spec.file}")
    keep = (cls != UNKNOWN) & np.isfinite(points[:, :3]).all(1)
    return points[keep, :3].astype(np.float32), cls[keep]


def _read_label_images(cam: CameraSpec, classmap: ClassMap) -> tuple[np.ndarray, np.ndarray]:
    """z-depth in metres float32 [H, W] (0 unknown) and model class uint8 [H, W] (UNKNOWN) of a camera."""
    with Image.open(cam.depth) as img:
        depth = np.asarray(img)
    if depth.dtype not in (np.uint16, np.int32) or depth.ndim != 2:
        raise ValueError(
            f"depth label image {cam.depth} must be a 16-bit single-channel PNG (millimetres), "
            f"got {depth.dtype} {depth.shape}"
        )
    with Image.open(cam.classes) as img:
        if img.mode not in ("L", "P"):
            raise ValueError(
                f"class label image {cam.classes} must be an 8-bit single-channel PNG, got mode {img.mode}"
            )
        ids = np.asarray(img)
    return depth.astype(np.float32) / 1000.0, classmap.to_model(ids, f"class label image {cam.classes}")


def subsample_pixels(mask: np.ndarray, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about `budget` pixels (v, u) of a boolean image [H, W], spread evenly: one per s x s cell (s
    chosen from the labelled count), a random one of each cell, the same for the same seed."""
    v, u = np.nonzero(mask)
    stride = int(np.ceil(np.sqrt(len(v) / budget))) if len(v) > budget else 1
    if stride == 1:
        return v, u
    cell = (v // stride) * (mask.shape[1] // stride + 1) + u // stride
    # one sort: the cell in the integer part, a random tie-break in the fraction
    order = np.argsort(cell + np.random.default_rng(seed).random(len(v)))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order[1:]] != cell[order[:-1]]
    sel = np.sort(order[first])
    return v[sel], u[sel]


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha1("/".join(map(str, parts)).encode()).digest()[:8], "little")


def frame_labels(
    frame: FrameSpec, classmap: ClassMap, image_labels: int, maps: list | None = None
) -> FrameLabels:
    """The 2D labels of a frame's cameras (after undistortion): its points projected, its label images'
    known pixels subsampled to `image_labels` per image, the nearest candidate kept per pixel.
    maps: per camera the undistortion map (undistort_map) or None."""
    n = len(frame.cameras)
    maps = maps or [None] * n
    hw = np.array([c.image_hw for c in frame.cameras])
    K = np.stack([c.out_intrinsics for c in frame.cameras])
    parts = []
    for spec in frame.points:
        points, cls = _read_points(spec, classmap)
        sensor2world = spec.ego2world @ spec.sensor2ego  # the product order of Index.lidar2cam, bit for bit
        cam2ego = np.stack([c.sensor2ego for c in frame.cameras])
        sensor2cam = (
            invert_pose(cam2ego) @ invert_pose(np.stack([c.ego2world for c in frame.cameras])) @ sensor2world
        )
        lab = project_to_cameras(points, cls, sensor2cam, K, hw)
        parts.append(
            (
                lab.camera_ids(),
                lab.u.astype(np.int64),
                lab.v.astype(np.int64),
                lab.depth.astype(np.float32),
                lab.cls,
            )
        )
    for n_cam, (cam, undist) in enumerate(zip(frame.cameras, maps)):
        if cam.depth is None:
            continue
        depth, cls = _read_label_images(cam, classmap)
        if undist is not None:
            depth, cls = remap_labels(depth, *undist, 0.0), remap_labels(cls, *undist, UNKNOWN)
        h, w = cam.image_hw
        known = (depth > MIN_DEPTH) & (cls != UNKNOWN)
        border = int(np.ceil(BORDER))
        known[:border], known[h - border :], known[:, :border], known[:, w - border :] = (
            False,
            False,
            False,
            False,
        )
        v, u = subsample_pixels(known, image_labels, _seed(frame.token, cam.name))
        parts.append((np.full(len(v), n_cam), u, v, depth[v, u], cls[v, u]))
    if not parts:
        return nearest_per_pixel(
            n, *(np.zeros(0, dtype) for dtype in (np.int64, np.int64, np.int64, np.float32, np.uint8))
        )
    return nearest_per_pixel(n, *(np.concatenate(p) for p in zip(*parts)))


def _occupancy(frame: FrameSpec) -> dict[str, np.ndarray]:
    """A frame's Occ3D-style labels, checked: semantics uint8, mask_camera, mask_lidar (bool; all True if
    absent)."""
    path = frame.occupancy
    try:
        with np.load(path, allow_pickle=False) as npz:
            semantics = npz["semantics"]
            masks = {
                k: npz[k].astype(bool) if k in npz else np.ones(semantics.shape, bool)
                for k in ("mask_camera", "mask_lidar")
            }
    except KeyError:
        raise ValueError(
            f"occupancy labels {path} lack 'semantics' [X, Y, Z]; see docs/data_format.md"
        ) from None
    except (OSError, ValueError) as err:
        raise ValueError(
            f"occupancy labels {path} cannot be read ({err}); write them with numpy.savez"
        ) from None
    if semantics.ndim != 3 or any(m.shape != semantics.shape for m in masks.values()):
        raise ValueError(
            f"occupancy labels {path}: semantics {semantics.shape} and masks must share one [X, Y, Z] shape"
        )
    if semantics.size and (semantics.min() < 0 or semantics.max() > FREE):
        raise ValueError(
            f"occupancy labels {path} hold class {int(semantics.max())}; 3D labels use the model's classes "
            f"0..{FREE - 1} and {FREE} for free (Occ3D), not the ids of classes.json"
        )
    return {"semantics": semantics.astype(np.uint8), **masks}


# ------------------------------------------------------------------------------------------- preparing


@dataclass(frozen=True)
class _Job:
    """What a worker needs besides the frame."""

    tmp: Path
    final: Path
    classmap: ClassMap
    image_labels: int
    fingerprint: str


_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job


def _frame_fingerprint(frame: FrameSpec, job: _Job) -> str:
    """Hash of everything a frame's prepared files depend on, so a resumed run redoes changed frames."""
    files = [c.image for c in frame.cameras] + [p for c in frame.cameras for p in (c.depth, c.classes) if p]
    files += [p.file for p in frame.points] + ([frame.occupancy] if frame.occupancy else [])
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps([repr(frame), stats, job.fingerprint], default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def _prepare_frame(frame: FrameSpec) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """Write a frame's labels (and undistorted images, converted occupancy); returns its class pixel counts
    [17] and its occupancy grid shape. Files of an earlier run with the same fingerprint are kept."""
    job = _JOB
    label_path = job.tmp / "labels" / f"{frame.token}.npz"
    fingerprint = _frame_fingerprint(frame, job)
    if label_path.is_file():
        with np.load(label_path, allow_pickle=False) as npz:
            if "source" in npz and str(npz["source"]) == fingerprint:
                shape = tuple(int(s) for s in npz["occupancy_shape"]) or None
                return np.bincount(npz["cls"], minlength=NUM_SEMANTIC)[:NUM_SEMANTIC], shape
    maps = []
    for cam in frame.cameras:
        if cam.distortion is None:
            maps.append(None)
            continue
        undist = undistort_map(*cam.distortion, cam.intrinsics, cam.out_intrinsics, cam.image_hw)
        maps.append(undist)
        try:
            with Image.open(cam.image) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"image {cam.image} cannot be read ({err}); replace the file") from None
        out = remap_image(rgb, *undist)
        path = job.tmp / "images" / frame.token / f"{cam.name}.jpg"
        atomic_write(path, lambda f, out=out: Image.fromarray(out).save(f, "JPEG", quality=95))
    labels = frame_labels(frame, job.classmap, job.image_labels, maps)
    shape = None
    if frame.occupancy is not None:
        occ = _occupancy(frame)
        shape = occ["semantics"].shape
        atomic_write(job.tmp / "gts" / f"{frame.token}.npz", lambda f: np.savez_compressed(f, **occ))
    atomic_write(
        label_path,
        lambda f: np.savez(
            f, u=labels.u, v=labels.v, depth=labels.depth, cls=labels.cls, cam_start=labels.cam_start,
            source=np.array(fingerprint), occupancy_shape=np.array(shape or (), dtype=np.int64),
        ),
    )  # fmt: skip
    return np.bincount(labels.cls, minlength=NUM_SEMANTIC)[:NUM_SEMANTIC], shape


def _ray_origin(frame: FrameSpec) -> np.ndarray:
    """sensor2ego of the frame's ray origin for RayIoU: its first point sensor, else the cameras' centre."""
    if frame.points:
        return frame.points[0].sensor2ego
    pose = np.eye(4)
    pose[:3, 3] = np.mean([c.sensor2ego[:3, 3] for c in frame.cameras], axis=0)
    return pose


def build_folder_index(
    dataroot: Path,
    root: Path,
    final: Path,
    splits: dict[str, list[str]],
    frames: list[FrameSpec],
    classmap: ClassMap,
    with_gts: bool,
) -> Index:
    """The Index of parsed frames; image paths point at undistorted copies under `final` where needed."""
    scene_of = [f.scene for f in frames]
    first, last = {}, {}
    for i, s in enumerate(scene_of):
        first.setdefault(s, i)
        last[s] = i

    def image_path(f: FrameSpec, c: CameraSpec) -> str:
        if c.distortion is not None:
            return str(final / "images" / f.token / f"{c.name}.jpg")
        return str(c.image.relative_to(dataroot))

    lut = classmap.lookup()
    arrays = {
        "timestamps": np.array([f.timestamp for f in frames], dtype=np.int64),
        "scene_first": np.array([first[s] for s in scene_of], dtype=np.int64),
        "scene_last": np.array([last[s] for s in scene_of], dtype=np.int64),
        "intrinsics": np.stack([[c.out_intrinsics for c in f.cameras] for f in frames]),
        "cam2camego": np.stack([[c.sensor2ego for c in f.cameras] for f in frames]),
        "camego2global": np.stack([[c.ego2world for c in f.cameras] for f in frames]),
        "image_hw": np.array([[c.image_hw for c in f.cameras] for f in frames], dtype=np.int64),
        "lidar2ego": np.stack([_ray_origin(f) for f in frames]),
        "ego2global": np.stack([f.ego2world for f in frames]),
        "lidarseg_to_occ3d": np.where(lut >= 0, lut, UNKNOWN).astype(np.uint8),
    }
    member = {s: name for name, scenes in splits.items() for s in scenes}
    tokens = [f.token for f in frames]
    has_gts = with_gts and all(f.occupancy is not None for f in frames)
    return Index(
        root=root,
        dataroot=dataroot,
        version=VERSION,
        cameras=tuple(c.name for c in frames[0].cameras),
        tokens=tokens,
        scenes=scene_of,
        prev_tokens=[tokens[i - 1] if i > first[s] else "" for i, s in enumerate(scene_of)],
        next_tokens=[tokens[i + 1] if i < last[s] else "" for i, s in enumerate(scene_of)],
        images=[[image_path(f, c) for c in f.cameras] for f in frames],
        lidar=[str(f.points[0].file.relative_to(dataroot)) if f.points else "" for f in frames],
        lidarseg=["" for _ in frames],
        gts=[str(final / "gts" / f"{f.token}.npz") for f in frames] if has_gts else None,
        splits={
            k: np.array([i for i, s in enumerate(scene_of) if member[s] == k], dtype=np.int64)
            for k in ("train", "val")
        },
        arrays=arrays,
        class_names=classmap.names_per_model_class() if not classmap.is_identity else None,
    )


def prepare_folder(
    dataroot: str | Path,
    out: str | Path | None = None,
    workers: int = 0,
    with_gts: bool = True,
    image_labels: int = IMAGE_LABELS,
) -> Index:
    """Check a folder-format dataset and write its index and 2D labels to `out` (default
    DATAROOT/renderocc/folder). Everything is written into a hidden sibling folder first and renamed over
    `out` at the end, so `out` is never half-written; a rerun after an interruption resumes there, redoing
    only frames whose inputs changed."""
    if image_labels < 1:
        raise ValueError(f"--image-labels must be at least 1, got {image_labels}")
    dataroot = Path(dataroot).resolve()
    if not dataroot.is_dir():
        raise FileNotFoundError(f"dataroot {dataroot} not found; pass the folder holding {DATASET_FILE}")
    final = Path(out).resolve() if out is not None else default_index_dir(dataroot, VERSION)
    splits, frames, classmap = read_dataset(dataroot, with_gts)
    tmp = final.parent / f".{final.name}.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    job = _Job(tmp, final, classmap, image_labels, json.dumps([classmap.to_json(), image_labels, str(final)]))
    counts = np.zeros((len(frames), NUM_SEMANTIC), dtype=np.int64)
    shapes = []
    with tqdm(total=len(frames), desc="2D labels", unit="frame") as bar:
        if workers > 0:
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
                for i, (c, shape) in enumerate(pool.imap(_prepare_frame, frames, chunksize=2)):
                    counts[i] = c
                    shapes.append(shape)
                    bar.update()
        else:
            _init_worker(job)
            for i, frame in enumerate(frames):
                counts[i], shape = _prepare_frame(frame)
                shapes.append(shape)
                bar.update()
    grid_shapes = {s for s in shapes if s is not None}
    if len(grid_shapes) > 1:
        raise ValueError(
            f"occupancy labels of {dataroot} come in several shapes {sorted(grid_shapes)}; "
            "use one grid for all"
        )
    index = build_folder_index(dataroot, tmp, final, splits, frames, classmap, with_gts)
    index.class_counts = counts[index.splits["train"]].sum(0)
    write_index(index)
    _swap_in(tmp, final)
    index.root = final
    return index


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the finished `tmp` over `final`; an older `final` is removed only once the new one is there."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
