"""Exploratory, kept as run (2026-11-24): a read-out threshold per height layer, chosen from 2D labels only.

On a checkpoint's training frames, the calibration votes of `renderocc calibrate` (a labelled ray's LiDAR
point votes its voxel occupied, the voxels before it free) pick one threshold per z layer; the held-out
frames are then scored at 8.5 everywhere, at the one global calibrated threshold, and at the per-layer ones.

    python docs/study/per_layer_readout.py --run renderocc-demo/run --data renderocc-demo/data
"""

import argparse
from pathlib import Path

import torch

from renderocc.checkpoint import load_model
from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, agreement_counts, agreement_iou, ray_votes
from renderocc.eval.evaluate import evaluate_model
from renderocc.train_utils.data import eval_loader, open_index

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", type=Path, required=True, help="training run folder (with checkpoints/)")
parser.add_argument("--data", type=Path, required=True, help="its prepared dataset")
parser.add_argument("--frames", type=int, default=32, help="training frames that vote")
args = parser.parse_args()

device = torch.device("cpu")
checkpoint = sorted((args.run / "checkpoints").glob("step-*"))[-1]
model, preset = load_model(checkpoint, which="ema", device=device)
model.eval()
index = open_index(args.data)
thresholds = torch.tensor(DEFAULT_THRESHOLDS)
layers = preset.grid.shape[2]
per_layer = torch.zeros(layers, len(thresholds), 3, dtype=torch.long)
with torch.no_grad():
    for batch in eval_loader(index, preset.data, "train", 1, 0, max_samples=args.frames, with_gts=False):
        density = model(batch)["density"].float()
        votes = ray_votes(batch, preset.grid).view(density.shape)
        for z in range(layers):
            per_layer[z] += agreement_counts(density[..., z], votes[..., z], thresholds)
best_global = float(thresholds[agreement_iou(per_layer.sum(0)).argmax()])
best_per_layer = torch.stack([thresholds[agreement_iou(counts).argmax()] for counts in per_layer])
print(f"calibrated: global {best_global}, per layer {best_per_layer.tolist()}")
val = eval_loader(index, preset.data, "val", 1, 0)
for name, threshold in [("8.5", 8.5), ("global", best_global), ("per layer", best_per_layer)]:
    # a [Z] tensor broadcasts over the last (z) axis of the density in the read-out
    scored = preset.replace(loss={"occupancy_threshold": threshold})
    metrics = evaluate_model(model, val, scored, index, device, rayiou=True, progress=False)
    print(f"{name:>10s}: mIoU {metrics['miou']:.2f}, RayIoU {metrics['rayiou']:.2f}")
