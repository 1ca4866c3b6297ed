"""Exploratory probe, kept as run (2026-11-24): fit a free density + semantic grid to one keyframe's 2D
labels (the rays of its 7 frames), then score it against the keyframe's Occ3D labels.

It shows the ceiling of a set of 2D losses and the read-out without a network. It is not a held-out
measurement: the grid is fitted to the frame it is scored on. The numbers in BENCHMARKS.md came from:

    python -c "from pathlib import Path; from renderocc.synth import generate; from renderocc.data import prepare;
      d = Path('/tmp/probe/data'); generate(d, 2, 10, (450, 800), 0, val_scenes=1); prepare(d, 'v1.0-synthetic')"
    python docs/study/free_grid_probe.py --data /tmp/probe/data --steps 600 --rays 38400 --frames 2 6 \
      --variants base base-in los1-in surf1-in surfonly-in surf1-in-nofs

on one H100. Its "surf" term is the first version of the point-voxel loss: trilinear density and logits
0.1 m behind the LiDAR point, softplus(8.5 + margin - density), unweighted cross-entropy. The package's
`render.losses.surface_losses` uses the voxel that holds the point instead, and class weights.
"""
import argparse
import json
import sys
import time

import numpy as np
import torch

from renderocc.config import DataConfig, LossConfig, get_preset
from renderocc.data.dataset import OccDataset
from renderocc.eval.miou import confusion_matrix, iou_per_class
from renderocc.render import volume_render
from renderocc.render.losses import free_space_prior, line_of_sight_free_space, rendering_losses, class_weights_from_counts
from renderocc.train_utils.data import open_index

p = argparse.ArgumentParser()
p.add_argument("--data", default="/tmp/probe/data")
p.add_argument("--frames", type=int, nargs="+", default=[5])
p.add_argument("--steps", type=int, default=300)
p.add_argument("--rays", type=int, default=38400)
p.add_argument("--lr", type=float, default=0.3)
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--variants", nargs="+", default=["base"])
args = p.parse_args()

VARIANTS = {
    "los-thr": dict(init=6.0, loss=dict(line_of_sight=0.1)),
    "surf": dict(init=6.0, loss=dict(line_of_sight=0.1), surf=0.1),
    "surf1": dict(init=6.0, loss=dict(line_of_sight=1.0), surf=1.0),
    "base-in": dict(init=6.0, inbox=True),
    "los1-in": dict(init=6.0, loss=dict(line_of_sight=1.0), inbox=True),
    "surf1-in": dict(init=6.0, loss=dict(line_of_sight=1.0), surf=1.0, inbox=True),
    "surf1-in-m0": dict(init=6.0, loss=dict(line_of_sight=1.0), surf=1.0, inbox=True, margin=0.0),
    "surf03-in": dict(init=6.0, loss=dict(line_of_sight=0.3), surf=0.3, inbox=True),
    "surf1-in-nofs": dict(init=6.0, loss=dict(line_of_sight=1.0, free_space=0.0), surf=1.0, inbox=True),
    "surfonly-in": dict(init=6.0, loss=dict(line_of_sight=1.0, depth=0.0, semantic=0.0, entropy=0.0, distortion=0.0), surf=1.0, inbox=True),
    "surfonly": dict(init=6.0, loss=dict(line_of_sight=1.0, depth=0.0, semantic=0.0, entropy=0.0, distortion=0.0), surf=1.0),
    "base": dict(init=6.0),
    "init10": dict(init=10.0),
    "los": dict(init=6.0, loss=dict(line_of_sight=0.1)),
    "los1": dict(init=6.0, loss=dict(line_of_sight=1.0)),
    "nofs": dict(init=6.0, loss=dict(free_space=0.0)),
    "silog85": dict(init=6.0, loss=dict(silog_variance_focus=0.85)),
}

dev = torch.device(args.device)
preset = get_preset("r50-256x704")
grid = preset.grid
index = open_index(args.data)
cfg = DataConfig(max_rays=400_000, bev_flip=False)
ds = OccDataset(index, cfg, "train", train=False)
impl = "triton" if dev.type == "cuda" else "torch"
weights_cls = class_weights_from_counts(torch.as_tensor(index.class_counts))


def score(density, semantics, gt, mask, thr):
    occ = density > thr
    pred = torch.where(occ, semantics.argmax(-1), torch.full_like(gt, 17))
    conf = confusion_matrix(pred.flatten(), gt.flatten(), mask.flatten())
    return conf


import torch.nn.functional as F
def surface(density, semantics, batch, thr, margin):
    """density above thr + margin and semantic CE just behind each LiDAR point."""
    valid = batch["ray_valid"] & (batch["ray_depth"] > 0)
    pts = batch["rays_o"] + (batch["ray_depth"] + 0.1)[..., None] * batch["rays_d"]
    coords = grid.normalize(pts).flip(-1)[:, None, None]  # [B,1,1,R,3]
    d = F.grid_sample(density[:, None], coords, align_corners=False, padding_mode="border").view(valid.shape)
    sem = F.grid_sample(semantics.permute(0, 4, 1, 2, 3), coords, align_corners=False, padding_mode="border")
    sem = sem.view(semantics.shape[0], semantics.shape[-1], -1).transpose(1, 2)
    occ = F.softplus(thr + margin - d)
    ce = F.cross_entropy(sem.flatten(0, 1), batch["ray_class"].flatten(), reduction="none").view(valid.shape)
    return ((occ + ce) * valid).sum() / valid.sum().clamp_min(1)


def run(variant, sample):
    v = VARIANTS[variant]
    # the LossConfig defaults of the day: line of sight off (the point-voxel term is this script's own)
    loss_cfg = LossConfig(**({"line_of_sight": 0.0, "surface": 0.0} | v.get("loss", {})))
    eye = np.eye(4)
    g = torch.Generator().manual_seed(0)
    _, rays = ds._rays(sample, eye, g)
    vox = ds._voxels(sample, eye)
    n = int(rays["ray_valid"].sum())
    rays = {k: t[:n].to(dev) for k, t in rays.items()}
    X, Y, Z = grid.shape
    density = torch.full((1, X, Y, Z), v["init"], device=dev, requires_grad=True)
    semantics = torch.zeros((1, X, Y, Z, 17), device=dev, requires_grad=True)
    opt = torch.optim.Adam([density, semantics], lr=args.lr)
    t0 = time.time()
    for step in range(args.steps):
        pick = torch.randint(0, n, (args.rays,), device=dev)
        batch = {k: t[pick][None] for k, t in rays.items()}
        batch_all = dict(batch)
        if v.get("inbox"):
            hit = batch["rays_o"] + batch["ray_depth"][..., None] * batch["rays_d"]
            batch["ray_valid"] = batch["ray_valid"] & grid.contains(hit)
        out = volume_render(density, semantics, batch["rays_o"], batch["rays_d"], grid, 0.2,
                            preset.render.density_shift, 1e-7, impl)
        losses = rendering_losses(out, batch, loss_cfg, weights_cls.to(dev))
        if loss_cfg.free_space:
            losses["fs"] = loss_cfg.free_space * free_space_prior(density, loss_cfg.occupancy_threshold)
        if loss_cfg.line_of_sight:
            losses["los"] = loss_cfg.line_of_sight * line_of_sight_free_space(density, batch_all, grid, loss_cfg.occupancy_threshold)
        if v.get("surf"):
            losses["surf"] = v["surf"] * surface(density, semantics, batch, loss_cfg.occupancy_threshold, v.get("margin", 2.0))
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.time() - t0
    gt = vox["voxel_semantics"].long().to(dev)
    mask = vox["mask_camera"].to(dev)
    res = {}
    with torch.no_grad():
        for thr in (4.5, 6.5, 8.5, 10.5, 14.5):
            conf = score(density[0], semantics[0], gt, mask, thr)
            res[thr] = conf.cpu()
        occ = (density[0] > 8.5) & mask
        gocc = (gt < 17) & mask
        res["z"] = torch.stack([occ.sum((0, 1)), gocc.sum((0, 1)), (occ & gocc).sum((0, 1))]).cpu()
    return res, dt, {k: float(x) for k, x in losses.items()}


names = ["oth", "bar", "bic", "bus", "car", "con", "mot", "ped", "tco", "tra", "tru", "drv", "ofl", "sdw", "ter", "man", "veg"]
for variant in args.variants:
    total = {}
    for f in args.frames:
        sample = int(ds.samples[f])
        res, dt, losses = run(variant, sample)
        for thr, c in res.items():
            total[thr] = total.get(thr, 0) + c
    z = total.pop("z")
    print(f"== {variant} ({dt:.1f}s/frame) losses {json.dumps({k: round(x, 4) for k, x in losses.items()})}")
    for thr, c in total.items():
        iou = iou_per_class(c.double())[:17]
        present = c[:17].sum(1) > 0
        occ_gt = c[:17].sum(1)
        tp_geo = c[:17, :17].sum(); pred_occ = c[:, :17].sum(); gt_occ = c[:17].sum()
        miou = float(iou[present].mean()) * 100
        ground = float(iou[11:15].mean()) * 100
        print(f" thr {thr}: mIoU(present) {miou:5.1f} ground {ground:5.1f} geo prec {tp_geo/pred_occ:.2f} rec {tp_geo/gt_occ:.2f} | "
              + " ".join(f"{names[k]} {iou[k]*100:4.0f}" for k in range(17) if present[k]))
        sys.stdout.flush()
    print("  z pred/gt/tp:", " ".join(f"{a}/{b}/{c}" for a, b, c in z.T.tolist()))
