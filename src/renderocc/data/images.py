"""Camera image decoding: JPEG via simplejpeg (DCT-domain downscaling) when installed, else Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    import simplejpeg
except ImportError:  # optional speed-up (the `fast` extra)
    simplejpeg = None

_JPEG_MAGIC = b"\xff\xd8"


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"image {path} not found; the dataset is incomplete: extract the nuScenes camera blobs "
        "(or regenerate the synthetic set with `renderocc synth`)"
    )


def _corrupt(path: Path, err: Exception) -> ValueError:
    return ValueError(f"corrupt image {path} ({err}); replace it from the dataset archive")


def read_image(
    path: str | Path, min_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Decode an RGB image, optionally at a reduced size that is still at least `min_hw` (H, W).

    JPEGs are downscaled during decoding by a power of two (1/2, 1/4, 1/8), which is several times faster
    than decoding at full size and resizing. Returns the image uint8 [h, w, 3] and the factors (sx, sy)
    that map original pixel coordinates to decoded ones (x_decoded = sx * x).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _missing(path) from None
    min_h, min_w = min_hw if min_hw is not None else (0, 0)
    try:
        if simplejpeg is not None and data[:2] == _JPEG_MAGIC:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            img = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_h, min_width=min_w)
        else:
            with Image.open(path) as pil:
                width, height = pil.size
                if min_hw is not None and pil.format == "JPEG":
                    pil.draft("RGB", (min_w, min_h))
                img = np.array(pil.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only
    except (ValueError, OSError, UnidentifiedImageError) as err:
        raise _corrupt(path, err) from None
    return img, (_dct_scale(img.shape[1], width), _dct_scale(img.shape[0], height))


def _dct_scale(decoded: int, original: int) -> float:
    """libjpeg scales by k/8 and rounds the size up (ceil(original * k / 8)); recover the exact k/8."""
    return round(8 * decoded / original) / 8 if decoded != original else 1.0
