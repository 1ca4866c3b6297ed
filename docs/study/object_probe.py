"""What each class's IoU loses, and where: surfaces a voxel off, the wrong class, or missing altogether.

At 8,000 steps 2D-only supervision reaches 84-86% of 3D per layer, and the gap is in the objects and
structures (barrier, car, truck, manmade, vegetation), not the ground (docs/study/long-2026-12-01.md). A
training-side fix depends on the kind of error. For held-out frames, on Occ3D's 0.4 m grid within the camera
mask, this splits every class's misses (true voxels of the class read out otherwise) into: another class,
free with a voxel of the class read out within one voxel (3x3x3), and free with none there; and its false
voxels (read out as the class, true otherwise) into: another true class, true free within one voxel of a
true voxel of the class, and true free elsewhere. Each share is of the class's union (hits + misses + false
voxels), so the IoU and the shares add up to 100%. "Within one voxel" counts both a surface placed a voxel
off and one drawn a voxel thick or thin: errors that the depth of a rendered ray can make and a 3D label
cannot.

    python docs/study/object_probe.py --checkpoint RUN --dataroot D [--readout F.json] [--frames 24]

Run it on a 2d and a 3d checkpoint of the same data and steps and compare the rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from probe_setup import probe_setup

from renderocc.core.classes import FREE, NUM_SEMANTIC, OCC3D_CLASSES

COLUMNS = ("IoU", "miss: other", "miss: near", "miss: none", "false: other", "false: near", "false: far")
GROUPS = {"objects (0-10)": range(0, 11), "ground (11-14)": range(11, 15), "manmade, vegetation": (15, 16)}


def near(mask: torch.Tensor) -> torch.Tensor:
    """bool [X, Y, Z]: voxels within one voxel (3x3x3) of a True one, itself included."""
    return F.max_pool3d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0].bool()


def error_counts(pred: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """int64 [NUM_SEMANTIC, 7]: per class, hits and the six kinds of error of COLUMNS (counts), for one
    frame's read-out pred and truth [X, Y, Z] (FREE = free) within visible."""
    counts = torch.zeros(NUM_SEMANTIC, len(COLUMNS), dtype=torch.int64)
    for c in range(NUM_SEMANTIC):
        is_true, is_pred = visible & (truth == c), visible & (pred == c)
        missed, false = is_true & ~is_pred, is_pred & ~is_true
        pred_near, true_near = near(pred == c), near(truth == c)
        counts[c] = torch.stack(
            [
                (is_true & is_pred).sum(),
                (missed & (pred != FREE)).sum(),
                (missed & (pred == FREE) & pred_near).sum(),
                (missed & (pred == FREE) & ~pred_near).sum(),
                (false & (truth != FREE)).sum(),
                (false & (truth == FREE) & true_near).sum(),
                (false & (truth == FREE) & ~true_near).sum(),
            ]
        )
    return counts


def print_table(counts: torch.Tensor) -> None:
    """Each class's (and group's) IoU and error shares, in % of its union."""
    print(f"{'class':<22}{'voxels':>9}" + "".join(f"{name:>14}" for name in COLUMNS))
    rows = [(OCC3D_CLASSES[c], counts[c]) for c in range(NUM_SEMANTIC)]
    rows += [(group, counts[list(classes)].sum(0)) for group, classes in GROUPS.items()]
    for name, row in rows:
        truth = int(row[0] + row[1:4].sum())
        shares = 100 * row.double() / max(1, int(row.sum()))
        print(f"{name:<22}{truth:>9d}" + "".join(f"{float(v):>14.1f}" for v in shares))


@torch.no_grad()
def main() -> None:
    _, preset, predict, loader = probe_setup(__doc__.splitlines()[0], max_rays=None)  # no rays needed
    counts = torch.zeros(NUM_SEMANTIC, len(COLUMNS), dtype=torch.int64)
    for batch in loader:
        pred = predict(batch)[0].long().cpu()
        truth = batch["voxel_semantics"][0].long()
        visible = batch["mask_camera"][0].bool()
        counts += error_counts(pred, truth, visible)
    print(f"{len(loader)} held-out frames, camera mask, Occ3D grid; read-out {preset.readout_threshold()}")
    print("per class: its true voxels, then the IoU and each kind of error in % of its union")
    print_table(counts)


if __name__ == "__main__":
    main()
