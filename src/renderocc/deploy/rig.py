"""A fixed camera rig: the calibration file `renderocc infer --calib` reads, with each camera's image size.

    {"cameras": {"CAM_FRONT": {"intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                               "sensor2ego": [[...4x4 camera -> ego...]],
                               "width": 1600, "height": 900,      (required here: the original image size)
                               "image": "CAM_FRONT.jpg",           (optional, as for infer --calib)
                               "distortion": [...], "pinhole_intrinsics": [[...]]},   (optional, as there)
                 ... every camera of the rig ...}}

The six nuScenes cameras are taken in nuScenes order, any other rig in the file's order (as `infer --calib`
does). The image size fixes the inference resize and crop (`img_aug`), so it belongs to the rig: an
exported model takes images of exactly these sizes. A camera with `distortion` enters the model as its
pinhole camera (`pinhole_intrinsics`, default `intrinsics`), as its undistorted images do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renderocc.config import DataConfig
from renderocc.core.camera import CAMERAS
from renderocc.core.files import read_json
from renderocc.infer import _matrix  # the same checks as `renderocc infer --calib`


@dataclass(frozen=True)
class Rig:
    """Calibrated cameras: names, the model's (pinhole) intrinsics [N, 3, 3], cam2ego [N, 4, 4], original
    image sizes (H, W), and each camera's entry of the calibration file (written back as `rig.json`)."""

    names: tuple[str, ...]
    intrinsics: np.ndarray
    cam2ego: np.ndarray
    image_sizes: tuple[tuple[int, int], ...]
    entries: tuple[dict, ...]

    @property
    def images(self) -> tuple[str, ...]:
        """Each camera's image file name in a frame folder."""
        return tuple(entry["image"] for entry in self.entries)

    def img_aug(self, cfg: DataConfig) -> np.ndarray:
        """The inference resize and crop of every camera's images to cfg.image_size, [N, 3, 3]."""
        from renderocc.data.augment import image_aug_matrix

        return np.stack([image_aug_matrix(size, cfg.image_size, cfg, None)[0] for size in self.image_sizes])

    def to_dict(self) -> dict:
        """The calibration file of the rig (`read_rig` reads it back)."""
        return {"cameras": dict(zip(self.names, self.entries))}


def rig_from_dict(calib: dict, where: str) -> Rig:
    """A Rig from the parsed JSON; errors name `where` (the file) and the field."""
    cameras = calib.get("cameras") if isinstance(calib, dict) else None
    if not isinstance(cameras, dict) or not cameras:
        raise ValueError(f'{where}: "cameras" must map camera names to their calibration')
    names = CAMERAS if set(CAMERAS) <= set(cameras) else tuple(cameras)
    intrinsics, cam2ego, sizes, entries = [], [], [], []
    for cam in names:
        entry, field = dict(cameras[cam]), f"{where}: cameras.{cam}"
        K = _matrix(entry.get("intrinsics"), (3, 3), f"{field}.intrinsics")
        pose = _matrix(entry.get("sensor2ego"), (4, 4), f"{field}.sensor2ego")
        w, h = entry.get("width"), entry.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise ValueError(
                f"{field}: width and height must give the camera's original image size in pixels (e.g. "
                f'"width": 1600, "height": 900), got {w!r} and {h!r}'
            )
        if not (0 < K[0, 2] < w and 0 < K[1, 2] < h):
            raise ValueError(
                f"{field}: the principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside its {w}x{h} image; "
                "give the width and height these intrinsics belong to"
            )
        if entry.get("distortion") is not None:
            K = _matrix(entry.get("pinhole_intrinsics", K), (3, 3), f"{field}.pinhole_intrinsics")
        entry.setdefault("image", f"{cam}.jpg")
        intrinsics.append(K), cam2ego.append(pose), sizes.append((h, w)), entries.append(entry)
    return Rig(tuple(names), np.stack(intrinsics), np.stack(cam2ego), tuple(sizes), tuple(entries))


def rig_from_index(index, sample: int) -> Rig:
    """The rig of one keyframe of a prepared dataset (`renderocc.data.index.Index`): each camera's calibrated
    sensor2ego (without the ego motion between the LiDAR and camera times) and its image size."""
    from PIL import Image

    cameras = {}
    for n, cam in enumerate(getattr(index, "cameras", CAMERAS)):
        with Image.open(index.image_path(sample, n)) as image:
            cameras[cam] = {
                "intrinsics": np.asarray(index.arrays["intrinsics"][sample, n], dtype=np.float64).tolist(),
                "sensor2ego": np.asarray(index.arrays["cam2camego"][sample, n], dtype=np.float64).tolist(),
                "width": image.width,
                "height": image.height,
            }
    return rig_from_dict({"cameras": cameras}, f"index {index.root}, sample {sample}")


def write_rig(rig: Rig, path: str | Path) -> Path:
    """The rig as a calibration JSON file (written atomically)."""
    from renderocc.core.files import atomic_write

    return atomic_write(path, lambda f: f.write(json.dumps(rig.to_dict(), indent=1).encode()))


def read_rig(path: str | Path) -> Rig:
    """The rig of a calibration JSON file (format in this module's docstring)."""
    calib = read_json(path, "rig", "write the calibration JSON `renderocc export --help` describes")
    return rig_from_dict(calib, str(path))
