"""Where a 2D-trained model's false occupied voxels lie: in voxels the frame's labelled rays cross, end in, or
never reach, per height layer.

A 2D-trained density reads out too many occupied voxels above the surfaces (README, "Results"). A fix on the
training side depends on which voxels those are: ones that labelled rays cross (then the line-of-sight term
is too weak) or ones that no labelled ray reaches (then only a prior can speak for them, and it would also
speak for the true occupied voxels there). For held-out frames this counts, on Occ3D's 0.4 m grid and within
the camera mask: the true free voxels read out occupied (false positives) and the true occupied voxels read
out occupied (hits), split by the frame's ray votes (`eval.calibrate.ray_votes`: every labelled ray of the key
and neighbour frames, not a training sample of them) and by z layer. It also scores the mIoU the read-out
would have with the voxels of one category forced free: not a method (inference has no LiDAR), but the most a
training term that empties that category could win, and what it would cost.

    python docs/study/haze_probe.py --checkpoint RUN --dataroot D [--readout F.json] [--frames 24]

On the CPU demo (2026-12-01, its 50 x 50 x 4 grid of 1.6 m voxels) the read-out's coarse layers dominate
what it finds; the question is for the r50 presets, which train on Occ3D's own 0.4 m grid.
"""

from __future__ import annotations

import torch
from probe_setup import probe_setup

from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid
from renderocc.data.batch import batch_to
from renderocc.eval.calibrate import FREE_VOTE, OCCUPIED_VOTE, ray_votes
from renderocc.eval.miou import confusion_matrix, mean_iou

CATEGORIES = ("crossed", "ended in", "unreached")


@torch.no_grad()
def main() -> None:
    # every labelled ray of each frame votes, not the training's sample of them
    args, preset, predict, loader = probe_setup(__doc__.splitlines()[0], max_rays=200_000)
    occ3d = VoxelGrid()
    layers = occ3d.shape[2]
    # [category, layer]: true free voxels read out occupied and all of them; true occupied read out occupied
    false_pos, free_total = torch.zeros(3, layers), torch.zeros(3, layers)
    hits, occupied_total = torch.zeros(3, layers), torch.zeros(3, layers)
    # confusion of the read-out as it is (key None) and with one category forced free
    confusions = {key: torch.zeros(FREE + 1, FREE + 1, dtype=torch.int64) for key in (None, 0, 1, 2)}
    for batch in loader:
        labels = predict(batch)[0].long().cpu()  # the read-out as `renderocc eval` scores it
        batch = batch_to(batch, args.device)
        occupied = labels != FREE
        votes = ray_votes(batch, occ3d)[0].view(occ3d.shape).cpu()
        category = torch.full(occ3d.shape, 2)
        category[votes == FREE_VOTE] = 0
        category[votes == OCCUPIED_VOTE] = 1
        truth = batch["voxel_semantics"][0].long().cpu()
        visible = batch["mask_camera"][0].bool().cpu()
        for key in confusions:
            forced = labels if key is None else torch.where(category == key, FREE, labels)
            confusions[key] += confusion_matrix(forced, truth, visible)
        for c in range(3):
            where = visible & (category == c)
            free = where & (truth == FREE)
            solid = where & (truth != FREE)
            free_total[c] += free.sum((0, 1))
            false_pos[c] += (free & occupied).sum((0, 1))
            occupied_total[c] += solid.sum((0, 1))
            hits[c] += (solid & occupied).sum((0, 1))
    print(f"{len(loader)} held-out frames, camera mask, Occ3D grid; read-out {preset.readout_threshold()}")
    print(
        "true free voxels read out occupied (false positives): count and share of that category's free voxels"
    )
    print(f"{'layer':>5s} {'z (m)':>6s}" + "".join(f" {c:>22s}" for c in CATEGORIES))
    for z in range(layers):
        height = occ3d.lower[2] + (z + 0.5) * occ3d.voxel_size
        cells = "".join(
            f" {int(false_pos[c, z]):>9d} of {int(free_total[c, z]):>7d}"
            f" {100 * false_pos[c, z] / max(1, free_total[c, z]):3.0f}%"
            for c in range(3)
        )
        print(f"{z:5d} {height:6.1f}{cells}")
    fp = false_pos.sum(1)
    print(
        "all layers:"
        + "".join(
            f" {c} {int(fp[i])} ({100 * fp[i] / fp.sum().clamp_min(1):.0f}% of them)"
            for i, c in enumerate(CATEGORIES)
        )
    )
    print(
        f"mIoU as read out {mean_iou(confusions[None]):.2f}; with the voxels forced free that are: "
        + ", ".join(f"{c} {mean_iou(confusions[i]):.2f}" for i, c in enumerate(CATEGORIES))
    )
    print("true occupied voxels read out occupied (recall) per category:")
    for i, c in enumerate(CATEGORIES):
        total, hit = occupied_total[i].sum(), hits[i].sum()
        print(f"  {c:10s} {int(hit)} of {int(total)} ({100 * hit / total.clamp_min(1):.0f}%)")


if __name__ == "__main__":
    main()
