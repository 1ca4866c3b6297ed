"""Triton kernels of the fused renderer: one pass per ray forward, one pass per ray backward.

A program renders a block of BLOCK_R rays (one ray and one warp by default): each lane holds one semantic
channel of its ray, and every per-ray quantity is kept replicated across the lanes of the
[BLOCK_R, BLOCK_C] tile, so the sample loop never moves data between layouts (shared-memory round trips;
per-ray values in 1-D tensors, which Triton lays out unlike the tile rows, made a step 15-35% slower on an
H100). The program walks the
samples in order, interpolates density and logits from the grids and keeps transmittance, weight sums
and the semantic accumulator in registers; nothing per sample is written to global memory, and a block
stops once every ray in it has stopped (transmittance below `stop`: the skip threshold for the metric
convention, after which every weight would be skipped anyway, so stopping is exact; 1e-3 for the
reference's).

The backward pass replays the samples in the same order. With g_i = dL/dw_i (known per sample from the
output gradients and the running prefix sums), dL/dtau_k = g_k T_(k+1) - sum_(i>k) g_i w_i, and the
suffix sum is total - prefix, where total = sum_i g_i w_i comes from the forward outputs (for the
distortion's pair sum P and the sum of squares Q, sum_i w_i dP/dw_i = 2 P since P is quadratic in w, and
so for Q). Gradients reach the grids by atomic adds at the eight interpolation corners, per sample or
(MERGE) once per run of consecutive kept samples in the same interpolation cell.

Both rendering conventions (`render.conventions`) run through the same kernels; REFERENCE (a constexpr)
selects where the samples lie (`_metric_position` or `_reference_position`), how the grids are read
(clamp-to-edge or zero outside, `_corner_frame`) and the depth coordinate x (metres, or R t / (1 + t)).
The rest takes launch arguments: `interval` (tau = softplus(density + shift) * interval), `stop` (the
transmittance a ray stops at). The kernels return the raw sums over each ray's kept samples: sum w x,
sum w logits, sum w, the distortion's pair sum sum_ij w_i w_j |x_i - x_j|, sum w^2 and the kept count;
`conventions.render_output` turns them into the convention's depth and distortion.
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
def _corner_frame(qx, qy, qz, orx, ory, orz, scx, scy, scz, NX, NY, NZ, ZERO_OUTSIDE: tl.constexpr):
    """Base flat index, per-axis corner strides and fractions of points q at continuous voxel-centre index
    u = (q - origin) * scale, and (ZERO_OUTSIDE) which corners lie in the grid, as bits for `_inside`.
    Clamp-to-edge, or ZERO_OUTSIDE: corners outside the grid read 0 (the caller masks them; the base
    index may then lie outside the grid, but a corner inside it is still base + its strides)."""
    ux = (qx - orx) * scx
    uy = (qy - ory) * scy
    uz = (qz - orz) * scz
    if ZERO_OUTSIDE:
        ux0 = tl.floor(ux)
        uy0 = tl.floor(uy)
        uz0 = tl.floor(uz)
        ix = ux0.to(tl.int32)
        iy = uy0.to(tl.int32)
        iz = uz0.to(tl.int32)
        fx, fy, fz = ux - ux0, uy - uy0, uz - uz0
        # bit 2a: the lower corner on axis a lies in the grid; bit 2a + 1: the upper one
        inside = (
            ((ix >= 0) & (ix < NX)).to(tl.int32)
            + ((ix >= -1) & (ix < NX - 1)).to(tl.int32) * 2
            + ((iy >= 0) & (iy < NY)).to(tl.int32) * 4
            + ((iy >= -1) & (iy < NY - 1)).to(tl.int32) * 8
            + ((iz >= 0) & (iz < NZ)).to(tl.int32) * 16
            + ((iz >= -1) & (iz < NZ - 1)).to(tl.int32) * 32
        )
    else:
        ux = tl.minimum(tl.maximum(ux, 0.0), NX - 1.0)
        uy = tl.minimum(tl.maximum(uy, 0.0), NY - 1.0)
        uz = tl.minimum(tl.maximum(uz, 0.0), NZ - 1.0)
        ix = tl.minimum(ux.to(tl.int32), NX - 1)
        iy = tl.minimum(uy.to(tl.int32), NY - 1)
        iz = tl.minimum(uz.to(tl.int32), NZ - 1)
        fx, fy, fz = ux - ix.to(tl.float32), uy - iy.to(tl.float32), uz - iz.to(tl.float32)
        inside = tl.zeros_like(ix)  # unused: every corner is in the grid
    base = (ix * NY + iy) * NZ + iz
    sx = tl.where(ix < NX - 1, NY * NZ, 0)
    sy = tl.where(iy < NY - 1, NZ, 0)
    sz = tl.where(iz < NZ - 1, 1, 0)
    return base, sx, sy, sz, fx, fy, fz, inside


@triton.jit
def _corner_offset(j: tl.constexpr, base, sx, sy, sz):
    """Flat index of corner j, offset (j >> 2 & 1, j >> 1 & 1, j & 1) from the base corner."""
    bx: tl.constexpr = (j >> 2) & 1
    by: tl.constexpr = (j >> 1) & 1
    bz: tl.constexpr = j & 1
    return base + sx * bx + sy * by + sz * bz


@triton.jit
def _corner(j: tl.constexpr, base, sx, sy, sz, fx, fy, fz):
    """Flat index and trilinear weight of corner j, offset (j >> 2 & 1, j >> 1 & 1, j & 1)."""
    bx: tl.constexpr = (j >> 2) & 1
    by: tl.constexpr = (j >> 1) & 1
    bz: tl.constexpr = j & 1
    wx = fx * bx + (1.0 - fx) * (1 - bx)
    wy = fy * by + (1.0 - fy) * (1 - by)
    wz = fz * bz + (1.0 - fz) * (1 - bz)
    return _corner_offset(j, base, sx, sy, sz), wx * wy * wz


@triton.jit
def _inside(j: tl.constexpr, inside):
    """Whether corner j lies in the grid, from `_corner_frame`'s bits."""
    bx: tl.constexpr = (j >> 2) & 1
    by: tl.constexpr = (j >> 1) & 1
    bz: tl.constexpr = j & 1
    return ((inside >> bx) & (inside >> (2 + by)) & (inside >> (4 + bz)) & 1) != 0


@triton.jit
def _metric_position(k, t_near, ox, oy, oz, dx, dy, dz, step):
    """Sample k of the metric convention: t_near + (k + 1/2) step along the ray; (q, x = t)."""
    t = t_near + (k + 0.5) * step
    return ox + t * dx, oy + t * dy, oz + t * dz, t


@triton.jit
def _reference_position(
    k, ox, oy, oz, dx, dy, dz, px, py, pz, travelled, t_ptr, background, merge, depth_scale
):
    """Candidate sample k of the reference convention (origins in units of R around the sphere's centre):
    its point q pulled into the background shell beyond the unit sphere, depth coordinate x = R t / (1 + t),
    whether it is kept (inside the sphere, or the crowding test's running distance since the last kept
    candidate, from the previous candidate p, passed `merge`), and that running distance."""
    t = tl.load(t_ptr + k)
    qx = ox + t * dx
    qy = oy + t * dy
    qz = oz + t * dz
    norm = tl.sqrt(qx * qx + qy * qy + qz * qz)
    inner = norm <= 1.0
    pull = tl.where(inner, 1.0, ((1.0 + background) - background / norm) / norm)
    qx = qx * pull
    qy = qy * pull
    qz = qz * pull
    hop = tl.sqrt((qx - px) * (qx - px) + (qy - py) * (qy - py) + (qz - pz) * (qz - pz))
    travelled = travelled + tl.where(k > 0, hop, 0.0)
    over = travelled > merge
    travelled = tl.where(over, 0.0, travelled)
    return qx, qy, qz, depth_scale * t / (1.0 + t), inner | over, travelled


@triton.jit
def _position(k, n, trans, stop, t_near, ox, oy, oz, dx, dy, dz, step, px, py, pz, travelled, t_ptr,
              background, merge, depth_scale, REFERENCE: tl.constexpr):  # fmt: skip
    """Sample k of the convention (q, depth coordinate x), whether it is live (exists, kept, and the ray has
    not stopped), and the reference's running distance since its last kept candidate (p: candidate k - 1)."""
    live = (k < n) & (trans >= stop)
    if REFERENCE:
        qx, qy, qz, x, kept, travelled = _reference_position(
            k, ox, oy, oz, dx, dy, dz, px, py, pz, travelled, t_ptr, background, merge, depth_scale
        )
        live = live & kept
    else:
        qx, qy, qz, x = _metric_position(k, t_near, ox, oy, oz, dx, dy, dz, step)
    return qx, qy, qz, x, live, travelled


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
def _sample(live, qx, qy, qz, trans, density_b, orx, ory, orz, scx, scy, scz, interval, shift, thr,
            NX, NY, NZ, ZERO_OUTSIDE: tl.constexpr):  # fmt: skip
    """A sample at q of every live ray: interpolation corners, density, optical thickness and kept weight."""
    base, sx, sy, sz, fx, fy, fz, inside = _corner_frame(
        qx, qy, qz, orx, ory, orz, scx, scy, scz, NX, NY, NZ, ZERO_OUTSIDE
    )
    dens = tl.zeros_like(qx)
    for j in tl.static_range(8):
        off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
        mask = live
        if ZERO_OUTSIDE:
            mask = mask & _inside(j, inside)
        dens += wj * tl.load(density_b + off, mask=mask, other=0.0)
    tau = _softplus(dens + shift) * interval
    alpha = _one_minus_exp_neg(tau)
    keep_a = live & (alpha >= thr) & (alpha > 0.0)
    tau = tl.where(keep_a, tau, 0.0)
    w = trans * tl.where(keep_a, alpha, 0.0)
    keep_w = keep_a & (w >= thr)
    w = tl.where(keep_w, w, 0.0)
    return base, sx, sy, sz, fx, fy, fz, inside, dens, tau, w, keep_a, keep_w


@triton.jit
def _flush_run(acc_d, acc_s, d_mask, s_mask, base, sx, sy, sz, inside, grad_density_b, grad_semantics_b, C,
               cols, ZERO_OUTSIDE: tl.constexpr):  # fmt: skip
    """The atomic adds of a run's gradient sums (tuples of 8 tiles: density, replicated along the channels,
    and semantic rows) at the eight corners of its cell, for the rows and lanes of d_mask (density: one
    lane per ray) and s_mask (semantics) and, ZERO_OUTSIDE, the corners in the grid."""
    for j in tl.static_range(8):
        off = _corner_offset(j, base, sx, sy, sz)
        dm = d_mask
        sm = s_mask
        if ZERO_OUTSIDE:
            corner_in = _inside(j, inside)
            dm = dm & corner_in
            sm = sm & corner_in
        tl.atomic_add(grad_density_b + off, acc_d[j], mask=dm, sem="relaxed")
        tl.atomic_add(grad_semantics_b + off * C + cols, acc_s[j], mask=sm, sem="relaxed")


@triton.jit
def render_fwd_kernel(
    density_ptr, semantics_ptr, rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, t_ptr,
    depth_ptr, sem_out_ptr, opacity_ptr, pairs_ptr, squares_ptr, count_ptr,
    R, C, NX, NY, NZ, orx, ory, orz, scx, scy, scz, step, interval, shift, thr, stop,
    background, merge, depth_scale,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, REFERENCE: tl.constexpr,
):  # fmt: skip
    """Forward: per ray of a block, sum w x, sum w logits [C], sum w, sum_ij w_i w_j |x_i - x_j|, sum w^2
    and the number of kept samples."""
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
    wx_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    ww_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    pair_sum = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    sem_acc = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    count = tl.zeros([BLOCK_R, BLOCK_C], tl.int32)
    # the reference's crowding test: the previous candidate and the distance since the last kept one
    px, py, pz, travelled = ox, oy, oz, tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    n_max = tl.max(tl.max(n, 1), 0)
    k = 0
    go = n_max > 0
    while go:
        qx, qy, qz, x, live, travelled = _position(
            k, n, trans, stop, t_near, ox, oy, oz, dx, dy, dz, step, px, py, pz, travelled, t_ptr,
            background, merge, depth_scale, REFERENCE,
        )  # fmt: skip
        if REFERENCE:  # the crowding test's previous candidate (the metric kernel carries none)
            px, py, pz = qx, qy, qz
        base, sx, sy, sz, fx, fy, fz, inside, dens, tau, w, keep_a, keep_w = _sample(
            live, qx, qy, qz, trans, density_b, orx, ory, orz, scx, scy, scz, interval, shift, thr,
            NX, NY, NZ, REFERENCE,
        )  # fmt: skip
        pair_sum += w * (x * w_sum - wx_sum)
        w_sum += w
        wx_sum += w * x
        ww_sum += w * w
        count += keep_w.to(tl.int32)
        trans = trans * tl.exp(-tau)
        sem_mask = keep_w & col_ok
        for j in tl.static_range(8):
            off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
            mask = sem_mask
            if REFERENCE:
                mask = mask & _inside(j, inside)
            logits = tl.load(semantics_b + off * C + cols, mask=mask, other=0.0)
            sem_acc += (w * wj) * logits
        k += 1
        go = (k < n_max) & _any((k < n) & (trans >= stop))

    scalar_mask = in_range & first
    tl.store(depth_ptr + ray, wx_sum, mask=scalar_mask)
    tl.store(opacity_ptr + ray, w_sum, mask=scalar_mask)
    tl.store(pairs_ptr + ray, 2.0 * pair_sum, mask=scalar_mask)
    tl.store(squares_ptr + ray, ww_sum, mask=scalar_mask)
    tl.store(count_ptr + ray, count, mask=scalar_mask)
    tl.store(sem_out_ptr + ray * C + cols, sem_acc, mask=in_range & col_ok)


@triton.jit
def render_bwd_kernel(
    density_ptr, semantics_ptr, rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, t_ptr,
    depth_ptr, sem_out_ptr, opacity_ptr, pairs_ptr, squares_ptr,
    g_depth_ptr, g_sem_ptr, g_opacity_ptr, g_pairs_ptr, g_squares_ptr,
    grad_density_ptr, grad_semantics_ptr,
    R, C, NX, NY, NZ, orx, ory, orz, scx, scy, scz, step, interval, shift, thr, stop,
    background, merge, depth_scale,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, REFERENCE: tl.constexpr, MERGE: tl.constexpr,
):  # fmt: skip
    """Backward: replay the samples in order and scatter dL/d(density, semantics) into the grids.

    MERGE: run-length merged atomics. Consecutive kept samples of a ray often read the same interpolation
    cell (0.2 m steps through 0.4 m voxels), whose eight corners are the same addresses: their gradients
    are summed in registers over the run (8 density sums, 8 semantic rows) and added to the grids once,
    when a kept sample (keep_a) of the row lands in another cell, and after the loop. A cell is its base
    index and strides (and, REFERENCE, which corners lie in the grid): equal keys mean the same eight
    masked addresses, so the merge is exact up to float32 summation order. Dropped samples neither end a
    run nor add to it (their terms are selected away, not multiplied by 0, so nothing non-finite leaks in).
    """
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
    g_pairs = tl.load(g_pairs_ptr + ray, mask=in_range, other=0.0)
    g_squares = tl.load(g_squares_ptr + ray, mask=in_range, other=0.0)
    g_sem = tl.load(g_sem_ptr + ray * C + cols, mask=row_ok, other=0.0)
    w_total = tl.load(opacity_ptr + ray, mask=in_range, other=0.0)
    wx_total = tl.load(depth_ptr + ray, mask=in_range, other=0.0)
    sem_total = tl.load(sem_out_ptr + ray * C + cols, mask=row_ok, other=0.0)
    # sum_i w_i dL/dw_i; the pair sum and the squares are quadratic in the weights: their terms are 2x
    total = (
        g_depth * wx_total
        + g_opacity * w_total
        + tl.sum(g_sem * sem_total, 1, keep_dims=True)
        + 2.0 * g_pairs * tl.load(pairs_ptr + ray, mask=in_range, other=0.0)
        + 2.0 * g_squares * tl.load(squares_ptr + ray, mask=in_range, other=0.0)
    )

    trans = tl.full([BLOCK_R, BLOCK_C], 1.0, tl.float32)
    w_before = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    wx_before = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    gw_prefix = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    px, py, pz, travelled = ox, oy, oz, tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    # MERGE: the current run's cell (run_sx = -1: no run yet; strides are >= 0), whether a kept weight
    # (keep_w) is in it, and its gradient sums per corner
    zero_i = tl.zeros([BLOCK_R, BLOCK_C], tl.int32)
    run_base, run_sx, run_sy, run_sz, run_in = zero_i, zero_i - 1, zero_i, zero_i, zero_i
    run_sem = zero_i != 0
    zero = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    acc_d = (zero, zero, zero, zero, zero, zero, zero, zero)
    acc_s = (zero, zero, zero, zero, zero, zero, zero, zero)
    n_max = tl.max(tl.max(n, 1), 0)
    k = 0
    go = n_max > 0
    while go:
        qx, qy, qz, x, live, travelled = _position(
            k, n, trans, stop, t_near, ox, oy, oz, dx, dy, dz, step, px, py, pz, travelled, t_ptr,
            background, merge, depth_scale, REFERENCE,
        )  # fmt: skip
        if REFERENCE:  # the crowding test's previous candidate (the metric kernel carries none)
            px, py, pz = qx, qy, qz
        base, sx, sy, sz, fx, fy, fz, inside, dens, tau, w, keep_a, keep_w = _sample(
            live, qx, qy, qz, trans, density_b, orx, ory, orz, scx, scy, scz, interval, shift, thr,
            NX, NY, NZ, REFERENCE,
        )  # fmt: skip
        sem_mask = keep_w & col_ok
        logits = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
        for j in tl.static_range(8):
            off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
            mask = sem_mask
            if REFERENCE:
                mask = mask & _inside(j, inside)
            logits += wj * tl.load(semantics_b + off * C + cols, mask=mask, other=0.0)
        # dL/dw_k: depth, opacity, logits . dL/dsemantics, the pair sum's
        # d/dw_k sum_ij w_i w_j |x_i - x_j| = 2 sum_j w_j |x_k - x_j| = 2 (x_k (2 W_<k - W) + S - 2 S_<k)
        # (W, S: sums of w and w x), and the squares' 2 w_k
        g_w = (
            g_depth * x
            + g_opacity
            + tl.sum(logits * g_sem, 1, keep_dims=True)
            + g_pairs * 2.0 * (x * (2.0 * w_before - w_total) + wx_total - 2.0 * wx_before)
            + g_squares * 2.0 * w
        )
        gw_prefix += g_w * w
        trans_next = trans * tl.exp(-tau)
        g_tau = tl.where(keep_w, g_w * trans_next, 0.0) - (total - gw_prefix)
        # tau = softplus(density + shift) * interval and softplus' = sigmoid
        g_dens = tl.where(keep_a, g_tau * interval / (1.0 + tl.exp(-(dens + shift))), 0.0)
        if MERGE:
            # a kept sample in another cell than its row's run ends that run
            moved = (base != run_base) | (sx != run_sx) | (sy != run_sy) | (sz != run_sz)
            if REFERENCE:
                moved = moved | (inside != run_in)
            moved = moved & keep_a
            ended = moved & (run_sx >= 0)
            # Flush under a branch on "any row ends a run" rather than issuing 16 predicated-off atomics
            # (and their addresses) every sample: with one ray per program the branch is uniform and costs
            # one warp reduction (a redux.sync), and it is skipped on the ~40% of kept samples that stay in
            # their run's cell (1.7 per run on benchmarks/render.py's rays, --count-runs) and on every
            # sample the skip threshold drops.
            if _any(ended):
                _flush_run(acc_d, acc_s, ended & first, ended & run_sem & col_ok, run_base, run_sx, run_sy,
                           run_sz, run_in, grad_density_b, grad_semantics_b, C, cols, REFERENCE)  # fmt: skip
            run_base = tl.where(moved, base, run_base)
            run_sx = tl.where(moved, sx, run_sx)
            run_sy = tl.where(moved, sy, run_sy)
            run_sz = tl.where(moved, sz, run_sz)
            run_in = tl.where(moved, inside, run_in)
            run_sem = (run_sem & ~moved) | keep_w
            new_d = ()
            new_s = ()
            for j in tl.static_range(8):
                _, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
                d = tl.where(keep_a, wj * g_dens, 0.0)
                s = tl.where(sem_mask, (w * wj) * g_sem, 0.0)
                new_d = new_d + (tl.where(moved, d, acc_d[j] + d),)
                new_s = new_s + (tl.where(moved, s, acc_s[j] + s),)
            acc_d = new_d
            acc_s = new_s
        else:
            density_mask = keep_a & first  # one lane per ray adds the density gradient
            for j in tl.static_range(8):
                off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
                d_mask = density_mask
                s_mask = sem_mask
                if REFERENCE:
                    corner_in = _inside(j, inside)
                    d_mask = d_mask & corner_in
                    s_mask = s_mask & corner_in
                tl.atomic_add(grad_density_b + off, wj * g_dens, mask=d_mask, sem="relaxed")
                tl.atomic_add(grad_semantics_b + off * C + cols, (w * wj) * g_sem, mask=s_mask, sem="relaxed")
        w_before += w
        wx_before += w * x
        trans = trans_next
        k += 1
        go = (k < n_max) & _any((k < n) & (trans >= stop))
    if MERGE:  # the runs still open
        started = run_sx >= 0
        _flush_run(acc_d, acc_s, started & first, started & run_sem & col_ok, run_base, run_sx, run_sy,
                   run_sz, run_in, grad_density_b, grad_semantics_b, C, cols, REFERENCE)  # fmt: skip
