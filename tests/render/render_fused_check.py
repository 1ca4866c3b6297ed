"""Run by test_render_fused.py in a subprocess with TRITON_INTERPRET=1: fused kernels vs the reference on CPU,
under both rendering conventions.

Prints one line per case and exits non-zero on a mismatch. Arguments: the conventions to check (default both).
"""

from __future__ import annotations

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402

from renderocc.core.grid import VoxelGrid  # noqa: E402
from renderocc.render import volume_render  # noqa: E402

GRID = VoxelGrid(lower=(-1.5, -1.0, -0.5), upper=(1.5, 1.0, 0.5), voxel_size=0.5)


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
    errors = [
        ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()
        for a, b in zip(results["triton"], results["torch"])
    ]
    return max(errors)


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
    errors = [
        ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()
        for a, b in zip(results["triton"][:-1], results["torch"][:-1])
    ]
    return max(errors)


def main(conventions: list[str]) -> int:
    failed = False
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
    sys.exit(main(sys.argv[1:] or ["metric", "reference"]))
