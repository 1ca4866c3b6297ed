"""Fused volume renderer for CUDA: the Triton kernels of `kernels` wrapped in a torch.autograd.Function.

Rays get no gradient; density and semantics get theirs from the backward kernel's atomic adds.
"""

from __future__ import annotations

import torch

from renderocc.core.grid import VoxelGrid, constant
from renderocc.render.conventions import Convention, render_output
from renderocc.render.output import RenderOutput

try:
    import triton

    from renderocc.render.kernels import render_bwd_kernel, render_fwd_kernel
except ImportError:  # CPU-only installs: the reference renderer is used
    triton = None

# Samples per step of a ray's loop (one per lane) and warps per ray, under both conventions. 32 on one warp
# was the fastest of 8, 16, 32 and 64 samples per step on an H200 (benchmarks/render.py --sweep, metric).
CHUNK = 32
NUM_WARPS = 1
# What the fused kernels read and scatter per interpolation cell rather than per sample (`kernels`'
# MERGE_LOGITS and MERGE_DENSITY), metric convention only: one of MERGE_MODES. "density": on a trained r50
# field (an H200, seventeenth session) it took the 2D losses of a real batch from 4.20 to 4.09 ms GPU-busy
# at the presets' semantic threshold and from 3.32 to 3.03 ms at 1e-3, and never lost on the synthetic
# fields; merging the logits too cost 0.1-0.2 ms. benchmarks/render.py --sweep and --merge-cells time each
# mode.
MERGE_MODES = ("off", "density", "logits", "both")
MERGE_CELLS = "density"
# Registers per thread the backward kernel may use (Triton's `maxnreg`, CUDA only; None: as many as ptxas
# wants). A program is one warp, and an sm_90 multiprocessor holds 65,536 registers and at most 32 programs:
# uncapped, the backward's 91-96 registers a thread (ptxas for sm_90) leave room for 21 warps, at 64 for 32,
# with 12-24 bytes of spills (the forward needs 62-64 and already fits 32). On an H200 (twenty-second
# session) 64 had the least GPU-busy time of none, 64, 72 and 80 on all three synthetic fields under both
# conventions (10-14% of the whole rendering step), and took the backward in a trained r50 step from 1.13 to
# 1.05 ms (benchmarks/render.py --sweep, benchmarks/train.py --backward-registers).
BACKWARD_MAXNREG: int | None = 64


def triton_available() -> bool:
    """Whether the fused kernels can be compiled (triton importable)."""
    return triton is not None


def _launch_args(grid: VoxelGrid, conv: Convention, density_shift: float, skip_threshold: float) -> tuple:
    """The kernels' scalar arguments after R and C: grid shape, interpolation frame, sampling and units."""
    return (
        *grid.shape,
        *(float(v) for v in conv.origin),
        *(float(v) for v in conv.scale),
        float(conv.step_size),
        float(conv.interval),
        float(density_shift),
        float(skip_threshold),
        float(conv.stop_transmittance),
        float(conv.semantic_threshold),
        float(conv.background),
        float(conv.merge_distance),
        float(conv.radius),
    )


class _FusedRender(torch.autograd.Function):
    """Autograd wrapper of the two kernels; float32 contiguous inputs, rays already intersected.

    Returns the raw per-ray sums (see `kernels`): sum w x, semantics, opacity, pair sum, sum w^2, count.
    """

    @staticmethod
    def forward(ctx, density, semantics, rays_o, rays_d, t_near, num_samples, t_table, geometry, reference):
        b, r = t_near.shape
        c = semantics.shape[-1]
        depth = torch.empty(b, r, device=density.device, dtype=torch.float32)
        sem = torch.empty(b, r, c, device=density.device, dtype=torch.float32)
        opacity, pairs, squares = torch.empty_like(depth), torch.empty_like(depth), torch.empty_like(depth)
        count = torch.empty(b, r, device=density.device, dtype=torch.int32)
        if MERGE_CELLS not in MERGE_MODES:
            raise ValueError(f"render.fused.MERGE_CELLS is {MERGE_CELLS!r}; valid: {', '.join(MERGE_MODES)}")
        merge = "off" if reference else MERGE_CELLS
        # the backward replays the samples exactly as the forward took them
        launch = dict(
            S=CHUNK, BLOCK_C=triton.next_power_of_2(c), REFERENCE=reference,
            MERGE_LOGITS=merge in ("logits", "both"), num_warps=NUM_WARPS,
        )  # fmt: skip
        render_fwd_kernel[(r, b)](
            density, semantics, rays_o, rays_d, t_near, num_samples, t_table,
            depth, sem, opacity, pairs, squares, count, r, c, *geometry, **launch,
        )  # fmt: skip
        # ROCm's Triton has no maxnreg option
        capped = BACKWARD_MAXNREG is not None and torch.version.hip is None
        registers = {"maxnreg": BACKWARD_MAXNREG} if capped else {}
        ctx.geometry = geometry
        ctx.launch = launch | dict(MERGE_DENSITY=merge in ("density", "both")) | registers
        ctx.mark_non_differentiable(count)
        ctx.save_for_backward(
            density,
            semantics,
            rays_o,
            rays_d,
            t_near,
            num_samples,
            t_table,
            depth,
            sem,
            opacity,
            pairs,
            squares,
        )
        return depth, sem, opacity, pairs, squares, count

    @staticmethod
    def backward(ctx, g_depth, g_sem, g_opacity, g_pairs, g_squares, _g_count):
        density, semantics, rays_o, rays_d, t_near, num_samples, t_table, *outputs = ctx.saved_tensors
        b, r = t_near.shape
        c = semantics.shape[-1]
        grads = [
            torch.zeros_like(ref) if g is None else g.float().contiguous()
            for g, ref in zip((g_depth, g_sem, g_opacity, g_pairs, g_squares), outputs)
        ]
        grad_density = torch.zeros_like(density)
        grad_semantics = torch.zeros_like(semantics)
        render_bwd_kernel[(r, b)](
            density, semantics, rays_o, rays_d, t_near, num_samples, t_table,
            *outputs, *grads, grad_density, grad_semantics, r, c, *ctx.geometry, **ctx.launch,
        )  # fmt: skip
        return grad_density, grad_semantics, None, None, None, None, None, None, None


@torch.compiler.disable  # two fused kernels already; a compiled caller (training's losses) fuses around them
def render_fused(
    density: torch.Tensor,
    semantics: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    t_near: torch.Tensor,
    num_samples: torch.Tensor,
    grid: VoxelGrid,
    conv: Convention,
    density_shift: float,
    skip_threshold: float,
) -> RenderOutput:
    """Fused renderer on validated inputs (see `volume_render`); t_near [B, R], num_samples int32 [B, R]
    (for the "reference" convention rays_o in units of conv.radius around conv.center, t_near unused).

    Inputs are computed in float32 and gradients returned in the inputs' dtype.
    """
    if triton is None:
        raise RuntimeError("volume_render: implementation='triton' needs the triton package; use 'torch'")
    if (density.numel() * semantics.shape[-1]) >= 2**31:
        raise ValueError(
            "volume_render: semantics has 2**31 or more elements (int32 offsets); split the batch"
        )
    # the reference's sample distances (one small table, read by every ray); the metric kernel ignores it
    t_table = constant(conv.t or (0.0,), density.device, torch.float32)
    outputs = _FusedRender.apply(
        density.float().contiguous(),
        semantics.float().contiguous(),
        rays_o.float().contiguous(),
        rays_d.float().contiguous(),
        t_near.float().contiguous(),
        num_samples.to(torch.int32).contiguous(),
        t_table,
        _launch_args(grid, conv, density_shift, skip_threshold),
        conv.reference,
    )
    return render_output(conv, *outputs)
