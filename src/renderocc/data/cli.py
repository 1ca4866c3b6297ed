"""`renderocc prepare`: index a nuScenes-format or folder-format dataset and build its per-image 2D labels."""

from __future__ import annotations

import argparse
import os

from renderocc.core.classes import OCC3D_CLASSES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataroot",
        required=True,
        help="nuScenes: holds VERSION/, samples/, lidarseg/, gts/; folder: dataset.json",
    )
    parser.add_argument(
        "--version", default=None, help="nuScenes: e.g. v1.0-trainval, v1.0-mini, v1.0-synthetic"
    )
    parser.add_argument(
        "--format", default="auto", choices=("auto", "nuscenes", "folder"),
        help="dataset layout (default: folder when DATAROOT/dataset.json exists, else nuscenes)",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=None, help="index folder (default: DATAROOT/renderocc/VERSION or /folder)"
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="label processes (0: in-process)"
    )
    parser.add_argument("--no-gts", action="store_true", help="index without voxel labels (gts/, occupancy)")
    parser.add_argument(
        "--image-labels", type=int, default=None, metavar="N",
        help="folder format: labelled pixels kept per label image, spread evenly (default 8192)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from renderocc.data.prepare import prepare

    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    index = prepare(
        args.dataroot, args.version, out=args.out, workers=args.workers, with_gts=not args.no_gts,
        format=args.format, image_labels=args.image_labels,
    )  # fmt: skip
    total = max(int(index.class_counts.sum()), 1)
    print(f"indexed {len(index)} keyframes ({', '.join(f'{k}: {len(v)}' for k, v in index.splits.items())})")
    print("train 2D label pixels per class:")
    for c, (name, count) in enumerate(zip(OCC3D_CLASSES, index.class_counts)):
        user = ", ".join(index.class_names.get(c, [])) if index.class_names else ""
        print(f"  {name:22s} {int(count):>12d}  {100 * count / total:5.1f} %  {user}".rstrip())
    print(f"index written to {index.root}")
    return 0
