"""`volume_render`: validate inputs, lay out each ray's samples, dispatch to an implementation."""

from __future__ import annotations

import os

import torch

from renderocc.core.grid import VoxelGrid, constant
from renderocc.render.conventions import METRIC, resolve
from renderocc.render.fused import render_fused, triton_available
from renderocc.render.output import RenderOutput
from renderocc.render.reference import render_reference
from renderocc.render.sampling import ray_box_intersection, sample_counts

DEFAULT_DENSITY_SHIFT = -13.815510557964274  # log(1 / (1 - 1e-6) - 1), as RenderConfig
IMPLEMENTATIONS = ("auto", "torch", "triton")


def _check_inputs(
    density: torch.Tensor,
    semantics: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    grid: VoxelGrid,
) -> None:
    if density.dim() != 4 or tuple(density.shape[1:]) != grid.shape:
        raise ValueError(
            f"volume_render: density must be [B, {', '.join(map(str, grid.shape))}] for the grid, "
            f"got {list(density.shape)}"
        )
    if semantics.dim() != 5 or semantics.shape[:4] != density.shape:
        raise ValueError(
            f"volume_render: semantics must be channel-last [B, X, Y, Z, C] matching density "
            f"{list(density.shape)}, got {list(semantics.shape)}"
        )
    b = density.shape[0]
    for name, rays in (("rays_o", rays_o), ("rays_d", rays_d)):
        if rays.dim() != 3 or rays.shape[0] != b or rays.shape[2] != 3:
            raise ValueError(f"volume_render: {name} must be [B={b}, R, 3], got {list(rays.shape)}")
    if rays_o.shape != rays_d.shape:
        raise ValueError(f"volume_render: rays_o {list(rays_o.shape)} and rays_d {list(rays_d.shape)} differ")
    if not (density.is_floating_point() and semantics.is_floating_point()):
        raise ValueError("volume_render: density and semantics must be floating point")


def volume_render(
    density: torch.Tensor,
    semantics: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    grid: VoxelGrid,
    step_size: float,
    density_shift: float = DEFAULT_DENSITY_SHIFT,
    skip_threshold: float = 1e-7,
    implementation: str = "auto",
    convention: str = METRIC,
    ray_mask: torch.Tensor | None = None,
    stop_transmittance: float | None = None,
    semantic_threshold: float | None = None,
) -> RenderOutput:
    """Differentiable volume rendering of a density and a semantic grid along rays.

    density [B, X, Y, Z] (the network's non-negative output), semantics [B, X, Y, Z, C] logits, rays_o
    and rays_d [B, R, 3] in the grid's (ego) frame with unit rays_d. `convention` "metric" (default):
    samples every `step_size` metres through the ray's segment inside the grid box (see `sampling`),
    values interpolated trilinearly from voxel centres with clamp-to-edge; sigma = softplus(density +
    density_shift) per metre, alpha = 1 - exp(-sigma * step_size), weights w_i = T_i alpha_i, depth in
    metres. "reference": the published release's sample layout, units and depth (`render.conventions`).
    Samples with alpha below `skip_threshold` are dropped, those with weight below it contribute nothing
    (0 disables skipping). A ray stops once its transmittance falls below `stop_transmittance` (metric
    only; None: the skip threshold, which changes nothing; a larger value drops the samples deep behind a
    surface, and with them their gradients). A kept sample adds its logits to the semantics only where its
    weight reaches `semantic_threshold` (metric only; None: every kept sample): the fused renderer reads
    and scatters 8 x C logits per such sample, and most kept samples are nearly transparent free space;
    depth, opacity and distortion keep every kept sample. ray_mask bool [B, R] (None: all): rays left out
    get no samples (all outputs 0, the reference's depth its 3.9e-6 offset). `implementation`: "torch"
    (reference, any device), "triton" (fused kernels; CUDA, or CPU under TRITON_INTERPRET=1), "auto"
    (triton on CUDA when importable, else torch). Gradients flow to density and semantics, not to the
    rays. Returns RenderOutput with depth, opacity, distortion, samples [B, R] and semantics [B, R, C].
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"volume_render: implementation={implementation!r}; use one of {IMPLEMENTATIONS}")
    if not step_size > 0:
        raise ValueError(f"volume_render: step_size must be positive, got {step_size}")
    conv = resolve(convention, grid, step_size, skip_threshold, stop_transmittance, semantic_threshold)
    _check_inputs(density, semantics, rays_o, rays_d, grid)
    if ray_mask is not None and ray_mask.shape != rays_o.shape[:2]:
        raise ValueError(
            f"volume_render: ray_mask must be [B, R] = {list(rays_o.shape[:2])}, got {list(ray_mask.shape)}"
        )
    if implementation == "auto":
        implementation = "triton" if density.is_cuda and triton_available() else "torch"
    if implementation == "triton" and not density.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            "volume_render: implementation='triton' needs CUDA tensors (or TRITON_INTERPRET=1); "
            "use 'torch' on the CPU"
        )
    rays_o = rays_o.detach().to(density.dtype)
    rays_d = rays_d.detach().to(density.dtype)
    if conv.reference:
        # distances from the origin in units of the sphere's radius; a zero direction is padding, not a ray
        rays_o = (rays_o - constant(conv.center, rays_o.device, rays_o.dtype)) / conv.radius
        t_near = torch.zeros(rays_o.shape[:2], device=rays_o.device, dtype=rays_o.dtype)
        num_samples = torch.where((rays_d != 0).any(-1), len(conv.t), 0).to(torch.int32)
    else:
        t_near, t_far = ray_box_intersection(rays_o, rays_d, grid)
        num_samples = sample_counts(t_near, t_far, step_size)
        t_near = torch.where(num_samples > 0, t_near, torch.zeros_like(t_near))  # misses may carry inf
    if ray_mask is not None:
        num_samples = torch.where(ray_mask.to(num_samples.device).bool(), num_samples, 0).to(torch.int32)
    render = render_fused if implementation == "triton" else render_reference
    return render(
        density, semantics, rays_o, rays_d, t_near, num_samples, grid, conv, density_shift, skip_threshold
    )
