"""2D labels: LiDAR points projected into each camera at its own timestamp; (u, v, depth, class) per pixel.

Per sample one `labels/<sample_token>.npz` in the index folder holds the labels of all its cameras, sorted
by camera: u, v uint16 [P] (pixel (u, v) covers [u, u+1) x [v, v+1) of the original image), depth float16
[P] (camera z-depth in metres; float16 keeps 0.05 % relative precision, far below LiDAR noise), cls uint8
[P] (Occ3D class) and cam_start int64 [N + 1] (camera n owns entries cam_start[n]:cam_start[n+1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from renderocc.core.classes import NUM_SEMANTIC
from renderocc.core.files import atomic_write
from renderocc.core.workers import spawn_pool
from renderocc.data.index import Index, prepare_hint

MIN_DEPTH = 0.1  # metres; drops points behind (and numerically at) the camera plane
BORDER = 1.0  # pixels; points within this distance of the image border are dropped, as the spec says


@dataclass(frozen=True)
class FrameLabels:
    """The 2D labels of the N cameras of one keyframe (P labelled pixels in all)."""

    u: np.ndarray  # uint16 [P]
    v: np.ndarray  # uint16 [P]
    depth: np.ndarray  # float16 [P]
    cls: np.ndarray  # uint8 [P]
    cam_start: np.ndarray  # int64 [N + 1]

    def camera_ids(self) -> np.ndarray:
        """Camera index of every label, int64 [P]."""
        return np.repeat(np.arange(len(self.cam_start) - 1), np.diff(self.cam_start))


def project_to_cameras(
    points: np.ndarray, cls: np.ndarray, lidar2cam: np.ndarray, intrinsics: np.ndarray, image_hw: np.ndarray
) -> FrameLabels:
    """Project LiDAR points [P, 3] with classes uint8 [P] into N cameras (lidar2cam [N, 4, 4], K [N, 3, 3],
    image_hw [N, 2]) and keep, per pixel, the nearest point: farther points landing on the same pixel are
    mostly seen by the LiDAR but hidden from the camera by parallax, so their depth would be wrong there."""
    n_cam = len(lidar2cam)
    cam_points = (
        points[None].astype(np.float64) @ lidar2cam[:, :3, :3].transpose(0, 2, 1) + lidar2cam[:, None, :3, 3]
    )
    uvw = cam_points @ intrinsics.transpose(0, 2, 1)  # [N, P, 3]
    depth = uvw[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = uvw[..., 0] / depth, uvw[..., 1] / depth
    h, w = image_hw[:, 0:1], image_hw[:, 1:2]
    keep = (depth > MIN_DEPTH) & (u >= BORDER) & (u < w - BORDER) & (v >= BORDER) & (v < h - BORDER)
    cam, point = np.nonzero(keep)
    return nearest_per_pixel(
        n_cam,
        cam,
        u[cam, point].astype(np.int64),
        v[cam, point].astype(np.int64),
        depth[cam, point],
        cls[point],
    )


def nearest_per_pixel(
    n_cam: int, cam: np.ndarray, u: np.ndarray, v: np.ndarray, depth: np.ndarray, cls: np.ndarray
) -> FrameLabels:
    """FrameLabels of candidate labels (camera, integer pixel u, v, z-depth, class; each [P]) keeping the
    nearest candidate of every pixel, sorted by camera."""
    pixel = (cam * (int(v.max(initial=0)) + 1) + v) * (int(u.max(initial=0)) + 1) + u
    order = np.lexsort((depth, pixel))  # by pixel, nearest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel[order[1:]] != pixel[order[:-1]]
    sel = order[first]
    cam_sel = cam[sel]
    return FrameLabels(
        u=u[sel].astype(np.uint16),
        v=v[sel].astype(np.uint16),
        depth=depth[sel].astype(np.float16),
        cls=cls[sel],
        cam_start=np.searchsorted(cam_sel, np.arange(n_cam + 1)).astype(np.int64),
    )


def read_lidar(index: Index, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR points float32 [P, 3] of a keyframe (LiDAR frame) and their Occ3D classes uint8 [P]."""
    lidar_path = index.dataroot / index.lidar[sample]
    seg_path = index.dataroot / index.lidarseg[sample]
    for path, what in ((lidar_path, "LiDAR sweep"), (seg_path, "nuScenes-lidarseg labels")):
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} not found; re-extract it into {index.dataroot}")
    raw = np.fromfile(lidar_path, dtype=np.float32)
    if raw.size % 5:
        raise ValueError(f"corrupt LiDAR sweep {lidar_path}: {raw.size} floats is not a multiple of 5")
    points = raw.reshape(-1, 5)[:, :3]
    seg = np.fromfile(seg_path, dtype=np.uint8)
    if len(seg) != len(points):
        raise ValueError(
            f"lidarseg {seg_path} has {len(seg)} labels for {len(points)} points of {lidar_path}"
        )
    lut = index.arrays["lidarseg_to_occ3d"]
    if seg.max(initial=0) >= len(lut):
        raise ValueError(
            f"lidarseg {seg_path} holds class {seg.max()}, unknown to {index.version}/category.json"
        )
    return points, lut[seg]


def sample_labels(index: Index, sample: int) -> FrameLabels:
    """Compute the 2D labels of one keyframe from its LiDAR sweep and lidarseg labels."""
    points, cls = read_lidar(index, sample)
    a = index.arrays
    return project_to_cameras(
        points, cls, index.lidar2cam(sample), a["intrinsics"][sample], a["image_hw"][sample]
    )


def save_labels(path: Path, labels: FrameLabels) -> None:
    """Write atomically (temporary file + rename), so an interrupted run never leaves a partial file."""
    atomic_write(
        path,
        lambda f: np.savez(
            f, u=labels.u, v=labels.v, depth=labels.depth, cls=labels.cls, cam_start=labels.cam_start
        ),
    )


def load_labels(index: Index, sample: int) -> FrameLabels:
    """The stored 2D labels of a keyframe; a missing file says how to make it."""
    path = index.label_path(sample)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return FrameLabels(npz["u"], npz["v"], npz["depth"], npz["cls"], npz["cam_start"])
    except FileNotFoundError:
        raise FileNotFoundError(
            f"2D labels {path} not found; {prepare_hint(index.dataroot, index.version)} --out {index.root}"
        ) from None


_WORKER_INDEX: Index | None = None


def _init_worker(index: Index) -> None:
    global _WORKER_INDEX
    _WORKER_INDEX = index


def _label_one(sample: int) -> np.ndarray:
    """Make (or, when already done, read) the labels of one sample; returns its class pixel counts [17]."""
    index = _WORKER_INDEX
    path = index.label_path(sample)
    if path.is_file():
        cls = load_labels(index, sample).cls
    else:
        labels = sample_labels(index, sample)
        save_labels(path, labels)
        cls = labels.cls
    return np.bincount(cls, minlength=NUM_SEMANTIC)[:NUM_SEMANTIC]


def build_labels(index: Index, workers: int = 0) -> np.ndarray:
    """Write the 2D labels of every sample of the index (finished files are skipped, so an interrupted run
    resumes) in `workers` processes (0: in this process). Returns the train split's 2D label pixel counts
    per Occ3D class, int64 [17]."""
    (index.root / "labels").mkdir(parents=True, exist_ok=True)
    counts = np.zeros((len(index), NUM_SEMANTIC), dtype=np.int64)
    bar = tqdm(total=len(index), desc="2D labels", unit="sample")
    if workers > 0:
        with spawn_pool(workers, _init_worker, (index,)) as pool:
            for sample, c in zip(range(len(index)), pool.imap(_label_one, range(len(index)), chunksize=4)):
                counts[sample] = c
                bar.update()
    else:
        _init_worker(index)
        for sample in range(len(index)):
            counts[sample] = _label_one(sample)
            bar.update()
    bar.close()
    return counts[index.splits["train"]].sum(0)
