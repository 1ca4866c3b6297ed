"""Image decoding: DCT-domain downscaling reports its exact factor; missing or corrupt files are named."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderocc.data import images


@pytest.fixture(params=["simplejpeg", "pillow"])
def backend(request, monkeypatch):
    if request.param == "pillow":
        monkeypatch.setattr(images, "simplejpeg", None)
    elif images.simplejpeg is None:
        pytest.skip("simplejpeg not installed")
    return request.param


def _jpeg(path: Path, hw=(90, 160)) -> Path:
    rgb = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)
    return path


def test_downscaled_decode(tmp_path: Path, backend: str) -> None:
    path = _jpeg(tmp_path / "a.jpg")
    full, scale = images.read_image(path)
    assert full.shape == (90, 160, 3) and scale == (1.0, 1.0)
    small, scale = images.read_image(path, (40, 70))
    assert small.shape == (45, 80, 3) and scale == (0.5, 0.5)


def test_missing_and_corrupt_images_are_named(tmp_path: Path, backend: str) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        images.read_image(tmp_path / "missing.jpg")
    data = _jpeg(tmp_path / "b.jpg").read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="corrupt image .*truncated.jpg"):
        images.read_image(bad)
