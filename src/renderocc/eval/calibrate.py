"""`renderocc calibrate`: the read-out density threshold chosen from 2D labels only.

    renderocc calibrate --checkpoint RUN --dataroot D [--split train] [--max-samples 64] [--json F]

A 2D-trained model's densities have no fixed scale: the threshold at which a voxel reads out occupied is
a choice, and choosing it on 3D labels would use 3D supervision. Here each frame's labelled rays vote
instead, as Occ3D's own ground truth is built from LiDAR rays: the voxel that holds a ray's LiDAR point is
occupied, the voxels the ray crosses before it (clear of the surface, `render.losses.free_points`) are
free. The threshold whose read-out agrees best with those votes (IoU of occupied votes) is printed, over
the whole grid and per z layer (the density scale differs with height: the ground layer, seen at grazing
angles, holds lower densities than walls); pass either to `renderocc eval` / `infer` as --threshold, or
the --json file as --readout. Thresholds are densities on the scale of the checkpoint's render.convention;
for another than "metric" the metric equivalent is printed beside (render.conventions.convert_density).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from renderocc.config import PRESETS, Preset, get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.data.batch import Batch, batch_to
from renderocc.render.conventions import METRIC, convert_density
from renderocc.render.losses import FREE_VOTE, OCCUPIED_VOTE, free_points, voxel_votes
from renderocc.train_utils.amp import autocast

DEFAULT_THRESHOLDS = tuple(x / 2 for x in range(4, 61))  # 2.0, 2.5, .., 30.0


def ray_votes(batch: Batch, grid: VoxelGrid, samples_per_ray: int = 64) -> torch.Tensor:
    """uint8 [B, X * Y * Z] (flattened like the grid): OCCUPIED_VOTE at voxels that hold a labelled ray's
    LiDAR point, FREE_VOTE at voxels that labelled rays cross before it, 0 where no ray says anything.

    batch: rays_o, unit rays_d [B, R, 3] in the grid frame, ray_depth, ray_class, ray_valid [B, R]. Free
    voxels are sampled at `samples_per_ray` evenly spaced `free_points` of each ray (`render.losses.
    voxel_votes`, which the per-voxel line-of-sight term shares). A voxel that one ray crosses and another
    ends in counts as occupied, as a LiDAR point does in Occ3D.
    """
    points, free = free_points(batch, grid, samples_per_ray, random=False)
    return voxel_votes(points, free, batch, grid)


def agreement_counts(density: torch.Tensor, votes: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(TP, FP, FN) of the read-out `density > t` against the votes, for every threshold t.

    density [B, X * Y * Z] (or any shape matching votes), votes as from `ray_votes`, thresholds [T] ->
    int64 [T, 3]: occupied votes read out occupied, free votes read out occupied, occupied votes read out
    free. Voxels without a vote do not count.
    """
    occupied = density[votes == OCCUPIED_VOTE].float()
    free = density[votes == FREE_VOTE].float()
    tp = (occupied.unsqueeze(0) > thresholds.unsqueeze(1)).sum(1)
    fp = (free.unsqueeze(0) > thresholds.unsqueeze(1)).sum(1)
    return torch.stack([tp, fp, occupied.numel() - tp], 1)


def agreement_iou(counts: torch.Tensor) -> torch.Tensor:
    """IoU TP / (TP + FP + FN) per threshold from `agreement_counts` [T, 3] -> float64 [T] (0 if empty)."""
    counts = counts.double()
    return counts[:, 0] / counts.sum(1).clamp_min(1)


@torch.no_grad()
def calibrate(
    model: torch.nn.Module,
    loader,
    preset: Preset,
    device: torch.device,
    thresholds: torch.Tensor,
    amp: bool = False,
    progress: bool = True,
    min_layer_votes: int = 1000,
) -> dict:
    """The read-out threshold of `model` that agrees best with the labelled rays of a loader's frames, over
    the whole grid and per height layer.

    Returns {"threshold", "iou" (its agreement), "thresholds", "ious" (per threshold), "layer_thresholds"
    (one per z layer: the best of that layer's votes; the global one where a layer has fewer than
    `min_layer_votes` occupied votes), "layer_votes" (occupied votes per layer), "frames"}.
    """
    was_training = model.training
    model.eval()
    layers = preset.grid.shape[2]
    counts = torch.zeros(layers, len(thresholds), 3, dtype=torch.int64, device=device)
    thresholds = thresholds.to(device)
    frames = 0
    for batch in tqdm(loader, desc="calibrate", unit="batch", disable=not progress, leave=False):
        batch = batch_to(batch, device)
        with autocast(device, amp):
            density = model(batch)["density"].float()
        votes = ray_votes(batch, preset.grid).view(density.shape)
        for z in range(layers):
            counts[z] += agreement_counts(density[..., z], votes[..., z], thresholds)
        frames += density.shape[0]
    model.train(was_training)
    ious = agreement_iou(counts.sum(0))
    best = int(ious.argmax())
    layer_votes = counts[:, 0, 0] + counts[:, 0, 2]  # TP + FN: the occupied votes
    layer_best = thresholds[torch.stack([agreement_iou(c).argmax() for c in counts])]
    layer_best = torch.where(layer_votes >= min_layer_votes, layer_best, thresholds[best])
    return {
        "threshold": float(thresholds[best]),
        "iou": float(ious[best]),
        "thresholds": thresholds.tolist(),
        "ious": ious.tolist(),
        "layer_thresholds": layer_best.tolist(),
        "layer_votes": layer_votes.tolist(),
        "frames": frames,
    }


def load_readout(path: str | Path) -> list[float]:
    """The per-layer read-out thresholds saved by `renderocc calibrate --json PATH`."""
    try:
        result = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--readout {path}: no such file; write it with `renderocc calibrate ... --json {path}`"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"--readout {path} is not JSON ({error}); pass the --json of renderocc calibrate"
        ) from None
    if not isinstance(result, dict) or "layer_thresholds" not in result:
        raise ValueError(f"--readout {path} has no layer_thresholds; pass the --json of renderocc calibrate")
    return [float(t) for t in result["layer_thresholds"]]


def on_metric_scale(threshold: float, preset: Preset) -> str:
    """' (... X on the metric scale)' for a threshold of a checkpoint rendered under another convention."""
    r = preset.render
    if r.convention == METRIC:
        return ""
    value = convert_density(threshold, r.convention, METRIC, preset.grid, r.step_size, r.density_shift)
    return f" ({r.convention} convention; {value:.2f} on the metric scale)"


def add_readout_arguments(parser: argparse.ArgumentParser) -> None:
    """--threshold / --readout of the commands that read out a checkpoint (eval, infer)."""
    readout = parser.add_mutually_exclusive_group()
    readout.add_argument(
        "--threshold", type=float, nargs="+", default=None, metavar="T",
        help="read-out density threshold, or one per z layer (default: the preset's); a density on the scale "
        "of the checkpoint's render.convention (the reference's 8.5 is 9.42 under 'metric')",
    )  # fmt: skip
    readout.add_argument(
        "--readout", default=None, metavar="JSON",
        help="read out with the per-layer thresholds of `renderocc calibrate --json JSON`",
    )  # fmt: skip


def with_readout_arguments(preset: Preset, args: argparse.Namespace) -> Preset:
    """`preset` reading out as --threshold / --readout say (unchanged when neither is given)."""
    if args.readout is not None:
        return preset.with_readout(load_readout(args.readout))
    if args.threshold is not None:
        return preset.with_readout(args.threshold)
    return preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory or RUN/checkpoints/step-N")
    parser.add_argument("--dataroot", required=True, help="dataset prepared by `renderocc prepare`")
    parser.add_argument("--version", default=None, help="prepared nuScenes version (default: the only one)")
    parser.add_argument("--index", default=None, help="prepared index (default: DATAROOT/renderocc/VERSION)")
    parser.add_argument("--split", default="train", help="split whose 2D labels vote (default: train)")
    parser.add_argument("--max-samples", type=int, default=64, help="frames to use (default: 64)")
    parser.add_argument(
        "--preset", default=None, help=f"override the checkpoint's preset: {', '.join(PRESETS)}"
    )
    parser.add_argument("--weights", default="ema", choices=("ema", "model"), help="EMA or raw weights")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the result here (atomically)")


def run(args: argparse.Namespace) -> int:
    from renderocc.checkpoint import load_model, resolve_checkpoint
    from renderocc.eval.evaluate import write_json_atomic
    from renderocc.train_utils.data import eval_loader, open_index

    if args.max_samples <= 0:
        raise ValueError(f"--max-samples must be positive, got {args.max_samples}")
    index = open_index(args.dataroot, args.version, args.index)
    if args.split not in index.splits:
        raise KeyError(f"unknown --split {args.split!r}; valid: {', '.join(index.splits)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = resolve_checkpoint(args.checkpoint)
    preset = get_preset(args.preset) if args.preset else None
    model, preset = load_model(checkpoint, preset, args.weights, device)
    loader = eval_loader(
        index, preset.data, args.split, 1, args.num_workers, max_samples=args.max_samples, with_gts=False
    )
    thresholds = torch.tensor(DEFAULT_THRESHOLDS)
    result = calibrate(model, loader, preset, device, thresholds, amp=preset.train.amp)
    result.update(
        checkpoint=str(checkpoint), split=args.split, preset_threshold=preset.loss.occupancy_threshold,
        convention=preset.render.convention,
    )  # fmt: skip
    for t, iou in zip(result["thresholds"], result["ious"]):
        best = t == result["threshold"]
        if t == int(t) or best:  # the whole thresholds and the best: the curve without the clutter
            print(f"threshold {t:5.1f}: agreement IoU {iou:.3f}" + ("  <- best" if best else ""))
    best = result["threshold"]
    print(
        f"best read-out threshold {best:.1f}{on_metric_scale(best, preset)} (agreement IoU "
        f"{result['iou']:.3f} over {result['frames']} {args.split} frames; the preset's is "
        f"{preset.loss.occupancy_threshold}); use it with `renderocc eval --threshold {best:.1f}`"
    )
    layers = " ".join(f"{t:.1f}" for t in result["layer_thresholds"])
    print(
        f"best per z layer (lowest first; the global one where a layer has too few occupied votes): "
        f"{layers}; use them with `renderocc eval --threshold {layers}`"
        + (f" or `--readout {args.json}`" if args.json else "")
    )
    if args.json:
        print(f"written to {write_json_atomic(args.json, result)}")
    return 0
