"""Encode a sequence of panels as an MP4 (imageio-ffmpeg) or, where no encoder is installed, a GIF."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image


def has_mp4_encoder() -> bool:
    """Whether imageio can write H.264 MP4: it needs imageio-ffmpeg (`pip install renderocc[video]`)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_video(frames: Iterable[np.ndarray], out_stem: str | Path, fps: float = 2.0) -> Path:
    """Write RGB uint8 frames [H, W, 3] (all one size) to `out_stem`.mp4, or `out_stem`.gif without ffmpeg.

    GIF frames are halved in size: a 256-colour palette per frame makes full-size panels very large.
    Returns the path written.
    """
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ValueError(
            "--video needs imageio: `pip install renderocc[video]` (imageio, imageio-ffmpeg)"
        ) from None

    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    if has_mp4_encoder():
        path = out_stem.with_suffix(".mp4")
        # macro_block_size=2: H.264 needs even sizes only; the default 16 would rescale 900-px panels.
        with imageio.get_writer(
            path, fps=fps, codec="libx264", quality=8, macro_block_size=2, ffmpeg_log_level="error"
        ) as writer:
            for frame in frames:
                writer.append_data(frame)
        return path
    path = out_stem.with_suffix(".gif")
    small = [np.asarray(Image.fromarray(f).reduce(2)) for f in frames]
    if not small:
        raise ValueError(f"write_video: no frames for {path}")
    imageio.mimwrite(path, small, duration=1000.0 / fps, loop=0)
    return path
