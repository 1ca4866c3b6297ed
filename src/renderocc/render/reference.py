"""Pure-PyTorch volume renderer: the readable reference, differentiable by autograd, CPU or GPU.

It materialises the samples of a chunk of rays at a time ([B, r, K] tensors) and recomputes each chunk
in the backward pass (activation checkpointing), so memory stays bounded by `max_chunk_samples`.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from renderocc.core.grid import VoxelGrid, constant
from renderocc.render.conventions import Convention, render_output
from renderocc.render.output import RenderOutput
from renderocc.render.sampling import reference_samples, sample_positions, trilinear_corners

LENGTH_CHUNKS = 4  # chunks of rays of similar length (see render_reference)


def alpha_from_density(
    density: torch.Tensor, interval: float, density_shift: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted-softplus density to (optical thickness tau = softplus(density + shift) * interval,
    alpha = 1 - exp(-tau)); interval is the step in metres ("metric") or in voxels ("reference")."""
    tau = F.softplus(density + density_shift) * interval
    return tau, -torch.expm1(-tau)


def composite(
    tau: torch.Tensor, alpha: torch.Tensor, skip_threshold: float, stop_transmittance: float
) -> torch.Tensor:
    """Weights of samples along rays, samples in the last dimension: tau, alpha [..., K] -> w [..., K].

    alpha is 0 for samples that do not exist (past the ray's end, removed by the sample layout). A sample
    with alpha < skip_threshold is dropped entirely (it does not attenuate later samples); one whose weight
    T_i * alpha_i < skip_threshold still attenuates but contributes nothing; samples met once the
    transmittance T_i is below stop_transmittance contribute nothing (the ray has stopped).
    """
    kept = (alpha >= skip_threshold) & (alpha > 0)
    tau = torch.where(kept, tau, torch.zeros_like(tau))
    alpha = torch.where(kept, alpha, torch.zeros_like(alpha))
    # exp of an exclusive prefix sum is the product of (1 - alpha_j) for j < i, without cumprod's
    # backward that divides by (1 - alpha) and breaks on opaque samples. The optical depth is capped where
    # T is far below the skip threshold (those samples are skipped whatever T is), or at 80 (T = 2e-35):
    # this keeps T and its gradients out of float32 denormals, which are very slow on CPUs.
    cap = min(80.0, 10.0 - math.log(skip_threshold)) if skip_threshold > 0 else 80.0
    transmittance = torch.exp(-(torch.cumsum(tau, -1) - tau).clamp_max(cap))
    w = transmittance * alpha
    counts = (w >= skip_threshold) & (transmittance >= stop_transmittance)
    return torch.where(counts, w, torch.zeros_like(w))


def distortion_terms(w: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_ij w_i w_j |x_i - x_j|, sum_i w_i^2) over the last dimension of w, x [..., K] (x ascending).

    O(K) form of the pair sum: 2 sum_i w_i (x_i W_<i - S_<i), with prefix sums W, S of w and w x.
    """
    wx = w * x
    w_before = torch.cumsum(w, -1) - w
    wx_before = torch.cumsum(wx, -1) - wx
    return 2 * (w * (x * w_before - wx_before)).sum(-1), (w * w).sum(-1)


class _CornerSum(torch.autograd.Function):
    """sum_j weights[n, j] table[voxels[n, j]] for every row n of voxels, weights [N, 8] -> [N, C],
    differentiable in table [V, C] (the weights are constants).

    A sparse [N, V] matrix (CSR, 32-bit indices, as MKL takes them) times the table, and in the backward its
    transpose, built by sorting the entries by voxel, times the gradient. On the CPU demo's chunks forward and
    backward took 12 ms against 29 ms for the corner gather and grid_sample's 3D kernel (scalar code, one
    thread per batch element, and a gradient for the sample points in every backward whether asked or not).
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, voxels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, corners = voxels.shape
        cols, values = voxels.reshape(-1).int(), weights.reshape(-1).to(table.dtype)
        ctx.save_for_backward(cols, values)
        ctx.shape = (n, corners, table.shape[0])
        starts = torch.arange(0, n * corners + 1, corners, device=table.device, dtype=torch.int32)
        return _sparse(starts, cols, values, (n, table.shape[0])) @ table

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        cols, values = ctx.saved_tensors
        n, corners, v = ctx.shape
        order = cols.argsort(stable=True)  # stable: the same summation order on every run
        starts = torch.zeros(v + 1, device=cols.device, dtype=torch.int32)
        starts[1:] = torch.bincount(cols, minlength=v).cumsum(0)
        rows = order.int() >> 3 if corners == 8 else order.int() // corners  # the shift: 6x faster
        transpose = _sparse(starts, rows, values.index_select(0, order), (v, n))
        return transpose @ grad.contiguous(), None, None


def _sparse(starts, cols, values, shape) -> torch.Tensor:
    """A CSR matrix of row starts, column indices and values."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(starts, cols, values, shape, check_invariants=False)


def sparse_corners(device: torch.device) -> bool:
    """Whether the metric convention's interpolation runs as a sparse product (`_CornerSum`): on the CPU;
    grid_sample elsewhere (on GPUs it is faster than gathering corners)."""
    return device.type == "cpu"


def _interpolate(
    density: torch.Tensor, semantics_cf: torch.Tensor, q: torch.Tensor, grid: VoxelGrid, conv: Convention
) -> tuple[torch.Tensor, torch.Tensor]:
    """Density [B, r, K] and logits [B, r, K, C] at sample points q [B, r, K, 3] of the convention's frame."""
    b, r, k, _ = q.shape
    if conv.zero_outside:
        # align_corners=True maps -1 and 1 to the first and last voxel centre: u / (n - 1) * 2 - 1
        last = constant(tuple(float(n - 1) for n in grid.shape), q.device, q.dtype)
        u = (q - constant(conv.origin, q.device, q.dtype)) * constant(conv.scale, q.device, q.dtype)
        coords = (u / last * 2 - 1).flip(-1).reshape(b, 1, r, k, 3)
        values, logits = (
            F.grid_sample(v, coords, align_corners=True, padding_mode="zeros")[:, :, 0]
            for v in (density.unsqueeze(1), semantics_cf)
        )
        return values[:, 0], logits.permute(0, 2, 3, 1)
    index, tri = trilinear_corners(q, grid)  # [B, r, K, 8]
    if sparse_corners(q.device):
        # density and logits together, one table row per voxel of the batch
        table = torch.cat([density.unsqueeze(1), semantics_cf], 1).permute(0, 2, 3, 4, 1)
        voxels = index + torch.arange(b, device=q.device).view(b, 1, 1, 1) * math.prod(grid.shape)
        with torch.autocast("cpu", enabled=False):  # in the table's dtype
            values = _CornerSum.apply(table.reshape(-1, table.shape[-1]), voxels.view(-1, 8), tri.view(-1, 8))
        # split rather than two slices: one backward copy instead of two zero-filled full-size gradients
        density_values, logits = values.view(b, r, k, -1).split([1, semantics_cf.shape[1]], -1)
        return density_values.squeeze(-1), logits
    corner_density = density.reshape(b, -1).gather(1, index.reshape(b, -1)).view(index.shape)
    # Logits are interpolated by grid_sample: with align_corners=False and border padding it is exactly
    # the clamped voxel-centre convention of trilinear_corners.
    # grid_sample reads (x, y, z) as (W, H, D), so the point order is reversed for a [X, Y, Z] volume.
    coords = grid.normalize(q).flip(-1).reshape(b, 1, r, k, 3)
    logits = F.grid_sample(semantics_cf, coords, align_corners=False, padding_mode="border")[:, :, 0]
    return (corner_density * tri).sum(-1), logits.permute(0, 2, 3, 1)


def _render_chunk(
    density: torch.Tensor,
    semantics_cf: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    t_near: torch.Tensor,
    num_samples: torch.Tensor,
    grid: VoxelGrid,
    max_samples: int,
    conv: Convention,
    density_shift: float,
    skip_threshold: float,
) -> tuple[torch.Tensor, ...]:
    """Render rays [B, r] through density [B, X, Y, Z] and channel-first semantics [B, C, X, Y, Z]:
    (sum w x, semantics, sum w, distortion pair sum, sum w^2, kept samples), x the depth coordinate."""
    exists = torch.arange(max_samples, device=t_near.device) < num_samples.unsqueeze(-1)
    if conv.reference:
        x, q, kept = reference_samples(rays_o, rays_d, conv, max_samples)  # [K], [B, r, K, 3], [B, r, K]
        exists &= kept
    else:
        # [B, r, K], [B, r, K, 3]
        x, q = sample_positions(rays_o, rays_d, t_near, max_samples, conv.step_size)
    values, logits = _interpolate(density, semantics_cf, q, grid, conv)
    tau, alpha = alpha_from_density(values, conv.interval, density_shift)
    alpha = torch.where(exists, alpha, torch.zeros_like(alpha))
    w = composite(tau, alpha, skip_threshold, conv.stop_transmittance)
    x = x.expand_as(w)
    w_sem = w if not conv.semantic_threshold else torch.where(w >= conv.semantic_threshold, w, 0.0)
    # a batched [1, K] x [K, C] product: takes the logits' strides as they are (einsum copied them)
    semantics = torch.matmul(w_sem.unsqueeze(-2), logits).squeeze(-2)
    pairs, squares = distortion_terms(w, x)
    return (w * x).sum(-1), semantics, w.sum(-1), pairs, squares, (w > 0).sum(-1, dtype=torch.int32)


@torch.compiler.disable  # its chunks follow the rays' lengths, read on the host: each batch would recompile
def render_reference(
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
    max_chunk_samples: int = 1 << 20,
) -> RenderOutput:
    """Reference renderer on validated inputs (see `volume_render`); t_near, num_samples [B, R] (for the
    "reference" convention rays_o in units of conv.radius around conv.center, t_near unused)."""
    b, r = t_near.shape
    semantics_cf = semantics.permute(0, 4, 1, 2, 3)  # [B, C, X, Y, Z], a view
    # Each batch element's rays longest first, in chunks that each march only as far as their own longest
    # ray: at least LENGTH_CHUNKS of them, and small enough to keep a chunk's samples under
    # max_chunk_samples. Sorted per element: a chunk's rays of different elements are unrelated, and sorted
    # by the longer of the two a third of the CPU demo's samples were padding (per element, a quarter).
    order = num_samples.argsort(1, descending=True)  # [B, R]
    counts = _take(num_samples, order).amax(0).clamp_min(1).tolist() if b else [1] * r
    checkpointed = (
        torch.is_grad_enabled()
        and (density.requires_grad or semantics.requires_grad)
        and b * r * (counts[0] if counts else 1) > max_chunk_samples
    )
    parts, start = [], 0
    while start < r:
        size = max(1, min(math.ceil(r / LENGTH_CHUNKS), max_chunk_samples // (b * counts[start])))
        rays = order[:, start : start + size]
        args = (
            density,
            semantics_cf,
            _take(rays_o, rays),
            _take(rays_d, rays),
            _take(t_near, rays),
            _take(num_samples, rays),
            grid,
            counts[start],
            conv,
            density_shift,
            skip_threshold,
        )
        parts.append(
            checkpoint(_render_chunk, *args, use_reentrant=False) if checkpointed else _render_chunk(*args)
        )
        start += size
    restore = torch.empty_like(order).scatter_(1, order, torch.arange(r, device=order.device).expand(b, r))
    return render_output(conv, *(_take(torch.cat(p, 1), restore) for p in zip(*parts)))


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [B, R, ...] at rays index [B, r] of each batch element -> [B, r, ...]."""
    index = index.view(*index.shape, *(1,) * (values.dim() - 2)).expand(*index.shape, *values.shape[2:])
    return values.gather(1, index)
