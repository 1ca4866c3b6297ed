"""Analytic ray/primitive intersection and bundle culling against brute-force marching."""

from __future__ import annotations

import math

import torch
from synth_reference import inside_reference

from renderocc.synth import raycast
from renderocc.synth.world import BOX, CYLINDER, ELLIPSOID, Primitives


def _prims(kinds: list[int], g: torch.Generator) -> Primitives:
    m = len(kinds)
    return Primitives(
        kind=torch.tensor(kinds),
        center=torch.rand(m, 3, generator=g) * 20 - 10,
        half=torch.rand(m, 3, generator=g) * 2 + 0.3,
        yaw=torch.rand(m, generator=g) * 2 * math.pi,
        velocity=torch.zeros(m, 3),
        material=torch.zeros(m, dtype=torch.long),
        color=torch.zeros(m, 3),
        instance=torch.full((m,), -1),
    )


def _march(prims: Primitives, o: torch.Tensor, d: torch.Tensor, step: float = 0.01, far: float = 50.0):
    """First distance at which each ray [R] is inside any primitive (inf if never), by dense sampling."""
    t = torch.arange(0, far, step)
    pts = o[:, None] + t[None, :, None] * d[:, None]  # [R, T, 3]
    first = torch.full((len(o),), math.inf)
    for m in range(len(prims)):  # a handful of primitives in a test
        c, s = math.cos(prims.yaw[m]), math.sin(prims.yaw[m])
        q = pts - prims.center[m]
        q = torch.stack([c * q[..., 0] + s * q[..., 1], -s * q[..., 0] + c * q[..., 1], q[..., 2]], -1)
        inside = inside_reference(prims.kind[m].expand(len(o)), q, prims.half[m].expand(len(o), 3))
        hit_t = torch.where(inside, t, torch.full_like(t, math.inf)).amin(1)
        first = torch.minimum(first, hit_t)
    return first


def test_cast_matches_brute_force_marching():
    g = torch.Generator().manual_seed(0)
    prims = _prims([BOX, BOX, CYLINDER, CYLINDER, ELLIPSOID, ELLIPSOID], g)
    rays_o = torch.tensor([[-25.0, 0.0, 3.0]]).expand(32 * 32, 3).contiguous()
    rays_d = torch.rand(32 * 32, 3, generator=g) * 24 - 12 - rays_o  # towards the primitives' region
    rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
    bundles = raycast.grid_bundles(32, 32, (8, 8))
    hits = raycast.cast(
        prims, prims.center[None], rays_o, rays_d, bundles, torch.zeros(len(bundles)).long(), 100.0
    )
    expected = _march(prims, rays_o, rays_d)
    finite = torch.isfinite(expected)
    assert 100 < finite.sum() < 1000
    assert torch.equal(torch.isfinite(hits.t), finite)
    assert (hits.t[finite] - expected[finite]).abs().max() < 0.02
    # the hit point lies on the reported primitive's surface
    p = hits.prim[finite]
    normal, local, _ = raycast.surface(
        prims, p, prims.center[p], rays_o[finite], rays_d[finite], hits.t[finite]
    )
    assert torch.allclose(normal.norm(dim=-1), torch.ones(len(p)), atol=1e-4)
    assert ((normal * rays_d[finite]).sum(-1) < 1e-4).all()  # surfaces face the incoming ray


def test_grid_bundles_cover_every_ray_once_per_tile():
    b = raycast.grid_bundles(10, 13, (4, 4), offset=5)
    assert b.shape == (3 * 4, 16)
    assert set(b.unique().tolist()) == set(range(5, 5 + 130))


def test_ground_distance():
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    d = torch.tensor([[0.6, 0.0, -0.8], [1.0, 0.0, 0.0]])
    t = raycast.ground_distance(o, d)
    assert math.isclose(float(t[0]), 2.5, rel_tol=1e-6) and math.isinf(float(t[1]))
