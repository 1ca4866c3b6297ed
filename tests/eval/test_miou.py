"""Occ3D mIoU against hand-computed counts, camera masking and label-grid resampling."""

import math

import pytest
import torch

from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid
from renderocc.eval.miou import MIoUMeter, confusion_matrix, iou_per_class, mean_iou, resample_labels


def test_confusion_and_iou_match_hand_counts():
    # 8 voxels; the last one is outside the camera mask and must not count.
    gt = torch.tensor([4, 4, 4, 11, 11, FREE, FREE, 4]).view(2, 2, 2)
    pred = torch.tensor([4, 4, 11, 11, FREE, 4, FREE, 11]).view(2, 2, 2)
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0], dtype=torch.bool).view(2, 2, 2)
    conf = confusion_matrix(pred, gt, mask)
    assert conf.sum() == 7
    assert conf[4, 4] == 2 and conf[4, 11] == 1 and conf[11, 11] == 1 and conf[11, FREE] == 1
    assert conf[FREE, 4] == 1 and conf[FREE, FREE] == 1
    iou = iou_per_class(conf)
    # car: TP 2, FN 1 (-> driveable), FP 1 (free predicted as car) -> 2 / 4
    assert iou[4] == pytest.approx(0.5)
    # driveable: TP 1, FN 1 (-> free), FP 1 (car predicted as driveable) -> 1 / 3
    assert iou[11] == pytest.approx(1 / 3)
    assert iou[FREE] == pytest.approx(1 / 3)
    assert math.isnan(iou[0])  # absent from both: undefined, left out of the mean
    # mean over the defined classes among 0..16 only; free's IoU does not enter
    assert mean_iou(conf) == pytest.approx(100 * (0.5 + 1 / 3) / 2)


def test_meter_accumulates_over_frames_and_names_classes():
    meter = MIoUMeter()
    gt = torch.full((2, 4, 4, 2), FREE, dtype=torch.uint8)
    gt[:, :2] = 15
    mask = torch.ones_like(gt, dtype=torch.bool)
    meter.update(gt, gt, mask)
    pred = gt.clone()
    pred[1] = FREE  # second sample predicts nothing: 16 FN after 48 TP
    meter.update(pred, gt, mask)
    result = meter.compute()
    assert result["per_class_iou"]["manmade"] == pytest.approx(100 * 48 / 64)
    assert result["miou"] == pytest.approx(100 * 48 / 64)
    assert "free" not in result["per_class_iou"] and len(result["per_class_iou"]) == 17


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="resample"):
        confusion_matrix(torch.zeros(2, 2, 2), torch.zeros(4, 4, 2), torch.ones(4, 4, 2))


def test_resample_coarse_prediction_to_label_grid():
    fine, coarse = VoxelGrid(voxel_size=0.4), VoxelGrid(voxel_size=0.8)
    labels = torch.randint(0, 18, (2, *coarse.shape), dtype=torch.uint8)
    up = resample_labels(labels, coarse, fine)
    assert up.shape == (2, *fine.shape)
    expected = labels.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(up, expected)
    # a smaller box: voxels of the label grid outside it are free
    small = VoxelGrid(lower=(-20.0, -20.0, -1.0), upper=(20.0, 20.0, 5.4), voxel_size=0.8)
    up = resample_labels(torch.zeros(small.shape, dtype=torch.uint8), small, fine)
    assert (up[:50] == FREE).all() and (up[50:150, 50:150] == 0).all()
