"""`prepare` for the folder format: every frame's labels (and undistorted images) in worker processes, the
index, written to a hidden folder renamed into place at the end, resumable frame by frame."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from renderocc.core.classes import NUM_SEMANTIC
from renderocc.core.files import atomic_write, replace_dir
from renderocc.core.workers import spawn_pool
from renderocc.data.classmap import UNKNOWN, ClassMap
from renderocc.data.folder import DATASET_FILE, VERSION, CameraSpec, FrameSpec, read_dataset
from renderocc.data.folder_labels import frame_labels, occupancy_labels
from renderocc.data.index import Index, default_index_dir, write_index
from renderocc.data.undistort import remap_image, undistort_map

IMAGE_LABELS = 8_192  # default: labelled pixels kept per label image (a 32-beam LiDAR gives about 4,000)


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
    return hashlib.sha1(pickle.dumps((frame, stats, job.fingerprint))).hexdigest()


def _prepare_frame(frame: FrameSpec) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """Write a frame's labels (and undistorted images, checked occupancy); returns its class pixel counts
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
        occ = occupancy_labels(frame)
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
            with spawn_pool(workers, _init_worker, (job,)) as pool:
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
    replace_dir(tmp, final)
    index.root = final
    return index
