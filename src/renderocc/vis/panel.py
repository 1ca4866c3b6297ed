"""One picture per frame: the six cameras, 3D renders and bird's-eye views of prediction and GT, a legend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from renderocc.core import OCC3D_COLORS, VoxelGrid
from renderocc.data.classmap import class_legend
from renderocc.vis.voxel_render import DEFAULT_GRID, bev_image, chase_camera, render_voxels

# The nuScenes surround layout: front cameras on top, rear cameras below, each under its side.
CAMERA_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
PANEL_BG = (14, 16, 21)
TEXT = (225, 228, 235)
MUTED = (130, 136, 150)

ImageLike = Image.Image | np.ndarray | str | Path


@dataclass(frozen=True)
class PanelLayout:
    """Pixel boxes (left, top, width, height) of every part of a panel of size height x width."""

    width: int
    height: int

    @property
    def title_h(self) -> int:
        return round(self.height * 0.036)

    @property
    def top_h(self) -> int:
        return round(self.height * 0.38)

    @property
    def legend_h(self) -> int:
        return round(self.height * 0.06)

    @property
    def caption_h(self) -> int:
        return round(self.height * 0.026)

    @property
    def font_size(self) -> int:
        return max(8, round(self.height * 0.0165))

    def camera_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        h = self.top_h // 2
        w = min(round(h * 16 / 9), round(self.width * 0.58) // 3)
        return (col * w, self.title_h + row * h, w, h)

    def bev_box(self, index: int, count: int) -> tuple[int, int, int, int]:
        left = self.camera_box(0, 2)[0] + self.camera_box(0, 2)[2]
        free_w = self.width - left
        side = min(self.top_h - self.caption_h - 4, free_w // count - 8)
        slot = free_w // count
        return (left + index * slot + (slot - side) // 2, self.title_h + self.caption_h, side, side)

    def view_box(self, index: int, count: int) -> tuple[int, int, int, int]:
        top = self.title_h + self.top_h + self.caption_h
        w = self.width // count
        return (index * w, top, w - (2 if index < count - 1 else 0), self.height - top - self.legend_h)

    @property
    def legend_top(self) -> int:
        return self.height - self.legend_h


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def open_image(image: ImageLike) -> Image.Image:
    """A camera image from a path, a PIL image or an RGB uint8 array [h, w, 3] (files are opened lazily)."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"camera image {path} not found; check --images (the nuScenes dataroot)")
        return Image.open(path)
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    return image


def fit_image(image: ImageLike, size: tuple[int, int]) -> Image.Image:
    """RGB image resized to size (w, h); JPEGs are decoded at a reduced scale (draft mode) when possible."""
    img = open_image(image)
    if img.format == "JPEG":
        img.draft("RGB", size)
    return img.convert("RGB").resize(size, Image.BILINEAR)


def _caption(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, fill=TEXT) -> None:
    draw.text(xy, text, fill=fill, font=_font(size))


def _draw_cameras(canvas: Image.Image, layout: PanelLayout, images: Mapping[str, ImageLike] | None) -> None:
    draw = ImageDraw.Draw(canvas)
    fs = layout.font_size
    rows = CAMERA_LAYOUT
    if images and not set(images) <= {c for row in CAMERA_LAYOUT for c in row}:  # another rig: its first six
        names = list(images)[:6]
        rows = (tuple(names[:3]), tuple(names[3:]))
    for row, channels in enumerate(rows):
        for col, channel in enumerate(channels):
            x, y, w, h = layout.camera_box(row, col)
            if images is not None and channel in images:
                canvas.paste(fit_image(images[channel], (w - 2, h - 2)), (x + 1, y + 1))
            else:
                draw.rectangle((x + 1, y + 1, x + w - 2, y + h - 2), fill=(30, 33, 41))
                _caption(draw, (x + w // 2 - 3 * fs, y + h // 2 - fs // 2), "no image", fs, MUTED)
            label = channel.removeprefix("CAM_").replace("_", " ").lower()
            box = draw.textbbox((x + 6, y + 4), label, font=_font(fs))
            draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
            _caption(draw, (x + 6, y + 4), label, fs)


def _draw_legend(
    canvas: Image.Image, layout: PanelLayout, legend: list[tuple[int, str]] | None = None
) -> None:
    """Swatch + name of the semantic classes ("free" is never drawn), in two rows: the 17 Occ3D classes, or
    the (class, label) entries of `legend` (data.classmap.class_legend: those a class map reaches)."""
    legend = legend or class_legend(None)
    draw = ImageDraw.Draw(canvas)
    fs = layout.font_size
    per_row = max(1, (len(legend) + 1) // 2)
    cell_w = layout.width // per_row
    row_h = layout.legend_h // 2
    for k, (c, label) in enumerate(legend):
        x = (k % per_row) * cell_w + 8
        y = layout.legend_top + (k // per_row) * row_h + (row_h - fs) // 2
        draw.rectangle((x, y, x + fs, y + fs), fill=tuple(int(v) for v in OCC3D_COLORS[c]))
        _caption(draw, (x + fs + 6, y - 1), label, fs)


def render_frame(
    pred: np.ndarray | None,
    gt: np.ndarray | None,
    images: Mapping[str, ImageLike] | None = None,
    mask: np.ndarray | None = None,
    out_png: str | Path | None = None,
    grid: VoxelGrid = DEFAULT_GRID,
    title: str = "",
    size: tuple[int, int] = (900, 1600),
    legend: list[tuple[int, str]] | None = None,
) -> np.ndarray:
    """Compose the panel of one frame and optionally save it as a PNG.

    pred, gt: uint8 [X, Y, Z] Occ3D semantics (17 = free); either may be None (not both). images: camera
    channel (CAM_FRONT, ...) -> image path / PIL image / uint8 [h, w, 3]; missing channels show a blank tile.
    mask: [X, Y, Z], voxels where it is 0 are hidden in both renders (pass mask_camera to hide the voxels
    no camera sees). size: panel (height, width). legend: (class, label) entries (default: all 17).
    -> RGB uint8 [height, width, 3].
    """
    sources = [(name, sem) for name, sem in (("prediction", pred), ("ground truth", gt)) if sem is not None]
    if not sources:
        raise ValueError("render_frame: both pred and gt are None; give at least one grid")
    for name, sem in sources:
        if tuple(sem.shape) != grid.shape:
            raise ValueError(f"render_frame: {name} shape {tuple(sem.shape)} != grid shape {grid.shape}")
    if mask is not None and tuple(mask.shape) != grid.shape:
        raise ValueError(f"render_frame: mask shape {tuple(mask.shape)} != grid shape {grid.shape}")
    layout = PanelLayout(width=size[1], height=size[0])
    canvas = Image.new("RGB", (layout.width, layout.height), PANEL_BG)
    draw = ImageDraw.Draw(canvas)
    fs = layout.font_size
    _caption(draw, (8, (layout.title_h - fs) // 2), title, fs)
    _draw_cameras(canvas, layout, images)
    for i, (name, sem) in enumerate(sources):
        x, y, w, h = layout.bev_box(i, len(sources))
        bev = Image.fromarray(bev_image(sem, mask, scale=1, grid=grid)).resize((w, h), Image.NEAREST)
        canvas.paste(bev, (x, y))
        _caption(draw, (x, layout.title_h + 2), f"{name}, bird's-eye view", fs, MUTED)
        x, y, w, h = layout.view_box(i, len(sources))
        view = render_voxels(sem, chase_camera(w, h), grid=grid, mask=mask)
        canvas.paste(Image.fromarray(view), (x, y))
        _caption(draw, (x + 8, y - layout.caption_h + 2), name, fs)
    _draw_legend(canvas, layout, legend)
    out = np.asarray(canvas)
    if out_png is not None:
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        canvas.save(out_png)
    return out


def render_dataset_frames(
    pred_dir: str | Path | None,
    dataroot: str | Path | None,
    out_dir: str | Path,
    tokens: list[str] | None = None,
    max_frames: int | None = None,
    hide_outside_camera: bool = True,
    gt_dir: str | Path | None = None,
    scene: str | None = None,
    video: bool = False,
    fps: float = 2.0,
    grid: VoxelGrid = DEFAULT_GRID,
    size: tuple[int, int] = (900, 1600),
) -> list[Path]:
    """Render a panel PNG per frame of a dataset into out_dir, in scene order; returns the PNG paths.

    pred_dir: `<sample_token>.npz` files (what `renderocc infer` writes), or None for GT only. dataroot:
    the nuScenes root (tables and camera JPEGs; its gts/ is the GT unless gt_dir is given), or None.
    hide_outside_camera hides voxels where the GT mask_camera is 0. video: also one MP4/GIF per scene
    (out_dir/<scene>.mp4). The first max_frames frames in scene order are drawn.
    """
    from tqdm import tqdm

    from renderocc.vis.frames import dataset_class_names, find_frames, load_grid
    from renderocc.vis.video import write_video

    if gt_dir is None and dataroot is not None and (Path(dataroot) / "gts").is_dir():
        gt_dir = dataroot
    frames = find_frames(pred_dir, gt_dir, dataroot, tokens=tokens, scene=scene)
    frames = frames[:max_frames] if max_frames is not None else frames
    legend = class_legend(dataset_class_names(Path(dataroot)) if dataroot is not None else None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_scene: dict[str, list[Path]] = {}
    for record in tqdm(frames, desc="vis", unit="frame"):
        gt, mask = load_grid(record.gt_path, grid) if record.gt_path is not None else (None, None)
        pred = load_grid(record.pred_path, grid)[0] if record.pred_path is not None else None
        paths = per_scene.setdefault(record.scene, [])
        title = f"{record.scene or 'frame'}  ·  {len(paths) + 1}  ·  {record.token}"
        out_png = out_dir / f"{record.scene + '_' if record.scene else ''}{len(paths):03d}_{record.token}.png"
        render_frame(
            pred,
            gt,
            images=record.camera_paths or None,
            mask=mask if hide_outside_camera else None,
            out_png=out_png,
            grid=grid,
            title=title,
            size=size,
            legend=legend,
        )
        paths.append(out_png)
    if video:
        for scene_name, paths in per_scene.items():
            frames_rgb = (np.asarray(Image.open(p).convert("RGB")) for p in paths)
            written = write_video(frames_rgb, out_dir / (scene_name or "frames"), fps=fps)
            if written.suffix == ".gif":
                print(
                    f"wrote {written} (GIF: install imageio-ffmpeg, `pip install renderocc[video]`, for MP4)"
                )
            else:
                print(f"wrote {written}")
    return [p for paths in per_scene.values() for p in paths]
