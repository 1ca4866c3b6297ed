"""The "reference" rendering convention against the spec's description of the published release, and the
conversion of densities (read-out thresholds) between conventions."""

import math

import pytest
import torch
from render_naive import naive_render_reference

from renderocc.core.grid import VoxelGrid
from renderocc.render import volume_render
from renderocc.render.conventions import (
    convert_density,
    extinction_per_metre,
    resolve,
    voxel_centres,
)
from renderocc.render.reference import render_reference
from renderocc.render.sampling import reference_samples

OCC3D = VoxelGrid()  # 200 x 200 x 16, 0.4 m over [-40, 40] x [-40, 40] x [-1, 5.4]
COARSE = VoxelGrid(voxel_size=1.6)  # the same box, 50 x 50 x 4: small enough for float64 loops
SHIFT = -13.815510557964274
SPACING = 78 / 391  # metres between the reference's samples on the Occ3D grid
FIELDS = ("depth", "semantics", "opacity", "distortion", "samples")


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_reference_layout_is_the_releases():
    conv = resolve("reference", OCC3D, 0.2, 1e-7)
    assert conv.interval == 0.5  # tau counts voxels
    assert conv.stop_transmittance == 1e-3
    assert conv.center == (0.0, 0.0, 2.2) and conv.radius == 39.0
    t = torch.tensor(conv.t, dtype=torch.float64) * 39  # metres from the origin
    assert len(t) == 391 + 26
    # 391 samples every 78/391 m out to 78 m (midpoints), then 26 background samples further out
    torch.testing.assert_close(t[:391], (torch.arange(391, dtype=torch.float64) + 0.5) * SPACING)
    assert conv.spacing == pytest.approx(SPACING)
    assert t[390] < 78 < t[391] and (t[391:].diff() > 0).all()
    assert t[-1] == pytest.approx(39 * (2 / (1 - 25 / 26 * 63 / 64) + 128) / 2)
    assert conv.merge_distance * 39 == pytest.approx(0.95 * 0.2)  # 0.95 of a step, in metres
    # voxel centres: x_i = -40 + i 80 / 199 (y alike) and z_k = -0.92 + 0.416 k
    x, y, z = voxel_centres("reference", OCC3D)
    torch.testing.assert_close(
        torch.tensor(x, dtype=torch.float64), -40 + torch.arange(200, dtype=torch.float64) * 80 / 199
    )
    assert y == x
    torch.testing.assert_close(
        torch.tensor(z, dtype=torch.float64), -0.92 + 0.416 * torch.arange(16, dtype=torch.float64)
    )
    x, _, z = voxel_centres("metric", OCC3D)
    assert (x[0], x[-1], z[0], z[-1]) == pytest.approx((-39.8, 39.8, -0.8, 5.2))


def test_reference_keeps_the_sphere_and_a_few_crowded_background_samples():
    conv = resolve("reference", OCC3D, 0.2, 1e-7)
    rays_o = (
        torch.tensor([[0.0, 0.0, 2.2], [1.0, 0.5, 1.8]], dtype=torch.float64) - torch.tensor(conv.center)
    ) / 39
    rays_d = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0, 0.0], [0.3, 1.0, -0.05]]).double(), dim=-1
    )
    x, q, kept = reference_samples(rays_o, rays_d, conv, len(conv.t))
    radius = q.norm(dim=-1)
    inside = radius <= 1
    assert kept[inside].all()  # every sample inside the 39 m sphere counts
    beyond = kept & ~inside
    assert (radius[beyond] <= 1 + conv.background + 1e-12).all()  # pulled into the 39-40 m shell
    for ray in range(2):
        # the crowding test keeps a handful of the 26 + (391 - 196) candidates beyond the sphere, each at
        # least 0.95 of a step from the last kept one
        kept_q = q[ray][kept[ray]]
        assert 2 <= int(beyond[ray].sum()) <= 12
        assert (kept_q[1:] - kept_q[:-1]).norm(dim=-1).min() > conv.merge_distance - 1e-12
    # the depth coordinate: 39 t / (1 + t), t in units of 39 m
    t = torch.tensor(conv.t, dtype=torch.float64)
    torch.testing.assert_close(x, 39 * t / (1 + t))


def wall_field(grid: VoxelGrid, first: int, density: float = 1000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Density `density` at x index >= first (all y, z), 0 before; class 2 there, 0 before (3 classes)."""
    d = torch.zeros(1, *grid.shape, dtype=torch.float64)
    d[:, first:] = density
    s = torch.zeros(1, *grid.shape, 3, dtype=torch.float64)
    s[:, first:, ..., 2] = 5.0
    return d, s


@pytest.mark.parametrize("convention", ["metric", "reference"])
def test_a_wall_at_a_known_distance_renders_the_predicted_depth(convention):
    """A wall filling x index >= 150; a ray along +x whose samples straddle the last free voxel centre
    (where the density starts to rise) half a step either side. Every sample before it stops alpha_0 of the
    ray (density 0), the one after it stops the ray: the depth is exact from the sample distances."""
    conv = resolve(convention, OCC3D, 0.2, 1e-7)
    step = SPACING if conv.reference else 0.2
    face = voxel_centres(convention, OCC3D)[0][149]  # density 0 up to here, rising to 1000 at the next centre
    k = 100  # samples before the face
    origin = torch.tensor([[[face - k * step, 0.3, 2.2]]], dtype=torch.float64)
    density, semantics = wall_field(OCC3D, 150)
    out = volume_render(density, semantics, origin, torch.tensor([[[1.0, 0, 0]]]).double(), OCC3D, 0.2,
                        convention=convention, implementation="torch")  # fmt: skip

    tau0 = softplus(SHIFT) * conv.interval  # the optical depth of a sample of empty space
    distances = (torch.arange(k + 1, dtype=torch.float64) + 0.5) * step
    trans = torch.exp(-tau0 * torch.arange(k + 1, dtype=torch.float64))
    w = trans * (1 - math.exp(-tau0))
    w[k] = trans[k]  # the first sample in the wall reads >= 240: alpha 1 to float64 precision
    x = 39 * distances / (39 + distances) if conv.reference else distances  # the convention's depth
    expected = (w * x).sum() + (39e-7 if conv.reference else 0.0)
    torch.testing.assert_close(out.depth[0, 0], expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(out.opacity[0, 0], w.sum(), rtol=1e-9, atol=0)
    assert int(out.samples) == k + 1
    assert out.semantics[0, 0].argmax() == 2
    # the wall is 20 m out: depth in metres under "metric", 39 d / (39 + d) = 13.2 under "reference"
    d = distances[k].item()
    assert 19.9 < d < 20.2
    assert out.depth.item() == pytest.approx(d if not conv.reference else 39 * d / (39 + d), rel=1e-4)


def test_units_and_heights_of_an_upward_ray_follow_the_reference_layers():
    """A ray straight up through a field that changes only with height. Under "reference" every kept sample
    reads the layers as placed at z = -0.92 + 0.416 k, fading to 0 one layer beyond the last (zero padding),
    and stops tau = 0.5 softplus(value + shift) of the ray; under "metric" the layers sit at -0.8 + 0.4 k,
    clamped at the box, with tau = 0.2 softplus(value + shift) per sample. Low densities: no sample is
    removed or stopped, so the weights follow from the taus alone."""
    values = 2.0 + 0.4 * torch.arange(16, dtype=torch.float64)
    density = values.expand(1, 200, 200, 16).contiguous()
    semantics = torch.ones(1, 200, 200, 16, 2, dtype=torch.float64)  # logit 1 inside the grid
    rays_o = torch.tensor([[[0.1, -0.3, -0.5]]], dtype=torch.float64)
    rays_d = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    for convention in ("metric", "reference"):
        conv = resolve(convention, OCC3D, 0.2, 1e-7)
        out = volume_render(density, semantics, rays_o, rays_d, OCC3D, 0.2, convention=convention,
                            implementation="torch")  # fmt: skip
        if conv.reference:
            t = torch.tensor(conv.t, dtype=torch.float64)
            origin = (rays_o[0] - torch.tensor(conv.center, dtype=torch.float64)) / 39
            _, _, kept = reference_samples(origin, rays_d[0].double(), conv, len(t))  # checked elsewhere
            t = t[kept[0]] * 39  # metres up from the origin (beyond 39 m from the centre: pulled in, read 0)
            z = -0.5 + t
            heights = -0.92 + 0.416 * torch.arange(16, dtype=torch.float64)
            fade = (1 - (z - heights[-1]).clamp_min(0) / 0.416).clamp_min(0)  # zero padding above the top
            inside_sphere = (torch.tensor([0.1, -0.3]).norm() ** 2 + (z - 2.2) ** 2).sqrt() <= 39
            fade = torch.where(inside_sphere, fade, torch.zeros_like(fade))
            read = torch.tensor(_interp(z, heights, values), dtype=torch.float64) * fade
            tau = 0.5 * torch.nn.functional.softplus(read + SHIFT)
            x = 39 * t / (39 + t)
        else:
            heights = -0.8 + 0.4 * torch.arange(16, dtype=torch.float64)
            t = (torch.arange(29, dtype=torch.float64) + 0.5) * 0.2  # the box's top is 5.9 m up
            z = -0.5 + t
            read = torch.tensor(_interp(z, heights, values), dtype=torch.float64)
            tau = 0.2 * torch.nn.functional.softplus(read + SHIFT)
            x, fade = t, torch.ones_like(t)
        trans = torch.exp(-(torch.cumsum(tau, 0) - tau))
        w = trans * -torch.expm1(-tau)
        assert int(out.samples) == len(w)
        torch.testing.assert_close(out.opacity[0, 0], w.sum(), rtol=1e-9, atol=0)
        offset = 39e-7 if conv.reference else 0.0  # the reference's 39 * 1e-7
        torch.testing.assert_close(out.depth[0, 0], (w * x).sum() + offset, rtol=1e-9, atol=0)
        torch.testing.assert_close(out.semantics[0, 0, 0], (w * fade).sum(), rtol=1e-9, atol=0)


def _interp(z: torch.Tensor, heights: torch.Tensor, values: torch.Tensor) -> list[float]:
    """Piecewise-linear values at z between layer heights, clamped beyond the ends."""
    out = []
    for zi in z.tolist():
        i = max(0, min(len(heights) - 2, int(torch.searchsorted(heights, torch.tensor(zi)).item()) - 1))
        f = min(max((zi - heights[i].item()) / (heights[i + 1] - heights[i]).item(), 0.0), 1.0)
        out.append((1 - f) * values[i].item() + f * values[i + 1].item())
    return out


def test_reference_stops_at_transmittance_1e_3_and_drops_low_weights():
    """Uniform alpha 0.1 per sample: the ray stops after the sample that takes its transmittance below 1e-3
    (66 samples: 0.9^65 = 1.05e-3, 0.9^66 = 9.5e-4). Then a wall that leaves 5% of the ray, and empty space
    behind it: its samples (alpha 5e-7, weight 2.5e-8) are removed, so only those up to the wall count."""
    # 0.5 softplus(d + shift) = -log(1 - alpha): softplus^-1, then unshifted
    d = math.log(math.expm1(-math.log1p(-0.1) / 0.5)) - SHIFT
    density = torch.full((1, *OCC3D.shape), d, dtype=torch.float64)
    rays_o = torch.tensor([[[0.0, 0.0, 2.2]]], dtype=torch.float64)
    rays_d = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    semantics = torch.zeros(1, *OCC3D.shape, 2, dtype=torch.float64)
    out = volume_render(
        density, semantics, rays_o, rays_d, OCC3D, 0.2, convention="reference", implementation="torch"
    )
    assert int(out.samples) == 66
    torch.testing.assert_close(out.opacity[0, 0], torch.tensor(1 - 0.9**66, dtype=torch.float64))
    # the metric convention's stop (the skip threshold, 1e-7) on the same field: more samples, more opaque
    metric = volume_render(density, semantics, rays_o, rays_d, OCC3D, 0.2, implementation="torch")
    assert int(metric.samples) > 66 and metric.opacity > out.opacity

    semantics = torch.zeros(1, *COARSE.shape, 2, dtype=torch.float64)

    wall = torch.zeros(1, *COARSE.shape, dtype=torch.float64)
    wall[:, 30:33] = 14.5  # three voxels whose samples leave ~5% of the ray
    out = volume_render(
        wall, semantics, rays_o, rays_d, COARSE, 0.8, convention="reference", implementation="torch"
    )
    expected = naive_render_reference(wall, semantics, rays_o, rays_d, COARSE, 0.8, SHIFT, 1e-7)
    assert 1e-3 < expected["transmittance"].item() < 0.2  # behind the wall: weights 5e-7 T < 1e-7
    x = torch.tensor(voxel_centres("reference", COARSE)[0])
    s = torch.tensor(resolve("reference", COARSE, 0.8, 1e-7).t, dtype=torch.float64) * 39
    # every sample up to the next free voxel centre counts (those before the wall: weight 5e-7), none behind
    assert int(out.samples) == int((s <= x[33].item()).sum()) == 17
    for name in ("depth", "opacity", "samples"):
        torch.testing.assert_close(getattr(out, name), expected[name].to(getattr(out, name).dtype))
    # the reference's last transmittance differs from 1 - sum(w) only by the removed weights (< 1e-7 each)
    assert abs(1 - out.opacity.item() - expected["transmittance"].item()) < 1e-7 * len(s)


def random_scene(seed: int, rays: int = 6, classes: int = 3, dtype=torch.float32) -> tuple:
    g = torch.Generator().manual_seed(seed)
    density = 22 * torch.rand(2, *COARSE.shape, generator=g, dtype=dtype)  # semi-transparent and dense
    semantics = torch.randn(2, *COARSE.shape, classes, generator=g, dtype=dtype)
    spread = torch.tensor([10.0, 10.0, 0.6], dtype=dtype)
    rays_o = (
        torch.tensor([0.0, 0.0, 1.6], dtype=dtype)
        + torch.randn(2, rays, 3, generator=g, dtype=dtype) * spread
    )
    tilt = torch.tensor([1.0, 1.0, 0.2], dtype=dtype)
    rays_d = torch.nn.functional.normalize(torch.randn(2, rays, 3, generator=g, dtype=dtype) * tilt, dim=-1)
    return density, semantics, rays_o, rays_d


def test_reference_matches_its_float64_description_on_fresh_inputs():
    seed = torch.seed() % 2**31  # fresh inputs every run; the seed is in the failure message
    density, semantics, rays_o, rays_d = random_scene(seed)
    rays_d[0, 0] = 0.0  # padding: no ray at all
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2] = False  # a ray left out (e.g. its label is beyond 52 m)
    expected = naive_render_reference(density, semantics, rays_o, rays_d, COARSE, 0.8, SHIFT, 1e-7, mask)
    out = volume_render(
        density, semantics, rays_o, rays_d, COARSE, 0.8, SHIFT, 1e-7, "torch", "reference", mask
    )
    for name in FIELDS:
        assert rel_err(getattr(out, name), expected[name]) < 1e-4, (name, seed)
    assert out.samples[0, 0] == 0 and out.samples[1, 2] == 0 and out.opacity[1, 2] == 0


def test_reference_gradcheck_float64():
    """Gradients of every output with respect to a block of voxels that the rays cross."""
    density, semantics, rays_o, rays_d = random_scene(5, rays=3, classes=2, dtype=torch.float64)
    rays_o[:] = torch.tensor([2.0, 1.0, 1.5], dtype=torch.float64)
    rays_d[:] = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.1, 0.05], [1.0, -0.1, 0.1], [1.0, 0.02, -0.1]], dtype=torch.float64), dim=-1
    )
    density[:] = density * 0.5
    conv = resolve("reference", COARSE, 0.8, 1e-7)
    block = (slice(None), slice(26, 30), slice(23, 28), slice(1, 4))
    d_block = density[block].clone().requires_grad_()
    s_block = semantics[block].clone().requires_grad_()
    rays = (rays_o - torch.tensor(conv.center, dtype=torch.float64)) / 39
    counts = torch.full((2, 3), len(conv.t), dtype=torch.int32)

    def render(d, s):
        full_d, full_s = density.clone(), semantics.clone()
        full_d[block], full_s[block] = d, s
        out = render_reference(full_d, full_s, rays, rays_d, torch.zeros(2, 3, dtype=torch.float64), counts,
                               COARSE, conv, SHIFT, 1e-7)  # fmt: skip
        return out.depth, out.semantics, out.opacity, out.distortion

    assert torch.autograd.gradcheck(render, (d_block, s_block), eps=1e-6, atol=1e-6)
    depth, *_ = render(d_block, s_block)
    depth.sum().backward()
    assert d_block.grad.abs().sum() > 0  # the rays do cross the block


def test_convert_density_is_exact_and_matches_equal_opacity_per_metre():
    # the reference's 8.5 on the metric scale, exactly, and the rule of thumb beside it
    metric = convert_density(8.5, "reference", "metric", OCC3D, 0.2)
    k = extinction_per_metre("reference", OCC3D, 0.2)
    assert k == pytest.approx(0.5 / SPACING) and extinction_per_metre("metric", OCC3D, 0.2) == 1.0
    assert metric == pytest.approx(9.4225, abs=1e-4)
    assert abs(metric - (8.5 + math.log(2.5))) < 0.01  # ln 2.5 is close where softplus ~ exp ...
    assert (
        convert_density(20.0, "reference", "metric", OCC3D, 0.2) > 20.0 + math.log(2.5) + 1
    )  # ... not beyond
    for d in (0.0, 2.0, 8.5, 14.5, 30.0):
        back = convert_density(
            convert_density(d, "reference", "metric", OCC3D, 0.2), "metric", "reference", OCC3D, 0.2
        )
        assert back == pytest.approx(d, abs=1e-9)
        m = convert_density(d, "reference", "metric", OCC3D, 0.2)
        assert softplus(m + SHIFT) == pytest.approx(k * softplus(d + SHIFT), rel=1e-12)
    assert convert_density(8.5, "metric", "metric", OCC3D, 0.2) == pytest.approx(8.5)

    # rendered: a horizontal ray through uniform density, the optical depth per metre of each convention
    per_metre = {}
    for convention, d in (("reference", 8.5), ("metric", metric)):
        density = torch.full((1, *OCC3D.shape), d, dtype=torch.float64)
        semantics = torch.zeros(1, *OCC3D.shape, 1, dtype=torch.float64)
        rays_o, rays_d = (
            torch.tensor([[[0.0, 0.0, 2.2]]]).double(),
            torch.tensor([[[1.0, 0.0, 0.0]]]).double(),
        )
        out = volume_render(density, semantics, rays_o, rays_d, OCC3D, 0.2, convention=convention,
                            implementation="torch")  # fmt: skip
        spacing = SPACING if convention == "reference" else 0.2
        per_metre[convention] = -math.log1p(-out.opacity.item()) / (int(out.samples) * spacing)
    assert per_metre["metric"] == pytest.approx(per_metre["reference"], rel=1e-9)


def test_unknown_convention_names_the_field():
    density, semantics, rays_o, rays_d = random_scene(0)
    with pytest.raises(ValueError, match="render.convention"):
        volume_render(density, semantics, rays_o, rays_d, COARSE, 0.8, convention="nerf")
    with pytest.raises(ValueError, match="half width"):
        resolve("reference", VoxelGrid(lower=(-10.0, -10.0, -1.0), upper=(10.0, 10.0, 3.0)), 0.2, 1e-7)
