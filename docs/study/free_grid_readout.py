"""Free grids fitted to 2D labels, read out four ways: which recovers the rim voxels Occ3D calls occupied?

Occ3D's any-overlap rule calls a voxel occupied when a solid reaches into it at all; can a field fitted to
2D labels get those rims back, with no network in between?

Per training sample, a free density grid and a free logit grid (the preset's grid and start) are fitted by
Adam to that sample's labelled rays (key frame and neighbours) with the package's own 2D losses
(`train.rendered_losses` of the preset: rendering, free-space prior, line of sight, point voxel). Read-outs
(--readouts): "centre", the fitted density at voxel centres; "extent", its maximum over each voxel's extent
(`render.extent.extent_max`); "erode", a grid fitted with render.erode (the rendering losses through
`render.extent.extent_min`), at the centres; "held", a grid fitted with the rendering losses unable to move
the density of a voxel that holds a labelled ray's LiDAR point (the votes' rule of `renderocc calibrate`: a
voxel one ray ends in is occupied however many others cross it), at the centres. Each chooses its per-layer
thresholds from the same rays' votes as `renderocc calibrate` does (2D labels only); all are scored against
the sample's Occ3D labels inside the camera mask. The grids are fitted to the frame they are scored on, so
this is a ceiling of each read-out under these losses, not a held-out measurement. As a diagnostic, the best
single threshold by the 3D labels themselves is scored too (an oracle no 2D-only model has): it separates
what a read-out can do from what the 2D labels' votes choose for it.

    python docs/study/free_grid_readout.py --data D [--samples 4] [--steps 300] [--rays 9600] [--readouts ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from tqdm import tqdm

from renderocc.config import get_preset
from renderocc.core.classes import NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.data.dataset import OccDataset
from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, calibrate, ray_votes
from renderocc.eval.miou import confusion_matrix, iou_per_class
from renderocc.models.heads import occupancy_readout
from renderocc.render.extent import extent_max
from renderocc.render.losses import OCCUPIED_VOTE, class_weights_from_counts
from renderocc.train import rendered_losses
from renderocc.train_utils.data import open_index

READOUTS = ("centre", "extent", "erode", "held")
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


def fit(item: dict, preset, class_weights, steps: int, rays: int, lr: float, device, hold: bool) -> tuple:
    """Density [1, X, Y, Z] and logits [1, X, Y, Z, K] fitted to the item's rays, `rays` drawn per step.
    hold: the rendering losses cannot move the density of voxels that hold a labelled ray's LiDAR point."""
    valid = item["ray_valid"]
    labelled = {k: v[valid].to(device) for k, v in item.items() if k.startswith("ray")}
    shape = preset.grid.shape
    density = torch.full((1, *shape), preset.model.density_init, device=device, requires_grad=True)
    semantics = torch.zeros((1, *shape, NUM_SEMANTIC), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([density, semantics], lr=lr)
    count = labelled["ray_valid"].shape[0]
    every_ray = {k: v[None] for k, v in labelled.items()}
    # every labelled ray of the sample votes, as in `renderocc calibrate`
    held = ray_votes(every_ray, preset.grid).view(1, *shape) == OCCUPIED_VOTE if hold else None
    for _ in tqdm(range(steps), desc="fit", unit="step", leave=False):
        pick = torch.randint(0, count, (rays,), device=device)
        batch = {k: v[pick][None] for k, v in labelled.items()}
        rendered = None if held is None else torch.where(held, density.detach(), density)
        terms = rendered_losses(density, semantics, batch, preset, class_weights, rendered_density=rendered)
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return density.detach(), semantics.detach(), every_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset root with Occ3D gts")
    parser.add_argument("--preset", default="r50-256x704", help="grid, losses, ray sampling (2d)")
    parser.add_argument("--samples", type=int, default=4, help="training samples, evenly spaced")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rays", type=int, default=9600, help="rays per step")
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--readouts", nargs="+", choices=READOUTS, default=READOUTS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    preset = get_preset(args.preset)
    index = open_index(args.data)
    # every labelled ray of the sample (the preset's sampling draws 38,400 of them per step in training)
    data = dataclasses.replace(preset.data, max_rays=400_000)
    dataset = OccDataset(index, data, "train", train=False, with_gts=True)
    class_weights = class_weights_from_counts(torch.as_tensor(index.class_counts)).to(device)
    picks = torch.linspace(0, len(dataset) - 1, args.samples).round().long().tolist()
    thresholds = torch.tensor(DEFAULT_THRESHOLDS)
    fits = {  # fit: (preset, hold)
        "plain": (preset, False),
        "erode": (preset.replace(render={"erode": True}), False),
        "held": (preset, True),
    }
    readouts = {  # read-out: (fit, transform of its density)
        "centre": ("plain", None),
        "extent": ("plain", extent_max),
        "erode": ("erode", None),
        "held": ("held", None),
    }
    readouts = {name: readouts[name] for name in args.readouts}
    confusion = dict.fromkeys(readouts, 0)
    swept = dict.fromkeys(readouts, 0)  # [T, 18, 18]: one confusion per single threshold
    for i in picks:
        item = dataset[i]
        line = [f"sample {i}"]
        fitted = {}
        for fit_name in dict.fromkeys(fit for fit, _ in readouts.values()):
            torch.manual_seed(i)  # the rays drawn per step: the same for every fit
            tic = time.perf_counter()
            fit_preset, hold = fits[fit_name]
            fitted[fit_name] = fit(
                item, fit_preset, class_weights, args.steps, args.rays, args.lr, device, hold
            )
            line.append(f"{fit_name} fitted in {time.perf_counter() - tic:.0f} s")
        gt = item["voxel_semantics"].long().to(device)
        mask = item["mask_camera"].bool().to(device)
        for name, (fit_name, transform) in readouts.items():
            density, semantics, rays = fitted[fit_name]
            field = density if transform is None else transform(density)
            chosen = calibrate(GridModel(field), [rays], preset, device, thresholds, progress=False)
            labels = occupancy_readout(field, semantics, chosen["layer_thresholds"])[0].long()
            confusion[name] = confusion[name] + confusion_matrix(labels, gt, mask).cpu()
            swept[name] = swept[name] + torch.stack([  # one read-out grid alive at a time
                confusion_matrix(occupancy_readout(field, semantics, float(t))[0].long(), gt, mask).cpu()
                for t in thresholds
            ])  # fmt: skip
            line.append(f"{name} thresholds {' '.join(f'{t:g}' for t in chosen['layer_thresholds'])}")
        print(f"{'; '.join(line)} ({int(rays['ray_valid'].sum())} labelled rays)", flush=True)

    ious = {name: class_iou(c) for name, c in confusion.items()}
    present = next(iter(confusion.values()))[:NUM_SEMANTIC].sum(1) > 0  # classes in the labels
    print(f"{len(picks)} samples of {args.data}, {args.steps} steps of {args.rays} rays ({args.preset})")
    for name in confusion:
        miou, objects = scores(confusion[name], present)
        by_threshold = [scores(c, present) for c in swept[name]]
        best = max(range(len(thresholds)), key=lambda t: by_threshold[t][0])
        oracle_miou, oracle_objects = by_threshold[best]
        with_others = float(ious[name][:11][present[:11]].mean())  # 0-10, as the other studies count
        print(
            f"{name:7s} mIoU {miou:5.1f}  objects 1-10 {objects:5.1f} (0-10 {with_others:5.1f})   best "
            f"single threshold by the 3D labels {float(thresholds[best]):g}: mIoU {oracle_miou:5.1f}  "
            f"objects 1-10 {oracle_objects:5.1f}"
        )
    print(f"{'IoU %':22s}" + "".join(f"{name:>8s}" for name in ious))
    for k in range(NUM_SEMANTIC):
        if present[k]:
            print(f"{OCC3D_CLASSES[k]:22s}" + "".join(f"{float(iou[k]):8.1f}" for iou in ious.values()))


if __name__ == "__main__":
    main()
