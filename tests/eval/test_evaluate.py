"""`eval --pred`: scoring saved predictions against Occ3D files, and the command's outputs and errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from renderocc.cli import main
from renderocc.core.classes import FREE
from renderocc.core.transforms import make_pose
from renderocc.data.index import Index
from renderocc.eval.evaluate import evaluate_predictions, lidar_origins, write_json_atomic

SHAPE = (200, 200, 16)


def occ3d_frame(seed: int) -> dict[str, np.ndarray]:
    """A road, a car and a building row, visible to the cameras except at the back."""
    semantics = np.full(SHAPE, FREE, dtype=np.uint8)
    semantics[:, :, 2] = 11
    semantics[110 + seed : 120 + seed, 95:105, 3:7] = 4
    semantics[:, 150:, :] = 15
    mask_camera = np.ones(SHAPE, dtype=np.uint8)
    mask_camera[:60] = 0
    return {"semantics": semantics, "mask_camera": mask_camera, "mask_lidar": mask_camera}


def fake_index(root: Path, frames: int = 2) -> Index:
    """A one-scene index of `frames` keyframes standing still, with Occ3D files under root/gts."""
    tokens = [f"tok{i}" for i in range(frames)]
    gts = []
    for i, token in enumerate(tokens):
        path = root / "gts" / "scene-0" / token / "labels.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, **occ3d_frame(i))
        gts.append(str(path.relative_to(root)))
    lidar2ego = np.eye(4)
    lidar2ego[2, 3] = 1.84
    arrays = {
        "scene_first": np.zeros(frames, dtype=np.int64),
        "scene_last": np.full(frames, frames - 1, dtype=np.int64),
        "ego2global": np.tile(np.eye(4), (frames, 1, 1)),
        "lidar2ego": np.tile(lidar2ego, (frames, 1, 1)),
    }
    empty = [""] * frames
    return Index(
        root=root / "index", dataroot=root, version="v1.0-synthetic", cameras=(), tokens=tokens,
        scenes=["scene-0"] * frames, prev_tokens=empty, next_tokens=empty, images=[[]] * frames,
        lidar=empty, lidarseg=empty, gts=gts, arrays=arrays,
        splits={"train": np.zeros(0, np.int64), "val": np.arange(frames)},
    )  # fmt: skip


def driving_index(root: Path, frames: int = 20, scenes: int = 2) -> Index:
    """`scenes` scenes of `frames` keyframes, driving 5 m per keyframe along a heading of 0.3 rad and climbing
    0.1 m, the LiDAR turned 90 degrees about z as on the nuScenes car; no Occ3D files."""
    yaw = 0.3
    heading = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    n = frames * scenes
    ego2global = np.stack(
        [make_pose(heading, [100 + 5 * (j % frames) * np.cos(yaw), 50 + 5 * (j % frames) * np.sin(yaw),
                             10 + 0.1 * (j % frames)]) for j in range(n)]
    )  # fmt: skip
    lidar2ego = make_pose([[0, -1, 0], [1, 0, 0], [0, 0, 1]], [0.94, 0.0, 1.84])
    first = np.repeat(np.arange(scenes) * frames, frames)
    tokens, empty = [f"tok{i}" for i in range(n)], [""] * n
    arrays = {
        "scene_first": first, "scene_last": first + frames - 1, "ego2global": ego2global,
        "lidar2ego": np.tile(lidar2ego, (n, 1, 1)),
    }  # fmt: skip
    return Index(
        root=root / "index", dataroot=root, version="v1.0-synthetic", cameras=(), tokens=tokens,
        scenes=[f"scene-{i // frames}" for i in range(n)], prev_tokens=empty, next_tokens=empty,
        images=[[]] * n, lidar=empty, lidarseg=empty, gts=None, arrays=arrays,
        splits={"val": np.arange(n)},
    )  # fmt: skip


def test_ray_origins_are_the_scene_keyframes_within_39_m_thinned_to_8(tmp_path):
    index = driving_index(tmp_path)
    # frame j's LiDAR in the ego frame of keyframe k: 5 (j - k) + 0.94 m ahead, 1.84 + 0.1 (j - k) m up;
    # for k = 10, frames 3..17 lie within 39 m, and round(linspace(0, 14, 8)) keeps every other one
    for key in (10, 30):  # keyframe 10 of each scene: the other scene's frames are not candidates
        expected = np.array([[5.0 * (j - 10) + 0.94, 0.0, 1.84 + 0.1 * (j - 10)] for j in range(3, 18, 2)])
        origins = lidar_origins(index, key)
        np.testing.assert_allclose(origins.numpy(), expected, atol=1e-5)
    # keyframe 2: frames 0..9 lie within 39 m; round(linspace(0, 9, 8)) = 0 1 3 4 5 6 8 9
    expected = [5.0 * (j - 2) + 0.94 for j in (0, 1, 3, 4, 5, 6, 8, 9)]
    np.testing.assert_allclose(lidar_origins(index, 22)[:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(lidar_origins(index, 22, "key-frame").numpy(), [[0.94, 0.0, 1.84]], atol=1e-6)


def write_preds(pred_dir: Path, index: Index, change=lambda s: s) -> Path:
    pred_dir.mkdir()
    for sample, token in enumerate(index.tokens):
        gt = np.load(index.dataroot / index.gts[sample])["semantics"]
        np.savez(pred_dir / f"{token}.npz", semantics=change(gt.copy()))
    return pred_dir


def test_ground_truth_as_prediction_scores_100(tmp_path):
    index = fake_index(tmp_path)
    result = evaluate_predictions(write_preds(tmp_path / "pred", index), index, "val", progress=False)
    assert result["miou"] == pytest.approx(100.0)
    assert result["rayiou"] == pytest.approx(100.0)
    assert result["ray_origins"] == "sparseocc"
    key_frame = evaluate_predictions(
        tmp_path / "pred", index, "val", ray_origins="key-frame", max_samples=1, progress=False
    )
    assert key_frame["rayiou"] == pytest.approx(100.0) and key_frame["ray_origins"] == "key-frame"
    assert result["frames"] == 2
    assert result["per_class_iou"]["car"] == pytest.approx(100.0)


def test_shifted_and_empty_predictions_score_what_the_counts_say(tmp_path):
    index = fake_index(tmp_path, frames=1)

    def shift_car(s):  # the car 4 voxels further ahead: 6 of its 10 x-slices still overlap
        car = s == 4
        s[car] = FREE
        s[np.roll(car, 4, axis=0)] = 4
        return s

    shifted = evaluate_predictions(
        write_preds(tmp_path / "shift", index, shift_car), index, "val", progress=False
    )
    assert shifted["per_class_iou"]["car"] == pytest.approx(100 * 6 / 14)
    assert shifted["per_class_iou"]["manmade"] == pytest.approx(100.0)
    assert shifted["miou"] == pytest.approx((100 * 6 / 14 + 100 + 100) / 3)
    assert 0 < shifted["rayiou"] < 100

    empty = evaluate_predictions(
        write_preds(tmp_path / "empty", index, lambda s: np.full_like(s, FREE)), index, "val", progress=False
    )
    assert empty["miou"] == 0.0 and empty["rayiou"] == 0.0

    def coarse(s):  # a 0.8 m prediction of the same box is upsampled to the 0.4 m label grid
        return s[::2, ::2, ::2]

    up = evaluate_predictions(
        write_preds(tmp_path / "coarse", index, coarse), index, "val", False, progress=False
    )
    assert 50 < up["miou"] <= 100


def test_processes_score_every_frame_once(tmp_path):
    index = fake_index(tmp_path, frames=3)
    pred_dir = write_preds(tmp_path / "pred", index)
    parts = [
        evaluate_predictions(pred_dir, index, "val", False, progress=False, rank=r, world_size=4)
        for r in range(4)
    ]  # without a process group each process's own counts come back
    assert [p["frames"] for p in parts] == [1, 1, 1, 0]
    (pred_dir / "tok2.npz").unlink()  # every process checks every frame, so that they all refuse alike
    with pytest.raises(FileNotFoundError, match="1 of 3 val frames"):
        evaluate_predictions(pred_dir, index, "val", False, progress=False, rank=0, world_size=4)


def test_missing_prediction_is_named(tmp_path):
    index = fake_index(tmp_path)
    pred_dir = write_preds(tmp_path / "pred", index)
    (pred_dir / "tok1.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 2 val frames .* tok1.npz"):
        evaluate_predictions(pred_dir, index, "val", rayiou=False, progress=False)


def test_json_is_written_atomically_with_nan_as_null(tmp_path, monkeypatch):
    path = write_json_atomic(tmp_path / "m.json", {"miou": 50.0, "per_class_iou": {"others": float("nan")}})
    assert json.loads(path.read_text()) == {"miou": 50.0, "per_class_iou": {"others": None}}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "other.json", {"miou": 1.0})
    assert not (tmp_path / "other.json").exists()


def test_cli_bad_input_names_the_fix(tmp_path, capsys):
    assert (
        main(["eval", "--pred", str(tmp_path), "--dataroot", str(tmp_path / "missing"), "--json", "x"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--pred", str(tmp_path), "--dataroot", str(tmp_path)]) == 2
    assert "renderocc prepare" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", "c", "--dataroot", str(tmp_path), "--preset", "nope"]) == 2
    assert "valid presets: demo" in capsys.readouterr().err
    assert main(["eval", "--pred", str(tmp_path), "--dataroot", str(tmp_path), "--threshold", "9"]) == 2
    assert "--pred files are labels already" in capsys.readouterr().err
    assert main(["eval", "--pred", str(tmp_path), "--dataroot", str(tmp_path), "--ray-window", "2"]) == 2
    assert "--ray-window is retired" in capsys.readouterr().err
