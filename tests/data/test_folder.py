"""The folder format: `convert` round trip to identical batches and training, label images, class maps,
other rigs, undistortion, resumable atomic prepare, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from folder_fixtures import copy_dataset, edit_json, frame_dirs
from PIL import Image

from renderocc.cli import main
from renderocc.config import DataConfig
from renderocc.data import OccDataset, collate, prepare
from renderocc.data.classmap import DEFAULT, UNKNOWN, class_legend, parse_class_map
from renderocc.data.convert import convert
from renderocc.data.folder_labels import subsample_pixels
from renderocc.data.index import INDEX_FILE
from renderocc.data.labels import load_labels
from renderocc.train_utils.data import train_loader

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_fixtures import tiny_preset  # noqa: E402

CFG = DataConfig(image_size=(64, 112), max_rays=500, ray_frame_offsets=(-1, 0, 1))


@pytest.fixture(scope="module")
def folder_root(tiny_dataset, tmp_path_factory) -> Path:
    """The shared tiny synthetic set converted to the folder format (LiDAR points, no label images)."""
    return convert(tiny_dataset, "v1.0-synthetic", tmp_path_factory.mktemp("folder") / "data")


@pytest.fixture(scope="module")
def folder_index(folder_root):
    return prepare(folder_root, workers=0)


def _batches(index, steps: int = 2) -> list[dict]:
    loader = train_loader(index, CFG, batch_size=2, num_workers=0, seed=3, start_sample=0)
    it = iter(loader)
    return [next(it) for _ in range(steps)]


def test_convert_gives_the_same_index_labels_and_batches(prepared, folder_index) -> None:
    assert folder_index.tokens == prepared.tokens and folder_index.version == "folder"
    for key, value in prepared.arrays.items():
        if key != "lidarseg_to_occ3d":
            np.testing.assert_array_equal(folder_index.arrays[key], value, err_msg=key)
    for s in range(len(prepared)):
        a, b = load_labels(prepared, s), load_labels(folder_index, s)
        for field in ("u", "v", "depth", "cls", "cam_start"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(folder_index.class_counts, prepared.class_counts)
    assert folder_index.class_names[4] == ["vehicle.car"]  # the lidarseg names, through classes.json
    for a, b in zip(_batches(prepared), _batches(folder_index)):
        assert a.keys() == b.keys()
        for key in a:
            if torch.is_tensor(a[key]):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


def test_training_on_both_formats_is_identical(prepared, folder_index, tmp_path) -> None:
    from renderocc.train import METRICS_FILE, TrainOptions, train

    logged = []
    for name, index in (("nuscenes", prepared), ("folder", folder_index)):
        opts = TrainOptions(
            index.dataroot, tmp_path / name, index_dir=index.root, progress=False, device="cpu"
        )
        train(tiny_preset(iters=2), opts)
        records = [json.loads(line) for line in (tmp_path / name / METRICS_FILE).read_text().splitlines()]
        logged.append(
            {
                k: v
                for r in records
                if r.get("step") == 2
                for k, v in r.items()
                if k.startswith(("loss", "grad"))
            }
        )
    assert (
        len(logged[0]) > 3 and logged[0] == logged[1]
    )  # step 2's losses and gradient norm, after one update


def test_dense_label_images_agree_with_lidar(tiny_dataset, prepared, tmp_path) -> None:
    root = convert(tiny_dataset, "v1.0-synthetic", tmp_path / "cams", points=False, label_images="dense")
    assert not any(root.glob("scenes/*/*/LIDAR_TOP.npz"))
    index = prepare(root, workers=0, image_labels=400)
    assert index.arrays["lidar2ego"][0, 2, 3] == pytest.approx(
        1.5, abs=0.1
    )  # RayIoU origin: the rig's centre
    agree, depth_err = [], []
    for s in range(len(index)):
        dense, lidar = load_labels(index, s), load_labels(prepared, s)
        per_cam = np.diff(dense.cam_start)
        assert (per_cam <= 2 * 400).all() and (per_cam >= 100).all()
        key_d = (dense.camera_ids() * 1000 + dense.v) * 1000 + dense.u
        key_l = (lidar.camera_ids() * 1000 + lidar.v) * 1000 + lidar.u
        _, i, j = np.intersect1d(key_d, key_l, return_indices=True)
        agree.append(dense.cls[i] == lidar.cls[j])
        depth_err.append(np.abs(dense.depth[i].astype(float) / lidar.depth[j].astype(float) - 1))
    assert np.concatenate(agree).mean() > 0.9
    assert np.median(np.concatenate(depth_err)) < 0.02


def test_subsample_pixels_spreads_evenly_and_repeats() -> None:
    mask = np.zeros((60, 100), bool)
    mask[10:50, 5:95] = True
    v, u = subsample_pixels(mask, 100, seed=7)
    again = subsample_pixels(mask, 100, seed=7)
    assert np.array_equal(v, again[0]) and np.array_equal(u, again[1])
    assert 50 <= len(v) <= 200 and mask[v, u].all()
    stride = int(np.ceil(np.sqrt(mask.sum() / 100)))
    cells = (v // stride) * 1000 + u // stride
    assert len(np.unique(cells)) == len(cells)  # one per cell
    small = subsample_pixels(mask, 10**6, seed=0)
    assert len(small[0]) == mask.sum()


def test_class_map_maps_ignores_and_names_the_fix(tmp_path) -> None:
    cmap = parse_class_map(
        {
            "classes": [
                {"id": 0, "name": "road", "to": "driveable_surface"},
                {"id": 3, "name": "van", "to": "car"},
                {"id": 4, "name": "car", "to": 4},
                {"id": 9, "name": "sky", "to": None},
            ]
        },
        "classes.json",
    )
    assert cmap.to_model(np.array([0, 3, 4, 9, 255]), "x").tolist() == [11, 4, 4, UNKNOWN, UNKNOWN]
    with pytest.raises(ValueError, match=r"labels.png: class id 5 is unknown; add \{\"id\": 5"):
        cmap.to_model(np.array([0, 5]), "labels.png")
    with pytest.raises(ValueError, match="without classes.json must hold model classes 0..16"):
        DEFAULT.to_model(np.array([17]), "points.npz")
    for to in ("lorry", "free", 17):
        with pytest.raises(ValueError, match="is not a model class"):
            parse_class_map({"classes": [{"id": 1, "name": "x", "to": to}]}, "classes.json")
    assert class_legend(cmap.names_per_model_class()) == [
        (4, "car: van, car"),
        (11, "driveable_surface: road"),
    ]


def _two_camera_rig(src: Path, dst: Path) -> Path:
    """A rig of CAM_FRONT at its size and CAM_BACK at half size (intrinsics scaled), no other camera."""
    root, two = copy_dataset(src, dst), ("CAM_FRONT", "CAM_BACK")
    for scene in (root / "scenes").iterdir():

        def keep_two(calib: dict) -> None:
            calib["cameras"] = {k: calib["cameras"][k] for k in two}
            K = np.array(calib["cameras"]["CAM_BACK"]["intrinsics"])
            K[:2] *= 0.5
            calib["cameras"]["CAM_BACK"]["intrinsics"] = K.tolist()

        edit_json(scene / "calib.json", keep_two)
    for frame in frame_dirs(root):
        edit_json(frame / "frame.json", lambda f: f.update(cameras={k: f["cameras"][k] for k in two}))
        with Image.open(frame / "CAM_BACK.jpg") as img:
            small = img.resize((img.width // 2, img.height // 2))
        (frame / "CAM_BACK.jpg").unlink()  # a hard link to the source set: replace, never write through
        small.save(frame / "CAM_BACK.jpg", quality=95)
    return root


def test_any_rig_trains(folder_root, tmp_path) -> None:
    from renderocc.models import build_model

    root = _two_camera_rig(folder_root, tmp_path / "rig")
    index = prepare(root, workers=0)
    assert index.cameras == ("CAM_FRONT", "CAM_BACK") and index.arrays["image_hw"][0].tolist() == [
        [90, 160],
        [45, 80],
    ]
    preset = tiny_preset()
    item = OccDataset(index, preset.data, "train", train=True)[0]
    assert item["imgs"].shape == (1, 2, 3, 32, 64) and item["depth_map"].shape == (2, 32, 64)
    assert item["ray_valid"].sum() > 50
    out = build_model(preset)(collate([item]))
    assert out["density"].shape[0] == 1 and torch.isfinite(out["density"]).all()


def test_undistortion_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    from renderocc.data.undistort import check_distortion, distort

    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-0.6, 0.6, (200, 2)), np.ones((200, 1))], 1) * rng.uniform(
        2, 9, (200, 1)
    )
    K = np.array([[400.0, 0.0, 320.5], [0.0, 410.0, 240.25], [0.0, 0.0, 1.0]])
    for model, coeffs in (
        ("opencv", [-0.3, 0.1, 1e-3, -2e-3, -0.02]),
        ("opencv", [0.2, -0.05, 1e-3, 5e-4, 0.01, 0.1, -0.02, 0.005]),
        ("fisheye", [0.05, -0.01, 0.003, -0.0005]),
    ):
        c = check_distortion(model, coeffs, "test")
        x, y, ok = distort(points[:, 0] / points[:, 2], points[:, 1] / points[:, 2], model, c)
        ours = np.stack([K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]], -1)
        if model == "fisheye":
            ref = cv2.fisheye.projectPoints(points[None], np.zeros(3), np.zeros(3), K, np.array(coeffs))[0][0]
        else:
            ref = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, np.array(coeffs))[0][:, 0]
        assert ok.all()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_undistortion_round_trip() -> None:
    from renderocc.data.undistort import check_distortion, distort, remap_image, undistort_map

    h, w = 120, 160
    K = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 60.0], [0.0, 0.0, 1.0]])
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    pattern = lambda u, v: np.stack([127 + 100 * np.sin(u / 9), 127 + 100 * np.cos(v / 7), u / w * 255], -1)  # noqa: E731
    c = check_distortion("opencv", [-0.25, 0.05, 0.001, 0.0, 0.0], "test")
    # the distorted camera's image: each distorted pixel shows the pinhole pattern where its ray points
    xd, yd = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    x, y = xd.copy(), yd.copy()
    for _ in range(50):  # fixed-point inversion of the forward model (test-side reference)
        dx, dy, _ = distort(x, y, "opencv", c)
        x, y = x + (xd - dx), y + (yd - dy)
    distorted = pattern(K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]).clip(0, 255).astype(np.uint8)
    src, ok = undistort_map("opencv", c, K, K, (h, w))
    restored = remap_image(distorted, src, ok).astype(float)
    inner = (slice(20, -20), slice(20, -20))
    assert ok[inner].all()
    assert np.abs(restored[inner] - pattern(u, v)[inner]).mean() < 3.0


def test_distorted_rig_prepares_undistorted_images(folder_root, folder_index, tmp_path) -> None:
    root = copy_dataset(folder_root, tmp_path / "fisheye")
    for scene in (root / "scenes").iterdir():
        edit_json(scene / "calib.json", lambda c: c["cameras"]["CAM_FRONT"].update(distortion=[0.0] * 5))
    index = prepare(root, workers=0, out=tmp_path / "index")
    plain = folder_index
    front = index.cameras.index("CAM_FRONT")
    path = index.image_path(0, front)
    assert path.is_relative_to(tmp_path / "index" / "images") and path.is_file()
    with Image.open(path) as a, Image.open(plain.image_path(0, front)) as b:
        diff = np.abs(np.asarray(a, float) - np.asarray(b, float))
    assert diff.mean() < 4.0  # zero distortion: the same image, re-encoded
    a, b = load_labels(index, 0), load_labels(plain, 0)
    np.testing.assert_array_equal(a.u, b.u)


def test_failed_prepare_leaves_nothing_and_resumes(folder_root, tmp_path) -> None:
    root = copy_dataset(folder_root, tmp_path / "data")
    frames = frame_dirs(root)
    broken = frames[3] / "LIDAR_TOP.npz"
    good = broken.read_bytes()
    broken.unlink()
    broken.write_bytes(b"not numpy")
    out = tmp_path / "index"
    with pytest.raises(ValueError, match=f"point file {broken} cannot be read"):
        prepare(root, workers=0, out=out)
    assert not out.exists()
    partial = tmp_path / ".index.partial" / "labels"
    done = sorted(partial.iterdir())
    assert len(done) == 3
    mtimes = {p.name: p.stat().st_mtime_ns for p in done}
    broken.write_bytes(good)
    index = prepare(root, workers=1, out=out)  # in a worker process this time
    assert (out / INDEX_FILE).is_file() and not (tmp_path / ".index.partial").exists()
    assert {p.name: (out / "labels" / p.name).stat().st_mtime_ns for p in done} == mtimes
    assert len(index) == 6


def _move_image(frame: Path) -> str:
    (frame / "CAM_FRONT.jpg").rename(frame / "front.jpg")
    return "image .*CAM_FRONT.jpg not found .*cameras.CAM_FRONT.image"


def _principal_point(frame: Path) -> str:
    calib = frame.parent / "calib.json"
    edit_json(calib, lambda c: c["cameras"]["CAM_FRONT"]["intrinsics"][0].__setitem__(2, 400.0))
    return (
        "principal point \\(400, .*\\) lies outside the 160x90 image .*CAM_FRONT.jpg; the intrinsics belong"
    )


def _declared_size(frame: Path) -> str:
    edit_json(frame / "frame.json", lambda f: f["cameras"]["CAM_FRONT"].update(width=1600, height=900))
    return "image .*CAM_FRONT.jpg is 160x90 but camera CAM_FRONT declares width 1600, height 900"


def _label_image_size(frame: Path) -> str:
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(frame / "d.png")
    Image.fromarray(np.zeros((90, 160), np.uint8)).save(frame / "c.png")
    edit_json(
        frame / "frame.json", lambda f: f["cameras"]["CAM_FRONT"].update(depth="d.png", classes="c.png")
    )
    return "label image .*d.png is 10x10 but its camera image .*CAM_FRONT.jpg is 160x90"


def _missing_label_image(frame: Path) -> str:
    edit_json(
        frame / "frame.json", lambda f: f["cameras"]["CAM_FRONT"].update(depth="d.png", classes="c.png")
    )
    return "depth label image .*d.png not found .*cameras.CAM_FRONT.depth"


def _unknown_class(frame: Path) -> str:
    path = frame / "LIDAR_TOP.npz"
    with np.load(path) as npz:
        points, classes = npz["points"], npz["classes"].copy()
    classes[5] = 77
    path.unlink()
    np.savez(path, points=points, classes=classes)
    return 'point file .*LIDAR_TOP.npz: class id 77 is unknown; add {"id": 77, .* to .*classes.json'


def _non_rigid(frame: Path) -> str:
    edit_json(frame / "frame.json", lambda f: f["ego2world"][0].__setitem__(0, 2.0))
    return "frame.json: ego2world is not a rigid pose .*without scale or shear"


@pytest.mark.parametrize(
    "damage",
    [_move_image, _principal_point, _declared_size, _label_image_size, _missing_label_image, _unknown_class,
     _non_rigid],
    ids=lambda f: f.__name__[1:],
)  # fmt: skip
def test_bad_input_is_named_in_one_line(folder_root, tmp_path, capsys, damage) -> None:
    root = copy_dataset(folder_root, tmp_path / "data")
    message = damage(frame_dirs(root)[1])
    out = tmp_path / "index"
    assert main(["prepare", "--dataroot", str(root), "--out", str(out), "--workers", "0"]) == 2
    errors = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("renderocc prepare: error")
    ]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not out.exists()


def test_cli_converts_and_detects_the_format(tiny_dataset, tmp_path, capsys) -> None:
    out = tmp_path / "data"
    args = ["convert", "--dataroot", str(tiny_dataset), "--version", "v1.0-synthetic", "--out", str(out)]
    assert main([*args, "--no-points"]) == 2
    assert "nothing to label the images with" in capsys.readouterr().err
    assert main(args) == 0 and (out / "dataset.json").is_file()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["prepare", "--dataroot", str(out), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "indexed 6 keyframes" in printed and "vehicle.car" in printed
    assert (out / "renderocc" / "folder" / INDEX_FILE).is_file()
    shutil.rmtree(out / "renderocc")
    (out / "dataset.json").unlink()
    assert main(["prepare", "--dataroot", str(out)]) == 2
    assert "needs --version" in capsys.readouterr().err


def test_vis_and_view_read_a_folder_dataset(folder_root, folder_index, tmp_path) -> None:
    from renderocc.vis.frames import find_frames
    from renderocc.vis.view import dataset_viewer_frames

    frames = find_frames(None, folder_root, folder_root)
    assert [f.token for f in frames] == folder_index.tokens
    assert set(frames[0].camera_paths) == set(folder_index.cameras) and frames[0].gt_path.is_file()
    assert main(["vis", "--gt", str(folder_root), "--out", str(tmp_path / "png"), "--frames", "1",
                 "--size", "180", "320"]) == 0  # fmt: skip
    assert len(list((tmp_path / "png").glob("*.png"))) == 1
    assert len(dataset_viewer_frames(None, folder_root, folder_root, max_frames=2)) == 2
