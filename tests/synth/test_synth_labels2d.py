"""Dense and pseudo label images: what the synthetic cameras see, and degraded as PseudoLabelConfig says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from renderocc.core.classes import LIDARSEG_CLASSES, LIDARSEG_TO_OCC3D
from renderocc.synth.labels2d import (
    UNKNOWN,
    PseudoLabelConfig,
    depth_to_png,
    label_image_paths,
    load_pseudo_config,
    pseudo_labels,
)

ROAD = LIDARSEG_CLASSES.index("flat.driveable_surface")
CAR = LIDARSEG_CLASSES.index("vehicle.car")
GRASS = LIDARSEG_CLASSES.index("flat.terrain")


def _scene(h: int = 100, w: int = 800) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two cameras: road below a depth ramp of 2..60 m, a large car, a 6-pixel car and sky on top."""
    depth = torch.linspace(2.0, 60.0, w).expand(2, h, w).clone()
    cls = torch.full((2, h, w), ROAD, dtype=torch.long)
    inst = torch.full((2, h, w), -1, dtype=torch.long)
    cls[:, :20], depth[:, :20] = UNKNOWN, 0.0
    cls[:, 40:80, 100:300], inst[:, 40:80, 100:300] = CAR, 1
    cls[:, 50:52, 500:503], inst[:, 50:52, 500:503] = CAR, 2
    cls[:, 85:, 600:700] = GRASS
    return depth, cls, inst


def test_pseudo_labels_degrade_as_configured() -> None:
    depth, cls, inst = _scene()
    cfg = PseudoLabelConfig(confusion_rate=0.0)
    d, c = pseudo_labels(depth, cls, inst, cfg, seed=1)
    again = pseudo_labels(depth, cls, inst, cfg, seed=1)
    assert torch.equal(d, again[0]) and torch.equal(c, again[1])
    assert d.max() <= cfg.max_depth and (d[:, :20] == 0).all()  # cut-off, sky
    assert (d[depth > cfg.max_depth * 1.3] == 0).float().mean() > 0.8
    ratio = d / depth.clamp_min(1e-6)
    known = d > 0
    near, far = known & (depth < 10), known & (depth > 30) & (depth < 35)
    assert ratio[near].std() < ratio[far].std()  # noise grows with distance
    scales = [ratio[k][known[k]].median() for k in range(2)]
    assert abs(scales[0] - scales[1]) > 1e-3  # one scale error per image
    assert (c[:, 51, 501] == ROAD).all()  # the small car is missed: it takes the road below it
    assert (c[:, 60, 200] == CAR).all()  # the large one is kept
    assert (c[:, 39:41, 200] == UNKNOWN).all() and (c[:, 60, 99:101] == UNKNOWN).all()  # eroded boundary
    assert (c[:, 60, 150] == CAR).all()


def test_confusion_rate_swaps_similar_classes() -> None:
    depth, cls, inst = _scene(h=400, w=1600)
    cfg = PseudoLabelConfig(confusion_rate=0.3, boundary_px=0)
    _, c = pseudo_labels(depth, cls, inst, cfg, seed=3)
    occ = torch.as_tensor(LIDARSEG_TO_OCC3D)[c.clamp_max(len(LIDARSEG_TO_OCC3D) - 1)]
    road = cls == ROAD
    swapped = (occ[road] != 11).float().mean()
    assert 0.15 < swapped < 0.45  # about the rate, in blocks
    assert set(occ[road & (occ != 11)].unique().tolist()) <= {12, 13}  # other_flat, sidewalk: its partners


def test_config_file_overrides_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps({"max_depth": 25.0, "confusion_pairs": [["car", "bus"]]}))
    cfg = load_pseudo_config(path)
    assert cfg.max_depth == 25.0 and cfg.confusion_pairs == (("car", "bus"),)
    path.write_text(json.dumps({"max_dept": 25.0}))
    with pytest.raises(ValueError, match="unknown field max_dept"):
        load_pseudo_config(path)
    with pytest.raises(ValueError, match="'lorry' is not an Occ3D class"):
        PseudoLabelConfig(confusion_pairs=(("car", "lorry"),))


def test_synth_writes_dense_label_images(tiny_dataset: Path) -> None:
    images = sorted((tiny_dataset / "samples" / "CAM_FRONT").glob("*.jpg"))
    depth_path, class_path = label_image_paths(
        tiny_dataset, "dense", str(images[0].relative_to(tiny_dataset))
    )
    depth, cls = np.asarray(Image.open(depth_path)), np.asarray(Image.open(class_path))
    assert depth.dtype == np.uint16 and cls.dtype == np.uint8 and depth.shape == cls.shape == (90, 160)
    assert ((depth == 0) == (cls == UNKNOWN)).mean() > 0.95  # sky: neither; beyond 65.5 m: a class only
    assert (cls == UNKNOWN).any() and (depth[60:] > 0).all()  # sky above, ground below
    assert depth_to_png(torch.tensor([0.0, 1.2345, 70.0])).tolist() == [0, 1234, 0]
