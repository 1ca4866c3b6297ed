"""What a volume render returns: per-ray depth, semantics, opacity and distortion."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """Per-ray results of `volume_render`, all differentiable w.r.t. the density and semantic grids.

    depth       [B, R]     sum_i w_i t_i, metric distance along the unit ray (0 where nothing is hit);
                           "reference" convention: 39 (sum_i w_i s_i + 1e-7), s = t / (1 + t), t in 39 m
    semantics   [B, R, C]  sum_i w_i logits_i
    opacity     [B, R]     sum_i w_i; 1 - opacity is the transmittance left after the last sample
    distortion  [B, R]     mip-NeRF 360 distortion sum_ij w_i w_j |t_i - t_j| + step / 3 * sum_i w_i^2,
                           with t in metres; "reference": in s units, + sum_i w_i^2 / (3 N_b) with N_b the
                           kept samples of the batch element (render.conventions)
    samples     [B, R]     int32, samples that count (weight kept); None where a caller built the output
    """

    depth: torch.Tensor
    semantics: torch.Tensor
    opacity: torch.Tensor
    distortion: torch.Tensor
    samples: torch.Tensor | None = None
