"""A folder-format frame's 2D labels (points projected, label images subsampled, nearest per pixel) and the
checks of its Occ3D-style 3D labels."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from renderocc.core.classes import FREE
from renderocc.core.transforms import invert_pose
from renderocc.data.classmap import UNKNOWN, ClassMap
from renderocc.data.folder import CameraSpec, FrameSpec, PointsSpec
from renderocc.data.labels import (
    BORDER,
    MIN_DEPTH,
    FrameLabels,
    nearest_per_pixel,
    project_to_cameras,
)
from renderocc.data.undistort import remap_labels


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


def occupancy_labels(frame: FrameSpec) -> dict[str, np.ndarray]:
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
