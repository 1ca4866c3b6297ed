"""Find the frames to draw: GT labels, saved predictions and camera images, in scene order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from renderocc.core import FREE, VoxelGrid
from renderocc.vis.voxel_render import DEFAULT_GRID


@dataclass
class FrameRecord:
    """One keyframe: where its GT / prediction live and the key-frame JPEG of each camera channel."""

    token: str
    scene: str
    timestamp: int = 0
    gt_path: Path | None = None
    pred_path: Path | None = None
    camera_paths: dict[str, Path] = field(default_factory=dict)


def load_grid(path: Path, grid: VoxelGrid = DEFAULT_GRID) -> tuple[np.ndarray, np.ndarray | None]:
    """`semantics` uint8 [X, Y, Z] and `mask_camera` bool [X, Y, Z] (None if absent) of an Occ3D .npz."""
    with np.load(path) as data:
        if "semantics" not in data:
            raise KeyError(
                f"{path}: no 'semantics' array (keys: {', '.join(data.files)}); expected Occ3D format"
            )
        semantics = np.asarray(data["semantics"])
        mask = np.asarray(data["mask_camera"]).astype(bool) if "mask_camera" in data else None
    if semantics.shape != grid.shape:
        raise ValueError(f"{path}: semantics shape {semantics.shape} != grid shape {grid.shape}")
    if semantics.size and int(semantics.max()) > FREE:
        raise ValueError(f"{path}: semantics hold class {int(semantics.max())}; Occ3D classes are 0..{FREE}")
    return semantics.astype(np.uint8), mask


def gt_root(path: Path) -> Path:
    """The folder holding <scene>/<token>/labels.npz: `path` itself or its gts/ subfolder (a dataroot)."""
    if (path / "gts").is_dir():
        return path / "gts"
    return path


def folder_index(dataroot: Path | None):
    """The prepared index of a folder-format dataset (renderocc.data.folder), None for any other path."""
    from renderocc.data.folder import VERSION, is_folder_dataset
    from renderocc.data.index import default_index_dir, load_index

    if dataroot is None or not is_folder_dataset(dataroot):
        return None
    return load_index(default_index_dir(Path(dataroot).resolve(), VERSION))


def dataset_class_names(dataroot: Path | None) -> dict[int, list[str]] | None:
    """Model class -> the dataset's own class names (a folder dataset's class map), None for Occ3D's."""
    index = folder_index(dataroot)
    return index.class_names if index is not None else None


def _index_gts(gt_dir: Path) -> dict[str, FrameRecord]:
    index = folder_index(gt_dir)
    if index is not None:  # a folder dataset: its 3D labels, in model classes, as `prepare` wrote them
        if index.gts is None:
            raise FileNotFoundError(f"{gt_dir} was prepared without occupancy labels; there is no GT to draw")
        return {
            t: FrameRecord(token=t, scene=s, gt_path=Path(p))
            for t, s, p in zip(index.tokens, index.scenes, index.gts)
        }
    root = gt_root(gt_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"GT folder {gt_dir} not found; pass DATAROOT or DATAROOT/gts with --gt")
    records = {
        p.parent.name: FrameRecord(token=p.parent.name, scene=p.parent.parent.name, gt_path=p)
        for p in sorted(root.glob("*/*/labels.npz"))
    }
    if not records:
        raise FileNotFoundError(f"no <scene>/<token>/labels.npz under {root}; is --gt an Occ3D gts folder?")
    return records


def _index_preds(pred_dir: Path) -> dict[str, Path]:
    if not pred_dir.is_dir():
        raise FileNotFoundError(
            f"prediction folder {pred_dir} not found; pass the --out of `renderocc infer`"
        )
    preds = {p.stem: p for p in sorted(pred_dir.glob("*.npz"))}
    if not preds:
        raise FileNotFoundError(f"no <sample_token>.npz files in {pred_dir}; run `renderocc infer` first")
    return preds


def has_tables(path: Path | None) -> bool:
    """Whether `path` is a dataroot with scene order and images: nuScenes (<version>/sample.json) or a
    folder-format dataset (dataset.json)."""
    from renderocc.data.folder import is_folder_dataset

    return path is not None and path.is_dir() and (any(path.glob("*/sample.json")) or is_folder_dataset(path))


def _table_dir(dataroot: Path) -> Path:
    versions = sorted(p.parent for p in dataroot.glob("*/sample.json"))
    if not versions:
        raise FileNotFoundError(
            f"no nuScenes tables (<version>/sample.json) under {dataroot}; pass the nuScenes dataroot"
        )
    return versions[0]


def _load_table(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"nuScenes table {path} not found; the dataroot looks incomplete")
    with open(path) as f:
        return json.load(f)


def _index_tables(dataroot: Path) -> tuple[dict[str, tuple[str, int]], dict[str, dict[str, Path]]]:
    """sample token -> (scene name, timestamp) and -> {camera channel: key-frame JPEG path}."""
    index = folder_index(dataroot)
    if index is not None:
        samples = {
            t: (s, int(ts)) for t, s, ts in zip(index.tokens, index.scenes, index.arrays["timestamps"])
        }
        cameras = {
            t: {c: index.image_path(i, n) for n, c in enumerate(index.cameras)}
            for i, t in enumerate(index.tokens)
        }
        return samples, cameras
    tables = _table_dir(dataroot)
    scenes = {r["token"]: r["name"] for r in _load_table(tables / "scene.json")}
    samples = {
        r["token"]: (scenes.get(r["scene_token"], "unknown"), r["timestamp"])
        for r in _load_table(tables / "sample.json")
    }
    sensors = {r["token"]: r["channel"] for r in _load_table(tables / "sensor.json")}
    calib_channel = {
        r["token"]: sensors[r["sensor_token"]] for r in _load_table(tables / "calibrated_sensor.json")
    }
    cameras: dict[str, dict[str, Path]] = {}
    for r in _load_table(tables / "sample_data.json"):
        channel = calib_channel.get(r["calibrated_sensor_token"], "")
        if r.get("is_key_frame") and channel.startswith("CAM_"):
            cameras.setdefault(r["sample_token"], {})[channel] = dataroot / r["filename"]
    return samples, cameras


def find_frames(
    pred_dir: Path | None = None,
    gt_dir: Path | None = None,
    dataroot: Path | None = None,
    tokens: list[str] | None = None,
    scene: str | None = None,
) -> list[FrameRecord]:
    """The frames that have a prediction and/or GT, sorted by (scene, timestamp).

    With both pred_dir and gt_dir, only frames present in both. dataroot (the nuScenes root with its
    tables) adds scene names, timestamps and camera images; without it frames within a scene are in token
    order. tokens / scene keep only those sample tokens / that scene.
    """
    if pred_dir is None and gt_dir is None:
        raise ValueError("give predictions (--pred) and/or ground truth (--gt)")
    gts = _index_gts(Path(gt_dir)) if gt_dir is not None else None
    preds = _index_preds(Path(pred_dir)) if pred_dir is not None else None
    if gts is not None and preds is not None:
        records = {t: r for t, r in gts.items() if t in preds}
        if not records:
            raise ValueError(f"no sample token of {pred_dir} has GT under {gt_dir}; are they the same split?")
    elif gts is not None:
        records = gts
    else:
        records = {t: FrameRecord(token=t, scene="") for t in preds}
    for token, record in records.items():
        record.pred_path = preds.get(token) if preds is not None else None
    if dataroot is not None:
        samples, cameras = _index_tables(Path(dataroot))
        for token, record in records.items():
            if token in samples:
                record.scene, record.timestamp = record.scene or samples[token][0], samples[token][1]
            record.camera_paths = cameras.get(token, {})
    if tokens is not None:
        wanted = set(tokens)
        records = {t: r for t, r in records.items() if t in wanted}
    if scene is not None:
        records = {t: r for t, r in records.items() if r.scene == scene}
        if not records:
            raise ValueError(
                f"no frames of scene {scene!r}; check the name (folders under gts/ are scene names)"
            )
    return sorted(records.values(), key=lambda r: (r.scene, r.timestamp, r.token))
