"""Panels hold cameras, renders, bird's-eye views and a legend; datasets render in scene order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vis_scenes import CAR, CHANNELS, ROAD

from renderocc.cli import main
from renderocc.core import FREE, NUM_SEMANTIC, OCC3D_COLORS
from renderocc.vis.frames import find_frames
from renderocc.vis.panel import PanelLayout, render_dataset_frames, render_frame

SIZE = (270, 480)
TRUCK = 10


def count_exact(img: np.ndarray, color) -> int:
    return int((img == np.asarray(color, np.uint8)).all(-1).sum())


def shades_of(img: np.ndarray, cls: int) -> np.ndarray:
    """Pixels [...] whose colour is the class colour up to brightness (renders shade faces and heights)."""
    rgb = img.astype(float)
    color = OCC3D_COLORS[cls].astype(float)
    return np.abs(rgb / rgb.max(-1, keepdims=True).clip(1) - color / color.max()).max(-1) < 0.03


def crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return img[y : y + h, x : x + w]


def test_panel_parts_are_where_the_layout_says(scene):
    pred = np.where(scene == CAR, TRUCK, scene).astype(np.uint8)
    images = {ch: np.full((90, 160, 3), (10 * i, 200, 30), np.uint8) for i, ch in enumerate(CHANNELS)}
    panel = render_frame(pred, scene, images=images, size=SIZE, title="t")
    assert panel.shape == (*SIZE, 3)
    layout = PanelLayout(width=SIZE[1], height=SIZE[0])
    front = crop(panel, layout.camera_box(0, 1))  # CAM_FRONT is index 0: colour (0, 200, 30)
    assert count_exact(front, (0, 200, 30)) > 0.5 * front.shape[0] * front.shape[1]
    back_right = crop(panel, layout.camera_box(1, 2))  # CAM_BACK_RIGHT is index 2
    assert count_exact(back_right, (20, 200, 30)) > 0.5 * back_right.shape[0] * back_right.shape[1]
    for index, cls, other in ((0, TRUCK, CAR), (1, CAR, TRUCK)):  # prediction left, ground truth right
        view, bev = crop(panel, layout.view_box(index, 2)), crop(panel, layout.bev_box(index, 2))
        for part in (view, bev):
            assert shades_of(part, cls).sum() > 3
            assert not shades_of(part, other).any()
    legend = panel[layout.legend_top :]
    for c in range(NUM_SEMANTIC):  # every class swatch, in its exact colour
        assert count_exact(legend, OCC3D_COLORS[c]) >= layout.font_size**2 // 2
    assert count_exact(legend, OCC3D_COLORS[FREE]) < 40  # "free" has no swatch (white text pixels aside)


def test_panel_with_one_grid_and_no_images(scene, tmp_path: Path):
    out = tmp_path / "gt_only.png"
    panel = render_frame(None, scene, out_png=out, size=SIZE)
    assert np.array_equal(np.asarray(Image.open(out)), panel)
    layout = PanelLayout(width=SIZE[1], height=SIZE[0])
    assert crop(panel, layout.view_box(0, 1)).shape[1] > 0.95 * SIZE[1]  # the single render spans the width
    with pytest.raises(ValueError, match="both pred and gt are None"):
        render_frame(None, None)
    with pytest.raises(ValueError, match="mask shape"):
        render_frame(scene, None, mask=np.ones((4, 4, 4)), size=SIZE)


def test_find_frames_sorts_by_timestamp_and_finds_cameras(dataroot: Path):
    frames = find_frames(dataroot / "preds", dataroot, dataroot)
    assert [f.token for f in frames] == ["tok03", "tok02", "tok01"]  # tokens sort the other way round
    assert {f.scene for f in frames} == {"scene-0042"}
    assert sorted(frames[0].camera_paths) == sorted(CHANNELS)
    assert all(p.is_file() for p in frames[0].camera_paths.values())
    assert frames[0].pred_path == dataroot / "preds" / "tok03.npz"
    only = find_frames(None, dataroot / "gts", None, tokens=["tok02"])
    assert [f.token for f in only] == ["tok02"] and only[0].pred_path is None


def test_render_dataset_frames_writes_panels_and_a_video(dataroot: Path, tmp_path: Path):
    out = tmp_path / "vis"
    paths = render_dataset_frames(dataroot / "preds", dataroot, out, size=SIZE, video=True, max_frames=2)
    assert [p.name for p in paths] == ["scene-0042_000_tok03.png", "scene-0042_001_tok02.png"]
    first, second = (np.asarray(Image.open(p)) for p in paths)
    assert first.shape == (*SIZE, 3) and not np.array_equal(first, second)  # the car came closer
    videos = sorted(out.glob("scene-0042.*"))
    assert [v.suffix for v in videos] in ([".mp4"], [".gif"])
    if videos[0].suffix == ".gif":
        with Image.open(videos[0]) as gif:
            assert gif.n_frames == 2


def test_vis_cli(dataroot: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli"
    args = ["vis", "--gt", str(dataroot / "gts"), "--images", str(dataroot), "--out", str(out)]
    assert main([*args, "--frames", "1", "--size", "180", "320"]) == 0
    assert [p.name for p in out.glob("*.png")] == ["scene-0042_000_tok03.png"]
    # --gt DATAROOT alone: GT from its gts/, cameras and scene order from its tables
    assert main(["vis", "--gt", str(dataroot), "--out", str(tmp_path / "root"), "--size", "180", "320"]) == 0
    names = sorted(p.name for p in (tmp_path / "root").glob("*.png"))
    assert names == ["scene-0042_000_tok03.png", "scene-0042_001_tok02.png", "scene-0042_002_tok01.png"]
    # Voxels outside the GT camera mask (behind the ego) are hidden unless --show-hidden.
    small = ["--frames", "1", "--size", "180", "320"]
    assert main(["vis", "--gt", str(dataroot), "--out", str(tmp_path / "all"), *small, "--show-hidden"]) == 0
    layout = PanelLayout(width=320, height=180)
    bevs = [
        crop(np.asarray(Image.open(d / "scene-0042_000_tok03.png")), layout.bev_box(0, 1))
        for d in (tmp_path / "root", tmp_path / "all")
    ]
    hidden, shown = (b[3 * b.shape[0] // 4 :] for b in bevs)  # the quarter behind the ego
    assert not shades_of(hidden, ROAD).any() and shades_of(shown, ROAD).mean() > 0.9
    assert main(["vis", "--pred", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "prediction folder" in capsys.readouterr().err
    assert main(["vis", "--out", str(out)]) == 2
    assert "--pred" in capsys.readouterr().err


def test_synthetic_dataset_panels(tiny_dataset: Path, tmp_path: Path):
    frames = find_frames(gt_dir=tiny_dataset, dataroot=tiny_dataset)
    assert len(frames) == 6 and [f.scene for f in frames] == ["scene-0000"] * 3 + ["scene-0001"] * 3
    assert all(a.timestamp < b.timestamp for a, b in zip(frames[:2], frames[1:3]))
    assert all(sorted(f.camera_paths) == sorted(CHANNELS) for f in frames)
    paths = render_dataset_frames(None, tiny_dataset, tmp_path, scene="scene-0001", max_frames=1, size=SIZE)
    assert [p.name for p in paths] == [f"scene-0001_000_{frames[3].token}.png"]
    panel = np.asarray(Image.open(paths[0]))
    layout = PanelLayout(width=SIZE[1], height=SIZE[0])
    front = crop(panel, layout.camera_box(0, 1))
    assert front.std() > 10  # a real camera picture, not the blank "no image" tile
