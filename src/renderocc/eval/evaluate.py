"""Scoring a model or saved predictions on a split: label-grid alignment, ray origins, the metric loop."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from renderocc.config import Preset
from renderocc.core.files import atomic_write
from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import invert_pose
from renderocc.data.batch import batch_to
from renderocc.data.index import Index
from renderocc.eval.miou import MIoUMeter, resample_labels
from renderocc.eval.rayiou import RayIoUMeter, select_origins


def label_grid(model_grid: VoxelGrid, label_shape: tuple[int, ...]) -> VoxelGrid:
    """The grid of the ground-truth labels: the model grid's box divided into `label_shape` voxels."""
    sizes = {(hi - lo) / n for lo, hi, n in zip(model_grid.lower, model_grid.upper, label_shape)}
    if max(sizes) - min(sizes) > 1e-6:
        raise ValueError(
            f"labels of shape {tuple(label_shape)} do not tile the grid box {model_grid.lower}.."
            f"{model_grid.upper} with cubic voxels; the preset's grid box must match the dataset's Occ3D box"
        )
    return VoxelGrid(model_grid.lower, model_grid.upper, voxel_size=round(min(sizes), 6))


def lidar_origins(index: Index, sample: int, rule: str = "sparseocc") -> torch.Tensor:
    """RayIoU's ray origins for `sample` by `rule` (see `rayiou.RAY_ORIGINS`), in its ego frame -> [T, 3].

    Candidates: the LiDAR origin of every keyframe of the sample's scene, in scene order.
    """
    a = index.arrays
    first, last = int(a["scene_first"][sample]), int(a["scene_last"][sample])
    scene = slice(first, last + 1)
    lidar2key = invert_pose(a["ego2global"][sample]) @ a["ego2global"][scene] @ a["lidar2ego"][scene]
    return torch.from_numpy(select_origins(lidar2key[:, :3, 3], sample - first, rule)).float()


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write JSON through a temporary file and a rename: an interrupted run leaves no partial file.

    NaN (a class with no IoU) is written as null, keeping the file valid JSON.
    """

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return atomic_write(path, lambda f: f.write((json.dumps(clean(data), indent=2) + "\n").encode()))


class Scorer:
    """mIoU (and optionally RayIoU) over frames given as label volumes on the label grid."""

    def __init__(
        self, grid: VoxelGrid, device: torch.device, rayiou: bool, ray_origins: str = "sparseocc"
    ) -> None:
        self.grid, self.device, self.ray_origins = grid, device, ray_origins
        self.miou = MIoUMeter(device)
        self.rayiou = RayIoUMeter(grid, device=device) if rayiou else None
        self.frames = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask_camera: torch.Tensor, origins: list) -> None:
        """pred, gt, mask_camera [B, X, Y, Z] on the label grid; origins: B tensors [T, 3] (or None)."""
        self.miou.update(pred, gt, mask_camera)
        if self.rayiou is not None:
            for p, g, o in zip(pred, gt, origins):
                self.rayiou.update(p, g, o)
        self.frames += len(pred)

    def result(self) -> dict:
        """Metrics summed over all processes: miou, per_class_iou, rayiou (+ per threshold), frames."""
        self.miou.all_reduce()
        out = self.miou.compute()
        if self.rayiou is not None:
            self.rayiou.all_reduce()
            out |= self.rayiou.compute() | {"ray_origins": self.ray_origins}
        frames = torch.tensor([self.frames], device=self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(frames)
        out["frames"] = int(frames.item())
        return out


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable,
    preset: Preset,
    index: Index,
    device: torch.device,
    rayiou: bool = True,
    ray_origins: str = "sparseocc",
    amp: bool = False,
    progress: bool = True,
) -> dict:
    """Occ3D metrics of `model` over a loader of an evaluation split (batches with Occ3D labels).

    Predictions on the model grid are read out (density threshold + argmax), resampled to the label grid
    (nearest) and scored over mask_camera; RayIoU casts from the origins `ray_origins` picks. Frames in
    order reuse their history frame's features (infer.Predictor), so a streaming loader may run it.
    """
    from renderocc.infer import Predictor

    scorer = predict = None
    for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        if "voxel_semantics" not in batch:
            raise FileNotFoundError(
                f"index {index.root} has no Occ3D labels to evaluate against; prepare it with gts"
            )
        labels = batch_to({k: batch[k] for k in ("voxel_semantics", "mask_camera")}, device)
        gt = labels["voxel_semantics"]
        if scorer is None:
            grid = label_grid(preset.grid, tuple(gt.shape[1:]))
            scorer = Scorer(grid, device, rayiou, ray_origins)
            predict = Predictor(model, preset.replace(train={"amp": amp}), grid, device)
        pred = predict(batch)  # the host batch: a streaming Predictor compares cameras there, without a sync
        origins = [lidar_origins(index, index.position(t), ray_origins) for t in batch["sample_token"]]
        scorer.update(pred, gt, labels["mask_camera"], origins)
    if scorer is None:
        scorer = Scorer(preset.grid, device, rayiou, ray_origins)  # this process had no frames
    return scorer.result()


def load_occ3d(path: Path) -> dict[str, np.ndarray]:
    """semantics uint8 [X, Y, Z] and mask_camera bool of an Occ3D labels.npz."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {"semantics": npz["semantics"], "mask_camera": npz["mask_camera"].astype(bool)}
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Occ3D labels {path} not found; the dataset's gts/ folder is incomplete"
        ) from None
    except KeyError as err:
        raise ValueError(f"{path} lacks {err}; Occ3D labels need semantics and mask_camera") from None


def load_prediction(path: Path) -> np.ndarray:
    """`semantics` (labels 0..17) of a prediction file written by `renderocc infer`."""
    with np.load(path, allow_pickle=False) as npz:
        if "semantics" not in npz:
            raise ValueError(
                f"{path} has no 'semantics' array (found {', '.join(npz.files)}); see `renderocc infer`"
            )
        return npz["semantics"]


def evaluate_predictions(
    pred_dir: str | Path,
    index: Index,
    split: str,
    rayiou: bool = True,
    ray_origins: str = "sparseocc",
    max_samples: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Occ3D metrics of saved predictions, one `<sample_token>.npz` per frame of the split.

    A prediction on a coarser grid of the same box is resampled to the label grid (nearest). Process
    `rank` of `world_size` scores every world_size-th frame; the result is summed over all of them.
    """
    pred_dir, device = Path(pred_dir), torch.device(device)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"--pred {pred_dir} is not a folder of <sample_token>.npz predictions")
    if split not in index.splits:
        raise KeyError(f"unknown split {split!r}; valid: {', '.join(index.splits)}")
    samples = [int(s) for s in index.splits[split][:max_samples]]
    if not samples:
        raise ValueError(f"split {split!r} of index {index.root} has no samples to evaluate")
    missing = [index.tokens[s] for s in samples if not (pred_dir / f"{index.tokens[s]}.npz").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(samples)} {split} frames have no prediction in {pred_dir}, e.g. "
            f"{missing[0]}.npz; write them with `renderocc infer --out {pred_dir}`"
        )
    samples = samples[rank::world_size]  # after the check above, so that every process refuses alike
    scorer = None
    for sample in tqdm(samples, desc="eval", unit="frame", disable=not progress, leave=False):
        token = index.tokens[sample]
        gt = load_occ3d(index.gts_path(sample))
        grid = label_grid(VoxelGrid(), gt["semantics"].shape)
        pred = torch.from_numpy(load_prediction(pred_dir / f"{token}.npz")).to(device)
        if tuple(pred.shape) != grid.shape:
            if pred.dim() != 3:
                raise ValueError(
                    f"{pred_dir / token}.npz: semantics has shape {tuple(pred.shape)}, expected {grid.shape}"
                )
            pred = resample_labels(pred, label_grid(grid, tuple(pred.shape)), grid)
        if scorer is None:
            scorer = Scorer(grid, device, rayiou, ray_origins)
        origins = [lidar_origins(index, sample, ray_origins)]
        semantics = torch.from_numpy(gt["semantics"]).to(device)
        scorer.update(
            pred[None], semantics[None], torch.from_numpy(gt["mask_camera"]).to(device)[None], origins
        )
    if scorer is None:
        scorer = Scorer(VoxelGrid(), device, rayiou, ray_origins)  # this process had no frames
    return scorer.result()
