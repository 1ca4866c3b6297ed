"""`renderocc view`: one self-contained HTML page (no server) to explore prediction and GT voxels in 3D."""

from __future__ import annotations

import argparse
import base64
import io
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from renderocc.cli import CLIError
from renderocc.core import FREE, NUM_SEMANTIC, OCC3D_CLASSES, OCC3D_COLORS, VoxelGrid
from renderocc.vis.panel import ImageLike, fit_image, open_image
from renderocc.vis.voxel_render import BACKGROUND, DEFAULT_GRID, EGO_BOX, EGO_COLOR, LIGHT_DIR

# The page opens on the same oblique view as the PNG panels (see voxel_render.chase_camera).
VIEW_CAMERA = {"eye": (-38.0, 0.0, 34.0), "target": (0.0, 0.0, 0.0), "fov_y": 36.0}


@dataclass
class ViewerFrame:
    """One frame of the page: a label, semantics uint8 [X, Y, Z] per source name, camera images by channel."""

    label: str
    grids: dict[str, np.ndarray]
    images: Mapping[str, ImageLike] = field(default_factory=dict)


def visible_voxels(semantics: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Semantics uint8 [X, Y, Z] with the voxels outside `mask` (e.g. mask_camera) set to free.

    Enclosed voxels are kept: hiding a class in the page exposes its neighbours' faces, and the page
    draws only faces that border free space or a hidden class anyway.
    """
    if mask is None:
        return np.asarray(semantics, dtype=np.uint8)
    return np.where(mask.astype(bool), semantics, FREE).astype(np.uint8)


def encode_grid(semantics: np.ndarray) -> str:
    """Dense uint8 grid [X, Y, Z] (C order) -> base64 of its zlib stream; Occ3D grids shrink ~50x."""
    return base64.b64encode(
        zlib.compress(np.ascontiguousarray(semantics, dtype=np.uint8).tobytes(), 9)
    ).decode()


def encode_image(image: ImageLike, width: int = 480) -> str:
    """A camera image as a JPEG data URL, downscaled to `width` pixels (keeps the aspect ratio)."""
    img = open_image(image)
    img = fit_image(img, (width, max(1, round(img.height * width / img.width))))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _bundle() -> str:
    web = resources.files("renderocc.vis") / "web"
    js = (web / "viewer.js").read_text(encoding="utf-8")
    return js.replace("</script", "<\\/script")


def build_viewer_html(
    frames: list[ViewerFrame],
    title: str = "renderocc viewer",
    grid: VoxelGrid = DEFAULT_GRID,
    image_width: int = 480,
    legend: list[tuple[int, str]] | None = None,
) -> str:
    """The HTML text of a page showing `frames` (all with the same source names, e.g. prediction, GT);
    legend: the (class, label) entries to list (default: the 17 Occ3D classes)."""
    if not frames:
        raise ValueError("build_viewer_html: no frames to show")
    sources = list(frames[0].grids)
    for frame in frames:
        if list(frame.grids) != sources:
            raise ValueError(f"frame {frame.label!r} has grids {list(frame.grids)}, expected {sources}")
        for name, sem in frame.grids.items():
            if tuple(sem.shape) != grid.shape:
                raise ValueError(
                    f"frame {frame.label!r}: {name} shape {tuple(sem.shape)} != grid {grid.shape}"
                )
    data = {
        "title": title,
        "grid": {"shape": list(grid.shape), "lower": list(grid.lower), "voxel_size": grid.voxel_size},
        "classes": _legend_classes(legend),
        "sources": sources,
        "background": list(BACKGROUND),
        "ego_box": [list(EGO_BOX[0]), list(EGO_BOX[1])],
        "ego_color": list(EGO_COLOR),
        "light_dir": list(LIGHT_DIR),
        "camera": VIEW_CAMERA,
        "frames": [
            {
                "label": f.label,
                "grids": {name: encode_grid(sem) for name, sem in f.grids.items()},
                "images": {ch: encode_image(img, image_width) for ch, img in f.images.items()},
            }
            for f in frames
        ],
    }
    # "<" is escaped so that no string in the data can close the <script> element holding it.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    template = (resources.files("renderocc.vis") / "web" / "viewer.html").read_text(encoding="utf-8")
    title_html = title.replace("&", "&amp;").replace("<", "&lt;")
    page = template.replace("<title>renderocc viewer</title>", f"<title>{title_html}</title>")
    return page.replace("__RENDEROCC_DATA__", payload).replace("__RENDEROCC_BUNDLE__", _bundle())


def _legend_classes(legend: list[tuple[int, str]] | None) -> list[dict]:
    """The page's class list, indexed by class id: every semantic class, labelled as `legend` says."""
    labels = dict(legend or ())
    return [
        {"name": labels.get(c, OCC3D_CLASSES[c]), "color": OCC3D_COLORS[c].tolist()}
        for c in range(NUM_SEMANTIC)
    ]


def write_viewer(
    out_html: str | Path,
    frames: list[ViewerFrame],
    title: str = "renderocc viewer",
    grid: VoxelGrid = DEFAULT_GRID,
    image_width: int = 480,
    legend: list[tuple[int, str]] | None = None,
) -> Path:
    """Write the self-contained viewer page for `frames` to out_html; returns its path."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(build_viewer_html(frames, title, grid, image_width, legend), encoding="utf-8")
    return out_html


def dataset_viewer_frames(
    pred_dir: Path | None,
    gt_dir: Path | None,
    dataroot: Path | None,
    max_frames: int | None = None,
    scene: str | None = None,
    tokens: list[str] | None = None,
    hide_outside_camera: bool = True,
    grid: VoxelGrid = DEFAULT_GRID,
) -> list[ViewerFrame]:
    """Load frames of a dataset (scene order) for the viewer; voxels outside the GT camera mask are hidden."""
    from tqdm import tqdm

    from renderocc.vis.frames import find_frames, load_grid

    records = find_frames(pred_dir, gt_dir, dataroot, tokens=tokens, scene=scene)
    records = records[:max_frames] if max_frames is not None else records
    frames = []
    for r in tqdm(records, desc="view", unit="frame"):
        gt, mask = load_grid(r.gt_path, grid) if r.gt_path is not None else (None, None)
        mask = mask if hide_outside_camera else None
        grids = {}
        if r.pred_path is not None:
            grids["prediction"] = visible_voxels(load_grid(r.pred_path, grid)[0], mask)
        if gt is not None:
            grids["ground truth"] = visible_voxels(gt, mask)
        frames.append(ViewerFrame(f"{r.scene} · {r.token}" if r.scene else r.token, grids, r.camera_paths))
    return frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred", type=Path, help="folder of <sample_token>.npz predictions (renderocc infer)"
    )
    parser.add_argument("--gt", type=Path, help="Occ3D ground truth: DATAROOT or DATAROOT/gts")
    parser.add_argument("--dataroot", type=Path, help="nuScenes root: camera images and scene order")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--frames", type=int, default=40, metavar="N", help="first N frames in scene order")
    parser.add_argument("--scene", help="only this scene (a folder name under gts/)")
    parser.add_argument("--tokens", nargs="+", metavar="TOKEN", help="only these sample tokens")
    parser.add_argument(
        "--show-hidden", action="store_true", help="also show voxels outside the GT camera mask"
    )
    parser.add_argument("--image-width", type=int, default=480, help="width of the embedded camera images")


def run(args: argparse.Namespace) -> int:
    from renderocc.vis.frames import has_tables

    if args.pred is None and args.gt is None and args.dataroot is None:
        raise CLIError("nothing to show: give --pred (predictions) and/or --gt or --dataroot (ground truth)")
    if args.frames < 1:
        raise CLIError(f"--frames must be at least 1, got {args.frames}")
    gt, dataroot = args.gt, args.dataroot
    if gt is None and dataroot is not None and (dataroot / "gts").is_dir():
        gt = dataroot
    if dataroot is None and has_tables(gt):  # --gt DATAROOT: its tables give scene order and cameras
        dataroot = gt
    frames = dataset_viewer_frames(
        args.pred, gt, dataroot, args.frames, args.scene, args.tokens, not args.show_hidden
    )
    title = f"renderocc · {frames[0].label.split(' · ')[0]}" if len(frames) else "renderocc"
    from renderocc.data.classmap import class_legend
    from renderocc.vis.frames import dataset_class_names

    legend = class_legend(dataset_class_names(dataroot)) if dataroot is not None else None
    path = write_viewer(args.out, frames, title=title, image_width=args.image_width, legend=legend)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(frames)} frames); open it in a browser")
    return 0
