"""Triton kernels of the fused renderer: one pass per ray forward, one pass per ray backward.

A program renders a block of BLOCK_R rays (one ray and one warp by default): each lane holds one semantic
channel of its ray, and every per-ray quantity is kept replicated across the lanes of the
[BLOCK_R, BLOCK_C] tile, so the sample loop never moves data between layouts (shared-memory round trips;
per-ray values in 1-D tensors, which Triton lays out unlike the tile rows, made a step 15-35% slower on an
H100). The program walks the
samples in order, interpolates density and logits from the grids and keeps transmittance, weight sums
and the semantic accumulator in registers; nothing per sample is written to global memory, and a block
stops once every ray in it is opaque (transmittance below the skip threshold, after which every weight
would be skipped anyway, so stopping is exact).

The backward pass replays the samples in the same order. With g_i = dL/dw_i (known per sample from the
output gradients and the running prefix sums), dL/dtau_k = g_k T_(k+1) - sum_(i>k) g_i w_i, and the
suffix sum is total - prefix, where total = sum_i g_i w_i comes from the forward outputs (for the
distortion D, sum_i w_i dD/dw_i = 2 D since D is quadratic in w). Gradients reach the grids by atomic
adds at the eight interpolation corners.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(z):
    # max(z, 0) + log1p(exp(-|z|)); log(1 + e) alone rounds exp(-13.8) ~ 1e-6 badly in float32.
    e = tl.exp(-tl.abs(z))
    log1p = tl.where(e < 1e-4, e * (1.0 - e * (0.5 - e / 3.0)), tl.log(1.0 + e))
    return tl.maximum(z, 0.0) + log1p


@triton.jit
def _one_minus_exp_neg(x):
    # 1 - exp(-x) for x >= 0 without the cancellation at tiny x (alpha of empty space is ~2e-7).
    return tl.where(x < 1e-3, x * (1.0 - x * (0.5 - x / 6.0)), 1.0 - tl.exp(-x))


@triton.jit
def _corner_frame(t, ox, oy, oz, dx, dy, dz, lox, loy, loz, voxel_size, NX, NY, NZ):
    """Base flat index, per-axis corner strides and fractions of points o + t d (clamp-to-edge)."""
    ux = tl.minimum(tl.maximum((ox + t * dx - lox) / voxel_size - 0.5, 0.0), NX - 1.0)
    uy = tl.minimum(tl.maximum((oy + t * dy - loy) / voxel_size - 0.5, 0.0), NY - 1.0)
    uz = tl.minimum(tl.maximum((oz + t * dz - loz) / voxel_size - 0.5, 0.0), NZ - 1.0)
    ix = tl.minimum(ux.to(tl.int32), NX - 1)
    iy = tl.minimum(uy.to(tl.int32), NY - 1)
    iz = tl.minimum(uz.to(tl.int32), NZ - 1)
    base = (ix * NY + iy) * NZ + iz
    sx = tl.where(ix < NX - 1, NY * NZ, 0)
    sy = tl.where(iy < NY - 1, NZ, 0)
    sz = tl.where(iz < NZ - 1, 1, 0)
    return base, sx, sy, sz, ux - ix.to(tl.float32), uy - iy.to(tl.float32), uz - iz.to(tl.float32)


@triton.jit
def _corner(j: tl.constexpr, base, sx, sy, sz, fx, fy, fz):
    """Flat index and trilinear weight of corner j, offset (j >> 2 & 1, j >> 1 & 1, j & 1)."""
    bx: tl.constexpr = (j >> 2) & 1
    by: tl.constexpr = (j >> 1) & 1
    bz: tl.constexpr = j & 1
    wx = fx * bx + (1.0 - fx) * (1 - bx)
    wy = fy * by + (1.0 - fy) * (1 - by)
    wz = fz * bz + (1.0 - fz) * (1 - bz)
    return base + sx * bx + sy * by + sz * bz, wx * wy * wz


@triton.jit
def _block_rays(rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, R, BLOCK_R: tl.constexpr, cols):
    """This program's rays as [BLOCK_R, BLOCK_C] tiles replicated along the channels: flat ray index into
    [B, R], in-range mask, origin, direction, t_near and sample count."""
    slot = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None] + cols * 0
    in_range = slot < R
    ray = tl.program_id(1) * R + slot
    ox = tl.load(rays_o_ptr + ray * 3, mask=in_range, other=0.0)
    oy = tl.load(rays_o_ptr + ray * 3 + 1, mask=in_range, other=0.0)
    oz = tl.load(rays_o_ptr + ray * 3 + 2, mask=in_range, other=0.0)
    dx = tl.load(rays_d_ptr + ray * 3, mask=in_range, other=0.0)
    dy = tl.load(rays_d_ptr + ray * 3 + 1, mask=in_range, other=0.0)
    dz = tl.load(rays_d_ptr + ray * 3 + 2, mask=in_range, other=0.0)
    t_near = tl.load(t_near_ptr + ray, mask=in_range, other=0.0)
    n = tl.load(num_samples_ptr + ray, mask=in_range, other=0)
    return ray, in_range, ox, oy, oz, dx, dy, dz, t_near, n


@triton.jit
def _any(x):
    """Whether any element of a 2D boolean tile is set, as a scalar."""
    return tl.max(tl.max(x.to(tl.int32), 1), 0) > 0


@triton.jit
def _sample(k, t_near, n, trans, ox, oy, oz, dx, dy, dz, density_b, lox, loy, loz, voxel_size, step, shift,
            thr, NX, NY, NZ):  # fmt: skip
    """Sample k of every ray: distance, interpolation corners, density, optical thickness and kept weight."""
    live = (k < n) & (trans >= thr)
    t = t_near + (k + 0.5) * step
    base, sx, sy, sz, fx, fy, fz = _corner_frame(
        t, ox, oy, oz, dx, dy, dz, lox, loy, loz, voxel_size, NX, NY, NZ
    )
    dens = tl.zeros_like(t)
    for j in tl.static_range(8):
        off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
        dens += wj * tl.load(density_b + off, mask=live, other=0.0)
    tau = _softplus(dens + shift) * step
    alpha = _one_minus_exp_neg(tau)
    keep_a = live & (alpha >= thr) & (alpha > 0.0)
    tau = tl.where(keep_a, tau, 0.0)
    w = trans * tl.where(keep_a, alpha, 0.0)
    keep_w = keep_a & (w >= thr)
    w = tl.where(keep_w, w, 0.0)
    return t, base, sx, sy, sz, fx, fy, fz, dens, tau, w, keep_a, keep_w


@triton.jit
def render_fwd_kernel(
    density_ptr, semantics_ptr, rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr,
    depth_ptr, sem_out_ptr, opacity_ptr, distortion_ptr,
    R, C, NX, NY, NZ, lox, loy, loz, voxel_size, step, shift, thr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Forward: depth, semantics, opacity and distortion [B, R] (semantics [B, R, C]) of a block of rays."""
    cols = tl.arange(0, BLOCK_C)[None, :]
    col_ok = cols < C
    first = cols == 0
    ray, in_range, ox, oy, oz, dx, dy, dz, t_near, n = _block_rays(
        rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, R, BLOCK_R, cols
    )
    voxels = NX * NY * NZ
    density_b = density_ptr + tl.program_id(1) * voxels
    semantics_b = semantics_ptr + tl.program_id(1) * voxels * C

    trans = tl.full([BLOCK_R, BLOCK_C], 1.0, tl.float32)
    w_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    wt_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    ww_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    pair_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    sem_acc = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    n_max = tl.max(tl.max(n, 1), 0)
    k = 0
    go = n_max > 0
    while go:
        t, base, sx, sy, sz, fx, fy, fz, dens, tau, w, keep_a, keep_w = _sample(
            k, t_near, n, trans, ox, oy, oz, dx, dy, dz, density_b, lox, loy, loz, voxel_size, step, shift,
            thr, NX, NY, NZ,
        )  # fmt: skip
        pair_sum += w * (t * w_sum - wt_sum)
        w_sum += w
        wt_sum += w * t
        ww_sum += w * w
        trans = trans * tl.exp(-tau)
        sem_mask = keep_w & col_ok
        for j in tl.static_range(8):
            off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
            logits = tl.load(semantics_b + off * C + cols, mask=sem_mask, other=0.0)
            sem_acc += (w * wj) * logits
        k += 1
        go = (k < n_max) & _any((k < n) & (trans >= thr))

    scalar_mask = in_range & first
    tl.store(depth_ptr + ray, wt_sum, mask=scalar_mask)
    tl.store(opacity_ptr + ray, w_sum, mask=scalar_mask)
    tl.store(distortion_ptr + ray, 2.0 * pair_sum + step / 3.0 * ww_sum, mask=scalar_mask)
    tl.store(sem_out_ptr + ray * C + cols, sem_acc, mask=in_range & col_ok)


@triton.jit
def render_bwd_kernel(
    density_ptr, semantics_ptr, rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr,
    depth_ptr, sem_out_ptr, opacity_ptr, distortion_ptr,
    g_depth_ptr, g_sem_ptr, g_opacity_ptr, g_distortion_ptr,
    grad_density_ptr, grad_semantics_ptr,
    R, C, NX, NY, NZ, lox, loy, loz, voxel_size, step, shift, thr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward: replay the samples in order and scatter dL/d(density, semantics) into the grids."""
    cols = tl.arange(0, BLOCK_C)[None, :]
    col_ok = cols < C
    first = cols == 0
    ray, in_range, ox, oy, oz, dx, dy, dz, t_near, n = _block_rays(
        rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, R, BLOCK_R, cols
    )
    voxels = NX * NY * NZ
    density_b = density_ptr + tl.program_id(1) * voxels
    semantics_b = semantics_ptr + tl.program_id(1) * voxels * C
    grad_density_b = grad_density_ptr + tl.program_id(1) * voxels
    grad_semantics_b = grad_semantics_ptr + tl.program_id(1) * voxels * C
    row_ok = in_range & col_ok

    g_depth = tl.load(g_depth_ptr + ray, mask=in_range, other=0.0)
    g_opacity = tl.load(g_opacity_ptr + ray, mask=in_range, other=0.0)
    g_dist = tl.load(g_distortion_ptr + ray, mask=in_range, other=0.0)
    g_sem = tl.load(g_sem_ptr + ray * C + cols, mask=row_ok, other=0.0)
    w_total = tl.load(opacity_ptr + ray, mask=in_range, other=0.0)
    wt_total = tl.load(depth_ptr + ray, mask=in_range, other=0.0)
    sem_total = tl.load(sem_out_ptr + ray * C + cols, mask=row_ok, other=0.0)
    # sum_i w_i dD/dw_i = 2 D: the distortion is quadratic in the weights
    total = (
        g_depth * wt_total
        + g_opacity * w_total
        + tl.sum(g_sem * sem_total, 1, keep_dims=True)
        + 2.0 * g_dist * tl.load(distortion_ptr + ray, mask=in_range, other=0.0)
    )

    trans = tl.full([BLOCK_R, BLOCK_C], 1.0, tl.float32)
    w_before = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    wt_before = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    gw_prefix = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    n_max = tl.max(tl.max(n, 1), 0)
    k = 0
    go = n_max > 0
    while go:
        t, base, sx, sy, sz, fx, fy, fz, dens, tau, w, keep_a, keep_w = _sample(
            k, t_near, n, trans, ox, oy, oz, dx, dy, dz, density_b, lox, loy, loz, voxel_size, step, shift,
            thr, NX, NY, NZ,
        )  # fmt: skip
        sem_mask = keep_w & col_ok
        logits = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
        for j in tl.static_range(8):
            off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
            logits += wj * tl.load(semantics_b + off * C + cols, mask=sem_mask, other=0.0)
        # dL/dw_k: depth, opacity, logits . dL/dsemantics, and the distortion's
        # dD/dw_k = 2 sum_j w_j |t_k - t_j| + 2 step / 3 w_k,
        # sum_j w_j |t_k - t_j| = t_k (2 W_<k - W) + S - 2 S_<k  (W, S: sums of w and w t)
        g_distortion = (
            2.0 * (t * (2.0 * w_before - w_total) + wt_total - 2.0 * wt_before) + (2.0 * step / 3.0) * w
        )
        g_w = g_depth * t + g_opacity + tl.sum(logits * g_sem, 1, keep_dims=True) + g_dist * g_distortion
        gw_prefix += g_w * w
        trans_next = trans * tl.exp(-tau)
        g_tau = tl.where(keep_w, g_w * trans_next, 0.0) - (total - gw_prefix)
        # tau = softplus(density + shift) * step and softplus' = sigmoid
        g_dens = tl.where(keep_a, g_tau * step / (1.0 + tl.exp(-(dens + shift))), 0.0)
        density_mask = keep_a & first  # one lane per ray adds the density gradient
        for j in tl.static_range(8):
            off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
            tl.atomic_add(grad_density_b + off, wj * g_dens, mask=density_mask, sem="relaxed")
            tl.atomic_add(grad_semantics_b + off * C + cols, (w * wj) * g_sem, mask=sem_mask, sem="relaxed")
        w_before += w
        wt_before += w * t
        trans = trans_next
        k += 1
        go = (k < n_max) & _any((k < n) & (trans >= thr))
