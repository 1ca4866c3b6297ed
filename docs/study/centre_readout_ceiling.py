"""How much of the "any overlap" voxel labels a read-out at voxel centres can recover from exact geometry.

Occ3D (and the synthetic labels, `synth.occupancy`) call a 0.4 m voxel occupied when a solid reaches into it
at all, so an object's labelled voxels include a rim of voxels it only partly fills. Camera rays pass
through the free part of those voxels, and the 2D labels say so (`docs/study/label_coverage.py`, "crossed").
A density learned from 2D labels approaches the geometry itself; read out at the voxel centres it can only
find the voxels whose centre lies inside a solid. A 3D-supervised model learns the labels' rule directly.
This scores, per class, the labels that a perfect geometry would give under stricter rules against the
true ones, with no network: a ceiling for a centre read-out, not a model's score. Rules: the solid must
reach the voxel's centre ("centre"), or a quarter voxel into it ("inner half": the middle half of the
voxel along each axis). The ground's own rule (its 2 x 2 x 2 sub-points in a 0.2 m skin) is the same in
all of them, so the ground classes lose only the voxels that objects no longer outrank them in.

    python docs/study/centre_readout_ceiling.py --scenes 4 --frames 5

Voxels within 40 m of the ego in xy count (no camera mask: it needs the rendered images); the synthetic
scenes of the study's seed.
"""

from __future__ import annotations

import argparse

import torch

from renderocc.core.classes import FREE, NUM_SEMANTIC, OCC3D_CLASSES
from renderocc.core.grid import VoxelGrid
from renderocc.eval.miou import confusion_matrix, iou_per_class
from renderocc.synth import materials, occupancy
from renderocc.synth.city import KEYFRAME_DT, build_world

# the rules as the depth a solid must reach into a voxel (occupancy.MARGIN's meaning), in voxels
RULES = {"any overlap (the labels)": None, "inner half": 0.25, "centre": 0.5 - 1e-4}


def labels_under(rule: float | None, world, grid: VoxelGrid, ego2world: torch.Tensor, time: float, occ):
    """The voxel labels [X, Y, Z] with solids required to reach `rule` voxels into a voxel (None: as is)."""
    margin = occupancy.MARGIN
    if rule is not None:
        occupancy.MARGIN = rule * grid.voxel_size
    try:
        return occupancy.voxelize(world, grid, ego2world, time, occ)
    finally:
        occupancy.MARGIN = margin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the dataset seed (the study's: 0)")
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5, help="keyframes per scene, 0.5 s apart")
    args = parser.parse_args()

    grid = VoxelGrid()
    occ = materials.material_tables()["occ"]
    near = grid.voxel_centers()[..., :2].norm(dim=-1) < 40.0
    confusions = {name: torch.zeros(FREE + 1, FREE + 1, dtype=torch.int64) for name in RULES}
    for scene in range(args.scenes):
        world = build_world(args.seed, scene, args.frames)
        for k in range(args.frames):
            time = k * KEYFRAME_DT
            ego2world = torch.tensor(world.ego.pose(time), dtype=torch.float32)
            truth = labels_under(None, world, grid, ego2world, time, occ).long()
            for name, rule in RULES.items():
                pred = labels_under(rule, world, grid, ego2world, time, occ).long()
                confusions[name] += confusion_matrix(pred, truth, near)
    names = list(RULES)
    print(f"{args.scenes} scenes x {args.frames} keyframes, voxels within 40 m; IoU % against the labels")
    print(f"{'class':22s}{'voxels':>9s}" + "".join(f"{n:>26s}" for n in names[1:]))
    ious = {n: iou_per_class(confusions[n]) for n in names}
    truth_count = confusions[names[0]].sum(1)  # rows: the labels
    for c in range(NUM_SEMANTIC):
        if truth_count[c] == 0:
            continue
        cells = "".join(f"{100 * float(ious[n][c]):26.1f}" for n in names[1:])
        print(f"{OCC3D_CLASSES[c]:22s}{int(truth_count[c]):9d}{cells}")
    present = truth_count[:NUM_SEMANTIC] > 0
    groups = {"objects (0-10)": range(0, 11), "manmade, vegetation": (15, 16), "all present": range(17)}
    for group, classes in groups.items():
        keep = [c for c in classes if present[c]]
        cells = "".join(f"{100 * float(ious[n][keep].mean()):26.1f}" for n in names[1:])
        print(f"{'mean, ' + group:31s}{cells}")


if __name__ == "__main__":
    main()
