"""A deliberately plain float64 evaluation of the rendering formulas, one ray and one sample at a time.

Independent of the package's sampling code: its own slab test, grid_sample for the interpolation.
Small inputs only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from renderocc.core.grid import VoxelGrid


def _interpolate(volume: torch.Tensor, point: torch.Tensor, grid: VoxelGrid) -> torch.Tensor:
    """volume [X, Y, Z, K] at one metric point -> [K], voxel-centre values, border clamped."""
    coords = grid.normalize(point).view(1, 1, 1, 1, 3)
    return F.grid_sample(
        volume.permute(3, 2, 1, 0)[None], coords, align_corners=False, padding_mode="border"
    )[0, :, 0, 0, 0]


def naive_render(density, semantics, rays_o, rays_d, grid, step, shift, skip_threshold):
    """float64 depth, semantics, opacity, distortion for density [B, X, Y, Z], semantics [B, X, Y, Z, C]."""
    density, semantics, rays_o, rays_d = (x.double() for x in (density, semantics, rays_o, rays_d))
    b, r, _ = rays_o.shape
    c = semantics.shape[-1]
    out = {k: torch.zeros(b, r, dtype=torch.float64) for k in ("depth", "opacity", "distortion")}
    out["semantics"] = torch.zeros(b, r, c, dtype=torch.float64)
    for bi in range(b):
        volume = torch.cat([density[bi, ..., None], semantics[bi]], -1)
        for ri in range(r):
            o, d = rays_o[bi, ri].tolist(), rays_d[bi, ri].tolist()
            t0, t1 = 0.0, math.inf
            for axis in range(3):
                if d[axis] == 0:
                    if not grid.lower[axis] <= o[axis] <= grid.upper[axis]:
                        t1 = -math.inf
                    continue
                a = (grid.lower[axis] - o[axis]) / d[axis]
                z = (grid.upper[axis] - o[axis]) / d[axis]
                t0, t1 = max(t0, min(a, z)), min(t1, max(a, z))
            trans, ts, ws = 1.0, [], []
            k = 0
            while t0 + (k + 0.5) * step < t1:
                t = t0 + (k + 0.5) * step
                k += 1
                values = _interpolate(volume, rays_o[bi, ri] + t * rays_d[bi, ri], grid)
                sigma = math.log1p(math.exp(values[0].item() + shift))
                alpha = -math.expm1(-sigma * step)
                if alpha < skip_threshold or alpha == 0:
                    continue
                w = trans * alpha
                trans *= 1 - alpha
                if w < skip_threshold:
                    continue
                ts.append(t)
                ws.append(w)
                out["semantics"][bi, ri] += w * values[1:]
            out["depth"][bi, ri] = sum(w * t for w, t in zip(ws, ts))
            out["opacity"][bi, ri] = sum(ws)
            pairs = sum(wi * wj * abs(ti - tj) for wi, ti in zip(ws, ts) for wj, tj in zip(ws, ts))
            out["distortion"][bi, ri] = pairs + step / 3 * sum(w * w for w in ws)
    return out


def naive_render_reference(
    density, semantics, rays_o, rays_d, grid, step, shift, skip_threshold, ray_mask=None
):
    """float64 renders under the published release's conventions, written from their description (spec,
    "Exact conventions of the reference release") and not from the package's code: its candidate distances,
    the pull into the background shell, the crowding test, grid_sample(align_corners=True, zeros) over its
    normalised box, alpha = 1 - (1 + e^(density + shift))^(-interval), a product of (1 - alpha) that stops
    below 1e-3, the two removals, depth R (sum w s + 1e-7), distortion in s units with interval 1 / kept.

    Returns depth, semantics, opacity (sum of kept weights), transmittance (the reference's last one),
    distortion and samples, as float64 tensors [B, R] ([B, R, C] semantics).
    """
    density, semantics, rays_o, rays_d = (x.double() for x in (density, semantics, rays_o, rays_d))
    b, r, _ = rays_o.shape
    c = semantics.shape[-1]
    radius = 39.0
    lower, upper = (
        torch.tensor(grid.lower, dtype=torch.float64),
        torch.tensor(grid.upper, dtype=torch.float64),
    )
    extent = upper - lower
    center = (lower + upper) / 2
    background = (float(extent[0]) / 2 - radius) / radius
    interval = step / grid.voxel_size
    n_inner = int(round(2 / (2 + 2 * background) * grid.shape[0] / interval, 9)) + 1
    n_outer = n_inner // 15
    b_inner = torch.linspace(0, 2, n_inner + 1, dtype=torch.float64)
    b_outer = 2 / torch.linspace(1, 1 / 64, n_outer + 1, dtype=torch.float64)
    t_all = torch.cat([(b_inner[1:] + b_inner[:-1]) / 2, (b_outer[1:] + b_outer[:-1]) / 2])
    z_half = float(extent[2] / extent[0])
    box_min = torch.tensor([-1 - background, -1 - background, -z_half], dtype=torch.float64)
    box_max = torch.tensor([1 + background, 1 + background, z_half], dtype=torch.float64)
    merge = (2 + 2 * background) / grid.shape[0] * interval * 0.95

    names = ("depth", "opacity", "transmittance", "distortion", "samples")
    out = {k: torch.zeros(b, r, dtype=torch.float64) for k in names}
    out["semantics"] = torch.zeros(b, r, c, dtype=torch.float64)
    for bi in range(b):
        volume = torch.cat([density[bi, ..., None], semantics[bi]], -1).permute(3, 0, 1, 2)[None]
        rays = []
        for ri in range(r):
            d = rays_d[bi, ri]
            if (ray_mask is not None and not ray_mask[bi, ri]) or d.norm() == 0:
                continue
            o = (rays_o[bi, ri] - center) / radius
            d = d / d.norm()
            points = o + t_all[:, None] * d
            norm = points.norm(dim=-1, keepdim=True)
            inner = norm[:, 0] <= 1
            points = torch.where(norm <= 1, points, points / norm * ((1 + background) - background / norm))
            keep = inner.clone()
            cum = 0.0
            for k in range(1, len(t_all)):
                cum += float((points[k] - points[k - 1]).norm())
                if cum > merge:
                    keep[k] = True
                    cum = 0.0
            coords = ((points - box_min) / (box_max - box_min)).flip(-1) * 2 - 1
            values = F.grid_sample(volume, coords.view(1, 1, 1, -1, 3), align_corners=True)[0, :, 0, 0].T
            weights, ts, logits, trans = [], [], [], 1.0
            for k in torch.nonzero(keep).flatten().tolist():
                alpha = 1 - (1 + math.exp(values[k, 0].item() + shift)) ** (-interval)
                if not alpha > skip_threshold:
                    continue
                weights.append(trans * alpha)
                ts.append(t_all[k].item())
                logits.append(values[k, 1:])
                trans *= 1 - alpha
                if trans < 1e-3:
                    break
            kept = [i for i, w in enumerate(weights) if w > skip_threshold]
            rays.append((ri, [weights[i] for i in kept], [ts[i] / (1 + ts[i]) for i in kept],
                         [logits[i] for i in kept], trans))  # fmt: skip
        total = sum(len(w) for _, w, _, _, _ in rays)
        for ri, w, s, logits, trans in rays:
            out["depth"][bi, ri] = radius * (sum(wi * si for wi, si in zip(w, s)) + 1e-7)
            out["opacity"][bi, ri] = sum(w)
            out["transmittance"][bi, ri] = trans
            out["samples"][bi, ri] = len(w)
            for wi, li in zip(w, logits):
                out["semantics"][bi, ri] += wi * li
            pairs = sum(wi * wj * abs(si - sj) for wi, si in zip(w, s) for wj, sj in zip(w, s))
            out["distortion"][bi, ri] = pairs + sum(wi * wi for wi in w) / (3 * max(total, 1))
    return out
