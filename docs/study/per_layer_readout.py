"""Exploratory, kept as run (2026-11-24): a read-out threshold per height layer, chosen from 2D labels only.

On a checkpoint's training frames, the calibration votes of `renderocc calibrate` (a labelled ray's LiDAR
point votes its voxel occupied, the voxels before it free) pick one threshold per z layer; the held-out
frames are then scored at 8.5 everywhere, at the one global calibrated threshold, and at the per-layer ones.
Since then `renderocc calibrate` prints both, and `renderocc demo` reads out per layer.

    python docs/study/per_layer_readout.py --run renderocc-demo/run --data renderocc-demo/data
"""

import argparse
from pathlib import Path

import torch

from renderocc.checkpoint import latest_checkpoint, load_model
from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, calibrate
from renderocc.eval.evaluate import evaluate_model
from renderocc.train_utils.data import eval_loader, open_index

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", type=Path, required=True, help="training run folder (with checkpoints/)")
parser.add_argument("--data", type=Path, required=True, help="its prepared dataset")
parser.add_argument("--frames", type=int, default=32, help="training frames that vote")
args = parser.parse_args()

device = torch.device("cpu")
model, preset = load_model(latest_checkpoint(args.run), which="ema", device=device)
index = open_index(args.data)
votes = eval_loader(index, preset.data, "train", 1, 0, max_samples=args.frames, with_gts=False)
agreement = calibrate(model, votes, preset, device, torch.tensor(DEFAULT_THRESHOLDS), progress=False)
print(f"calibrated: global {agreement['threshold']}, per layer {agreement['layer_thresholds']}")
val = eval_loader(index, preset.data, "val", 1, 0)
for name, threshold in [
    ("8.5", 8.5),
    ("global", agreement["threshold"]),
    ("per layer", agreement["layer_thresholds"]),
]:
    metrics = evaluate_model(
        model, val, preset.with_readout(threshold), index, device, rayiou=True, progress=False
    )
    print(f"{name:>10s}: mIoU {metrics['miou']:.2f}, RayIoU {metrics['rayiou']:.2f}")
