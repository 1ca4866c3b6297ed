"""What the probes share: a checkpoint, its read-out and the held-out frames, named on the command line."""

from __future__ import annotations

import argparse
import dataclasses

import torch

from renderocc.checkpoint import load_model
from renderocc.config import Preset
from renderocc.core.grid import VoxelGrid
from renderocc.eval.calibrate import load_readout
from renderocc.infer import Predictor
from renderocc.train_utils.data import eval_loader, open_index


def probe_setup(
    description: str, max_rays: int | None
) -> tuple[argparse.Namespace, Preset, Predictor, object]:
    """Parse --checkpoint, --dataroot, --version, --readout, --frames and --device; returns the arguments,
    the checkpoint's preset with the read-out, a float32 `Predictor` of Occ3D labels on Occ3D's grid (as
    `renderocc eval` scores them), and a loader of the held-out frames, one per batch, with up to `max_rays`
    labelled rays each (None: no rays)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--readout", default=None, help="per-layer thresholds (renderocc calibrate --json)")
    parser.add_argument("--frames", type=int, default=24, help="held-out frames to count")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    model, preset = load_model(args.checkpoint, device=args.device)  # in eval mode
    if args.readout:
        preset = preset.with_readout(load_readout(args.readout))
    data = preset.data if max_rays is None else dataclasses.replace(preset.data, max_rays=max_rays)
    index = open_index(args.dataroot, args.version)
    loader = eval_loader(index, data, "val", 1, 0, max_samples=args.frames, with_rays=max_rays is not None)
    predict = Predictor(model, preset.replace(train={"amp": False}), VoxelGrid(), torch.device(args.device))
    return args, preset, predict, loader
