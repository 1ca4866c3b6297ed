"""The HTML viewer is self-contained, carries compact frame data, and draws voxels in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vis_scenes import CAR, CHANNELS, GRID, ROAD, box

from renderocc.cli import main
from renderocc.core import FREE, OCC3D_COLORS
from renderocc.vis.frames import load_grid
from renderocc.vis.view import ViewerFrame, visible_voxels, write_viewer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No GPU: WebGL runs on SwiftShader, Chromium's CPU implementation.
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
TRUCK = 10


def page_data(html: str) -> dict:
    match = re.search(r'<script id="renderocc-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def decode_grid(b64: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(b64)), np.uint8).reshape(GRID.shape)


def test_visible_voxels_applies_the_mask():
    sem = np.full(GRID.shape, FREE, np.uint8)
    sem[10:15, 10:15, 2:7] = CAR
    mask = np.zeros(GRID.shape, bool)
    mask[:12] = True
    shown = visible_voxels(sem, mask)
    assert (shown == CAR).sum() == 2 * 5 * 5 and (shown[12:] == FREE).all()
    assert np.array_equal(visible_voxels(sem), sem)


def exposed_faces(occupied: np.ndarray) -> int:
    """Faces of occupied voxels that border a free voxel or the outside of the grid."""
    p = np.pad(occupied, 1)
    c = p[1:-1, 1:-1, 1:-1]
    neighbours = (p[2:, 1:-1, 1:-1], p[:-2, 1:-1, 1:-1], p[1:-1, 2:, 1:-1], p[1:-1, :-2, 1:-1])
    neighbours += (p[1:-1, 1:-1, 2:], p[1:-1, 1:-1, :-2])
    return int(sum((c & ~n).sum() for n in neighbours))


def test_view_cli_writes_a_self_contained_page(dataroot: Path, tmp_path: Path):
    out = tmp_path / "page.html"
    assert (
        main(["view", "--pred", str(dataroot / "preds"), "--dataroot", str(dataroot), "--out", str(out)]) == 0
    )
    html = out.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), (
        "the page must not load anything from outside"
    )
    assert html.count("</script>") == 2  # the data and the bundle, nothing closes them early
    data = page_data(html)
    assert data["sources"] == ["prediction", "ground truth"]
    assert [f["label"].split(" · ")[1] for f in data["frames"]] == ["tok03", "tok02", "tok01"]
    gt, mask = load_grid(dataroot / "gts" / "scene-0042" / "tok03" / "labels.npz")
    assert np.array_equal(decode_grid(data["frames"][0]["grids"]["ground truth"]), visible_voxels(gt, mask))
    pred = decode_grid(data["frames"][0]["grids"]["prediction"])
    assert (pred == TRUCK).any() and not (pred == CAR).any()
    images = data["frames"][0]["images"]
    assert sorted(images) == sorted(CHANNELS)
    jpeg = Image.open(io.BytesIO(base64.b64decode(images["CAM_FRONT"].split(",", 1)[1])))
    assert jpeg.format == "JPEG" and jpeg.width == 480
    assert main(["view", "--gt", str(tmp_path / "nope"), "--out", str(out)]) == 2


def _viewer_page(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A page whose prediction has a truck where the GT has a car, both on a road; and the GT."""
    gt = np.full(GRID.shape, FREE, np.uint8)
    box(gt, (-40, -40, -0.6), (40, 40, -0.2), ROAD)
    box(gt, (6, -3, -0.2), (14, 3, 2.2), CAR)
    pred = np.where(gt == CAR, TRUCK, gt).astype(np.uint8)
    moved = np.roll(gt, -20, axis=0)
    camera = np.zeros((90, 160, 3), np.uint8)
    frames = [
        ViewerFrame(
            "first",
            {"prediction": visible_voxels(pred), "ground truth": visible_voxels(gt)},
            {"CAM_FRONT": camera},
        ),
        ViewerFrame("second", {"prediction": visible_voxels(moved), "ground truth": visible_voxels(moved)}),
    ]
    return write_viewer(tmp_path / "viewer.html", frames, title="test"), gt


def count_color(png: bytes, cls: int, region: slice = slice(None)) -> int:
    """Pixels within 3 of a class colour (flat shading draws classes in their exact sRGB colour)."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[:, region]
    return int((np.abs(img - OCC3D_COLORS[cls].astype(int)).max(-1) <= 3).sum())


@pytest.mark.browser
def test_viewer_in_headless_chromium(tmp_path: Path):
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    page_path, gt = _viewer_page(tmp_path)
    errors: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1000, "height": 600},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)  # SwiftShader on a busy CI machine can be slow
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_function("window.renderocc && window.renderocc.ready")

            page.wait_for_function("window.renderocc.renderCount > 0")
            faces = page.evaluate("window.renderocc.instances")
            assert faces == {
                "prediction": exposed_faces(gt != FREE),
                "ground truth": exposed_faces(gt != FREE),
            }

            def redrawn(action) -> bytes:
                """Run a UI action, wait until the viewer has drawn again, screenshot the 3D canvas."""
                before = page.evaluate("window.renderocc.renderCount")
                action()
                page.wait_for_function(f"window.renderocc.renderCount > {before}")
                return page.locator("#canvas").screenshot()

            lit = np.asarray(Image.open(io.BytesIO(page.locator("#canvas").screenshot())).convert("RGB"))
            assert (np.abs(lit.astype(int) - [22, 25, 31]).max(-1) > 10).mean() > 0.2, "no voxels drawn"
            png = redrawn(lambda: page.check("#flat"))
            width = np.asarray(Image.open(io.BytesIO(png))).shape[1]
            left, right = slice(0, width // 2), slice(width // 2, None)
            assert count_color(png, TRUCK, left) > 200 and count_color(png, TRUCK, right) == 0
            assert count_color(png, CAR, right) > 200 and count_color(png, CAR, left) == 0
            assert count_color(png, ROAD) > 5000
            hidden = redrawn(lambda: page.uncheck("#class-4"))  # car
            assert count_color(hidden, CAR) == 0 and count_color(hidden, TRUCK) > 200
            assert count_color(hidden, ROAD) > count_color(png, ROAD)  # the road under the car shows
            faces = page.evaluate("window.renderocc.instances")
            assert faces == {
                "prediction": exposed_faces(gt != FREE),
                "ground truth": exposed_faces(gt == ROAD),
            }
            assert page.locator("#cameras img").count() == 1
            page.fill("#frame", "1")
            page.dispatch_event("#frame", "input")
            page.wait_for_function("window.renderocc.frame === 1")
            assert page.locator("#cameras img").count() == 0
            assert page.evaluate("window.renderocc.errors") == []
        finally:
            context.close()
    assert errors == [], f"console errors: {errors}"
