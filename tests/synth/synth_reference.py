"""Brute-force references the synth tests compare the vectorised code against."""

from __future__ import annotations

import torch

from renderocc.synth.world import BOX, ELLIPSOID


def inside_reference(kind: torch.Tensor, q: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Whether local points q [N, P, 3] lie in primitives of `kind` [N], half extents [N, 3] -> [N, P]."""
    h = half[:, None]
    in_box = (q.abs() <= h).all(-1)
    in_cyl = (q[..., 0] ** 2 + q[..., 1] ** 2 <= h[..., 0] ** 2) & (q[..., 2].abs() <= h[..., 2])
    in_ell = ((q / h) ** 2).sum(-1) <= 1.0
    k = kind[:, None]
    return torch.where(k == BOX, in_box, torch.where(k == ELLIPSOID, in_ell, in_cyl))


def square_overlap_reference(
    kind: torch.Tensor, d: torch.Tensor, yaw: torch.Tensor, half: torch.Tensor, a: float
) -> torch.Tensor:
    """Area (float64) shared by the square [-a, a]^2 and boxes (clipped polygon) or cylinders (|x| <= a
    slices of the disc, integrated numerically) centred at -d [N, 2] with yaw [N], half [N, 3] -> [N]."""
    areas = []
    for k, dk, t, h in zip(kind.tolist(), d.double(), yaw.double(), half.double()):
        centre = -dk
        if k == BOX:
            c, s = torch.cos(t), torch.sin(t)
            corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
            poly = [
                (
                    float(centre[0] + c * h[0] * u - s * h[1] * v),
                    float(centre[1] + s * h[0] * u + c * h[1] * v),
                )
                for u, v in corners
            ]
            for axis in (0, 1):  # Sutherland-Hodgman against the four sides of the square
                for sign in (1, -1):
                    poly = _clip(poly, axis, sign, a)
            areas.append(
                0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1])))
            )
        else:
            r = float(h[0])
            x = torch.linspace(-a, a, 4001, dtype=torch.float64)
            half_chord = (r * r - (x - centre[0]) ** 2).clamp_min(0).sqrt()
            lo = torch.maximum(centre[1] - half_chord, torch.tensor(-a, dtype=torch.float64))
            hi = torch.minimum(centre[1] + half_chord, torch.tensor(a, dtype=torch.float64))
            areas.append(float(torch.trapezoid((hi - lo).clamp_min(0), x)))
    return torch.tensor(areas, dtype=torch.float64)


def _clip(poly: list, axis: int, sign: int, a: float) -> list:
    """The part of polygon `poly` where sign * coordinate[axis] <= a."""
    out = []
    for p, q in zip(poly, poly[1:] + poly[:1]):
        p_in, q_in = sign * p[axis] <= a, sign * q[axis] <= a
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (sign * a - p[axis]) / (q[axis] - p[axis])
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def ellipsoid_distance_reference(
    d: torch.Tensor, yaw: torch.Tensor, half: torch.Tensor, a: float, iters: int = 20000
) -> torch.Tensor:
    """min over the cube [-a, a]^3 of the ellipsoid's scaled distance |R^T (p + d) / half|^2, the ellipsoid
    centred at -d [N, 3] with yaw [N], semi-axes half [N, 3], by projected gradient descent (float64)."""
    d, yaw, half = d.double(), yaw.double(), half.double()
    c, s = torch.cos(yaw), torch.sin(yaw)

    def scaled(p):
        q = p + d
        return torch.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], -1) / half

    p = torch.zeros_like(d)
    step = 0.5 * half.amin(-1, keepdim=True) ** 2  # below 1 / Lipschitz constant of the gradient
    for _ in range(iters):
        g = scaled(p) / half  # gradient of half the squared distance, in the scaled frame ...
        g = torch.stack(
            [c * g[:, 0] - s * g[:, 1], s * g[:, 0] + c * g[:, 1], g[:, 2]], -1
        )  # ... rotated back
        p = (p - step * g).clamp(-a, a)
    return scaled(p).pow(2).sum(-1)
