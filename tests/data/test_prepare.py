"""`renderocc prepare`: resumable label building, index versioning, and errors that name the missing piece."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from renderocc.cli import main
from renderocc.config import DataConfig
from renderocc.data import OccDataset, load_index, prepare
from renderocc.data.index import INDEX_FILE


def test_rerun_resumes_and_matches(prepared, tiny_dataset, tmp_path: Path) -> None:
    out = tmp_path / "index"
    shutil.copytree(prepared.root / "labels", out / "labels")
    redo = out / "labels" / f"{prepared.tokens[1]}.npz"
    redo.unlink()
    kept = out / "labels" / f"{prepared.tokens[0]}.npz"
    kept.write_bytes(kept.read_bytes())  # a marker: a skipped file keeps this mtime
    mtime = kept.stat().st_mtime_ns
    index = prepare(tiny_dataset, "v1.0-synthetic", out=out, workers=1)
    assert kept.stat().st_mtime_ns == mtime and redo.is_file()
    with np.load(redo) as new, np.load(prepared.label_path(1)) as old:
        for key in old.files:
            np.testing.assert_array_equal(new[key], old[key])
    np.testing.assert_array_equal(index.class_counts, prepared.class_counts)
    assert index.class_counts.sum() > 0 and index.class_counts.shape == (17,)


def test_index_from_another_dataroot_or_version_is_refused(prepared, tiny_dataset, tmp_path: Path) -> None:
    assert len(load_index(prepared.root, tiny_dataset, "v1.0-synthetic")) == len(prepared)
    with pytest.raises(ValueError, match="built for dataroot .*renderocc prepare"):
        load_index(prepared.root, dataroot=tmp_path)
    with pytest.raises(ValueError, match="built for nuScenes v1.0-synthetic, not v1.0-mini"):
        load_index(prepared.root, version="v1.0-mini")
    old = tmp_path / "old"
    shutil.copytree(prepared.root, old, ignore=shutil.ignore_patterns("labels"))
    meta = json.loads((old / INDEX_FILE).read_text())
    meta["format_version"] = 0
    (old / INDEX_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="index format"):
        load_index(old)
    with pytest.raises(FileNotFoundError, match="run `renderocc prepare"):
        load_index(tmp_path / "never-prepared")


def _remove_first_image(root: Path) -> str:
    path = sorted((root / "samples" / "CAM_FRONT").iterdir())[0]
    path.unlink()
    return path.name


@pytest.mark.parametrize(
    "damage, message",
    [
        (_remove_first_image, "image .*{}.* not found"),
        (lambda root: shutil.rmtree(root / "lidarseg"), "nuScenes-lidarseg .*lidarseg"),
        (lambda root: shutil.rmtree(root / "gts"), "Occ3D ground truth folder .*gts.*--no-gts"),
        (lambda root: (root / "splits.json").unlink(), "scene split .*splits.json"),
    ],
    ids=["image", "lidarseg", "gts", "splits"],
)
def test_missing_inputs_are_named(tiny_dataset, tmp_path: Path, damage, message: str) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns("renderocc"))
    name = damage(root)
    with pytest.raises((FileNotFoundError, ValueError), match=message.format(name)):
        prepare(root, "v1.0-synthetic", out=tmp_path / "index")
    assert not (tmp_path / "index" / INDEX_FILE).exists()


def test_cli_reports_a_bad_dataroot(tmp_path: Path, capsys) -> None:
    assert main(["prepare", "--dataroot", str(tmp_path / "nowhere"), "--version", "v1.0-mini"]) == 2
    assert "nowhere not found" in capsys.readouterr().err


def test_loader_never_substitutes_missing_or_corrupt_files(prepared, tmp_path: Path) -> None:
    cfg = DataConfig(image_size=(64, 112), max_rays=100)
    no_labels = dataclasses.replace(prepared, root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"2D labels .* not found; run `renderocc prepare"):
        OccDataset(no_labels, cfg, "train", train=False)[0]

    sample = int(prepared.splits["train"][0])
    bad_image = tmp_path / "corrupt.jpg"
    bad_image.write_bytes(prepared.image_path(sample, 2).read_bytes()[:500])
    images = copy.deepcopy(prepared.images)
    images[sample][2] = str(bad_image)  # an absolute path replaces the dataroot-relative one
    with pytest.raises(ValueError, match="corrupt image .*corrupt.jpg"):
        OccDataset(dataclasses.replace(prepared, images=images), cfg, "train", train=False)[0]

    gts = list(prepared.gts)
    gts[sample] = str(tmp_path / "gts" / "labels.npz")
    with pytest.raises(FileNotFoundError, match="Occ3D labels .*gts/labels.npz not found"):
        OccDataset(dataclasses.replace(prepared, gts=gts), cfg, "train", train=False)[0]
