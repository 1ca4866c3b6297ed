"""Triton kernels of the fused renderer: one program per ray, its samples taken S at a time, one per lane.

A program renders one ray (one warp by default). Each step of its loop takes the next S samples, one per
lane: it reads the density at all of them at once, then the transmittance in front of each from the running
transmittance and an exclusive prefix sum of the step's optical thicknesses, then the kept weights. Only then
does it read logits, sample by sample over the kept ones whose weight reaches `sem_thr`
(`render.semantic_threshold`, 0 by default), a lane per semantic channel (eight rows of C logits each, all
in flight together). A walk of one sample per step waits on memory twice per sample (density, then logits),
and most of a ray's samples lie in free space where no logit is needed; here a ray waits about once per S
samples and once per sample whose logits it reads. Nothing per sample is written to global memory, and
a ray stops once its transmittance falls below `stop` (for the metric convention the skip threshold unless
`render.stop_transmittance` sets it higher: past it every weight would be skipped anyway, so stopping there
is exact; 1e-3 for the reference's). Samples past the stop in the last step are read and masked.

The backward pass replays the steps in the same order. With g_i = dL/dw_i (known per sample from the
output gradients and prefix sums), dL/dtau_k = g_k T_(k+1) - sum_(i>k) g_i w_i, and the suffix sum is
total - prefix, where total = sum_i g_i w_i comes from the forward outputs (for the distortion's pair sum
P and the sum of squares Q, sum_i w_i dP/dw_i = 2 P since P is quadratic in w, and so for Q). Gradients
reach the grids by atomic adds at the eight interpolation corners: the density's one lane per sample, the
logits' one row per kept sample.

MERGE_LOGITS and MERGE_DENSITY (constexprs, metric convention only) read and scatter per interpolation cell
instead of per sample: at half a voxel per step a level ray takes about 1.7 samples in each cell it crosses,
all with the same eight corners. Under MERGE_LOGITS a step's samples whose logits count are taken a cell at
a time: its eight rows are read once, with the samples' summed corner weights (in the backward, each
sample's logits . dL/dsemantics from the rows' dots and its own corner weights), and added to once. Under
MERGE_DENSITY the backward's density corner adds are summed over each run of lanes in one cell (a segmented
scan) and issued by the run's last lane. The same sums, in another order, in about as many registers (on
sm_90, forward / backward: per sample 62 / 91; density 62 / 92; logits 64 / 95; both 64 / 96). The two are
apart because together they cost more than per sample on a trained network's field at a semantic threshold
of 1e-4 and less at 1e-3: the logits' merge costs lane reductions per cell it reads, the density's a scan
per corner per step, so which one pays is measured (benchmarks/render.py --merge-cells).

Both rendering conventions (`render.conventions`) run through the same kernels; REFERENCE (a constexpr)
selects where the samples lie (`_metric_position` or `_reference_positions`), how the grids are read
(clamp-to-edge or zero outside, `_corner_frame`) and the depth coordinate x (metres, or R t / (1 + t)).
The reference's crowding test keeps a candidate by the distance travelled since the last kept one, a
sequential rule: a step walks its lanes' hops as scalars (`_reference_positions`), a few reductions
against the memory wait per candidate of a walk of one candidate per step. The rest takes launch
arguments: `interval` (tau = softplus(density + shift) * interval), `stop` (the transmittance a ray stops
at). The kernels return the raw sums over the ray's kept samples: sum w x, sum w logits, sum w, the
distortion's pair sum sum_ij w_i w_j |x_i - x_j|, sum w^2 and the kept count; `conventions.render_output`
turns them into the convention's depth and distortion.
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
def _corner_offset(j, base, sx, sy, sz):
    """Flat index of corner j, offset (j >> 2 & 1, j >> 1 & 1, j & 1) from the base corner."""
    bx = (j >> 2) & 1
    by = (j >> 1) & 1
    bz = j & 1
    return base + sx * bx + sy * by + sz * bz


@triton.jit
def _corner(j, base, sx, sy, sz, fx, fy, fz):
    """Flat index and trilinear weight of corner j, offset (j >> 2 & 1, j >> 1 & 1, j & 1)."""
    bx = (j >> 2) & 1
    by = (j >> 1) & 1
    bz = j & 1
    wx = fx * bx + (1.0 - fx) * (1 - bx)
    wy = fy * by + (1.0 - fy) * (1 - by)
    wz = fz * bz + (1.0 - fz) * (1 - bz)
    return _corner_offset(j, base, sx, sy, sz), wx * wy * wz


@triton.jit
def _inside(j, inside):
    """Whether corner j lies in the grid, from `_corner_frame`'s bits."""
    bx = (j >> 2) & 1
    by = (j >> 1) & 1
    bz = j & 1
    return ((inside >> bx) & (inside >> (2 + by)) & (inside >> (4 + bz)) & 1) != 0


@triton.jit
def _metric_position(k, t_near, ox, oy, oz, dx, dy, dz, step):
    """Sample k of the metric convention: t_near + (k + 1/2) step along the ray; (q, x = t)."""
    t = t_near + (k + 0.5) * step
    return ox + t * dx, oy + t * dy, oz + t * dz, t


@triton.jit
def _pulled(k, n, ox, oy, oz, dx, dy, dz, t_ptr, background):
    """Candidates k [S] of the reference convention (origins in units of R around the sphere's centre, 0 <=
    k < n; others read t = 0): t, the point q pulled into the background shell beyond the unit sphere, and
    whether it lies inside the sphere."""
    t = tl.load(t_ptr + k, mask=(k >= 0) & (k < n), other=0.0)
    qx = ox + t * dx
    qy = oy + t * dy
    qz = oz + t * dz
    norm = tl.sqrt(qx * qx + qy * qy + qz * qz)
    inner = norm <= 1.0
    pull = tl.where(inner, 1.0, ((1.0 + background) - background / norm) / norm)
    return t, qx * pull, qy * pull, qz * pull, inner


@triton.jit
def _reference_positions(k, n, lanes, ox, oy, oz, dx, dy, dz, travelled, t_ptr, background, merge,
                         depth_scale, S: tl.constexpr):  # fmt: skip
    """Candidates k [S] of the reference convention, one per lane, for a ray whose crowding test enters them
    with `travelled` (the distance since the last kept candidate): their pulled points q, depth coordinate
    x = R t / (1 + t), which are kept (inside the sphere, or where the running distance passes `merge`), and
    the running distance after the last lane.

    The test is a sum that restarts, sequential by nature, but cheap: the lanes' hops (from the candidate
    before, recomputed) are taken in order as scalars, in the order and float arithmetic of a one-candidate
    walk, so the same candidates are kept. Where every hop exceeds `merge` (inside the sphere, samples
    2/391 R apart against 0.95 of a step) every candidate passes it and the sum ends at 0 without the walk."""
    t, qx, qy, qz, inner = _pulled(k, n, ox, oy, oz, dx, dy, dz, t_ptr, background)
    _, rx, ry, rz, _ = _pulled(k - 1, n, ox, oy, oz, dx, dy, dz, t_ptr, background)
    hop = tl.where(k > 0, tl.sqrt((qx - rx) * (qx - rx) + (qy - ry) * (qy - ry) + (qz - rz) * (qz - rz)), 0.0)
    over = hop > merge
    if tl.sum(((k > 0) & (k < n) & ~over).to(tl.int32)) > 0:
        passes = tl.zeros_like(lanes)
        for i in range(S):
            travelled = travelled + _pick(hop, lanes, i)
            passed = travelled > merge
            travelled = tl.where(passed, 0.0, travelled)
            passes = tl.where(lanes == i, passed.to(tl.int32), passes)
        over = passes != 0
    else:
        travelled = 0.0
    return qx, qy, qz, depth_scale * t / (1.0 + t), inner | over, travelled


@triton.jit
def _ray(rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, R):
    """This program's ray (scalars): flat index into [B, R], origin, direction, t_near and sample count."""
    ray = tl.program_id(1) * R + tl.program_id(0)
    ox = tl.load(rays_o_ptr + ray * 3)
    oy = tl.load(rays_o_ptr + ray * 3 + 1)
    oz = tl.load(rays_o_ptr + ray * 3 + 2)
    dx = tl.load(rays_d_ptr + ray * 3)
    dy = tl.load(rays_d_ptr + ray * 3 + 1)
    dz = tl.load(rays_d_ptr + ray * 3 + 2)
    return ray, ox, oy, oz, dx, dy, dz, tl.load(t_near_ptr + ray), tl.load(num_samples_ptr + ray)


@triton.jit
def _chunk(k, lanes, n, trans_in, stop, t_near, ox, oy, oz, dx, dy, dz, step, travelled, t_ptr, background,
           merge, depth_scale, density_b, orx, ory, orz, scx, scy, scz, interval, shift, thr, NX, NY, NZ,
           S: tl.constexpr, REFERENCE: tl.constexpr):  # fmt: skip
    """Samples k [S] (one per lane) of a ray that enters them with transmittance trans_in: their
    interpolation corners, depth coordinate x, density, transmittance in front, optical thickness and weight
    (0 where not kept), which are opaque enough to count (keep_a) and which keep their weight (keep_w); and
    the reference's crowding-test state after them (the distance since the last kept candidate)."""
    valid = k < n
    if REFERENCE:
        qx, qy, qz, x, kept, travelled = _reference_positions(
            k, n, lanes, ox, oy, oz, dx, dy, dz, travelled, t_ptr, background, merge, depth_scale, S
        )
        valid = valid & kept
    else:
        qx, qy, qz, x = _metric_position(k, t_near, ox, oy, oz, dx, dy, dz, step)
    base, sx, sy, sz, fx, fy, fz, inside = _corner_frame(
        qx, qy, qz, orx, ory, orz, scx, scy, scz, NX, NY, NZ, REFERENCE
    )
    dens = tl.zeros_like(qx)
    for j in tl.static_range(8):
        off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
        mask = valid
        if REFERENCE:
            mask = mask & _inside(j, inside)
        dens += wj * tl.load(density_b + off, mask=mask, other=0.0)
    tau = _softplus(dens + shift) * interval
    alpha = _one_minus_exp_neg(tau)
    opaque = valid & (alpha >= thr) & (alpha > 0.0)
    tau = tl.where(opaque, tau, 0.0)
    # transmittance in front of each sample; a sample behind the stop is dropped, and so is every one after it
    trans = trans_in * tl.exp(tau - tl.cumsum(tau, 0))
    keep_a = opaque & (trans >= stop)
    tau = tl.where(keep_a, tau, 0.0)
    w = tl.where(keep_a, trans * alpha, 0.0)
    keep_w = keep_a & (w >= thr)
    w = tl.where(keep_w, w, 0.0)
    return base, sx, sy, sz, fx, fy, fz, inside, x, dens, trans, tau, w, keep_a, keep_w, travelled


@triton.jit
def _exclusive(v, carry):
    """carry + the sum of the elements of v [S] before each one."""
    return carry + tl.cumsum(v, 0) - v


@triton.jit
def _pick(v, lanes, i):
    """Element i of the per-sample vector v, as a scalar."""
    return tl.sum(tl.where(lanes == i, v, tl.zeros_like(v)))


@triton.jit
def _pick_sample(i, lanes, w, base, sx, sy, sz, fx, fy, fz):
    """Sample i's weight and interpolation corners (see `_corner_frame`), as scalars."""
    return (
        _pick(w, lanes, i),
        _pick(base, lanes, i),
        _pick(sx, lanes, i),
        _pick(sy, lanes, i),
        _pick(sz, lanes, i),
        _pick(fx, lanes, i),
        _pick(fy, lanes, i),
        _pick(fz, lanes, i),
    )


@triton.jit
def _first(todo, lanes, S: tl.constexpr):
    """The lowest lane where todo holds, or S."""
    return tl.min(tl.where(todo, lanes, S))


@triton.jit
def _corner_row(
    j, base_i, sx_i, sy_i, sz_i, fx_i, fy_i, fz_i, in_i, chans, chan_ok, C, REFERENCE: tl.constexpr
):
    """One sample's corner j (scalars, see `_corner_frame`): the offsets [BLOCK_C] of its logits row, its
    trilinear weight and the channels to read (none for a corner outside the grid under REFERENCE)."""
    off, wj = _corner(j, base_i, sx_i, sy_i, sz_i, fx_i, fy_i, fz_i)
    mask = chan_ok
    if REFERENCE:
        mask = mask & _inside(j, in_i)
    return off * C + chans, wj, mask


@triton.jit
def _semantics_per_sample(todo, lanes, w, base, sx, sy, sz, fx, fy, fz, inside, semantics_b, C, chans,
                          chan_ok, S: tl.constexpr, REFERENCE: tl.constexpr):  # fmt: skip
    """sum_i w_i logits_i [BLOCK_C] over this step's samples in todo, one sample at a time."""
    sem = tl.zeros(chans.shape, tl.float32)
    i = _first(todo, lanes, S)
    while i < S:
        w_i, base_i, sx_i, sy_i, sz_i, fx_i, fy_i, fz_i = _pick_sample(
            i, lanes, w, base, sx, sy, sz, fx, fy, fz
        )
        in_i = _pick(inside, lanes, i)
        for j in tl.static_range(8):
            row, wj_i, mask_i = _corner_row(
                j, base_i, sx_i, sy_i, sz_i, fx_i, fy_i, fz_i, in_i, chans, chan_ok, C, REFERENCE
            )
            sem += (w_i * wj_i) * tl.load(semantics_b + row, mask=mask_i, other=0.0)
        todo = todo & (lanes != i)
        i = _first(todo, lanes, S)
    return sem


@triton.jit
def _semantics_per_sample_bwd(todo, lanes, w, base, sx, sy, sz, fx, fy, fz, inside, semantics_b,
                              grad_semantics_b, C, chans, chan_ok, g_sem, S: tl.constexpr,
                              REFERENCE: tl.constexpr):  # fmt: skip
    """Per sample of todo, logits . dL/dsemantics [S] (0 elsewhere); and dL/dlogits = w dL/dsemantics at
    its corners, one sample at a time."""
    sem_dot = tl.zeros(lanes.shape, tl.float32)
    i = _first(todo, lanes, S)
    while i < S:
        w_i, base_i, sx_i, sy_i, sz_i, fx_i, fy_i, fz_i = _pick_sample(
            i, lanes, w, base, sx, sy, sz, fx, fy, fz
        )
        in_i = _pick(inside, lanes, i)
        logits = tl.zeros(chans.shape, tl.float32)
        for j in tl.static_range(8):
            row, wj_i, mask_i = _corner_row(
                j, base_i, sx_i, sy_i, sz_i, fx_i, fy_i, fz_i, in_i, chans, chan_ok, C, REFERENCE
            )
            logits += wj_i * tl.load(semantics_b + row, mask=mask_i, other=0.0)
            tl.atomic_add(grad_semantics_b + row, (w_i * wj_i) * g_sem, mask=mask_i, sem="relaxed")
        sem_dot = tl.where(lanes == i, tl.sum(logits * g_sem), sem_dot)
        todo = todo & (lanes != i)
        i = _first(todo, lanes, S)
    return sem_dot


@triton.jit
def _next_cell(todo, lanes, base, sx, sy, sz, S: tl.constexpr):
    """The lowest lane of todo (S if none) and its cell: the samples of todo in it [S], its base index and
    corner strides (scalars)."""
    i = _first(todo, lanes, S)
    base_i = _pick(base, lanes, i)
    return i, todo & (base == base_i), base_i, _pick(sx, lanes, i), _pick(sy, lanes, i), _pick(sz, lanes, i)


@triton.jit
def _semantics_per_cell(todo, lanes, w, base, sx, sy, sz, fx, fy, fz, semantics_b, C, chans, chan_ok,
                        S: tl.constexpr):  # fmt: skip
    """sum_i w_i logits_i [BLOCK_C] over this step's samples in todo, each cell's rows read once with its
    samples' summed corner weights."""
    sem = tl.zeros(chans.shape, tl.float32)
    i, cell, base_c, sx_c, sy_c, sz_c = _next_cell(todo, lanes, base, sx, sy, sz, S)
    while i < S:
        for j in tl.static_range(8):
            wj = _corner(j, base, sx, sy, sz, fx, fy, fz)[1]
            row = _corner_offset(j, base_c, sx_c, sy_c, sz_c) * C + chans
            sem += tl.sum(tl.where(cell, w * wj, 0.0)) * tl.load(semantics_b + row, mask=chan_ok, other=0.0)
        todo = todo & ~cell
        i, cell, base_c, sx_c, sy_c, sz_c = _next_cell(todo, lanes, base, sx, sy, sz, S)
    return sem


@triton.jit
def _semantics_per_cell_bwd(todo, lanes, w, base, sx, sy, sz, fx, fy, fz, semantics_b, grad_semantics_b, C,
                            chans, chan_ok, g_sem, S: tl.constexpr):  # fmt: skip
    """Per sample of todo, logits . dL/dsemantics [S] (0 elsewhere), from each corner row's dot with
    dL/dsemantics, read once per cell; and dL/dlogits = (the cell's samples' summed weight at the corner)
    dL/dsemantics, added once per cell."""
    sem_dot = tl.zeros(lanes.shape, tl.float32)
    i, cell, base_c, sx_c, sy_c, sz_c = _next_cell(todo, lanes, base, sx, sy, sz, S)
    while i < S:
        for j in tl.static_range(8):
            wj = tl.where(cell, _corner(j, base, sx, sy, sz, fx, fy, fz)[1], 0.0)
            row = _corner_offset(j, base_c, sx_c, sy_c, sz_c) * C + chans
            sem_dot += wj * tl.sum(g_sem * tl.load(semantics_b + row, mask=chan_ok, other=0.0))
            tl.atomic_add(grad_semantics_b + row, tl.sum(w * wj) * g_sem, mask=chan_ok, sem="relaxed")
        todo = todo & ~cell
        i, cell, base_c, sx_c, sy_c, sz_c = _next_cell(todo, lanes, base, sx, sy, sz, S)
    return sem_dot


@triton.jit
def _segment_sum(a, a_start, b, b_start):
    """Combine of a segmented sum: b's value restarts the sum where b starts a segment."""
    return tl.where(b_start != 0, b, a + b), a_start | b_start


@triton.jit
def _cell_base(k, t_near, ox, oy, oz, dx, dy, dz, step, orx, ory, orz, scx, scy, scz, NX, NY, NZ):
    """Flat base index of the interpolation cell of metric sample k."""
    qx, qy, qz, _ = _metric_position(k, t_near, ox, oy, oz, dx, dy, dz, step)
    return _corner_frame(qx, qy, qz, orx, ory, orz, scx, scy, scz, NX, NY, NZ, False)[0]


@triton.jit
def _density_grad_per_cell(grad_density_b, g_dens, k, lanes, base, sx, sy, sz, fx, fy, fz, t_near, ox, oy, oz,
                           dx, dy, dz, step, orx, ory, orz, scx, scy, scz, NX, NY, NZ,
                           S: tl.constexpr):  # fmt: skip
    """Add g_dens [S] (metric samples k) to the density gradient at the corners, one add per corner and run
    of consecutive lanes in one cell. A lane's neighbours' cells come from their positions, which are
    arithmetic in k."""
    before = _cell_base(k - 1, t_near, ox, oy, oz, dx, dy, dz, step, orx, ory, orz, scx, scy, scz, NX, NY, NZ)
    after = _cell_base(k + 1, t_near, ox, oy, oz, dx, dy, dz, step, orx, ory, orz, scx, scy, scz, NX, NY, NZ)
    starts = ((lanes == 0) | (before != base)).to(tl.int32)
    ends = (lanes == S - 1) | (after != base)
    for j in tl.static_range(8):
        off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
        run, _ = tl.associative_scan((wj * g_dens, starts), 0, _segment_sum)
        tl.atomic_add(grad_density_b + off, run, mask=ends & (run != 0.0), sem="relaxed")


@triton.jit
def render_fwd_kernel(
    density_ptr, semantics_ptr, rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, t_ptr,
    depth_ptr, sem_out_ptr, opacity_ptr, pairs_ptr, squares_ptr, count_ptr,
    R, C, NX, NY, NZ, orx, ory, orz, scx, scy, scz, step, interval, shift, thr, stop, sem_thr,
    background, merge, depth_scale,
    S: tl.constexpr, BLOCK_C: tl.constexpr, REFERENCE: tl.constexpr, MERGE_LOGITS: tl.constexpr,
):  # fmt: skip
    """Forward: per ray, sum w x, sum w logits [C], sum w, sum_ij w_i w_j |x_i - x_j|, sum w^2 and the number
    of kept samples."""
    chans = tl.arange(0, BLOCK_C)
    chan_ok = chans < C
    lanes = tl.arange(0, S)
    ray, ox, oy, oz, dx, dy, dz, t_near, n = _ray(rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, R)
    voxels = NX * NY * NZ
    density_b = density_ptr + tl.program_id(1) * voxels
    semantics_b = semantics_ptr + tl.program_id(1) * voxels * C

    trans = 1.0
    w_sum = 0.0
    wx_sum = 0.0
    ww_sum = 0.0
    pair_sum = 0.0
    count = 0
    sem_acc = tl.zeros([BLOCK_C], tl.float32)
    travelled = 0.0  # the reference's crowding test: the distance since the last kept candidate
    k = 0
    go = n > 0
    while go:
        (base, sx, sy, sz, fx, fy, fz, inside, x, dens, trans_k, tau, w, keep_a, keep_w, travelled) = _chunk(
            k + lanes, lanes, n, trans, stop, t_near, ox, oy, oz, dx, dy, dz, step, travelled, t_ptr,
            background, merge, depth_scale, density_b, orx, ory, orz, scx, scy, scz, interval, shift, thr,
            NX, NY, NZ, S, REFERENCE,
        )  # fmt: skip
        wx = w * x
        pair_sum += tl.sum(w * (x * _exclusive(w, w_sum) - _exclusive(wx, wx_sum)))
        w_sum += tl.sum(w)
        wx_sum += tl.sum(wx)
        ww_sum += tl.sum(w * w)
        count += tl.sum(keep_w.to(tl.int32))
        trans = trans * tl.exp(-tl.sum(tau))
        # the logits of the kept samples that reach the semantic threshold
        todo = keep_w & (w >= sem_thr)
        if MERGE_LOGITS:
            sem_acc += _semantics_per_cell(
                todo, lanes, w, base, sx, sy, sz, fx, fy, fz, semantics_b, C, chans, chan_ok, S
            )
        else:
            sem_acc += _semantics_per_sample(
                todo, lanes, w, base, sx, sy, sz, fx, fy, fz, inside, semantics_b, C, chans, chan_ok, S,
                REFERENCE,
            )  # fmt: skip
        k += S
        go = (k < n) & (trans >= stop)

    tl.store(depth_ptr + ray, wx_sum)
    tl.store(opacity_ptr + ray, w_sum)
    tl.store(pairs_ptr + ray, 2.0 * pair_sum)
    tl.store(squares_ptr + ray, ww_sum)
    tl.store(count_ptr + ray, count)
    tl.store(sem_out_ptr + ray * C + chans, sem_acc, mask=chan_ok)


@triton.jit
def render_bwd_kernel(
    density_ptr, semantics_ptr, rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, t_ptr,
    depth_ptr, sem_out_ptr, opacity_ptr, pairs_ptr, squares_ptr,
    g_depth_ptr, g_sem_ptr, g_opacity_ptr, g_pairs_ptr, g_squares_ptr,
    grad_density_ptr, grad_semantics_ptr,
    R, C, NX, NY, NZ, orx, ory, orz, scx, scy, scz, step, interval, shift, thr, stop, sem_thr,
    background, merge, depth_scale,
    S: tl.constexpr, BLOCK_C: tl.constexpr, REFERENCE: tl.constexpr, MERGE_LOGITS: tl.constexpr,
    MERGE_DENSITY: tl.constexpr,
):  # fmt: skip
    """Backward: replay the steps in order and scatter dL/d(density, semantics) into the grids."""
    chans = tl.arange(0, BLOCK_C)
    chan_ok = chans < C
    lanes = tl.arange(0, S)
    ray, ox, oy, oz, dx, dy, dz, t_near, n = _ray(rays_o_ptr, rays_d_ptr, t_near_ptr, num_samples_ptr, R)
    voxels = NX * NY * NZ
    density_b = density_ptr + tl.program_id(1) * voxels
    semantics_b = semantics_ptr + tl.program_id(1) * voxels * C
    grad_density_b = grad_density_ptr + tl.program_id(1) * voxels
    grad_semantics_b = grad_semantics_ptr + tl.program_id(1) * voxels * C

    g_depth = tl.load(g_depth_ptr + ray)
    g_opacity = tl.load(g_opacity_ptr + ray)
    g_pairs = tl.load(g_pairs_ptr + ray)
    g_squares = tl.load(g_squares_ptr + ray)
    g_sem = tl.load(g_sem_ptr + ray * C + chans, mask=chan_ok, other=0.0)
    w_total = tl.load(opacity_ptr + ray)
    wx_total = tl.load(depth_ptr + ray)
    sem_total = tl.load(sem_out_ptr + ray * C + chans, mask=chan_ok, other=0.0)
    # sum_i w_i dL/dw_i; the pair sum and the squares are quadratic in the weights: their terms are 2x
    total = (
        g_depth * wx_total
        + g_opacity * w_total
        + tl.sum(g_sem * sem_total)
        + 2.0 * g_pairs * tl.load(pairs_ptr + ray)
        + 2.0 * g_squares * tl.load(squares_ptr + ray)
    )

    trans = 1.0
    w_before = 0.0
    wx_before = 0.0
    gw_before = 0.0
    travelled = 0.0
    k = 0
    go = n > 0
    while go:
        (base, sx, sy, sz, fx, fy, fz, inside, x, dens, trans_k, tau, w, keep_a, keep_w, travelled) = _chunk(
            k + lanes, lanes, n, trans, stop, t_near, ox, oy, oz, dx, dy, dz, step, travelled, t_ptr,
            background, merge, depth_scale, density_b, orx, ory, orz, scx, scy, scz, interval, shift, thr,
            NX, NY, NZ, S, REFERENCE,
        )  # fmt: skip
        # per sample whose logits count: logits . dL/dsemantics, and dL/dlogits = w dL/dsemantics at the
        # sample's corners
        todo = keep_w & (w >= sem_thr)
        if MERGE_LOGITS:
            sem_dot = _semantics_per_cell_bwd(
                todo, lanes, w, base, sx, sy, sz, fx, fy, fz, semantics_b, grad_semantics_b, C, chans,
                chan_ok, g_sem, S,
            )  # fmt: skip
        else:
            sem_dot = _semantics_per_sample_bwd(
                todo, lanes, w, base, sx, sy, sz, fx, fy, fz, inside, semantics_b, grad_semantics_b, C, chans,
                chan_ok, g_sem, S, REFERENCE,
            )  # fmt: skip
        # dL/dw_k: depth, opacity, logits . dL/dsemantics, the pair sum's
        # d/dw_k sum_ij w_i w_j |x_i - x_j| = 2 sum_j w_j |x_k - x_j| = 2 (x_k (2 W_<k - W) + S - 2 S_<k)
        # (W, S: sums of w and w x), and the squares' 2 w_k
        wx = w * x
        w_prefix = _exclusive(w, w_before)
        wx_prefix = _exclusive(wx, wx_before)
        g_w = (
            g_depth * x
            + g_opacity
            + sem_dot
            + g_pairs * 2.0 * (x * (2.0 * w_prefix - w_total) + wx_total - 2.0 * wx_prefix)
            + g_squares * 2.0 * w
        )
        gw = g_w * w
        # dL/dtau_k = g_k T_(k+1) - sum_(i>k) g_i w_i: the suffix is the total less the inclusive prefix
        g_tau = tl.where(keep_w, g_w * trans_k * tl.exp(-tau), 0.0) - (total - gw_before - tl.cumsum(gw, 0))
        # tau = softplus(density + shift) * interval and softplus' = sigmoid
        g_dens = tl.where(keep_a, g_tau * interval / (1.0 + tl.exp(-(dens + shift))), 0.0)
        if MERGE_DENSITY:
            _density_grad_per_cell(
                grad_density_b, g_dens, k + lanes, lanes, base, sx, sy, sz, fx, fy, fz, t_near, ox, oy, oz,
                dx, dy, dz, step, orx, ory, orz, scx, scy, scz, NX, NY, NZ, S,
            )  # fmt: skip
        else:
            for j in tl.static_range(8):
                off, wj = _corner(j, base, sx, sy, sz, fx, fy, fz)
                mask = keep_a
                if REFERENCE:
                    mask = mask & _inside(j, inside)
                tl.atomic_add(grad_density_b + off, wj * g_dens, mask=mask, sem="relaxed")
        w_before += tl.sum(w)
        wx_before += tl.sum(wx)
        gw_before += tl.sum(gw)
        trans = trans * tl.exp(-tl.sum(tau))
        k += S
        go = (k < n) & (trans >= stop)
