"""Run by test_render_fused.py in a subprocess with TRITON_INTERPRET=1: fused kernels vs the reference on CPU,
under both rendering conventions.

Prints one line per case and exits non-zero on a mismatch. Arguments: the conventions to check (default both),
"edges" for the hard scenes of `edge_cases` against a float64 reference, "--chunk=N" to walk the metric
convention's rays N samples per step (default: fused.CHUNK), and "--merge=MODE" for what the kernels read
and scatter per interpolation cell (fused.MERGE_CELLS: off, density, logits, both).
"""

from __future__ import annotations

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402

from renderocc.core.grid import VoxelGrid  # noqa: E402
from renderocc.render import fused, volume_render  # noqa: E402

GRID = VoxelGrid(lower=(-1.5, -1.0, -0.5), upper=(1.5, 1.0, 0.5), voxel_size=0.5)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of a against the reference b (2-norms, in float64)."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def case(seed: int, density_scale: float, classes: int, skip: float, step: float) -> float:
    """Worst relative error over outputs and grid gradients for one random scene."""
    g = torch.Generator().manual_seed(seed)
    density = density_scale * torch.rand(2, *GRID.shape, generator=g)
    semantics = torch.randn(2, *GRID.shape, classes, generator=g)
    rays_o = torch.randn(2, 7, 3, generator=g) * 0.4 + torch.tensor([-2.0, 0.0, 0.0])
    rays_d = torch.nn.functional.normalize(torch.rand(2, 7, 3, generator=g) * 2 - 1 - rays_o * 0.5, dim=-1)
    rays_o[0, 0] = torch.tensor([-2.0, 3.0, 0.0])  # misses the box
    rays_d[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    rays_o[1, 1] = torch.tensor([-2.0, 0.25, 0.0])  # parallel to the y and z faces
    rays_d[1, 1] = torch.tensor([1.0, 0.0, 0.0])
    upstream = [torch.randn(2, 7, generator=g), torch.randn(2, 7, classes, generator=g)]
    upstream += [torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)]
    results = {}
    for impl in ("torch", "triton"):
        d, s = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        out = volume_render(d, s, rays_o, rays_d, GRID, step, skip_threshold=skip, implementation=impl)
        outputs = (out.depth, out.semantics, out.opacity, out.distortion)
        sum((o * u).sum() for o, u in zip(outputs, upstream)).backward()
        results[impl] = (*outputs, d.grad, s.grad)
    return max(_rel(a, b) for a, b in zip(results["triton"], results["torch"]))


def case_reference(seed: int, voxel_size: float, density_scale: float, classes: int) -> float:
    """The same under the "reference" convention over the Occ3D box: rays from near the ego car, mostly
    level (most leave the box through its top or sides, into the zero-density outside and the background
    shell), a padding ray and a masked one; the kept-sample counts must agree exactly."""
    grid = VoxelGrid(voxel_size=voxel_size)
    g = torch.Generator().manual_seed(seed)
    density = density_scale * torch.rand(2, *grid.shape, generator=g)
    semantics = torch.randn(2, *grid.shape, classes, generator=g)
    rays_o = torch.tensor([0.0, 0.0, 1.6]) + torch.randn(2, 4, 3, generator=g) * torch.tensor(
        [10.0, 10.0, 0.6]
    )
    tilt = torch.tensor([1.0, 1.0, 0.3])
    rays_d = torch.nn.functional.normalize(torch.randn(2, 4, 3, generator=g) * tilt, dim=-1)
    rays_d[0, 3] = 0.0  # padding
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = False
    upstream = [torch.randn(2, 4, generator=g), torch.randn(2, 4, classes, generator=g)]
    upstream += [torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)]
    results = {}
    for impl in ("torch", "triton"):
        d, s = density.clone().requires_grad_(), semantics.clone().requires_grad_()
        out = volume_render(
            d,
            s,
            rays_o,
            rays_d,
            grid,
            voxel_size / 2,
            implementation=impl,
            convention="reference",
            ray_mask=mask,
        )
        outputs = (out.depth, out.semantics, out.opacity, out.distortion)
        sum((o * u).sum() for o, u in zip(outputs, upstream)).backward()
        results[impl] = (*outputs, d.grad, s.grad, out.samples)
    opacity = results["torch"][2]
    assert (opacity > 0.999).any() and (opacity[mask] < 0.9).any(), "the case no longer covers stop and shell"
    if not torch.equal(results["triton"][-1], results["torch"][-1]):
        return float("inf")  # another set of kept samples
    return max(_rel(a, b) for a, b in zip(results["triton"][:-1], results["torch"][:-1]))


def _render(impl, density, semantics, rays_o, rays_d, grid, step, upstream, **kwargs) -> tuple:
    """Outputs, the leaves, the upstream-weighted loss and kept-sample counts of one render."""
    d, s = density.clone().requires_grad_(), semantics.clone().requires_grad_()
    out = volume_render(d, s, rays_o, rays_d, grid, step, implementation=impl, **kwargs)
    outputs = (out.depth, out.semantics, out.opacity, out.distortion)
    loss = sum((o * u.to(o.dtype)).sum() for o, u in zip(outputs, upstream))
    return outputs, (d, s), loss, out.samples


def edge_case(label: str, density, semantics, rays_o, rays_d, grid, step, upstream, **kwargs) -> bool:
    """The fused renderer against a float64 PyTorch reference on one scene: outputs and grid gradients
    (rel. err < 1e-4) and the kept samples (equal). One line."""
    outputs, leaves, loss, ref_samples = _render(
        "torch", density.double(), semantics.double(), rays_o.double(), rays_d.double(), grid, step,
        upstream, **kwargs,
    )  # fmt: skip
    ref = (*outputs, *torch.autograd.grad(loss, leaves))
    outputs, leaves, loss, samples = _render("triton", density, semantics, rays_o, rays_d, grid, step,
                                             upstream, **kwargs)  # fmt: skip
    names = ("depth", "semantics", "opacity", "distortion", "grad_density", "grad_semantics")
    errors = {n: _rel(a, b) for n, a, b in zip(names, (*outputs, *torch.autograd.grad(loss, leaves)), ref)}
    worst_name = max(errors, key=errors.get)
    same_samples = torch.equal(samples, ref_samples)
    ok = same_samples and errors[worst_name] < 1e-4
    print(
        f"edge {label}: rel err vs float64 {errors[worst_name]:.2e} ({worst_name}), "
        f"samples {'equal' if same_samples else 'DIFFER'} {'ok' if ok else 'FAIL'}"
    )
    return ok


def edge_cases() -> bool:
    """Scenes where steps of S samples, cells and stops meet. Metric: 0.1 m steps through 0.5 m voxels, a
    half-empty checkerboard whose interpolated alpha crosses the skip threshold inside cells, rays along cell
    edges and through cell corners, rays grazing the clamped margin and leaving the box, a miss, and an
    opaque batch element whose rays stop early; then a large skip threshold (samples that attenuate but
    carry no weight) with steps longer than a voxel (cells jump); then a stop at transmittance 1e-2, far
    above the skip threshold, that rays reach inside the box; then a semantic threshold of 1e-2 (logits
    read for a few of the kept samples only). Reference: the Occ3D box at 3.2 m voxels
    (two layers: corners outside the grid above and below), rays that stop, reach the background shell
    (pulled-in samples crowd into few cells), a padding ray and a masked one; then level rays through a
    nearly transparent field, which walk every candidate (the crowding test across steps), one of them
    from outside the sphere."""
    ok = True
    # seed, classes, skip threshold, stop transmittance, semantic threshold, step, checkerboard scale, opaque
    # element's densities
    cases = (
        (21, 3, 1e-5, None, None, 0.1, 12.0, (20.0, 30.0)),
        (22, 5, 1e-3, None, None, 0.7, 30.0, (12.0, 16.0)),
        (23, 3, 1e-7, 1e-2, None, 0.1, 16.0, (16.0, 19.0)),
        (24, 5, 1e-7, None, 1e-2, 0.1, 12.0, (16.0, 19.0)),
    )
    for seed, classes, skip, stop, sem, step, scale, (lo, hi) in cases:
        g = torch.Generator().manual_seed(seed)
        ix, iy, iz = torch.meshgrid(*(torch.arange(n) for n in GRID.shape), indexing="ij")
        checker = ((ix + iy + iz) % 2).float()
        density = torch.stack([scale * torch.rand(GRID.shape, generator=g) * checker,
                               lo + (hi - lo) * torch.rand(GRID.shape, generator=g)])  # fmt: skip
        semantics = torch.randn(2, *GRID.shape, classes, generator=g)
        rays_o = torch.randn(2, 9, 3, generator=g) * 0.4 + torch.tensor([-2.0, 0.0, 0.0])
        rays_d = torch.nn.functional.normalize(
            torch.rand(2, 9, 3, generator=g) * 2 - 1 - rays_o * 0.5, dim=-1
        )
        # voxel centres (cell corners) are at -1.25 + 0.5 i, -0.75 + 0.5 j, -0.25 + 0.5 k
        special = [
            ((-2.0, 0.25, 0.25), (1.0, 0.0, 0.0)),  # along a cell edge (and the clamped top layer)
            ((-1.75, -1.25, -0.75), (1.0, 1.0, 1.0)),  # through cell corners, out through the top
            ((-2.0, 0.9, 0.4), (1.0, 0.0, 0.0)),  # in the clamped margin of two faces
            ((-2.0, 3.0, 0.0), (1.0, 0.0, 0.0)),  # misses the box
            ((0.3, -1.4, 0.1), (-0.2, 1.0, -0.05)),  # across the short axis, nearly along a cell face
        ]
        for b in range(2):
            for r, (o, d) in enumerate(special):
                rays_o[b, r] = torch.tensor(o)
                rays_d[b, r] = torch.nn.functional.normalize(torch.tensor(d), dim=0)
        upstream = [torch.randn(2, 9, generator=g), torch.randn(2, 9, classes, generator=g)]
        upstream += [torch.randn(2, 9, generator=g), torch.randn(2, 9, generator=g)]
        label = f"metric seed={seed} skip={skip} stop={stop} semantic={sem} step={step}"
        ok &= edge_case(label, density, semantics, rays_o, rays_d, GRID, step, upstream, skip_threshold=skip,
                        stop_transmittance=stop, semantic_threshold=sem)  # fmt: skip
    grid = VoxelGrid(voxel_size=3.2)
    g = torch.Generator().manual_seed(30)
    density = 24.0 * torch.rand(2, *grid.shape, generator=g)
    semantics = torch.randn(2, *grid.shape, 5, generator=g)
    rays_o = torch.tensor([0.0, 0.0, 1.6]) + torch.randn(2, 4, 3, generator=g) * torch.tensor(
        [10.0, 10.0, 0.6]
    )
    tilt = torch.tensor([1.0, 1.0, 0.3])
    rays_d = torch.nn.functional.normalize(torch.randn(2, 4, 3, generator=g) * tilt, dim=-1)
    rays_d[0, 3] = 0.0  # padding
    rays_d[1, 3] = torch.tensor([0.0, 0.0, 1.0])  # straight up: out of the grid at once
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = False
    upstream = [torch.randn(2, 4, generator=g), torch.randn(2, 4, 5, generator=g)]
    upstream += [torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)]
    ok &= edge_case("reference seed=30", density, semantics, rays_o, rays_d, grid, 1.6, upstream,
                    convention="reference", ray_mask=mask)  # fmt: skip
    # nearly transparent (alpha about 2e-4 a sample), level rays at the sphere centre's height: no ray stops,
    # so each walks every candidate into the background shell, where the crowding test keeps a few
    g = torch.Generator().manual_seed(31)
    density = 5.5 + torch.rand(2, *grid.shape, generator=g)
    semantics = torch.randn(2, *grid.shape, 3, generator=g)
    rays_o = torch.tensor([0.0, 0.0, 2.2]) + torch.randn(2, 3, 3, generator=g) * torch.tensor(
        [12.0, 12.0, 0.0]
    )
    rays_o[1, 0] = torch.tensor([45.0, 3.0, 2.2])  # starts outside the sphere
    rays_d = torch.nn.functional.normalize(
        torch.randn(2, 3, 3, generator=g) * torch.tensor([1.0, 1.0, 0.0]), dim=-1
    )
    upstream = [torch.randn(2, 3, generator=g), torch.randn(2, 3, 3, generator=g)]
    upstream += [torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)]
    ok &= edge_case("reference seed=31 transparent", density, semantics, rays_o, rays_d, grid, 1.6, upstream,
                    convention="reference")  # fmt: skip
    return ok


def main(conventions: list[str]) -> int:
    for arg in conventions:
        if arg.startswith("--chunk="):
            fused.CHUNK = int(arg.removeprefix("--chunk="))
        if arg.startswith("--merge="):
            fused.MERGE_CELLS = arg.removeprefix("--merge=")
        if arg.startswith("--maxnreg="):  # 0: none; the interpreter ignores a cap, but the launch takes it
            fused.BACKWARD_MAXNREG = int(arg.removeprefix("--maxnreg=")) or None
    conventions = [c for c in conventions if not c.startswith("--")] or ["metric", "reference"]
    failed = False
    if "edges" in conventions:
        failed |= not edge_cases()
    # semi-transparent with skipping; dense (blocks stop early); no skipping, 5 classes (padded to 8);
    # steps longer than a voxel (cells jump)
    for seed, scale, classes, skip, step in (
        ()
        if "metric" not in conventions
        else (
            (1, 17.0, 3, 1e-7, 0.2),
            (2, 40.0, 3, 1e-7, 0.15),
            (3, 15.0, 5, 0.0, 0.3),
            (4, 16.0, 3, 1e-7, 0.7),
        )
    ):
        err = case(seed, scale, classes, skip, step)
        ok = err < 1e-4
        failed |= not ok
        verdict = "ok" if ok else "FAIL"
        print(f"seed={seed} density_scale={scale} classes={classes} skip={skip}: rel err {err:.2e} {verdict}")
    # some rays stop at transmittance 1e-3, some reach the background shell (checked in case_reference)
    cases = ((10, 3.2, 24.0, 5),) if "reference" in conventions else ()
    for seed, voxel_size, scale, classes in cases:
        err = case_reference(seed, voxel_size, scale, classes)
        ok = err < 1e-4
        failed |= not ok
        verdict = "ok" if ok else "FAIL"
        print(f"reference seed={seed} voxel={voxel_size} density_scale={scale}: rel err {err:.2e} {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
