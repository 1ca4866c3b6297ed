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
