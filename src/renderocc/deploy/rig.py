"""A fixed camera rig: the calibration file `renderocc infer --calib` reads, plus each camera's image size.

    {"image_size": [900, 1600],                     (original [height, width] of every camera's images)
     "cameras": {"CAM_FRONT": {"intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                               "sensor2ego": [[...4x4 camera -> ego...]],
                               "image": "CAM_FRONT.jpg",         (optional, as for infer --calib)
                               "image_size": [900, 1600]},       (optional, overrides the top level)
                 ... the six nuScenes cameras ...}}

The image size fixes the inference resize and crop (`img_aug`), so it belongs to the rig: an exported
model takes images of exactly these sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renderocc.config import DataConfig
from renderocc.core.camera import CAMERAS
from renderocc.infer import _matrix  # the same checks as `renderocc infer --calib`


def _size(value, where: str) -> tuple[int, int]:
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
    if not ok or min(value) < 1:
        raise ValueError(f"{where} must be [height, width] in pixels (e.g. [900, 1600]), got {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class Rig:
    """Six calibrated cameras in CAMERAS order: intrinsics [N, 3, 3], cam2ego [N, 4, 4], original image
    sizes (H, W) and file names."""

    intrinsics: np.ndarray
    cam2ego: np.ndarray
    image_sizes: tuple[tuple[int, int], ...]
    images: tuple[str, ...]

    def img_aug(self, cfg: DataConfig) -> np.ndarray:
        """The inference resize and crop of every camera's images to cfg.image_size, [N, 3, 3]."""
        from renderocc.data.augment import image_aug_matrix

        return np.stack([image_aug_matrix(size, cfg.image_size, cfg, None)[0] for size in self.image_sizes])

    def to_dict(self) -> dict:
        """The rig as `read_rig` reads it back."""
        cameras = {
            cam: {
                "intrinsics": self.intrinsics[n].tolist(),
                "sensor2ego": self.cam2ego[n].tolist(),
                "image": self.images[n],
                "image_size": list(self.image_sizes[n]),
            }
            for n, cam in enumerate(CAMERAS)
        }
        return {"cameras": cameras}


def rig_from_dict(calib: dict, where: str) -> Rig:
    """A Rig from the parsed JSON; errors name `where` (the file) and the field."""
    cameras = calib.get("cameras") if isinstance(calib, dict) else None
    if not isinstance(cameras, dict):
        raise ValueError(f"{where}: no `cameras` object; see `renderocc export --help` for the rig format")
    missing = [c for c in CAMERAS if c not in cameras]
    unknown = [c for c in cameras if c not in CAMERAS]
    if missing or unknown:
        problem = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unknown)}"
        raise ValueError(
            f"{where}: cameras {problem}; the model takes exactly the {len(CAMERAS)} cameras "
            f"{', '.join(CAMERAS)}"
        )
    intrinsics, cam2ego, sizes, images = [], [], [], []
    for cam in CAMERAS:
        entry, field = cameras[cam], f"{where}: cameras.{cam}"
        K = _matrix(entry.get("intrinsics"), (3, 3), f"{field}.intrinsics")
        pose = _matrix(entry.get("sensor2ego"), (4, 4), f"{field}.sensor2ego")
        size = entry.get("image_size", calib.get("image_size"))
        if size is None:
            raise ValueError(
                f"{field}.image_size missing: give the camera's original image [height, width], or a "
                "top-level image_size for all cameras (e.g. [900, 1600])"
            )
        h, w = _size(size, f"{field}.image_size")
        if not (0 < K[0, 2] < w and 0 < K[1, 2] < h):
            raise ValueError(
                f"{field}: the principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside its {h}x{w} image; "
                "give the image_size these intrinsics belong to"
            )
        intrinsics.append(K), cam2ego.append(pose), sizes.append((h, w))
        images.append(str(entry.get("image", f"{cam}.jpg")))
    return Rig(np.stack(intrinsics), np.stack(cam2ego), tuple(sizes), tuple(images))


def rig_from_index(index, sample: int) -> Rig:
    """The rig of one keyframe of a prepared dataset (`renderocc.data.index.Index`): each camera's calibrated
    sensor2ego (without the ego motion between the LiDAR and camera times) and its image size."""
    from PIL import Image

    sizes = []
    for n in range(len(CAMERAS)):
        with Image.open(index.image_path(sample, n)) as image:
            sizes.append((image.height, image.width))
    return Rig(
        np.asarray(index.arrays["intrinsics"][sample], dtype=np.float64),
        np.asarray(index.arrays["cam2camego"][sample], dtype=np.float64),
        tuple(sizes),
        tuple(f"{cam}.jpg" for cam in CAMERAS),
    )


def write_rig(rig: Rig, path: str | Path) -> Path:
    """The rig as a calibration JSON file (written atomically)."""
    from renderocc.core.files import atomic_write

    return atomic_write(path, lambda f: f.write(json.dumps(rig.to_dict(), indent=1).encode()))


def read_rig(path: str | Path) -> Rig:
    """The rig of a calibration JSON file (format in this module's docstring)."""
    path = Path(path)
    try:
        calib = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"rig {path} not found; write the calibration JSON `renderocc export --help` describes"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"rig {path} is not valid JSON ({err})") from None
    return rig_from_dict(calib, str(path))
