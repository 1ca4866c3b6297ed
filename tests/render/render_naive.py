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
