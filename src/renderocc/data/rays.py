"""Training rays from 2D labels: weighted sampling of labelled pixels and their rays in the key ego frame."""

from __future__ import annotations

import torch

from renderocc.config import DataConfig
from renderocc.core.classes import DYNAMIC_CLASSES, NUM_SEMANTIC


def cell_counts(points: torch.Tensor, cell: float) -> torch.Tensor:
    """For each of the points [P, 3], how many share its axis-aligned cube of edge `cell`: int64 [P]."""
    index = torch.floor(points / cell).long()
    index -= index.amin(0)
    extent = index.amax(0) + 1
    key = (index[:, 0] * extent[1] + index[:, 1]) * extent[2] + index[:, 2]
    if int(extent.prod()) < 2**31:
        key = key.int()  # sorting 32-bit keys takes half the time of 64-bit ones
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return counts.index_select(0, inverse)


def ray_weights(
    cls: torch.Tensor, is_key: torch.Tensor, points: torch.Tensor, cfg: DataConfig
) -> torch.Tensor:
    """Sampling weight of every candidate ray, float32 [P], from its class int64 [P], frame bool [P] and
    LiDAR point [P, 3] (key ego frame).

    weight = s x f x b_c. s (space): 1 / (candidates whose point shares its `ray_balance_cell` cube), or 1
    when that is None. f (frame): 1.0 for key-frame rays, `neighbour_ray_weight` for neighbour rays, and 0 for
    neighbour rays of dynamic classes, which moved since the neighbour frame was taken. b_c (class balance):
    exp(t (n_max / n_c - 1)) (n_max / n_c)^p with t = `class_balance_temperature`, p = `class_balance_power`
    and n_c the sum of s over this sample's candidates of class c with f > 0 (their count when s = 1).
    """
    dynamic = torch.zeros(NUM_SEMANTIC, dtype=torch.bool)
    dynamic[list(DYNAMIC_CLASSES)] = True
    frame_w = torch.where(is_key, 1.0, cfg.neighbour_ray_weight)
    frame_w = torch.where(~is_key & dynamic.index_select(0, cls), 0.0, frame_w).double()
    space = torch.ones_like(frame_w)
    if cfg.ray_balance_cell is not None and len(points):
        space = 1.0 / cell_counts(points, cfg.ray_balance_cell)
    drawn = frame_w > 0
    mass = torch.bincount(cls, weights=torch.where(drawn, space, 0.0), minlength=NUM_SEMANTIC)
    # classes with no drawable candidate get 1 (their rays weigh 0 anyway) instead of an infinite ratio
    ratio = torch.where(mass > 0, mass.max() / mass, torch.ones_like(mass))
    balance = torch.exp(cfg.class_balance_temperature * (ratio - 1)) * ratio**cfg.class_balance_power
    return (balance.index_select(0, cls) * space * frame_w).float()


def weighted_sample(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of at most k draws without replacement, probability proportional to weights [P] (zero
    weights never drawn), in the order drawn: any first n of them are themselves such a sample of n, which
    lets training render fewer rays than it labels (RenderConfig.rendered_rays). Efraimidis-Spirakis: the
    k smallest of Exp(1) / w, smallest first, one vectorised top-k."""
    positive = weights > 0
    # -log(U) ~ Exp(1); torch.rand is vectorised where exponential_ with a generator samples one by one.
    keys = -torch.rand(weights.shape, generator=generator).log_() / weights
    keys = torch.where(positive, keys, torch.inf)
    return torch.topk(keys, min(k, int(positive.sum())), largest=False, sorted=True).indices


def grouped_matvec(matrices: torch.Tensor, group: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """matrices[group[p]] @ vectors[p] for every p: matrices [G, 3, 3], group [P], vectors [P, 3] -> [P, 3].

    Labels come in runs of one camera (sorted by frame, then camera): one small product per run, several
    times faster than gathering a 3x3 matrix for every one of the ~100k labels of a sample. Groups in any
    order are still right (a run per change of group).
    """
    runs, lengths = torch.unique_consecutive(group, return_counts=True)
    if len(runs) > 4 * len(matrices):  # scattered groups: the gather is the cheaper way
        return torch.einsum("pij,pj->pi", matrices[group], vectors)
    parts = vectors.split(lengths.tolist())
    return torch.cat([part @ matrices[g].T for part, g in zip(parts, runs.tolist())]) if parts else vectors


def camera_directions(uv: torch.Tensor, group: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """K^-1 [u, v, 1]: camera-frame directions with z = 1 (so |dir| turns z-depth into ray distance).

    uv [P, 2] pixel coordinates, group [P] camera of each pixel, intrinsics [G, 3, 3] -> [P, 3].
    """
    uv1 = torch.cat([uv, torch.ones_like(uv[:, :1])], -1)
    return grouped_matvec(torch.linalg.inv(intrinsics), group, uv1)


def labels_to_rays(
    dirs: torch.Tensor, z_depth: torch.Tensor, group: torch.Tensor, cam2keyego: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays of labelled pixels in the key ego frame.

    dirs [P, 3] from camera_directions, z_depth [P], group [P], cam2keyego [G, 4, 4] -> rays_o [P, 3],
    unit rays_d [P, 3] and ray_depth [P], the metric distance along the ray to the LiDAR point.
    """
    norm = dirs.norm(dim=-1)
    rays_d = grouped_matvec(cam2keyego[:, :3, :3], group, dirs / norm[:, None])
    # contiguous first: index_select from a strided [G, 3] view is 10x slower
    return cam2keyego[:, :3, 3].contiguous().index_select(0, group), rays_d, z_depth * norm
