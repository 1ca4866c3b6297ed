"""Losses on rendered rays: SILog depth, class-weighted semantic cross-entropy, and the regularisers.

The read-out terms (free space, line of sight, the LiDAR point's voxel) compare densities with a threshold:
it is a density on the scale of the model's `render.convention`, the read-out's own (the reference's 8.5
is 9.42 under the metric convention: `render.conventions.convert_density`). They place voxel i where the
read-out and Occ3D do (lower + (i + 0.5) voxel_size) under either convention: they shape what is read out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from renderocc.config import LossConfig
from renderocc.core.classes import GROUND_CLASSES
from renderocc.core.grid import VoxelGrid
from renderocc.data.batch import RAY_KEYS, Batch
from renderocc.render.conventions import (
    METRIC,
    REFERENCE,
    REFERENCE_DEPTH_EPS,
    REFERENCE_MAX_DEPTH,
    check_convention,
)
from renderocc.render.output import RenderOutput
from renderocc.render.sampling import ray_box_intersection


def class_weights_from_counts(counts: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Class weights 1 / log(count) from per-class pixel counts (raw counts, not fractions).

    counts [C] -> float32 [C]. Rare classes get larger weights, but only logarithmically. Counts below e
    (absent classes) are clamped to e, i.e. weight 1, so the weights stay finite and positive.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(
            f"class_weights_from_counts: counts must be a 1-D per-class vector, got {list(counts.shape)}"
        )
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("class_weights_from_counts: counts must be finite and non-negative pixel counts")
    return (1.0 / torch.log(counts.clamp_min(math.e))).float()


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    variance_focus: float = 0.85,
    eps: float = 1e-3,
    per_sample: bool = False,
) -> torch.Tensor:
    """Scale-invariant log depth loss sqrt(mean(d^2) - lambda mean(d)^2), d = log(pred + eps) - log(target).

    pred, target [...] metric depths, mask [...] bool (None: all) selects the labelled ones; 0 if none.
    eps keeps the gradient finite for rays that have not become opaque yet (rendered depth near 0); it is
    1 mm, negligible against real depths. per_sample: the loss of each row [B, R] -> [B], then their mean
    (the reference renders and scores one sample at a time); else over all labelled values at once.
    Masking instead of indexing keeps the GPU free of host syncs.
    """
    if mask is None:
        mask = torch.ones_like(pred, dtype=torch.bool)
    d = torch.where(mask, torch.log(pred + eps) - torch.log(target.clamp_min(eps)), torch.zeros_like(pred))
    dims = -1 if per_sample else tuple(range(d.dim()))
    count = mask.sum(dims)
    mean = d.sum(dims) / count.clamp_min(1)
    mean_sq = d.square().sum(dims) / count.clamp_min(1)
    loss = torch.sqrt((mean_sq - variance_focus * mean.square()).clamp_min(1e-12)) * (count > 0)
    return loss.mean() if per_sample else loss


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Mean of values [...] over mask [...] (0 if empty), without boolean indexing; per_sample: the mean
    of each row [B, R], then the mean over rows."""
    values = torch.where(mask, values, torch.zeros_like(values))
    if per_sample:
        return (values.sum(-1) / mask.sum(-1).clamp_min(1)).mean()
    return values.sum() / mask.sum().clamp_min(1)


def transmittance_entropy(opacity: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Binary entropy of the transmittance left after the last sample, T = 1 - opacity; [N] -> [N].

    Pushes every ray to end either fully opaque or fully transparent.
    """
    t = (1.0 - opacity).clamp(eps, 1.0 - eps)
    return -(t * torch.log(t) + (1.0 - t) * torch.log1p(-t))


def free_space_prior(density: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean over all voxels of softplus(density - threshold), density [B, X, Y, Z].

    2D labels only constrain voxels that labelled rays cross; the rest (above the scene, where the sky has no
    LiDAR label) would keep whatever density the network extrapolates, and read out as occupied above the
    threshold. This prior pulls every voxel below the read-out threshold (free) unless rays hold it up.
    """
    return F.softplus(density.float() - threshold).mean()


def free_points(
    batch: Batch, grid: VoxelGrid, samples_per_ray: int, random: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points that each labelled ray crosses in free space: (points [B, R, K, 3], usable [B, R]).

    The stretch runs from where the ray enters the grid box to its LiDAR point less a clearance, and no
    further than the box (see `line_of_sight_free_space` for the batch keys). Clearance: a voxel's height from
    a ground point (GROUND_CLASSES), since a grazing ray runs through the upper half of the ground's own
    occupied voxels for metres before it hits; two voxels along the ray before any other point. The K =
    samples_per_ray points are one per equal part of the stretch: uniform in it if `random` (stratified),
    else its middle. usable: labelled rays with a stretch left.
    """
    rays_o, rays_d, ray_depth = batch["rays_o"], batch["rays_d"], batch["ray_depth"]
    b, r, _ = rays_o.shape
    k = samples_per_ray
    ground = _ground(batch["ray_class"])
    t_near, t_far = ray_box_intersection(rays_o, rays_d, grid)
    rise = grid.voxel_size / rays_d[..., 2].abs().clamp_min(1e-6)  # ray length that climbs one voxel
    clearance = torch.where(ground, rise, torch.full_like(rise, 2 * grid.voxel_size))
    t_end = torch.minimum(ray_depth - clearance, t_far)
    usable = batch["ray_valid"].bool() & (ray_depth > 0) & (t_end > t_near)
    if random:
        offset = torch.rand(b, r, k, device=rays_o.device, dtype=rays_o.dtype)
    else:
        offset = torch.full((b, r, k), 0.5, device=rays_o.device, dtype=rays_o.dtype)
    u = (torch.arange(k, device=rays_o.device) + offset) / k
    t = t_near.unsqueeze(-1) + u * (t_end - t_near).clamp_min(0).unsqueeze(-1)
    return rays_o.unsqueeze(-2) + t.unsqueeze(-1) * rays_d.unsqueeze(-2), usable


def line_of_sight_free_space(
    density: torch.Tensor,
    batch: Batch,
    grid: VoxelGrid,
    threshold: float,
    samples_per_ray: int = 8,
    per_voxel: bool = False,
) -> torch.Tensor:
    """Mean softplus(density - threshold) at random points that labelled rays cross before their LiDAR point,
    clear of the surface it lies on; 0 if there are none.

    density [B, X, Y, Z]; batch needs rays_o and unit rays_d [B, R, 3] in the grid frame, ray_depth [B, R]
    (metres along the ray, > 0 where labelled), ray_class and ray_valid [B, R]. A pixel's depth label says
    its ray crosses free space up to the point, but the expected-depth loss barely notices a nearly
    transparent voxel (density 10 stops 1 % of a ray per metre under the metric convention) that the
    read-out counts as occupied.
    The points are `free_points`, stratified, and the density between voxel centres trilinear.

    per_voxel: the mean is over the voxels that hold the points instead, each voxel's own density once,
    however many rays cross it, less those where a labelled ray ends (`voxel_votes`: the surface term's).
    Per point, the voxels near the cameras that most rays cross take most of the pull, and those few rays
    reach (high up, far out) hardly any, though the read-out scores every voxel alike.
    """
    b, r, _ = batch["rays_o"].shape
    k = samples_per_ray
    points, usable = free_points(batch, grid, k, random=True)
    if per_voxel:
        dtype = torch.promote_types(density.dtype, torch.float32)
        crossed = (voxel_votes(points, usable, batch, grid) == FREE_VOTE).to(dtype)
        penalty = F.softplus(density.reshape(b, -1).to(dtype) - threshold)
        return (penalty * crossed).sum() / crossed.sum().clamp_min(1)
    # grid_sample with align_corners=False and border padding is the renderer's voxel-centre convention
    coords = grid.normalize(points.to(density.dtype)).flip(-1).reshape(b, 1, r, k, 3)
    values = F.grid_sample(density.unsqueeze(1), coords, align_corners=False, padding_mode="border")
    values = values.view(b, r, k).to(torch.promote_types(density.dtype, torch.float32))
    penalty = F.softplus(values - threshold).mean(-1)
    return _masked_mean(penalty, usable)


FREE_VOTE, OCCUPIED_VOTE = 1, 2  # what the labelled rays say of a voxel (`voxel_votes`); 0: nothing


def voxel_votes(points: torch.Tensor, usable: torch.Tensor, batch: Batch, grid: VoxelGrid) -> torch.Tensor:
    """uint8 [B, X * Y * Z] (flattened like the grid): OCCUPIED_VOTE at voxels that hold a labelled ray's
    LiDAR point, FREE_VOTE at the voxels of the free points [B, R, K, 3] of the usable rays [B, R] (from
    `free_points`), 0 where no ray says anything.

    A voxel that one ray crosses and another ends in counts as occupied, as a LiDAR point does in Occ3D (a
    pole, an edge seen from two frames). Static shapes, no host sync: fit for CUDA graphs.
    """
    b = usable.shape[0]
    n = math.prod(grid.shape)
    votes = torch.zeros(b, n + 1, dtype=torch.uint8, device=points.device)  # slot n: what is not taken
    inside = grid.contains(points) & usable.unsqueeze(-1)
    votes.scatter_(1, _flat_index(points, grid, inside).view(b, -1), FREE_VOTE)
    hit = ends_inside_grid(batch, grid)
    votes.scatter_(1, _flat_index(labelled_points(batch), grid, hit), OCCUPIED_VOTE)
    return votes[:, :n]


def _flat_index(points: torch.Tensor, grid: VoxelGrid, keep: torch.Tensor) -> torch.Tensor:
    """Flat voxel index of points [..., 3] inside the grid; the spare slot X * Y * Z where not `keep`."""
    flat = grid.flat_index(grid.points_to_index(points))
    return torch.where(keep, flat, torch.full_like(flat, math.prod(grid.shape)))


def labelled_points(batch: Batch) -> torch.Tensor:
    """The LiDAR point of each ray, rays_o + ray_depth * rays_d: [B, R, 3] (meaningless where unlabelled)."""
    return batch["rays_o"] + batch["ray_depth"].unsqueeze(-1) * batch["rays_d"]


def ends_outside_grid(batch: Batch, grid: VoxelGrid) -> torch.Tensor:
    """bool [B, R]: rays with a depth label whose LiDAR point lies outside the grid box.

    Such a ray (to a roof above 5.4 m, a facade beyond 40 m) leaves the box before its depth: a depth or
    class loss on it would pile density onto the box's border, where the ray exits.
    """
    return (batch["ray_depth"] > 0) & ~grid.contains(labelled_points(batch))


def ends_inside_grid(batch: Batch, grid: VoxelGrid) -> torch.Tensor:
    """bool [B, R]: valid rays with a depth label whose LiDAR point lies inside the grid box."""
    return batch["ray_valid"].bool() & (batch["ray_depth"] > 0) & ~ends_outside_grid(batch, grid)


def first_rays(batch: Batch, n: int | None) -> Batch:
    """The batch with its rays (RAY_KEYS, [B, R, ...]) cut to the first n of each sample; None: all. The
    loader's rays come in the order drawn, so the first n are a weighted sample of n themselves."""
    check_rendered_rays(n)
    if n is None:
        return batch
    return batch | {key: batch[key][:, :n] for key in RAY_KEYS if key in batch}


def check_rendered_rays(n: int | None) -> None:
    """Refuse a RenderConfig.rendered_rays that renders nothing."""
    if n is not None and n <= 0:
        raise ValueError(f"render.rendered_rays={n}: use a positive number of rays, or null for all")


def rendered_rays(batch: Batch, grid: VoxelGrid, cfg: LossConfig, convention: str = METRIC) -> Batch:
    """The batch with ray_valid narrowed to the rays that the rendering losses score (and that need
    rendering at all): without cfg.render_outside_points, not those whose LiDAR point lies outside the grid
    box (`ends_outside_grid`); under the "reference" convention only rays with a depth label of at most
    52 m, as the reference drops the others before rendering."""
    check_convention(convention)
    valid = batch["ray_valid"].bool()
    if not cfg.render_outside_points:
        valid = valid & ~ends_outside_grid(batch, grid)
    if convention == REFERENCE:
        valid = valid & (batch["ray_depth"] > 0) & (batch["ray_depth"] <= REFERENCE_MAX_DEPTH)
    return batch | {"ray_valid": valid}


def _ground(ray_class: torch.Tensor) -> torch.Tensor:
    """bool [...]: rays whose class is one of GROUND_CLASSES."""
    return functools.reduce(torch.logical_or, (ray_class == c for c in GROUND_CLASSES))


def surface_losses(
    density: torch.Tensor,
    semantics: torch.Tensor,
    batch: Batch,
    grid: VoxelGrid,
    threshold: float,
    class_weights: torch.Tensor | None = None,
    ground_footprint: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(occupancy, semantic) at the voxel that holds each labelled ray's LiDAR point; 0 if there are none.

    density [B, X, Y, Z], semantics [B, X, Y, Z, C] logits; batch as for `line_of_sight_free_space`.
    occupancy: mean softplus(threshold - density), pushing the voxel above the read-out threshold;
    semantic: cross-entropy of its logits with the pixel's class, the class-weighted mean (class_weights
    [C], None = uniform). Rendering alone cannot say which voxel should read out occupied: a ray's depth is
    matched as well by a faint haze as by one opaque voxel. The point's voxel is what the 2D label names.

    ground_footprint r > 0: a ground-class point (GROUND_CLASSES) names the (2r + 1)^2 voxels around its own
    at its height, each with 1 / (their number inside the grid) of the ray's weight. The ground is flat and
    one class over metres, while LiDAR rings lie metres apart beyond 20 m: on the demo data, with r = 0 a
    7-frame sample puts a point in 13% of the terrain voxels the cameras see, with r = 1 in 32% (96% right).
    """
    if ground_footprint < 0:
        raise ValueError(f"surface_losses: ground_footprint={ground_footprint}; use 0 (off) or more voxels")
    b = batch["ray_valid"].shape[0]
    num_classes = semantics.shape[-1]
    usable = ends_inside_grid(batch, grid)
    index = grid.points_to_index(labelled_points(batch))  # [B, R, 3]
    steps = torch.arange(-ground_footprint, ground_footprint + 1, device=index.device)
    dx, dy = torch.meshgrid(steps, steps, indexing="ij")
    shift = torch.stack([dx.flatten(), dy.flatten(), torch.zeros_like(dx.flatten())], -1)  # [F, 3]
    index = index.unsqueeze(-2) + shift  # [B, R, F, 3]
    centre = (shift == 0).all(-1)  # [F]
    nx, ny, _ = grid.shape
    in_grid = (index[..., 0] >= 0) & (index[..., 0] < nx) & (index[..., 1] >= 0) & (index[..., 1] < ny)
    ground = _ground(batch["ray_class"])
    take = usable.unsqueeze(-1) & in_grid & (centre | ground.unsqueeze(-1))  # [B, R, F]
    share = take / take.sum(-1, keepdim=True).clamp_min(1)  # each ray's weight spread over its voxels
    flat = (grid.flat_index(index) * take).flatten(1)  # 0 where not taken
    dtype = torch.promote_types(density.dtype, torch.float32)  # bf16 under autocast: the losses in float32
    values = density.reshape(b, -1).gather(1, flat).to(dtype).view_as(share)
    occupancy = (F.softplus(threshold - values) * share).sum() / usable.sum().clamp_min(1)

    logits = semantics.reshape(b, -1, num_classes).gather(1, flat.unsqueeze(-1).expand(-1, -1, num_classes))
    labels = torch.where(usable, batch["ray_class"].long(), torch.zeros_like(usable, dtype=torch.long))
    weight = torch.ones(num_classes, device=semantics.device) if class_weights is None else class_weights
    weight = weight.to(semantics.device, dtype)[labels] * usable  # [B, R]
    ce = F.cross_entropy(
        logits.to(dtype).flatten(0, 1), labels.unsqueeze(-1).expand_as(share).flatten(), reduction="none"
    ).view_as(share)
    semantic = (ce * share).sum(-1).mul(weight).sum() / weight.sum().clamp_min(1e-12)
    return occupancy, semantic


def rendering_losses(
    out: RenderOutput,
    batch: Batch,
    cfg: LossConfig,
    class_weights: torch.Tensor | None = None,
    convention: str = METRIC,
) -> dict[str, torch.Tensor]:
    """Weighted rendering losses over the valid rays of a batch.

    out: `volume_render` of batch["rays_o"], batch["rays_d"]; batch needs ray_depth [B, R], ray_class
    [B, R] (0..C-1) and ray_valid [B, R]; class_weights [C] (see `class_weights_from_counts`, None =
    uniform). Returns scalars already multiplied by their cfg weight, keyed "depth", "semantic",
    "entropy", "distortion"; a term whose weight is 0 is left out. Rays with ray_depth <= 0 carry no
    depth label and only enter the other terms. The semantic term is the class-weighted mean, as
    F.cross_entropy with weights. "metric" convention: each term over all the batch's valid rays at once.
    "reference": each term per batch element, then their mean, as the reference loops over the samples of
    a batch (pass `rendered_rays` for its 52 m cut); the depth loss takes the rendered depth + 1e-7, as
    the reference's. Nothing here waits for the GPU.
    """
    check_convention(convention)
    per_sample = convention == REFERENCE
    valid = batch["ray_valid"].bool()
    if valid.shape != out.depth.shape:
        raise ValueError(
            f"rendering_losses: batch['ray_valid'] {list(valid.shape)} does not match the rendered "
            f"rays {list(out.depth.shape)}"
        )
    ray_depth = batch["ray_depth"].to(out.depth.dtype)
    ray_class = batch["ray_class"].long()
    losses: dict[str, torch.Tensor] = {}
    if cfg.depth:
        has_depth = valid & (ray_depth > 0)
        eps = REFERENCE_DEPTH_EPS if per_sample else 1e-3
        losses["depth"] = cfg.depth * silog_loss(
            out.depth, ray_depth, has_depth, cfg.silog_variance_focus, eps, per_sample
        )
    if cfg.semantic:
        num_classes = out.semantics.shape[-1]
        labels = torch.where(valid, ray_class, torch.full_like(ray_class, -100))
        if not labels.is_cuda and ((labels >= num_classes) | (valid & (labels < 0))).any():
            raise ValueError(
                f"rendering_losses: batch['ray_class'] must lie in 0..{num_classes - 1} on valid rays"
            )
        weight = class_weights
        if weight is None:
            weight = torch.ones(num_classes, device=out.semantics.device)
        weight = weight.to(out.semantics.device, out.semantics.dtype)
        ce = F.cross_entropy(out.semantics.flatten(0, 1), labels.flatten(), weight=weight, reduction="none")
        ce = ce.view_as(out.depth)
        norm = torch.where(valid, weight[labels.clamp_min(0)], torch.zeros_like(out.depth))
        if per_sample:
            losses["semantic"] = cfg.semantic * (ce.sum(-1) / norm.sum(-1).clamp_min(1e-12)).mean()
        else:
            losses["semantic"] = cfg.semantic * ce.sum() / norm.sum().clamp_min(1e-12)
    if cfg.entropy:
        losses["entropy"] = cfg.entropy * _masked_mean(transmittance_entropy(out.opacity), valid, per_sample)
    if cfg.distortion:
        losses["distortion"] = cfg.distortion * _masked_mean(out.distortion, valid, per_sample)
    return losses
