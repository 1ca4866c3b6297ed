"""RayIoU as SparseOcc defines it: LiDAR-like rays through predicted and true occupancy, first hits compared.

Rays: 39 pitch rows x 360 azimuths (`lidar_ray_directions`) from each of up to 8 origins, the LiDAR
positions of the scene's keyframes within 39 m of the key frame (`select_origins`). Each ray walks every
voxel it crosses (`first_hits`, an exact 3D DDA) until the first voxel whose label is not free; its class is
that voxel's label, its depth the distance at which the ray leaves that voxel. Only rays whose ground-truth
first hit is not free are scored: a true positive of class c when both first hits have class c and their
depths differ by less than a threshold (1, 2 and 4 m). Per class and threshold IoU = TP / (GT rays of c +
predicted rays of c - TP); RayIoU is the mean over classes 0..16 and then over the thresholds. Unlike voxel
mIoU it does not reward predicting thick surfaces and needs no visibility mask: rays stop at the first
surface.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from renderocc.core.classes import FREE, OCC3D_CLASSES
from renderocc.core.grid import VoxelGrid

NUM_CLASSES = len(OCC3D_CLASSES)
THRESHOLDS = (1.0, 2.0, 4.0)
ORIGIN_RANGE = 39.0  # metres: an origin is kept when |x| and |y| in the key frame's ego frame are below it
MAX_ORIGINS = 8
COMPACT_EVERY = 8  # steps between dropping finished rays in `first_hits` (fewer copies of the rays' state)
# how RayIoU picks a frame's ray origins (`renderocc eval --ray-origins`; recorded in the metrics JSON)
RAY_ORIGINS = {
    "sparseocc": "the LiDAR origins of the scene's keyframes within 39 m in x and y, at most 8 (SparseOcc)",
    "key-frame": "the key frame's own LiDAR origin only",
}


def lidar_ray_directions(azimuth_step_deg: float = 1.0) -> torch.Tensor:
    """Unit ray directions of SparseOcc's virtual LiDAR -> [R, 3] (39 pitch rows x 360 azimuths).

    Pitch angles start at -(pi/2 - atan(k)) for k = 1..10 (dense near the ground) and then continue with
    the last spacing up to the nuScenes LiDAR's upper field of view (about +0.21 rad).
    """
    pitch = [-(math.pi / 2 - math.atan(k + 1)) for k in range(10)]
    while pitch[-1] < 0.21:
        pitch.append(2 * pitch[-1] - pitch[-2])
    pitch = torch.tensor(pitch, dtype=torch.float64)
    azimuth = torch.deg2rad(torch.arange(0.0, 360.0, azimuth_step_deg, dtype=torch.float64))
    p, a = torch.meshgrid(pitch, azimuth, indexing="ij")
    dirs = torch.stack([p.cos() * a.cos(), p.cos() * a.sin(), p.sin()], -1)
    return dirs.reshape(-1, 3).float()


def select_origins(origins: np.ndarray, key: int, rule: str = "sparseocc") -> np.ndarray:
    """Ray origins of one frame from the LiDAR origins of its scene's keyframes.

    origins [T, 3]: every keyframe's LiDAR origin in the key frame's ego frame, in scene order; key: the
    key frame's row. "sparseocc": the rows with |x| < 39 and |y| < 39 (no test on z), thinned to the 8 at
    round(linspace(0, n - 1, 8)) when more remain; "key-frame": row `key` alone. -> [<= 8, 3].
    """
    if rule == "key-frame":
        return origins[key : key + 1]
    if rule != "sparseocc":
        raise ValueError(f"unknown ray origin rule {rule!r}; valid: {', '.join(RAY_ORIGINS)}")
    kept = origins[(np.abs(origins[:, 0]) < ORIGIN_RANGE) & (np.abs(origins[:, 1]) < ORIGIN_RANGE)]
    if len(kept) > MAX_ORIGINS:
        kept = kept[np.round(np.linspace(0, len(kept) - 1, MAX_ORIGINS)).astype(np.int64)]
    return kept


def first_hits(
    labels: torch.Tensor,
    grid: VoxelGrid,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    frame: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class and exit depth of the first non-free voxel along each ray, by exact voxel traversal.

    labels [X, Y, Z] or [V, X, Y, Z] (0..17, 17 = free) on `grid`: V volumes (ground truth and prediction)
    walked along the same rays at once; or [F, V, X, Y, Z] for F frames, with frame long [R] naming the
    frame of each ray (frames walked together share the steps' fixed costs, which dominate on a GPU).
    rays_o, rays_d [R, 3] (unit directions) in the grid's frame, metres.
    Returns class long [R] (or [V, R]): the label of the first non-free voxel the ray passes through, FREE
    when there is none; and depth float64 [R] (or [V, R]): the distance from the origin to where the ray
    leaves that voxel. A miss has the depth at which the ray leaves the box (0 if it never enters): it never
    scores, as a free first hit matches no class.

    A 3D DDA (Amanatides & Woo) in float64, all rays stepped together: every voxel a ray passes through
    counts, however short the stretch. The origin's own voxel comes first (a point on a face belongs to the
    voxel above it, as in `VoxelGrid.points_to_index`); an origin outside the box starts where the ray enters
    it. Where a ray runs exactly through an edge or corner it steps z before y before x, passing through the
    voxel between for zero length, as SparseOcc's CUDA kernel does. On a CPU it runs on one thread: a step
    is some twenty small kernels, and OpenMP's wait at the end of each costs more than a second thread
    gains (on this project's busy 2-core machine, two threads took 14 times longer).
    """
    if labels.device.type != "cpu":
        return _walk(labels, grid, rays_o, rays_d, frame)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _walk(labels, grid, rays_o, rays_d, frame)
    finally:
        torch.set_num_threads(threads)


def _walk(
    labels: torch.Tensor,
    grid: VoxelGrid,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    frame: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`first_hits` on the labels' device, with the current thread settings."""
    dims = (5,) if frame is not None else (3, 4)
    if tuple(labels.shape[-3:]) != grid.shape or labels.dim() not in dims:
        expected = f"[F, V, {grid.shape}] with frame" if frame is not None else f"[V,] {grid.shape}"
        raise ValueError(f"first_hits: labels of shape {tuple(labels.shape)}, expected {expected}")
    device = labels.device
    size = math.prod(grid.shape)
    # [V, F * N]: frame f's voxels from f * N on
    volumes = labels.reshape(-1, size) if frame is None else labels.flatten(2).transpose(0, 1).flatten(1)
    num_rays = rays_o.shape[0]
    n = torch.tensor(grid.shape, device=device)
    # voxel units: the box is [0, n) and voxel faces lie on whole numbers
    q = (rays_o.to(device, torch.float64) - grid.lower_tensor(device, torch.float64)) / grid.voxel_size
    d = rays_d.to(device, torch.float64)
    parallel = d == 0  # such an axis bounds the ray only by whether the origin lies in its slab
    inf = torch.tensor(math.inf, dtype=torch.float64, device=device)
    in_slab = (q >= 0) & (q < n)
    t_lo, t_hi = -q / d, (n - q) / d
    t_near = torch.where(parallel, torch.where(in_slab, -inf, inf), torch.minimum(t_lo, t_hi)).amax(-1)
    t_far = torch.where(parallel, torch.where(in_slab, inf, -inf), torch.maximum(t_lo, t_hi)).amin(-1)
    t_near = t_near.clamp_min(0)
    enters = (in_slab.all(-1) | (t_near < t_far)) & ~parallel.all(-1)

    num_volumes = volumes.shape[0]
    classes = torch.full((num_volumes * num_rays,), FREE, dtype=torch.long, device=device)
    depths = torch.where(enters, t_far * grid.voxel_size, 0.0).repeat(num_volumes)
    rows = torch.nonzero(enters).squeeze(1)
    q, d, parallel, t_near = (x.index_select(0, rows) for x in (q, d, parallel, t_near))
    base = 0 if frame is None else frame.to(device).index_select(0, rows) * size
    voxel = torch.minimum(torch.floor(q + t_near[:, None] * d).long().clamp_min(0), n - 1)
    step = torch.where(d >= 0, 1, -1)
    # t (voxel units) at which the ray crosses the next face on each axis, and between faces
    t_max = torch.where(parallel, inf, (voxel + (step > 0) - q) / d)
    t_delta = torch.where(parallel, inf, 1 / d.abs())
    strides = torch.tensor([grid.shape[1] * grid.shape[2], grid.shape[2], 1], device=device)
    flat = (voxel * strides).sum(-1) + base
    step_flat = step * strides  # the flat index moves by this when the ray steps along an axis
    found = torch.zeros(num_volumes, len(rows), dtype=torch.bool, device=device)
    alive = torch.ones(len(rows), dtype=torch.bool, device=device)
    # Gathers below are index_select / gather rather than advanced indexing, which is many times slower
    # on a busy CPU. Finished rays are dropped every COMPACT_EVERY steps and masked until then. Each step
    # moves one voxel on one axis, always the same way: a ray leaves within sum(n) steps.
    for i in range(sum(grid.shape) + 1):
        if len(rows) == 0:
            break
        label = volumes.index_select(1, torch.where(alive, flat, 0))  # [V, A]
        new = (label != FREE) & ~found & alive
        t_x, t_y, t_z = t_max.unbind(-1)  # the first face crossed; ties go to z, then y, then x
        axis = torch.where((t_z <= t_y) & (t_z <= t_x), 2, torch.where(t_y <= t_x, 1, 0))[:, None]
        t_exit = t_max.gather(-1, axis)[:, 0]  # where the ray leaves the current voxel
        if new.any():
            hit = torch.nonzero(new.view(-1)).squeeze(1)  # volume * A + ray
            ray = hit % len(rows)
            out = torch.div(hit, len(rows), rounding_mode="floor") * num_rays + rows.index_select(0, ray)
            classes.index_copy_(0, out, label.view(-1).index_select(0, hit).long())
            depths.index_copy_(0, out, t_exit.index_select(0, ray) * grid.voxel_size)
            found |= new
        voxel = voxel.scatter_add(-1, axis, step.gather(-1, axis))
        t_max = t_max.scatter_add(-1, axis, t_delta.gather(-1, axis))
        flat = flat + step_flat.gather(-1, axis)[:, 0]
        moved = voxel.gather(-1, axis)[:, 0]
        alive &= (moved >= 0) & (moved < n.index_select(0, axis[:, 0])) & ~found.all(0)
        if i % COMPACT_EVERY == COMPACT_EVERY - 1:
            keep = torch.nonzero(alive).squeeze(1)
            rows, voxel, flat, t_max, t_delta, step, step_flat, alive = (
                x.index_select(0, keep) for x in (rows, voxel, flat, t_max, t_delta, step, step_flat, alive)
            )
            found = found.index_select(1, keep)
    classes, depths = classes.view(num_volumes, num_rays), depths.view(num_volumes, num_rays)
    if labels.dim() == 3:
        return classes[0], depths[0]
    return classes, depths


class RayIoUMeter:
    """Accumulates per-class ray counts over frames; `all_reduce` sums them across processes.

    Frames are walked `frames_per_walk` at a time (default 32 on a GPU, where a walk's cost is mostly its
    steps' kernel launches, and 1 on a CPU); `all_reduce` and `compute` walk the ones still pending.
    """

    def __init__(
        self,
        grid: VoxelGrid,
        thresholds: tuple[float, ...] = THRESHOLDS,
        device: torch.device | str = "cpu",
        azimuth_step_deg: float = 1.0,
        frames_per_walk: int | None = None,
    ) -> None:
        self.grid = grid
        self.frames_per_walk = frames_per_walk or (32 if torch.device(device).type == "cuda" else 1)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (labels [2, X, Y, Z], origins [T, 3])
        self.thresholds = torch.tensor(thresholds, dtype=torch.float64, device=device)
        self.directions = lidar_ray_directions(azimuth_step_deg).to(device)
        self.gt_count = torch.zeros(NUM_CLASSES, dtype=torch.int64, device=device)
        self.pred_count = torch.zeros(NUM_CLASSES, dtype=torch.int64, device=device)
        self.tp = torch.zeros(len(thresholds), NUM_CLASSES, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor, origins: torch.Tensor) -> None:
        """One frame: pred, gt [X, Y, Z] labels 0..17 on the grid; origins [T, 3] in the same frame."""
        device = self.gt_count.device
        labels = torch.stack([gt.to(device, torch.uint8), pred.to(device, torch.uint8)])
        self.pending.append((labels, torch.as_tensor(origins).to(device, torch.float32)))
        if len(self.pending) >= self.frames_per_walk:
            self.walk_pending()

    def walk_pending(self) -> None:
        """Cast the pending frames' rays through their ground truth and prediction, and count the hits."""
        if not self.pending:
            return
        device, rays = self.gt_count.device, len(self.directions)
        labels = torch.stack([frame_labels for frame_labels, _ in self.pending])  # [F, 2, X, Y, Z]
        origins = torch.cat([origins for _, origins in self.pending])  # [T, 3] over all frames
        per_frame = torch.tensor([len(o) for _, o in self.pending], device=device)
        self.pending = []
        rays_o = origins.repeat_interleave(rays, 0)  # [T * R, 3]
        rays_d = self.directions.repeat(len(origins), 1)
        frame = torch.arange(len(per_frame), device=device).repeat_interleave(per_frame * rays)
        classes, depths = first_hits(labels, self.grid, rays_o, rays_d, frame)
        valid = classes[0] != FREE  # only rays that hit something in the ground truth are scored
        (gt_class, pred_class), (gt_depth, pred_depth) = classes[:, valid], depths[:, valid]
        self.gt_count += torch.bincount(gt_class, minlength=NUM_CLASSES)
        self.pred_count += torch.bincount(pred_class, minlength=NUM_CLASSES)
        close = (pred_depth - gt_depth).abs()[None] < self.thresholds[:, None]  # [K, R']
        tp = close & (pred_class == gt_class)[None]
        offset = torch.arange(len(self.thresholds), device=device)[:, None] * NUM_CLASSES
        counts = torch.bincount((offset + gt_class[None])[tp], minlength=len(self.thresholds) * NUM_CLASSES)
        self.tp += counts.view(len(self.thresholds), NUM_CLASSES)

    def all_reduce(self) -> None:
        self.walk_pending()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for counts in (self.gt_count, self.pred_count, self.tp):
                torch.distributed.all_reduce(counts)

    def compute(self) -> dict:
        """{"rayiou": percent, "rayiou@1": ..., "per_class_rayiou": {name: percent, mean over thresholds}}."""
        self.walk_pending()
        tp, gt, pred = self.tp.double().cpu(), self.gt_count.double().cpu(), self.pred_count.double().cpu()
        union = gt[None] + pred[None] - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))[:, :FREE]
        per_threshold = iou.nanmean(1) * 100  # [K]
        result = {"rayiou": float(per_threshold.mean())}
        for thr, value in zip(self.thresholds.tolist(), per_threshold.tolist()):
            result[f"rayiou@{thr:g}"] = value
        per_class = iou.nanmean(0) * 100
        result["per_class_rayiou"] = {n: float(v) for n, v in zip(OCC3D_CLASSES[:FREE], per_class)}
        return result
