"""`renderocc infer` on a prepared dataset and on images + calibration, scored by `eval --pred`; `renderocc
calibrate` on a checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from renderocc.checkpoint import checkpoint_preset
from renderocc.cli import main
from renderocc.data.dataset import OccDataset
from renderocc.infer import CAMERAS, images_batch


def test_infer_dataset_then_eval_pred(prepared, tiny_run, tmp_path, capsys):
    out = tmp_path / "pred"
    common = ["--dataroot", str(prepared.dataroot), "--index", str(prepared.root)]
    assert main(["infer", "--checkpoint", str(tiny_run), *common, "--out", str(out), "--device", "cpu"]) == 0
    val_tokens = {prepared.tokens[i] for i in prepared.splits["val"]}
    assert {p.stem for p in out.glob("*.npz")} == val_tokens
    semantics = np.load(next(out.glob("*.npz")))["semantics"]
    assert semantics.dtype == np.uint8 and semantics.shape == (200, 200, 16)  # upsampled from 1.6 m
    assert semantics.max() <= 17

    metrics = tmp_path / "metrics.json"
    assert main(["eval", "--pred", str(out), *common, "--json", str(metrics), "--no-rayiou"]) == 0
    result = json.loads(metrics.read_text())
    assert 0 <= result["miou"] <= 100 and result["frames"] == len(val_tokens)
    assert set(result["per_class_iou"]) >= {"car", "vegetation"}

    # the checkpoint scored directly gives the same numbers as its saved predictions
    direct = tmp_path / "direct.json"
    args = [
        "eval",
        "--checkpoint",
        str(tiny_run),
        *common,
        "--json",
        str(direct),
        "--no-rayiou",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert json.loads(direct.read_text())["per_class_iou"] == result["per_class_iou"]
    assert "mIoU" in capsys.readouterr().out

    # a read-out threshold no density reaches leaves every voxel free: no class scores
    assert main([*args, "--threshold", "1e9"]) == 0
    free = json.loads(direct.read_text())
    assert free["occupancy_threshold"] == 1e9 and free["miou"] == 0.0
    empty = tmp_path / "empty"
    infer = ["infer", "--checkpoint", str(tiny_run), *common, "--out", str(empty), "--device", "cpu"]
    assert main([*infer, "--threshold", "1e9", "--max-samples", "1"]) == 0
    assert (np.load(next(empty.glob("*.npz")))["semantics"] == 17).all()


def test_images_and_calibration_give_the_dataset_batch(prepared, tiny_run, tmp_path):
    preset = checkpoint_preset(tiny_run)
    sample = int(prepared.splits["val"][0])
    images = tmp_path / "frame"
    images.mkdir()
    cam2ego = prepared.cam2ego(sample)
    cameras = {}
    for n, cam in enumerate(CAMERAS):
        shutil.copy(prepared.image_path(sample, n), images / f"{cam}.jpg")
        cameras[cam] = {
            "intrinsics": prepared.arrays["intrinsics"][sample, n].tolist(),
            "sensor2ego": cam2ego[n].tolist(),
        }
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps({"token": "mine", "cameras": cameras}))

    batch = images_batch(images, calib, preset.data, num_frames=1)
    item = OccDataset(prepared, preset.data, "val", train=False)[0]
    for key in ("intrinsics", "img_aug", "cam2ego"):
        torch.testing.assert_close(batch[key][0], item[key], rtol=1e-5, atol=1e-4)
    # same pixels up to JPEG decoding at another scale
    assert (batch["imgs"][0] - item["imgs"]).abs().mean() < 0.15
    assert batch["sample_token"] == ["mine"]

    out = tmp_path / "pred"
    args = ["infer", "--checkpoint", str(tiny_run), "--images", str(images), "--calib", str(calib)]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    assert np.load(out / "mine.npz")["semantics"].shape == (200, 200, 16)


def test_bad_calibration_names_the_field(tmp_path, tiny_run, capsys):
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps({"cameras": {"CAM_FRONT": {}}}))
    args = ["infer", "--checkpoint", str(tiny_run), "--images", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--calib", str(calib)]) == 2
    assert "cameras.CAM_FRONT.intrinsics must be a finite 3x3 matrix" in capsys.readouterr().err
    assert main(args) == 2
    assert "--images needs --calib" in capsys.readouterr().err


def test_infer_missing_checkpoint(tmp_path, capsys):
    args = [
        "infer",
        "--checkpoint",
        str(tmp_path / "run"),
        "--dataroot",
        str(tmp_path),
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_calibrate_cli_prints_and_writes_the_threshold(prepared, tiny_run, tmp_path, capsys):
    out = tmp_path / "readout.json"
    common = ["--dataroot", str(prepared.dataroot), "--index", str(prepared.root), "--device", "cpu"]
    args = ["calibrate", "--checkpoint", str(tiny_run), *common, "--max-samples", "2", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 2 and result["split"] == "train"
    assert result["threshold"] in result["thresholds"] and 0 <= result["iou"] <= 1
    printed = capsys.readouterr().out
    assert f"best read-out threshold {result['threshold']:.1f}" in printed
    layers = " ".join(f"{t:.1f}" for t in result["layer_thresholds"])
    assert f"--threshold {layers}" in printed and f"--readout {out}" in printed
    assert main([*args[:-2], "--split", "nope"]) == 2
    assert "unknown --split 'nope'" in capsys.readouterr().err

    # eval and infer read the per-layer thresholds back from the JSON
    scored = tmp_path / "scored.json"
    evaluate = ["eval", "--checkpoint", str(tiny_run), *common, "--no-rayiou", "--json", str(scored)]
    assert main([*evaluate, "--readout", str(out)]) == 0
    assert json.loads(scored.read_text())["occupancy_threshold"] == result["layer_thresholds"]
    by_hand = tmp_path / "by_hand.json"
    assert main([*evaluate[:-1], str(by_hand), "--threshold", *layers.split()]) == 0
    assert json.loads(by_hand.read_text())["miou"] == json.loads(scored.read_text())["miou"]
    pred = tmp_path / "pred"
    infer = ["infer", "--checkpoint", str(tiny_run), *common, "--out", str(pred), "--max-samples", "1"]
    assert main([*infer, "--readout", str(out)]) == 0 and len(list(pred.glob("*.npz"))) == 1
    # a file that is not calibrate's, a missing one, a wrong count of thresholds
    assert main([*evaluate, "--readout", str(scored)]) == 2
    assert "has no layer_thresholds; pass the --json of renderocc calibrate" in capsys.readouterr().err
    assert main([*evaluate, "--readout", str(tmp_path / "missing.json")]) == 2
    assert "no such file; write it with `renderocc calibrate" in capsys.readouterr().err
    assert main([*evaluate, "--threshold", "8", "9"]) == 2
    assert "readout_thresholds has 2 values but the grid has" in capsys.readouterr().err
