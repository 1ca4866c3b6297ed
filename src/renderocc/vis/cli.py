"""`renderocc vis`: panel PNGs (and a video per scene) of predicted and ground-truth occupancy."""

from __future__ import annotations

import argparse
from pathlib import Path

from renderocc.cli import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred", type=Path, help="folder of <sample_token>.npz predictions (renderocc infer)"
    )
    parser.add_argument("--gt", type=Path, help="Occ3D ground truth: DATAROOT or DATAROOT/gts")
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DATAROOT",
        help="nuScenes root: camera images and scene order (default: --gt if it is one)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder for the PNGs (and videos)")
    parser.add_argument(
        "--video", action="store_true", help="also write one MP4 (GIF without ffmpeg) per scene"
    )
    parser.add_argument(
        "--fps", type=float, default=2.0, help="video frame rate (nuScenes keyframes are 2 Hz)"
    )
    parser.add_argument("--frames", type=int, metavar="N", help="draw only the first N frames in scene order")
    parser.add_argument("--scene", help="draw only this scene (a folder name under gts/)")
    parser.add_argument("--tokens", nargs="+", metavar="TOKEN", help="draw only these sample tokens")
    parser.add_argument(
        "--show-hidden",
        action="store_true",
        help="also draw voxels outside the GT camera mask (hidden by default)",
    )
    parser.add_argument(
        "--size", type=int, nargs=2, default=(900, 1600), metavar=("H", "W"), help="panel size"
    )


def run(args: argparse.Namespace) -> int:
    from renderocc.vis.frames import has_tables
    from renderocc.vis.panel import render_dataset_frames

    if args.pred is None and args.gt is None:
        raise CLIError("nothing to draw: give --pred (predictions) and/or --gt (ground truth)")
    if args.frames is not None and args.frames < 1:
        raise CLIError(f"--frames must be at least 1, got {args.frames}")
    if min(args.size) < 90:
        raise CLIError(f"--size {args.size[0]} {args.size[1]} is too small to lay out; use at least 90 90")
    images = args.images
    if images is None and has_tables(args.gt):  # --gt DATAROOT: its tables give scene order and cameras
        images = args.gt
    paths = render_dataset_frames(
        args.pred,
        images,
        args.out,
        tokens=args.tokens,
        max_frames=args.frames,
        hide_outside_camera=not args.show_hidden,
        gt_dir=args.gt,
        scene=args.scene,
        video=args.video,
        fps=args.fps,
        size=tuple(args.size),
    )
    print(f"wrote {len(paths)} panels to {args.out}")
    return 0
