import math

import pytest
import torch
import torch.nn.functional as F

from renderocc.config import LossConfig
from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid
from renderocc.render import RenderOutput
from renderocc.render.losses import (
    class_weights_from_counts,
    ends_outside_grid,
    free_points,
    free_space_prior,
    labelled_points,
    line_of_sight_free_space,
    rendered_rays,
    rendering_losses,
    silog_loss,
    surface_losses,
    transmittance_entropy,
)
from renderocc.render.sampling import trilinear_corners
from renderocc.render.voxel_losses import pool_voxel_labels, voxel_losses


def test_class_weights_are_inverse_log_counts():
    weights = class_weights_from_counts([1e6, 1e3, 0.0])
    torch.testing.assert_close(weights, torch.tensor([1 / math.log(1e6), 1 / math.log(1e3), 1.0]))
    assert weights[1] > weights[0]  # the rarer class weighs more
    with pytest.raises(ValueError, match="non-negative"):
        class_weights_from_counts([1.0, -2.0])
    with pytest.raises(ValueError, match="1-D"):
        class_weights_from_counts(torch.ones(2, 3))


def test_silog_is_scale_invariant_up_to_the_variance_focus():
    target = torch.rand(100) * 40 + 1
    assert silog_loss(target - 1e-3, target) < 1e-3
    # a global scale s leaves only (1 - lambda) of the log offset: sqrt(1 - 0.85) * |log s|
    expected = math.sqrt(0.15) * math.log(2.0)
    torch.testing.assert_close(
        silog_loss(2 * target - 1e-3, target), torch.tensor(expected), rtol=1e-4, atol=0
    )
    noisy = target * torch.exp(0.6 * torch.randn(100))  # per-ray errors are not forgiven: ~0.6 > 0.27
    assert silog_loss(noisy, target) > silog_loss(2 * target, target)


def test_transmittance_entropy_favours_binary_rays():
    h = transmittance_entropy(torch.tensor([0.0, 0.5, 1.0]))
    assert h[1] == pytest.approx(math.log(2), rel=1e-5)
    assert h[0] < 1e-4 and h[2] < 1e-4


def fake_render(batch: int = 2, rays: int = 5, classes: int = 4, seed: int = 0) -> tuple[RenderOutput, dict]:
    g = torch.Generator().manual_seed(seed)
    out = RenderOutput(
        depth=(torch.rand(batch, rays, generator=g) * 30 + 1).requires_grad_(),
        semantics=torch.randn(batch, rays, classes, generator=g).requires_grad_(),
        opacity=torch.rand(batch, rays, generator=g).requires_grad_(),
        distortion=torch.rand(batch, rays, generator=g).requires_grad_(),
    )
    batch_dict = {
        "ray_depth": torch.rand(batch, rays, generator=g) * 30 + 1,
        "ray_class": torch.randint(0, classes, (batch, rays), generator=g),
        "ray_valid": torch.ones(batch, rays, dtype=torch.bool),
    }
    return out, batch_dict


def test_free_space_prior_pulls_voxels_below_the_threshold():
    density = torch.tensor([[[[0.0, 8.5, 20.0]]]], dtype=torch.float64, requires_grad=True)
    prior = free_space_prior(density, 8.5)
    expected = (math.log1p(math.exp(-8.5)) + math.log(2.0) + math.log1p(math.exp(11.5))) / 3
    assert prior.item() == pytest.approx(expected)
    prior.backward()
    grad = density.grad.flatten()
    assert (grad > 0).all()  # gradient descent lowers every voxel's density ...
    assert grad[0] < 1e-3 * grad[2]  # ... but hardly those already well below the threshold


LOS_GRID = VoxelGrid(
    lower=(-16.0, -16.0, -0.4), upper=(16.0, 16.0, 4.4), voxel_size=0.8
)  # z centres 0, 0.8, ..


def _grazing_rays(rays: int, g: torch.Generator, ground_class: int = 11) -> dict[str, torch.Tensor]:
    """Labelled rays from a camera 1.5 m up to random points on the plane z = 0 (the lowest voxel centres)."""
    rays_o = torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64).expand(1, rays, 3).clone()
    angle = torch.rand(1, rays, generator=g, dtype=torch.float64) * 2 * math.pi
    dist = 4 + torch.rand(1, rays, generator=g, dtype=torch.float64) * 10
    hits = torch.stack([dist * angle.cos(), dist * angle.sin(), torch.zeros_like(dist)], -1)
    depth = (hits - rays_o).norm(dim=-1)
    return {
        "rays_o": rays_o,
        "rays_d": (hits - rays_o) / depth.unsqueeze(-1),
        "ray_depth": depth,
        "ray_class": torch.full((1, rays), ground_class),
        "ray_valid": torch.ones(1, rays, dtype=torch.bool),
    }


def test_line_of_sight_matches_trilinear_points_in_float64():
    g = torch.Generator().manual_seed(3)
    density = (torch.rand(1, *LOS_GRID.shape, generator=g, dtype=torch.float64) * 20).requires_grad_()
    batch = _grazing_rays(64, g)
    batch["ray_valid"] = torch.rand(1, 64, generator=g) > 0.2
    batch["ray_class"] = torch.where(torch.rand(1, 64, generator=g) > 0.5, 11, 15)  # road or building
    torch.manual_seed(11)
    loss = line_of_sight_free_space(density, batch, LOS_GRID, 8.5, samples_per_ray=4)

    # the same draws, followed by hand: stratified t in [t_near, depth - clearance]
    torch.manual_seed(11)
    u = (torch.arange(4) + torch.rand(1, 64, 4, dtype=torch.float64)) / 4
    rays_o, rays_d, depth = batch["rays_o"], batch["rays_d"], batch["ray_depth"]
    clearance = torch.where(batch["ray_class"] == 11, 0.8 / rays_d[..., 2].abs(), 1.6)
    t_end = depth - clearance  # the camera is inside the box: t_near = 0
    points = rays_o.unsqueeze(-2) + (u * t_end.unsqueeze(-1)).unsqueeze(-1) * rays_d.unsqueeze(-2)
    index, weight = trilinear_corners(points, LOS_GRID)
    values = (density.flatten()[index] * weight).sum(-1)
    per_ray = F.softplus(values - 8.5).mean(-1)
    usable = batch["ray_valid"] & (t_end > 0)
    torch.testing.assert_close(loss, per_ray[usable].mean())
    assert usable.sum() > 40  # most rays take part


def test_line_of_sight_lowers_the_air_and_leaves_the_surfaces_alone():
    g = torch.Generator().manual_seed(0)
    batch = _grazing_rays(256, g)
    density = torch.zeros(1, *LOS_GRID.shape, dtype=torch.float64)
    density[..., 0] = 30.0  # the ground layer (centre z = 0), where every ray ends
    ground = line_of_sight_free_space(density, batch, LOS_GRID, 8.5)
    density[..., 2] = 30.0  # occupied air at 1.6 m: the rays leave the camera (1.5 m) through it
    density.requires_grad_()
    air = line_of_sight_free_space(density, batch, LOS_GRID, 8.5)
    air.backward()
    assert air > ground
    assert density.grad[..., 2].sum() > 0  # descent lowers the air layer ...
    assert density.grad[..., 0].abs().sum() == 0  # ... and never touches the ground layer
    # unlabelled rays give nothing, nor do horizontal rays to the ground (never a voxel's height from it)
    assert line_of_sight_free_space(density, batch | {"ray_valid": ~batch["ray_valid"]}, LOS_GRID, 8.5) == 0
    flat = batch["rays_d"].clone()
    flat[..., 2] = 0
    assert line_of_sight_free_space(density, batch | {"rays_d": flat}, LOS_GRID, 8.5) == 0

    # a horizontal ray to a wall (x = 10 m, a voxel centre) stops two voxels short of it
    wall = torch.zeros(1, *LOS_GRID.shape, dtype=torch.float64)
    wall[:, 32] = 30.0
    wall[:, 20] = 30.0  # occupied air at x = 0.4 m
    wall.requires_grad_()
    to_wall = {
        "rays_o": torch.tensor([[[0.0, 0.0, 1.6]]], dtype=torch.float64),
        "rays_d": torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64),
        "ray_depth": torch.tensor([[10.0]], dtype=torch.float64),
        "ray_class": torch.tensor([[15]]),  # manmade
        "ray_valid": torch.tensor([[True]]),
    }
    line_of_sight_free_space(wall, to_wall, LOS_GRID, 8.5).backward()
    assert wall.grad[:, 20].sum() > 0 and wall.grad[:, 32].abs().sum() == 0


def _scattered_rays(rays: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Labelled rays from the box centre to random points, about a fifth of them outside the box."""
    lo, hi = (
        torch.tensor(LOS_GRID.lower, dtype=torch.float64),
        torch.tensor(LOS_GRID.upper, dtype=torch.float64),
    )
    points = lo - 0.1 * (hi - lo) + torch.rand(1, rays, 3, generator=g, dtype=torch.float64) * 1.2 * (hi - lo)
    rays_o = ((lo + hi) / 2).expand(1, rays, 3).clone()
    depth = (points - rays_o).norm(dim=-1)
    return {
        "rays_o": rays_o,
        "rays_d": (points - rays_o) / depth.unsqueeze(-1),
        "ray_depth": depth,
        "ray_class": torch.randint(0, 5, (1, rays), generator=g),
        "ray_valid": torch.rand(1, rays, generator=g) > 0.2,
    }


def test_line_of_sight_per_voxel_pulls_each_crossed_voxel_once_in_float64():
    g = torch.Generator().manual_seed(6)
    density = (torch.rand(1, *LOS_GRID.shape, generator=g, dtype=torch.float64) * 20).requires_grad_()
    batch = _scattered_rays(300, g)
    torch.manual_seed(12)
    loss = line_of_sight_free_space(density, batch, LOS_GRID, 8.5, samples_per_ray=4, per_voxel=True)
    loss.backward()

    # by hand, from the same draws: the voxels of the points in the box, less those of the LiDAR points
    torch.manual_seed(12)
    points, usable = free_points(batch, LOS_GRID, 4, random=True)
    inside = LOS_GRID.contains(points) & usable.unsqueeze(-1)
    crossed = {tuple(i) for i in LOS_GRID.points_to_index(points[inside]).tolist()}
    ends = LOS_GRID.contains(labelled_points(batch)) & batch["ray_valid"]
    crossed -= {tuple(i) for i in LOS_GRID.points_to_index(labelled_points(batch)[ends]).tolist()}
    assert 50 < len(crossed) < density.numel() / 2
    ix, iy, iz = torch.tensor(sorted(crossed)).unbind(-1)
    values = density.detach()[0, ix, iy, iz]
    torch.testing.assert_close(loss, F.softplus(values - 8.5).mean())
    expected = torch.zeros_like(density)
    expected[0, ix, iy, iz] = torch.sigmoid(values - 8.5) / len(crossed)  # each voxel once, however crossed
    torch.testing.assert_close(density.grad, expected)


def test_line_of_sight_per_voxel_leaves_a_voxel_that_another_ray_ends_in():
    wall = torch.full((1, *LOS_GRID.shape), 30.0, dtype=torch.float64, requires_grad=True)
    rays = {
        "rays_o": torch.tensor([[[0.0, 0.0, 1.6], [0.0, 0.0, 1.6]]], dtype=torch.float64),
        "rays_d": torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64),
        "ray_depth": torch.tensor([[10.0, 5.2]], dtype=torch.float64),  # the second ends in voxel x = 5.2 m
        "ray_class": torch.tensor([[15, 15]]),
        "ray_valid": torch.tensor([[True, True]]),
    }
    line_of_sight_free_space(wall, rays, LOS_GRID, 8.5, samples_per_ray=64, per_voxel=True).backward()
    pulled = wall.grad[0, :, 20, 2] > 0  # the row of voxels both rays run along (y = 0 m, z = 1.6 m)
    assert pulled[20:26].all()  # x = 0 .. 4.8 m: crossed by both, ended in by neither
    assert not pulled[26] and not pulled[32]  # the second ray's point (5.2 m), the wall (10 m)
    assert wall.grad[0, :, :20].abs().sum() == 0 and wall.grad[0, :, 21:].abs().sum() == 0


def test_ends_outside_grid_flags_labelled_rays_whose_point_leaves_the_box():
    g = torch.Generator().manual_seed(5)
    batch = _scattered_rays(200, g)
    batch["ray_depth"][0, :10] = 0.0  # no depth label: not known to end outside
    points = batch["rays_o"] + batch["ray_depth"].unsqueeze(-1) * batch["rays_d"]
    outside = ~LOS_GRID.contains(points) & (batch["ray_depth"] > 0)
    assert torch.equal(ends_outside_grid(batch, LOS_GRID), outside)
    assert 0 < outside.sum() < 100  # some rays end outside the box, most inside


def test_surface_losses_match_the_point_voxels_in_float64():
    g = torch.Generator().manual_seed(4)
    density = (torch.rand(1, *LOS_GRID.shape, generator=g, dtype=torch.float64) * 20).requires_grad_()
    semantics = torch.randn(1, *LOS_GRID.shape, 5, generator=g, dtype=torch.float64).requires_grad_()
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5, 1.0], dtype=torch.float64)
    batch = _scattered_rays(300, g)
    occupancy, semantic = surface_losses(density, semantics, batch, LOS_GRID, 8.5, weights)

    # by hand: the voxel that holds each point inside the box
    points = batch["rays_o"] + batch["ray_depth"].unsqueeze(-1) * batch["rays_d"]
    usable = batch["ray_valid"] & LOS_GRID.contains(points)
    ix, iy, iz = (
        ((points[usable] - torch.tensor(LOS_GRID.lower)) / LOS_GRID.voxel_size).floor().long().unbind(-1)
    )
    torch.testing.assert_close(occupancy, F.softplus(8.5 - density[0, ix, iy, iz]).mean())
    labels = batch["ray_class"][usable]
    torch.testing.assert_close(semantic, F.cross_entropy(semantics[0, ix, iy, iz], labels, weight=weights))

    (occupancy + semantic).backward()
    touched = torch.zeros(LOS_GRID.shape, dtype=torch.bool)
    touched[ix, iy, iz] = True
    assert (density.grad[0][touched] < 0).all()  # descent raises the points' voxels ...
    assert (density.grad[0][~touched] == 0).all() and (
        semantics.grad[0][~touched] == 0
    ).all()  # ... only them
    # rays that end outside the box give nothing: both terms are 0
    none = surface_losses(
        density, semantics, batch | {"ray_valid": batch["ray_valid"] & ~usable}, LOS_GRID, 8.5
    )
    assert all(term.item() == 0 for term in none)


def test_ground_footprint_spreads_a_ground_ray_over_its_columns_in_float64():
    g = torch.Generator().manual_seed(7)
    density = (torch.rand(1, *LOS_GRID.shape, generator=g, dtype=torch.float64) * 20).requires_grad_()
    semantics = torch.randn(1, *LOS_GRID.shape, 17, generator=g, dtype=torch.float64).requires_grad_()
    weights = 0.5 + torch.rand(17, generator=g, dtype=torch.float64)
    batch = _scattered_rays(200, g) | {"ray_class": torch.randint(9, 17, (1, 200), generator=g)}
    occupancy, semantic = surface_losses(
        density, semantics, batch, LOS_GRID, 8.5, weights, ground_footprint=1
    )

    # by hand, ray by ray: the point's voxel, and for ground classes its 8 neighbours at the same height
    points = batch["rays_o"] + batch["ray_depth"].unsqueeze(-1) * batch["rays_d"]
    nx, ny, _ = LOS_GRID.shape
    occ_sum, ce_sum, weight_sum, rays, footprints = 0.0, 0.0, 0.0, 0, []
    for j in range(200):
        if not (batch["ray_valid"][0, j] and LOS_GRID.contains(points[0, j])):
            continue
        i, k, z = (
            ((points[0, j] - torch.tensor(LOS_GRID.lower)) / LOS_GRID.voxel_size).floor().long().tolist()
        )
        c = int(batch["ray_class"][0, j])
        reach = 1 if c in (11, 12, 13, 14) else 0
        cells = [
            (i + a, k + b, z)
            for a in range(-reach, reach + 1)
            for b in range(-reach, reach + 1)
            if 0 <= i + a < nx and 0 <= k + b < ny
        ]
        footprints.append(len(cells))
        occ_sum = occ_sum + sum(F.softplus(8.5 - density[(0, *v)]) for v in cells) / len(cells)
        ce = sum(F.cross_entropy(semantics[(0, *v)], torch.tensor(c)) for v in cells) / len(cells)
        ce_sum, weight_sum, rays = ce_sum + weights[c] * ce, weight_sum + weights[c], rays + 1
    assert 9 in footprints and 1 in footprints and any(1 < f < 9 for f in footprints)  # all cases met
    torch.testing.assert_close(occupancy, occ_sum / rays)
    torch.testing.assert_close(semantic, ce_sum / weight_sum)


def test_rendering_losses_match_their_definitions_and_weights():
    out, batch = fake_render()
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    cfg = LossConfig(depth=2.0, semantic=0.5)
    losses = rendering_losses(out, batch, cfg, weights)
    assert set(losses) == {"depth", "semantic", "entropy", "distortion"}
    flat = lambda x: x.flatten(0, 1)  # noqa: E731
    depth = silog_loss(flat(out.depth), flat(batch["ray_depth"]), variance_focus=cfg.silog_variance_focus)
    torch.testing.assert_close(losses["depth"], 2.0 * depth)
    ce = F.cross_entropy(flat(out.semantics), flat(batch["ray_class"]), weight=weights)
    torch.testing.assert_close(losses["semantic"], 0.5 * ce)
    torch.testing.assert_close(losses["entropy"], 0.01 * transmittance_entropy(out.opacity).mean())
    torch.testing.assert_close(losses["distortion"], 0.01 * out.distortion.mean())
    assert "entropy" not in rendering_losses(out, batch, LossConfig(entropy=0.0))


def test_rendering_losses_ignore_invalid_rays():
    out, batch = fake_render()
    batch["ray_valid"][0, 3:] = False
    batch["ray_valid"][1, :2] = False
    reference = rendering_losses(out, batch, LossConfig())
    # garbage in the padding changes nothing and gets no gradient
    garbage = {**batch, "ray_depth": batch["ray_depth"].clone(), "ray_class": batch["ray_class"].clone()}
    garbage["ray_depth"][~batch["ray_valid"]] = -5.0
    garbage["ray_class"][~batch["ray_valid"]] = 99
    with torch.no_grad():
        out.depth[~batch["ray_valid"]] = 1e6
    losses = rendering_losses(out, garbage, LossConfig())
    for name, value in reference.items():
        torch.testing.assert_close(losses[name], value)
    sum(losses.values()).backward()
    assert (out.depth.grad[~batch["ray_valid"]] == 0).all() and (
        out.semantics.grad[~batch["ray_valid"]] == 0
    ).all()
    batch["ray_valid"][:] = False
    empty = rendering_losses(out, batch, LossConfig())
    assert all(v.item() == 0 for v in empty.values())


def test_reference_losses_loop_over_the_samples_of_the_batch():
    """Under the "reference" convention every term is taken per batch element, over its rays with a depth
    label of at most 52 m, then averaged over the elements, with the reference's formulas written out."""
    out, batch = fake_render(batch=3, rays=7, seed=4)
    batch["ray_depth"][0, :2] = torch.tensor([60.0, 0.0])  # beyond 52 m; no depth label
    batch["ray_valid"][1, 5:] = False  # padding
    batch["ray_valid"][2, :] = False  # an element without rays scores 0 and still counts in the mean
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    # rendering losses only, every labelled ray (the reference's 2D recipe)
    cfg = LossConfig(silog_variance_focus=0.85, render_outside_points=True)
    grid = VoxelGrid()
    scored = rendered_rays(batch, grid, cfg, "reference")
    assert scored["ray_valid"][0].tolist() == [False, False] + [True] * 5
    losses = rendering_losses(out, scored, cfg, weights, convention="reference")

    per_sample = {"depth": [], "semantic": [], "entropy": [], "distortion": []}
    for b in range(2):
        keep = scored["ray_valid"][b]
        d = torch.log(out.depth[b][keep] + 1e-7) - torch.log(batch["ray_depth"][b][keep])
        per_sample["depth"].append(torch.sqrt((d**2).mean() - 0.85 * d.mean() ** 2))
        per_sample["semantic"].append(
            F.cross_entropy(out.semantics[b][keep], batch["ray_class"][b][keep], weight=weights)
        )
        per_sample["entropy"].append(transmittance_entropy(out.opacity[b][keep]).mean())
        per_sample["distortion"].append(out.distortion[b][keep].mean())
    scale = {"depth": 1.0, "semantic": 1.0, "entropy": 0.01, "distortion": 0.01}
    for name, values in per_sample.items():
        torch.testing.assert_close(losses[name], scale[name] * sum(values) / 3)
    # the metric convention pools all rays instead, and keeps the depth-less ray for its class
    pooled = rendering_losses(out, rendered_rays(batch, grid, cfg), cfg, weights)
    assert not torch.allclose(pooled["semantic"], losses["semantic"])
    assert rendered_rays(batch, grid, cfg)["ray_valid"][0, 1]


def test_pool_voxel_labels_to_a_coarser_grid():
    fine = VoxelGrid(lower=(0, 0, 0), upper=(1.6, 0.8, 0.8), voxel_size=0.4)
    coarse = VoxelGrid(lower=(0, 0, 0), upper=(1.6, 0.8, 0.8), voxel_size=0.8)
    labels = torch.full((1, 4, 2, 2), FREE, dtype=torch.uint8)
    mask = torch.ones(1, 4, 2, 2, dtype=torch.bool)
    labels[0, 0, 0, 0] = 11  # one ground voxel of eight: coarse voxel 0 is occupied, class 11
    labels[0, 2:, :, 0] = 4  # coarse voxel 1: four car voxels beat three ...
    labels[0, 3, 1, 1] = 15  # ... and one manmade
    labels[0, 2:, :, 1] = torch.tensor([[16, 16], [16, 15]], dtype=torch.uint8)
    pooled, observed = pool_voxel_labels(labels, mask, fine, coarse)
    assert pooled.flatten().tolist() == [11, 4] and observed.all()
    mask[0, :2] = False  # coarse voxel 0 unobserved
    mask[0, 2:, :, 0] = False  # only the upper layer of coarse voxel 1 votes: 16 x3, 15 x1
    pooled, observed = pool_voxel_labels(labels, mask, fine, coarse)
    assert observed.flatten().tolist() == [False, True] and pooled[0, 1, 0, 0] == 16
    with pytest.raises(ValueError, match="whole multiple"):
        pool_voxel_labels(
            labels, mask, fine, VoxelGrid(lower=(0, 0, 0), upper=(1.6, 0.8, 0.8), voxel_size=0.2)
        )


def test_voxel_losses_on_a_coarse_model_grid():
    label_grid = VoxelGrid(lower=(0, 0, 0), upper=(1.6, 1.6, 0.8), voxel_size=0.4)
    grid = VoxelGrid(lower=(0, 0, 0), upper=(1.6, 1.6, 0.8), voxel_size=0.8)
    labels = torch.randint(0, FREE + 1, (2, *label_grid.shape), dtype=torch.uint8)
    labels[0, :2, :2, :2] = FREE  # a free coarse voxel
    mask = torch.rand(2, *label_grid.shape) > 0.2
    density = (torch.rand(2, *grid.shape) * 20).requires_grad_()
    semantics = torch.randn(2, *grid.shape, 17, requires_grad=True)
    cfg = LossConfig(occupancy_3d=2.0)
    losses = voxel_losses(density, semantics, labels, mask, grid, cfg, label_grid)
    pooled, observed = pool_voxel_labels(labels, mask, label_grid, grid)
    occupied = pooled != FREE
    bce = F.binary_cross_entropy_with_logits(density[observed] - 8.5, occupied[observed].float())
    torch.testing.assert_close(losses["occupancy_3d"], 2.0 * bce)
    ce = F.cross_entropy(semantics[observed & occupied], pooled[observed & occupied])
    torch.testing.assert_close(losses["semantic_3d"], ce)
    weights = torch.rand(17) + 0.5
    weighted = voxel_losses(density, semantics, labels, mask, grid, cfg, label_grid, class_weights=weights)
    ce = F.cross_entropy(semantics[observed & occupied], pooled[observed & occupied], weight=weights)
    torch.testing.assert_close(weighted["semantic_3d"], ce)
    sum(losses.values()).backward()
    assert density.grad.abs().sum() > 0 and semantics.grad.abs().sum() > 0
    nothing_seen = voxel_losses(density, semantics, labels, torch.zeros_like(mask), grid, cfg, label_grid)
    assert all(float(v.detach()) == 0.0 for v in nothing_seen.values())
