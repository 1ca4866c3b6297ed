import math

import pytest
import torch
from render_naive import naive_render

from renderocc.core.grid import VoxelGrid
from renderocc.render import reference, volume_render
from renderocc.render.conventions import resolve
from renderocc.render.reference import render_reference
from renderocc.render.sampling import ray_box_intersection, sample_counts

GRID = VoxelGrid(lower=(-2.0, -2.0, -1.0), upper=(2.0, 2.0, 1.0), voxel_size=0.5)
SHIFT = -13.815510557964274
FIELDS = ("depth", "semantics", "opacity", "distortion")


def random_scene(seed: int, batch: int = 2, rays: int = 6, classes: int = 3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    density = 21 * torch.rand(batch, *GRID.shape, generator=g, dtype=dtype)  # mostly semi-transparent
    semantics = torch.randn(batch, *GRID.shape, classes, generator=g, dtype=dtype)
    rays_o = torch.randn(batch, rays, 3, generator=g, dtype=dtype) * 0.5 + torch.tensor([-3.0, 0.0, 0.0])
    target = torch.rand(batch, rays, 3, generator=g, dtype=dtype) * 2 - 1
    rays_d = torch.nn.functional.normalize(target - rays_o, dim=-1)
    return density, semantics, rays_o, rays_d


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("draw", [0, 1])
def test_float32_reference_matches_float64_formulas(draw):
    # fresh inputs every run (the seed is in the failure message), drawn until some rays end opaque and some
    # not: about 2% of scenes have all 12 rays opaque
    for _ in range(50):
        seed = torch.seed() % 2**31
        density, semantics, rays_o, rays_d = random_scene(seed)
        expected = naive_render(density, semantics, rays_o, rays_d, GRID, 0.2, SHIFT, 1e-7)
        if expected["opacity"].max() > 0.5 and expected["opacity"].min() < 0.5:
            break
    else:
        pytest.fail("no scene with both opaque and transparent rays in 50 draws")
    out = volume_render(density, semantics, rays_o, rays_d, GRID, 0.2, SHIFT, 1e-7, implementation="torch")
    for name in FIELDS:
        assert rel_err(getattr(out, name), expected[name]) < 1e-4, (name, seed)


def test_gradcheck_float64():
    density, semantics, rays_o, rays_d = random_scene(3, batch=1, rays=3, classes=2, dtype=torch.float64)
    grid = VoxelGrid(lower=(-1.0, -1.0, -0.5), upper=(1.0, 1.0, 0.5), voxel_size=0.5)
    density = density[:, 2:6, 2:6, 1:3].contiguous().requires_grad_()
    semantics = semantics[:, 2:6, 2:6, 1:3].contiguous().requires_grad_()
    t_near, t_far = ray_box_intersection(rays_o, rays_d, grid)
    num_samples = sample_counts(t_near, t_far, 0.3)
    assert (num_samples > 0).all()

    conv = resolve("metric", grid, 0.3, 0.0)

    def render(d, s):
        out = render_reference(d, s, rays_o, rays_d, t_near, num_samples, grid, conv, SHIFT, 0.0)
        return out.depth, out.semantics, out.opacity, out.distortion

    assert torch.autograd.gradcheck(render, (density, semantics), eps=1e-6, atol=1e-6)


def test_chunked_render_matches_single_chunk_forward_and_backward():
    density, semantics, rays_o, rays_d = random_scene(5, rays=20)
    t_near, t_far = ray_box_intersection(rays_o, rays_d, GRID)
    num_samples = sample_counts(t_near, t_far, 0.2)
    results = []
    for budget in (1 << 20, 64):  # the small budget renders one ray per chunk, checkpointed
        d, s = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        conv = resolve("metric", GRID, 0.2, 1e-7)
        out = render_reference(d, s, rays_o, rays_d, t_near, num_samples, GRID, conv, SHIFT, 1e-7, budget)
        (out.depth.sum() + out.semantics.square().sum() + out.distortion.sum()).backward()
        results.append([*(getattr(out, f) for f in FIELDS), d.grad, s.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_sparse_corner_sums_match_grid_sample_forward_and_backward(monkeypatch):
    """The CPU's sparse-product interpolation against the grid_sample one that GPUs run."""
    density, semantics, rays_o, rays_d = random_scene(7, rays=20)
    results = []
    for sparse in (True, False):
        monkeypatch.setattr(reference, "sparse_corners", lambda device, sparse=sparse: sparse)
        d, s = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        out = volume_render(d, s, rays_o, rays_d, GRID, 0.2, SHIFT, 1e-7, implementation="torch")
        (out.depth.sum() + out.semantics.square().sum() + out.distortion.sum()).backward()
        results.append([*(getattr(out, f) for f in FIELDS), d.grad, s.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_opaque_slab_renders_its_depth_and_class():
    """A wall of class 2 filling x >= 1 m; rays from x = -3 at various angles stop on its front face."""
    classes = 4
    density = torch.zeros(1, *GRID.shape)
    semantics = torch.zeros(1, *GRID.shape, classes)
    density[:, 6:] = 1000.0
    semantics[:, 6:, ..., 2] = 5.0
    # Density ramps from 0 at x = 0.75 (last free voxel centre) to 1000 at x = 1.25, so alpha goes from
    # 1e-3 to 1 - 1e-3 between x = 0.755 and x = 0.79 at step 0.1: the front face is x = 0.77 +- 0.02.
    rays_o = torch.tensor([[[-3.0, 0.0, 0.0], [-3.0, 0.3, -0.2], [-3.0, -0.4, 0.3], [-3.0, 0.1, 0.1]]])
    rays_d = torch.tensor([[[1.0, 0.0, 0.0], [1.0, -0.1, 0.05], [1.0, 0.2, 0.0], [1.0, 0.0, -0.25]]])
    rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    step = 0.1
    out = volume_render(density, semantics, rays_o, rays_d, GRID, step, implementation="torch")
    torch.testing.assert_close(out.opacity, torch.ones(1, 4))
    face = (0.77 - rays_o[..., 0]) / rays_d[..., 0]
    # the first opaque sample lies within one step after the face: its centre is face + step / 2
    assert ((out.depth - (face + step / 2)).abs() <= step / 2 + 0.03).all(), (out.depth, face)
    assert (out.semantics.argmax(-1) == 2).all()


# a 20 m row of 1 m voxels and a ray along it from 1 m before it
UNIFORM_ROW = VoxelGrid(lower=(0.0, -0.5, -0.5), upper=(20.0, 0.5, 0.5), voxel_size=1.0)
UNIFORM_RAY = (torch.tensor([[[-1.0, 0.0, 0.0]]]), torch.tensor([[[1.0, 0.0, 0.0]]]))


def uniform_density() -> torch.Tensor:
    """A float64 leaf [1, 20, 1, 1] of extinction 0.5 per metre on UNIFORM_ROW: softplus(density + shift) =
    0.5."""
    value = math.log(math.expm1(0.5)) - SHIFT
    return torch.full((1, *UNIFORM_ROW.shape), value, dtype=torch.float64, requires_grad=True)


def test_stop_transmittance_ends_a_ray_in_a_uniform_medium():
    """A 20 m row of uniform extinction 0.5 / m, so tau = 0.1 per 0.2 m sample: with a stop at 1e-3 the ray
    keeps the samples whose transmittance exp(-0.1 k) is at least 1e-3 (k <= 69) and gives nothing behind
    them a gradient; at the default (the skip threshold, 1e-7) it keeps all 100."""
    grid, rays_o, rays_d = UNIFORM_ROW, *UNIFORM_RAY
    out = {}
    for stop in (None, 1e-3):
        density = uniform_density()
        semantics = torch.zeros(1, *grid.shape, 2, dtype=torch.float64)
        render = volume_render(
            density, semantics, rays_o, rays_d, grid, 0.2, stop_transmittance=stop, implementation="torch"
        )
        render.depth.sum().backward()
        out[stop] = render, density.grad[0, :, 0, 0]
    (full, full_grad), (stopped, stopped_grad) = out[None], out[1e-3]
    assert full.samples.item() == 100 and stopped.samples.item() == 70
    torch.testing.assert_close(full.opacity, torch.tensor([[1 - math.exp(-10.0)]], dtype=torch.float64))
    torch.testing.assert_close(stopped.opacity, torch.tensor([[1 - math.exp(-7.0)]], dtype=torch.float64))
    # the last kept sample lies at x = 13.9 m, between the centres of voxels 13 and 14
    assert (stopped_grad[15:] == 0).all() and (stopped_grad[:15] != 0).all()
    assert (full_grad[15:] != 0).all()
    with pytest.raises(ValueError, match="render.stop_transmittance=1.0"):
        volume_render(density, semantics, rays_o, rays_d, grid, 0.2, stop_transmittance=1.0)
    with pytest.raises(ValueError, match="metric convention"):
        resolve("reference", VoxelGrid(), 0.2, 1e-7, stop_transmittance=1e-3)


def test_semantic_threshold_renders_only_the_heavier_samples_logits():
    """The same uniform medium (tau = 0.1 per sample, w_k = (1 - e^-0.1) e^-0.1k): with a semantic threshold
    of 1e-2 only w_0..w_22 reach it, so a logit of 1 everywhere renders to 1 - e^-2.3 instead of the opacity
    1 - e^-10, the logits behind 4.6 m get no gradient, and depth, opacity, distortion, the kept samples and
    the density's gradient through depth stay as they were."""
    grid, rays_o, rays_d = UNIFORM_ROW, *UNIFORM_RAY
    out = {}
    for threshold in (None, 1e-2):
        density = uniform_density()
        semantics = torch.zeros(1, *grid.shape, 2, dtype=torch.float64)
        semantics[..., 0] = 1.0
        semantics.requires_grad_()
        render = volume_render(
            density,
            semantics,
            rays_o,
            rays_d,
            grid,
            0.2,
            semantic_threshold=threshold,
            implementation="torch",
        )
        render.depth.sum().backward(retain_graph=True)
        density_grad = density.grad.clone()
        render.semantics[..., 0].sum().backward()
        out[threshold] = render, density_grad, semantics.grad[0, :, 0, 0, 0]
    (full, full_density_grad, full_logit_grad), (cut, cut_density_grad, cut_logit_grad) = out[None], out[1e-2]
    expected = torch.tensor([1 - math.exp(-2.3), 0.0], dtype=torch.float64)
    torch.testing.assert_close(cut.semantics[0, 0], expected)
    torch.testing.assert_close(full.semantics[0, 0], torch.stack([full.opacity[0, 0], expected[1]]))
    for name in ("depth", "opacity", "distortion", "samples"):
        torch.testing.assert_close(getattr(cut, name), getattr(full, name))
    torch.testing.assert_close(cut_density_grad, full_density_grad)
    # the last sample that counts lies at x = 4.5 m, between the centres of voxels 4 and 5
    assert (cut_logit_grad[6:] == 0).all() and (cut_logit_grad[:5] > 0).all()
    assert (full_logit_grad > 0).all()
    with pytest.raises(ValueError, match="render.semantic_threshold=1.0"):
        volume_render(density, semantics, rays_o, rays_d, grid, 0.2, semantic_threshold=1.0)
    with pytest.raises(ValueError, match="metric convention.*set render.semantic_threshold=null"):
        resolve("reference", VoxelGrid(), 0.2, 1e-7, semantic_threshold=1e-4)


def test_empty_grid_and_missing_rays_render_nothing():
    density = torch.zeros(1, *GRID.shape)  # zero network output: sigma = 1e-6 per metre, alpha below skip
    semantics = torch.randn(1, *GRID.shape, 3)
    rays_o = torch.tensor([[[-3.0, 0.0, 0.0], [-3.0, 3.0, 0.0], [0.0, 0.0, 5.0]]])
    rays_d = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    out = volume_render(
        density, semantics, rays_o, rays_d, GRID, 0.2, skip_threshold=1e-6, implementation="torch"
    )
    for name in FIELDS:
        assert (getattr(out, name) == 0).all(), name
    # without skipping, empty space is nearly but not exactly transparent; the missing rays stay zero
    out = volume_render(
        density, semantics, rays_o, rays_d, GRID, 0.2, skip_threshold=0.0, implementation="torch"
    )
    torch.testing.assert_close(out.opacity[0, 0], torch.tensor(4.0 * 1e-6), rtol=1e-3, atol=0.0)
    assert (out.opacity[0, 1:] == 0).all() and (out.semantics[0, 1:] == 0).all()


def test_ray_parallel_to_a_face_inside_the_box():
    """A ray along y at fixed x, z inside the box sees the column it runs through."""
    density = torch.zeros(1, *GRID.shape)
    density[0, 2, :, 1] = 40.0  # the voxel row at x centre -0.75, z centre -0.25
    semantics = torch.zeros(1, *GRID.shape, 2)
    rays_o = torch.tensor([[[-0.75, -5.0, -0.25], [-0.75, 1.9, -0.25], [1.75, -5.0, -0.25]]])
    rays_d = torch.tensor([[[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    out = volume_render(density, semantics, rays_o, rays_d, GRID, 0.2, implementation="torch")
    expected = naive_render(density, semantics, rays_o, rays_d, GRID, 0.2, SHIFT, 1e-7)
    torch.testing.assert_close(out.opacity[0, :2], torch.ones(2))
    torch.testing.assert_close(out.depth[0, :2], torch.tensor([3.1, 0.1]), atol=0.1, rtol=0)  # first sample
    assert out.opacity[0, 2] < 1e-3  # the parallel ray at x = 1.75 misses the dense row
    for name in FIELDS:
        assert rel_err(getattr(out, name), expected[name]) < 1e-4, name


def test_bad_inputs_name_the_field():
    density, semantics, rays_o, rays_d = random_scene(0)
    with pytest.raises(ValueError, match="semantics must be channel-last"):
        volume_render(density, semantics.permute(0, 4, 1, 2, 3), rays_o, rays_d, GRID, 0.2)
    with pytest.raises(ValueError, match="density must be"):
        volume_render(density[:, :-1], semantics, rays_o, rays_d, GRID, 0.2)
    with pytest.raises(ValueError, match="rays_d"):
        volume_render(density, semantics, rays_o, rays_d[:, :, :2], GRID, 0.2)
    with pytest.raises(ValueError, match="implementation"):
        volume_render(density, semantics, rays_o, rays_d, GRID, 0.2, implementation="cuda")
