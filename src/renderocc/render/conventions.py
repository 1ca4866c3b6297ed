"""Rendering conventions: this project's metric one and the published release's, resolved for one grid.

A convention says where a ray's samples lie, how a sample reads the grids, what a density value means
and what "depth" is. `resolve` turns `render.convention` into the numbers both renderers (the PyTorch
reference and the fused kernels) consume, so the two cannot disagree.

"metric" (the default): samples every `step_size` metres through the ray's segment inside the grid box,
values at voxel centres lower + (i + 0.5) voxel_size with clamp-to-edge, optical depth
tau = softplus(density + shift) * step_size in metres (so softplus(density + shift) is the extinction per
metre), depth sum_i w_i t_i in metres, distortion in metres, a ray marched until its transmittance is
below the skip threshold (after which nothing it meets would count: the stop is exact).

"reference": the conventions of the published release (spec, "Exact conventions of the reference release"),
as its renderer computes them, written from their description:

- Units: tau = softplus(density + shift) * interval with interval = step_size / voxel_size (0.5): the
  step counted in voxels, not metres. Samples are 78/391 m apart, so the same density is 2.5x as opaque
  per metre as under "metric" (`extinction_per_metre`, `convert_density`).
- Samples: distances are counted in units of the sphere radius R = 39 m around the box centre c
  ((0, 0, 2.2) for Occ3D). N = floor(R / half_x * nx / (step_size / voxel_size)) + 1 = 391 "inner"
  samples at t_k = (k + 1/2) 2 / N (midpoints of N equal parts of [0, 2], out to 78 m), then N // 15 = 26
  "background" samples at the midpoints of 2 / linspace(1, 1/64, 27) (t from 2 to 128). A point p more
  than R from c is pulled into the shell between R and half_x = 40 m: q = c + R u / |u| ((1 + b) - b / |u|)
  with u = (p - c) / R and b = (half_x - R) / R = 1/39. A sample is kept if it lies inside the sphere, or
  once the distance between consecutive (pulled-in) samples, summed since the last kept one, exceeds
  0.95 of a step (0.19 m); the sum then restarts. So every sample inside the sphere counts, and beyond
  it the background shell gets a handful (the pulled-in points crowd together). The spec's summary
  ("kept inside the sphere, 26 background samples") is this rule before the crowding test; the release
  applies the test ("skip oversampled points"), and so does this module.
- Voxel centres: align_corners=True over the box, x_i = -40 + i * 80 / 199 (y alike), and z normalised
  by the x extent: its half height is R * z_extent / x_extent = 3.12 m, so layer k sits at
  z = -0.92 + 0.416 k. Density and logits read 0 outside (zero padding), not the border value.
- A ray stops once its transmittance is below 1e-3; samples with alpha or weight under the skip threshold
  are removed (low alphas do not attenuate; low weights attenuate but count nowhere).
- Depth: R * sum_i w_i s_i + R * 1e-7 with s = t / (1 + t) (t in units of R): not metric (20 m reads
  13.2 m). Distortion in s units: sum_ij w_i w_j |s_i - s_j| + sum_i w_i^2 / (3 N_b) with N_b the number
  of kept samples of the whole batch element (the release's "interval" 1 / n_samples).
- Rays whose label depth exceeds 52 m, or that have none, are not rendered (`render.losses`).

The release applies its BEV augmentation to the sample points (flips in x and y); the rays here are already
in the augmented frame. The sphere, the shell and the box are symmetric under those flips, so the samples
are the same. Its float32 alpha 1 - (1 + e^(density + shift))^(-interval) rounds small alphas to
multiples of 6e-8; here alpha is computed without that cancellation (same formula).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from renderocc.core.grid import VoxelGrid
from renderocc.render.output import RenderOutput

METRIC, REFERENCE = "metric", "reference"
# the render settings only the metric convention has (`resolve` refuses them under the reference's)
METRIC_ONLY = ("stop_transmittance", "semantic_threshold")
CONVENTIONS = (METRIC, REFERENCE)

# The published release's constants (its NerfHead): sphere radius, background samples per inner sample
# (N // 15), how far out they reach (1 / 64), the stop, the crowding test's fraction of a step, the ray cut.
REFERENCE_RADIUS = 39.0
REFERENCE_BACKGROUND_DIVISOR = 15
REFERENCE_BACKGROUND_REACH = 64.0
REFERENCE_STOP_TRANSMITTANCE = 1e-3
REFERENCE_MERGE_FRACTION = 0.95
REFERENCE_MAX_DEPTH = 52.0
REFERENCE_DEPTH_EPS = 1e-7  # added to sum_i w_i s_i before scaling by R


@dataclass(frozen=True)
class Convention:
    """A convention resolved for one grid and step: what `render_reference` and `render_fused` need.

    Interpolation: a sample point q (metres for "metric"; units of `radius` around `center`, pulled in,
    for "reference") sits at continuous voxel index u = (q - origin) * scale per axis; "metric" clamps u
    to [0, n - 1], "reference" reads 0 beyond (zero_outside).
    """

    name: str
    interval: float  # tau = softplus(density + shift) * interval
    stop_transmittance: float  # a ray stops once its transmittance is below this
    origin: tuple[float, float, float]
    scale: tuple[float, float, float]
    zero_outside: bool
    step_size: float  # metric: metres between samples
    semantic_threshold: float = 0.0  # a kept sample adds its logits only where its weight reaches this
    # reference only
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 1.0
    background: float = 0.0  # b: the shell reaches (1 + b) radii
    t: tuple[float, ...] = ()  # sample distances, units of radius
    merge_distance: float = 0.0  # crowding test, units of radius
    spacing: float = 0.0  # metres between inner samples

    @property
    def reference(self) -> bool:
        return self.name == REFERENCE


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"render.convention={convention!r}; use one of {CONVENTIONS}")


def resolve(
    convention: str,
    grid: VoxelGrid,
    step_size: float,
    skip_threshold: float,
    stop_transmittance: float | None = None,
    semantic_threshold: float | None = None,
) -> Convention:
    """The numbers of `convention` for `grid` and `step_size` (metres; the reference counts it in voxels).

    Metric only (the reference convention has its own stop, 1e-3, and renders every kept sample's logits):
    stop_transmittance (None: the skip threshold, past which every weight is skipped anyway, so stopping
    there changes nothing): a ray stops once its transmittance falls below it. semantic_threshold (None:
    every kept sample): a kept sample adds its logits to the rendered semantics only if its weight reaches
    it; depth, opacity and distortion keep every kept sample."""
    check_convention(convention)
    given = dict(zip(METRIC_ONLY, (stop_transmittance, semantic_threshold)))
    if convention == METRIC:
        for name, value in given.items():
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"render.{name}={value}: use a value in [0, 1), or null")
        stop = skip_threshold if stop_transmittance is None else stop_transmittance
        lower = tuple(lo + grid.voxel_size / 2 for lo in grid.lower)
        inv = 1.0 / grid.voxel_size
        return Convention(
            METRIC, step_size, stop, lower, (inv,) * 3, False, step_size, semantic_threshold or 0.0
        )
    for name, value in given.items():
        if value is not None:
            raise ValueError(
                f"render.{name}={value} is for the metric convention; the reference convention has its own "
                f"(it stops at transmittance {REFERENCE_STOP_TRANSMITTANCE} and renders every kept sample's "
                f"logits): set render.{name}=null"
            )
    return _reference(grid, step_size)


@functools.lru_cache(maxsize=16)
def _reference(grid: VoxelGrid, step_size: float) -> Convention:
    if min(grid.shape) < 2:
        raise ValueError(
            f"render.convention='reference' interpolates between voxel centres (align_corners=True) and "
            f"needs at least 2 voxels per axis; the grid is {grid.shape}"
        )
    extent = [hi - lo for lo, hi in zip(grid.lower, grid.upper)]
    center = tuple((lo + hi) / 2 for lo, hi in zip(grid.lower, grid.upper))
    radius = REFERENCE_RADIUS
    half_x = extent[0] / 2
    if not half_x > radius:
        raise ValueError(
            f"render.convention='reference' puts its background shell between {radius} m and the box's half "
            f"width; the grid's is {half_x} m"
        )
    background = (half_x - radius) / radius
    step_voxels = step_size / grid.voxel_size
    nx = grid.shape[0]
    # floor of 2 / (2 + 2 b) * nx / step_voxels = 390 for Occ3D, exactly 390 in exact arithmetic (and in the
    # release's float32); the epsilon keeps float64 round-off from making it 389
    inner = math.floor(radius / half_x * nx / step_voxels + 1e-6) + 1
    outer = inner // REFERENCE_BACKGROUND_DIVISOR
    t = [(k + 0.5) * 2.0 / inner for k in range(inner)]
    far = 1.0 / REFERENCE_BACKGROUND_REACH
    bounds = [2.0 / (1.0 + j * (far - 1.0) / outer) for j in range(outer + 1)]
    t += [(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:])]
    # interpolation box, units of radius around the centre: x and y the grid box, z its x-normalised height
    half = (half_x / radius, extent[1] / 2 / radius, extent[2] / extent[0])
    origin = tuple(-h for h in half)
    scale = tuple((n - 1) / (2 * h) for n, h in zip(grid.shape, half))
    merge = 2 * (1 + background) / nx * step_voxels * REFERENCE_MERGE_FRACTION
    return Convention(
        REFERENCE, step_voxels, REFERENCE_STOP_TRANSMITTANCE, origin, scale, True, step_size,
        center=center, radius=radius, background=background, t=tuple(t), merge_distance=merge,
        spacing=2.0 * radius / inner,
    )  # fmt: skip


def render_output(
    conv: Convention,
    depth: torch.Tensor,
    semantics: torch.Tensor,
    opacity: torch.Tensor,
    pairs: torch.Tensor,
    squares: torch.Tensor,
    samples: torch.Tensor,
) -> RenderOutput:
    """RenderOutput in the convention's units from a renderer's sums over each ray's kept samples.

    depth = sum_i w_i x_i (x: metres along the ray for "metric", R s for "reference"), semantics, opacity
    = sum_i w_i, pairs = sum_ij w_i w_j |x_i - x_j|, squares = sum_i w_i^2 [B, R], samples int32 [B, R].
    """
    if not conv.reference:
        distortion = pairs + conv.step_size / 3 * squares
        return RenderOutput(depth, semantics, opacity, distortion, samples)
    # the uni-lateral term's interval is 1 / (kept samples of the batch element): no gradient through it
    kept = samples.sum(1, keepdim=True).clamp_min(1).to(squares.dtype)
    distortion = pairs / conv.radius + squares / (3 * kept)
    return RenderOutput(depth + conv.radius * REFERENCE_DEPTH_EPS, semantics, opacity, distortion, samples)


def voxel_centres(convention: str, grid: VoxelGrid) -> tuple[tuple[float, ...], ...]:
    """Where each convention puts the value of voxel index i, per axis, in metres (x, y, z tuples)."""
    conv = resolve(convention, grid, grid.voxel_size / 2, 0.0)
    scale = 1.0 if not conv.reference else conv.radius
    shift = (0.0,) * 3 if not conv.reference else conv.center
    return tuple(
        tuple(shift[a] + scale * (conv.origin[a] + i / conv.scale[a]) for i in range(grid.shape[a]))
        for a in range(3)
    )


def extinction_per_metre(convention: str, grid: VoxelGrid, step_size: float) -> float:
    """Optical depth per metre that softplus(density + shift) = 1 stands for under `convention`.

    "metric": 1 (tau = softplus * step_size over step_size metres). "reference": interval / spacing =
    0.5 / (78 / 391 m) = 2.506 per metre, the same density being that much more opaque.
    """
    conv = resolve(convention, grid, step_size, 0.0)
    return 1.0 if not conv.reference else conv.interval / conv.spacing


def convert_density(
    density: float,
    source: str,
    target: str,
    grid: VoxelGrid,
    step_size: float,
    density_shift: float = -13.815510557964274,
) -> float:
    """The density under `target` that is exactly as opaque per metre as `density` is under `source`.

    Both conventions turn a density d into an extinction per metre sigma = k softplus(d + shift), with
    k = `extinction_per_metre` (1 for "metric", 2.506 for "reference"). A read-out threshold means "this
    opaque or more", so the same threshold under another convention is the density with the same sigma:

        k_t softplus(d_t + shift) = k_s softplus(d_s + shift)
        d_t = softplus^-1((k_s / k_t) softplus(d_s + shift)) - shift,   softplus^-1(y) = y + log(1 - e^-y)

    Exact, for any density. Where d + shift << 0 (read-out thresholds: 8.5 - 13.8 = -5.3) softplus(z) =
    e^z - e^2z / 2 + ..., so with k = k_s / k_t, d_t = d_s + ln k + (k - 1) e^(d_s + shift) / 2 + ...: the
    "8.5 + ln 2.5" rule of thumb is its first two terms (the third is 0.004 at 8.5); where softplus is
    nearly linear (d + shift > 0) the rule is far off (20 -> 29.3, not 20.9). The reference's 8.5 is
    9.4225 on the metric scale (8.5 + ln 2.5 = 9.4163).
    """
    k_source = extinction_per_metre(source, grid, step_size)
    k_target = extinction_per_metre(target, grid, step_size)
    y = k_source / k_target * _softplus(density + density_shift)
    return y + math.log(-math.expm1(-y)) - density_shift


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
