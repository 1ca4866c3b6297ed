"""Voxelisation rule and visibility masks on hand-made worlds."""

from __future__ import annotations

import math

import numpy as np
import torch
from synth_reference import inside_reference

from renderocc.core.classes import FREE, OCC3D_CLASSES
from renderocc.core.grid import VoxelGrid
from renderocc.synth import materials, occupancy
from renderocc.synth.city import build_world
from renderocc.synth.materials import MATERIAL_ID
from renderocc.synth.world import BOX, CYLINDER, EgoPath, Layout, Lighting, Primitives, World

GRID = VoxelGrid(lower=(-4.0, -4.0, -1.0), upper=(4.0, 4.0, 5.4))  # 20 x 20 x 16


def _world(kinds, centers, halves, material_names) -> World:
    m = len(kinds)
    prims = Primitives(
        kind=torch.tensor(kinds),
        center=torch.tensor(centers, dtype=torch.float32),
        half=torch.tensor(halves, dtype=torch.float32),
        yaw=torch.zeros(m),
        velocity=torch.zeros(m, 3),
        material=torch.tensor([MATERIAL_ID[n] for n in material_names]),
        color=torch.zeros(m, 3),
        instance=torch.full((m,), -1),
    )
    layout = Layout(torch.full((40, 40), MATERIAL_ID["road"]), -10.0, -10.0, 0.5)
    light = Lighting((0, 0, 1), 0.5, 0.5, (0, 0, 1), (1, 1, 1), 1.0)
    return World(prims, layout, [], light, EgoPath(0, 0, 0, 0), np.eye(4))


def test_voxelize_box_pole_and_ground():
    # a 1.2 m cube on voxel boundaries, and a 0.15 m radius pole between voxel centres
    world = _world(
        [BOX, CYLINDER],
        [(1.0, 1.0, 0.8), (-2.1, -2.1, 2.0)],
        [(0.6, 0.6, 0.6), (0.15, 0.15, 2.0)],
        ["car", "pole"],
    )
    occ = materials.material_tables()["occ"]
    sem = occupancy.voxelize(world, GRID, torch.eye(4), 0.0, occ).numpy()
    car, manmade = OCC3D_CLASSES.index("car"), OCC3D_CLASSES.index("manmade")
    road = OCC3D_CLASSES.index("driveable_surface")
    assert (sem == car).sum() == 27  # x, y in [0.4, 1.6) and z in [0.2, 1.4): 3 voxels each
    assert (sem[..., 3:13] == manmade).any(axis=(0, 1)).all()  # the pole survives in every layer it spans
    # the ground skin is the layer [-0.2, 0.2) everywhere not taken by a higher-priority class
    assert (sem[..., 2] == manmade).sum() == 1 and (sem[..., 2] == road).sum() == 399
    assert (sem[..., :2] == FREE).all()


def test_traverse_stops_at_first_occupied_voxel():
    occupied = torch.zeros(GRID.shape, dtype=torch.bool)
    occupied[15, :, :] = True  # a wall at x in [2.0, 2.4)
    o = torch.tensor([[0.1, 0.1, 1.1]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    seen = occupancy.traverse(occupied, GRID, o, d, torch.tensor([math.inf]))
    xs = seen.nonzero()[:, 0].tolist()
    assert xs == list(range(10, 16))  # from the origin voxel up to and including the wall


def test_camera_visibility_stops_behind_the_first_surface():
    # a camera at the origin looking along +x (x right = -y ego, y down = -z ego), a surface 2.2 m ahead
    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cam2ego[:3, 3] = torch.tensor([0.0, 0.0, 1.2])
    K = torch.tensor([[20.0, 0, 20], [0, 20.0, 20], [0, 0, 1]])
    distance = torch.full((1, 40, 40), 2.2)
    seen = occupancy.camera_visibility(GRID, distance, K[None], cam2ego[None])
    row = seen[:, 10, 5]  # the voxel row along the optical axis (y = 0.2, z = 1.2)
    assert row[10:16].all() and not row[16:].any() and not row[:10].any()


def test_camera_visibility_keeps_raised_surfaces_seen_at_grazing_angles():
    # a camera 1.5 m up looking along +x over a 0.15 m high slab: the slab's voxel layer [-0.2, 0.2) is the
    # first occupied voxel of the rays that meet the slab, although the rays through those voxels' centres
    # (z = 0) hit the slab top in front of them
    grid = VoxelGrid(lower=(-4.0, -4.0, -1.0), upper=(20.0, 4.0, 5.4))
    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cam2ego[:3, 3] = torch.tensor([0.0, 0.0, 1.5])
    K = torch.tensor([[100.0, 0, 100], [0, 100.0, 60], [0, 0, 1]])
    v, u = torch.meshgrid(torch.arange(120) + 0.5, torch.arange(200) + 0.5, indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(K).T @ cam2ego[:3, :3].T
    rays = rays / rays.norm(dim=-1, keepdim=True)
    down = rays[..., 2] < 0
    distance = torch.where(down, (0.15 - 1.5) / rays[..., 2].clamp(max=-1e-6), torch.tensor(math.inf))
    seen = occupancy.camera_visibility(grid, distance[None], K[None], cam2ego[None])
    ahead = seen[20:30, 10, 2]  # x in [4, 8) m, where pixel rays meet the slab less than a voxel apart
    assert ahead.all()
    assert not seen[20:30, 10, 1].any()  # below the slab


def test_voxelize_matches_brute_force_probing():
    world = build_world(0, 0, 4)
    ego2world = torch.tensor(world.ego.pose(1.0), dtype=torch.float32)
    grid = VoxelGrid(lower=(-6.0, -12.0, -1.0), upper=(6.0, 0.0, 5.4))
    occ = materials.material_tables()["occ"]
    sem = occupancy.voxelize(world, grid, ego2world, 1.0, occ)
    # reference: every probe of every voxel against every nearby primitive, in the world frame
    offsets = torch.stack(torch.meshgrid(*[torch.tensor([-0.1, 0.1])] * 3, indexing="ij"), -1).reshape(8, 3)
    probes = grid.voxel_centers().reshape(-1, 1, 3) + offsets  # [V, 8, 3] ego frame
    probes = probes @ ego2world[:3, :3].T + ego2world[:3, 3]
    prims = world.prims
    centre = prims.centers_at(torch.tensor([1.0]))[0]
    near = ((centre - ego2world[:3, 3]).norm(dim=-1) < 20 + prims.bounding_radius()).nonzero().squeeze(1)
    best = torch.full((len(probes),), -1)
    for m in near.tolist():  # a few dozen primitives
        c, s = math.cos(prims.yaw[m]), math.sin(prims.yaw[m])
        q = probes - centre[m]
        q = torch.stack([c * q[..., 0] + s * q[..., 1], -s * q[..., 0] + c * q[..., 1], q[..., 2]], -1)
        hit = inside_reference(prims.kind[m].expand(len(q)), q, prims.half[m].expand(len(q), 3)).any(1)
        cls = int(occ[prims.material[m]])
        best = torch.where(
            hit, torch.maximum(best, torch.tensor(int(occupancy.PRIORITY[cls]) * 32 + cls)), best
        )
    objects = sem.reshape(-1) != FREE
    claimed = best >= 0
    assert claimed.sum() > 100
    # where a primitive claims a voxel, voxelize agrees unless the ground outranks it (never: priorities)
    assert torch.equal(sem.reshape(-1)[claimed].long(), best[claimed] % 32)
    # every other occupied voxel is ground skin
    assert (sem[..., 2].reshape(-1) != FREE).all() and not (objects & ~claimed).reshape(grid.shape)[
        ..., 3:
    ].any()
