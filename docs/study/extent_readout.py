"""Reading a voxel out as occupied where the density exceeds the threshold anywhere in it, not at its centre.

Occ3D's labels call a voxel occupied when a solid reaches into it at all. With the exact geometry, a
read-out at voxel centres recovers 67 mIoU of those labels (objects 52, pedestrians 14:
`docs/study/centre_readout_ceiling.py`). A density learned from 2D labels is pulled toward the geometry (the
labelled rays cross the free part of those rim voxels: `docs/study/label_coverage.py`, "crossed"), so its
centre read-out may come out thin where a 3D-supervised model learns the labels' rule itself. This read-out
takes, per voxel, the maximum of the trilinear density field over the voxel's extent (exact:
`render.extent.extent_max`), keeps the class of the centre, and chooses its own per-layer
thresholds from the 2D labels of training frames, as `renderocc calibrate` does. Both read-outs are scored
on the same held-out frames; run it on a 2d and a 3d checkpoint of the same steps (item 4 compares like for
like). On grids fitted freely to 2D labels it lost to the centre read-out, also at the best threshold the 3D
labels could choose (`free_grid_readout.py`; BENCHMARKS.md, sixteenth session).

    python docs/study/extent_readout.py --checkpoint RUN --dataroot D [--frames 150] [--calib-frames 64]
"""

from __future__ import annotations

import argparse

import torch

from renderocc.checkpoint import load_model
from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, calibrate
from renderocc.eval.evaluate import evaluate_model
from renderocc.render.extent import extent_max
from renderocc.train_utils.data import eval_loader, open_index


class ExtentReadout(torch.nn.Module):
    """A model whose density output is `extent_max` of the wrapped model's."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_frames = model.num_frames

    def forward(self, *args, **kwargs) -> dict:
        out = dict(self.model(*args, **kwargs))
        out["density"] = extent_max(out["density"].float())
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--frames", type=int, default=None, help="held-out frames to score (default: all)")
    parser.add_argument("--calib-frames", type=int, default=64, help="training frames to calibrate on")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, preset = load_model(args.checkpoint, device=device)
    index = open_index(args.dataroot, args.version)
    calib = eval_loader(
        index, preset.data, "train", 1, args.workers, max_samples=args.calib_frames, with_gts=False
    )
    val = eval_loader(index, preset.data, "val", 1, args.workers, max_samples=args.frames)
    amp = preset.train.amp
    rows = {}
    for name, readout_model in (("centre", model), ("extent", ExtentReadout(model))):
        agreement = calibrate(readout_model, calib, preset, device, torch.tensor(DEFAULT_THRESHOLDS), amp=amp)
        per_layer = preset.with_readout(agreement["layer_thresholds"])
        metrics = evaluate_model(readout_model, val, per_layer, index, device, rayiou=True, amp=amp)
        rows[name] = (agreement["layer_thresholds"], metrics)
    print(f"{args.checkpoint}: per-layer read-outs from {args.calib_frames} training frames' 2D labels")
    for name, (thresholds, m) in rows.items():
        objects = torch.tensor(list(m["per_class_iou"].values())[:11]).nanmean()
        print(
            f"{name:7s} mIoU {m['miou']:.2f}  RayIoU {m['rayiou']:.2f}  objects {float(objects):.2f}  "
            "thresholds " + " ".join(f"{t:g}" for t in thresholds)
        )
    print(f"{'IoU %':22s}" + "".join(f"{name:>9s}" for name in rows))
    for cls in rows["centre"][1]["per_class_iou"]:
        print(f"{cls:22s}" + "".join(f"{m['per_class_iou'][cls]:9.1f}" for _, m in rows.values()))


if __name__ == "__main__":
    main()
