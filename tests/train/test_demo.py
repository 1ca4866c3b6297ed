"""`renderocc demo` end to end on the tiny dataset with the tiny preset: every output it promises exists."""

from __future__ import annotations

import json
import shutil

from PIL import Image
from train_fixtures import tiny_preset

from renderocc.demo import VERSION, run_demo


def test_demo_writes_metrics_curve_and_pictures(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "demo"
    shutil.copytree(tiny_dataset, out / "data")  # the demo reuses a dataset that is already there
    assert (out / "data" / VERSION).is_dir()
    metrics = run_demo(out, device="cpu", iters=2, pictures=1, preset=tiny_preset())

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 2 and saved["frames"] == 3  # the held-out scene's keyframes
    assert 0 <= metrics["miou"] <= 100 and 0 <= metrics["rayiou"] <= 100
    assert set(saved["timings_s"]) == {"data", "prepare", "train", "evaluate", "pictures", "total"}
    assert Image.open(out / "learning_curve.png").size[0] > 0
    pictures = list((out / "pictures").glob("*.png"))
    assert len(pictures) == 1 and Image.open(pictures[0]).size == (1280, 720)
    printed = capsys.readouterr().out
    assert str(out / "metrics.json") in printed and "RayIoU" in printed

    # a second run finds every stage done and only re-evaluates
    run_demo(out, device="cpu", iters=2, pictures=1, preset=tiny_preset())
    assert "nothing to do" in capsys.readouterr().out
