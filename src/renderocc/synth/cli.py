"""`renderocc synth`: generate a synthetic nuScenes v1.0 + nuScenes-lidarseg + Occ3D dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--scenes", type=int, default=8, help="number of scenes (default 8)")
    parser.add_argument(
        "--frames", type=int, default=12, help="keyframes per scene, 0.5 s apart (default 12)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(450, 800),
        metavar=("H", "W"),
        help="camera images (default 450 800)",
    )
    parser.add_argument("--seed", type=int, default=0, help="world seed: layout, style, traffic, lighting")
    parser.add_argument(
        "--val-scenes",
        type=int,
        default=None,
        help="the last K scenes form the val split (default a quarter, at least 1)",
    )
    parser.add_argument(
        "--version", default="v1.0-synthetic", help="nuScenes version folder name (default v1.0-synthetic)"
    )
    parser.add_argument("--device", default="cpu", help="torch device for simulation: cpu or cuda")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="scenes simulated at once, one process each (default: one per core, at most 8); the same files",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out after success")
    parser.add_argument(
        "--pseudo-labels",
        nargs="?",
        const="",
        default=None,
        metavar="CONFIG.json",
        help="also write degraded label images imitating a 2D segmentor and a monocular depth model "
        "(labels2d/pseudo/); CONFIG.json overrides fields of synth.labels2d.PseudoLabelConfig",
    )


def run(args: argparse.Namespace) -> int:
    from renderocc.synth.dataset import default_workers, generate
    from renderocc.synth.labels2d import load_pseudo_config

    start = time.perf_counter()
    out = generate(
        args.out,
        args.scenes,
        args.frames,
        tuple(args.image_size),
        seed=args.seed,
        val_scenes=args.val_scenes,
        version=args.version,
        device=args.device,
        overwrite=args.overwrite,
        pseudo=None if args.pseudo_labels is None else load_pseudo_config(args.pseudo_labels or None),
        workers=default_workers() if args.workers is None else args.workers,  # 0 is refused by generate
    )
    keyframes = args.scenes * args.frames
    elapsed = time.perf_counter() - start
    print(f"wrote {keyframes} keyframes to {out} in {elapsed:.1f} s ({keyframes / elapsed:.2f} keyframes/s)")
    return 0
