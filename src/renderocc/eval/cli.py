"""`renderocc eval`: Occ3D mIoU and RayIoU of a checkpoint or of predictions, on all torchrun processes."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from renderocc.config import PRESETS, get_preset
from renderocc.eval.calibrate import add_readout_arguments, with_readout_arguments
from renderocc.eval.miou import format_table
from renderocc.eval.rayiou import RAY_ORIGINS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "mIoU: Occ3D-nuScenes voxel IoU over the camera mask, classes 0..16. RayIoU: SparseOcc's metric. "
        "39 x 360 LiDAR-like rays from each origin (--ray-origins) walk every voxel they cross to the first "
        "occupied one; a ray whose ground-truth hit is occupied is a true positive when the prediction's "
        "first hit has the same class and a depth (where the ray leaves that voxel) within 1, 2 or 4 m. "
        "RayIoU is the mean of the per-class IoU over classes and thresholds."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run directory or RUN/checkpoints/step-N")
    source.add_argument("--pred", help="folder of <sample_token>.npz predictions (`semantics` uint8)")
    parser.add_argument("--dataroot", required=True, help="dataset prepared by `renderocc prepare`")
    parser.add_argument("--version", default=None, help="prepared nuScenes version (default: the only one)")
    parser.add_argument("--index", default=None, help="prepared index (default: DATAROOT/renderocc/VERSION)")
    parser.add_argument("--split", default="val", help="split of the index to score (default: val)")
    parser.add_argument("--json", default=None, help="write the metrics here (atomically)")
    parser.add_argument(
        "--preset", default=None, help=f"override the checkpoint's preset: {', '.join(PRESETS)}"
    )
    parser.add_argument("--weights", default="ema", choices=("ema", "model"), help="EMA or raw weights")
    add_readout_arguments(parser)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-samples", type=int, default=None, help="score only the first N frames")
    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="load every frame's history images (by default, at batch 1, a frame's history frame is the "
        "frame before it, whose features are reused; the metrics are the same)",
    )
    parser.add_argument("--no-rayiou", action="store_true", help="voxel mIoU only")
    parser.add_argument(
        "--ray-origins",
        default="sparseocc",
        choices=tuple(RAY_ORIGINS),
        help="where RayIoU's rays start: " + "; ".join(f"{k}: {v}" for k, v in RAY_ORIGINS.items())
        + " (default: sparseocc, the published metric)",
    )  # fmt: skip
    parser.add_argument("--ray-window", type=int, default=None, help=argparse.SUPPRESS)  # retired


def report(result: dict) -> str:
    """Per-class table and the headline numbers."""
    lines = [format_table(result["per_class_iou"], "IoU")]
    lines.append(f"mIoU {result['miou']:.2f} over {result['frames']} frames (camera mask)")
    if "rayiou" in result:
        per = ", ".join(f"{k[7:]} m {v:.2f}" for k, v in result.items() if k.startswith("rayiou@"))
        origins = f"; rays from {result['ray_origins']} origins" if "ray_origins" in result else ""
        lines.append(f"RayIoU {result['rayiou']:.2f} ({per}{origins})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from renderocc.eval.evaluate import evaluate_model, evaluate_predictions, write_json_atomic
    from renderocc.train_utils import distributed
    from renderocc.train_utils.data import eval_loader, open_index

    if args.ray_window is not None:
        raise ValueError(
            "--ray-window is retired: RayIoU casts from the scene's keyframes as SparseOcc does "
            "(--ray-origins sparseocc, the default) or from the key frame alone (--ray-origins key-frame)"
        )
    if args.max_samples is not None and args.max_samples <= 0:
        raise ValueError(f"--max-samples must be positive, got {args.max_samples}")
    if args.pred and (args.threshold is not None or args.readout is not None):
        raise ValueError("--threshold / --readout read out a --checkpoint; --pred files are labels already")
    preset = get_preset(args.preset) if args.preset else None
    index = open_index(args.dataroot, args.version, args.index)
    if args.split not in index.splits:
        raise KeyError(f"unknown --split {args.split!r}; valid: {', '.join(index.splits)}")
    # under torchrun every process scores its share of the frames and rank 0 reports the sums
    dist = distributed.setup(args.device or ("cpu" if args.pred else None))
    if args.pred:
        result = evaluate_predictions(
            args.pred, index, args.split, not args.no_rayiou, args.ray_origins, args.max_samples, dist.device,
            progress=dist.is_main, rank=dist.rank, world_size=dist.world_size,
        )  # fmt: skip
        source = str(Path(args.pred).resolve())
    else:
        from renderocc.checkpoint import load_model, resolve_checkpoint

        checkpoint = resolve_checkpoint(args.checkpoint)
        model, preset = load_model(checkpoint, preset, args.weights, dist.device)
        preset = with_readout_arguments(preset, args)
        stream = args.batch_size == 1 and not args.no_stream
        loader = eval_loader(
            index, preset.data, args.split, args.batch_size, args.num_workers, dist.rank, dist.world_size,
            args.max_samples, with_rays=False, stream=stream, uint8_images=True,
        )  # fmt: skip
        result = evaluate_model(
            model, loader, preset, index, dist.device, not args.no_rayiou, args.ray_origins,
            amp=preset.train.amp, progress=dist.is_main,
        )  # fmt: skip
        source = str(checkpoint)
        result["occupancy_threshold"] = preset.readout_threshold()
    distributed.cleanup()
    if not dist.is_main:
        return 0
    result = {**result, "split": args.split, "source": source, "dataroot": str(index.dataroot)}
    print(report(result))
    if math.isnan(result["miou"]):
        print("note: no class of 0..16 occurs in the ground truth or prediction of these frames")
    if args.json:
        print(f"metrics written to {write_json_atomic(args.json, result)}")
    return 0
