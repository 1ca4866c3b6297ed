"""Centre and extent read-outs of free grids fitted to 2D labels: does reading a voxel out over its extent
recover the rim voxels that Occ3D's any-overlap rule calls occupied, when no network stands in between?

Per training sample, a free density grid and a free logit grid (the preset's grid and start) are fitted by
Adam to that sample's labelled rays (key frame and neighbours) with the package's own 2D losses
(`train.rendered_losses` of the preset: rendering, free-space prior, line of sight, point voxel). Each
read-out, at voxel centres and over voxel extents (`extent_readout.extent_density`), chooses its per-layer
thresholds from the same rays' votes as `renderocc calibrate` does (2D labels only); both are scored
against the sample's Occ3D labels inside the camera mask. The grid is fitted to the frame it is scored on,
so this is a ceiling of each read-out under these losses, not a held-out measurement. As a diagnostic, the
best single threshold by the 3D labels themselves is scored too (an oracle no 2D-only model has): it
separates what a read-out can do from what the 2D labels' votes choose for it.

    python docs/study/free_grid_readout.py --data D [--samples 4] [--steps 300] [--rays 9600]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from extent_readout import extent_density
from tqdm import tqdm

from renderocc.config import get_preset
from renderocc.core.classes import NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.data.dataset import OccDataset
from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, calibrate
from renderocc.eval.miou import confusion_matrix, iou_per_class
from renderocc.models.heads import occupancy_readout
from renderocc.render.losses import class_weights_from_counts
from renderocc.train import rendered_losses
from renderocc.train_utils.data import open_index

OBJECTS = slice(1, 11)  # barrier .. truck ("others", class 0, left out; the other studies' 0-10 keep it)


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU % [17] of the semantic classes from a [18, 18] confusion."""
    return iou_per_class(confusion.double())[:NUM_SEMANTIC] * 100


def scores(confusion: torch.Tensor, present: torch.Tensor) -> tuple[float, float]:
    """mIoU and the OBJECTS' mean IoU (%) over the classes `present` [17] of a [18, 18] confusion."""
    iou = class_iou(confusion)
    return float(iou[present].mean()), float(iou[OBJECTS][present[OBJECTS]].mean())


class GridModel(torch.nn.Module):
    """A fitted grid as a model for `calibrate`: every batch gets density [1, X, Y, Z]."""

    def __init__(self, density: torch.Tensor) -> None:
        super().__init__()
        self.density = density

    def forward(self, batch: dict) -> dict:
        return {"density": self.density}


def fit(item: dict, preset, class_weights, steps: int, rays: int, lr: float, device) -> tuple:
    """Density [1, X, Y, Z] and logits [1, X, Y, Z, K] fitted to the item's rays, `rays` drawn per step."""
    valid = item["ray_valid"]
    labelled = {k: v[valid].to(device) for k, v in item.items() if k.startswith("ray")}
    shape = preset.grid.shape
    density = torch.full((1, *shape), preset.model.density_init, device=device, requires_grad=True)
    semantics = torch.zeros((1, *shape, NUM_SEMANTIC), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([density, semantics], lr=lr)
    count = labelled["ray_valid"].shape[0]
    for _ in tqdm(range(steps), desc="fit", unit="step", leave=False):
        pick = torch.randint(0, count, (rays,), device=device)
        batch = {k: v[pick][None] for k, v in labelled.items()}
        loss = sum(rendered_losses(density, semantics, batch, preset, class_weights).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return density.detach(), semantics.detach(), {k: v[None] for k, v in labelled.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset root with Occ3D gts")
    parser.add_argument("--preset", default="r50-256x704", help="grid, losses, ray sampling (2d)")
    parser.add_argument("--samples", type=int, default=4, help="training samples, evenly spaced")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rays", type=int, default=9600, help="rays per step")
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)  # the rays drawn per step
    device = torch.device(args.device)
    preset = get_preset(args.preset)
    index = open_index(args.data)
    # every labelled ray of the sample (the preset's sampling draws 38,400 of them per step in training)
    data = dataclasses.replace(preset.data, max_rays=400_000)
    dataset = OccDataset(index, data, "train", train=False, with_gts=True)
    class_weights = class_weights_from_counts(torch.as_tensor(index.class_counts)).to(device)
    picks = torch.linspace(0, len(dataset) - 1, args.samples).round().long().tolist()
    thresholds = torch.tensor(DEFAULT_THRESHOLDS)
    confusion = {"centre": 0, "extent": 0}
    swept = {"centre": 0, "extent": 0}  # [T, 18, 18]: one confusion per single threshold
    for i in picks:
        item = dataset[i]
        tic = time.perf_counter()
        density, semantics, rays = fit(item, preset, class_weights, args.steps, args.rays, args.lr, device)
        fitted = time.perf_counter() - tic
        gt = item["voxel_semantics"].long().to(device)
        mask = item["mask_camera"].bool().to(device)
        line = [f"sample {i}: {int(rays['ray_valid'].sum())} labelled rays, fitted in {fitted:.0f} s"]
        for name, field in (("centre", density), ("extent", extent_density(density))):
            chosen = calibrate(GridModel(field), [rays], preset, device, thresholds, progress=False)
            labels = occupancy_readout(field, semantics, chosen["layer_thresholds"])[0].long()
            confusion[name] = confusion[name] + confusion_matrix(labels, gt, mask).cpu()
            swept[name] = swept[name] + torch.stack([  # one read-out grid alive at a time
                confusion_matrix(occupancy_readout(field, semantics, float(t))[0].long(), gt, mask).cpu()
                for t in thresholds
            ])  # fmt: skip
            line.append(f"{name} thresholds {' '.join(f'{t:g}' for t in chosen['layer_thresholds'])}")
        print("; ".join(line), flush=True)

    ious = {name: class_iou(c) for name, c in confusion.items()}
    present = confusion["centre"][:NUM_SEMANTIC].sum(1) > 0  # classes in the labels
    print(f"{len(picks)} samples of {args.data}, {args.steps} steps of {args.rays} rays ({args.preset})")
    for name in confusion:
        miou, objects = scores(confusion[name], present)
        by_threshold = [scores(c, present) for c in swept[name]]
        best = max(range(len(thresholds)), key=lambda t: by_threshold[t][0])
        oracle_miou, oracle_objects = by_threshold[best]
        print(
            f"{name:7s} mIoU {miou:5.1f}  objects 1-10 {objects:5.1f}   best single threshold by the 3D "
            f"labels {float(thresholds[best]):g}: mIoU {oracle_miou:5.1f}  objects 1-10 {oracle_objects:5.1f}"
        )
    print(f"{'IoU %':22s} {'centre':>7s} {'extent':>7s}")
    for k in range(NUM_SEMANTIC):
        if present[k]:
            print(f"{OCC3D_CLASSES[k]:22s} {float(ious['centre'][k]):7.1f} {float(ious['extent'][k]):7.1f}")


if __name__ == "__main__":
    main()
