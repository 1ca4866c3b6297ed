"""Voxelisation rule and visibility masks on hand-made worlds."""

from __future__ import annotations

import math

import numpy as np
import torch
from synth_reference import ellipsoid_distance_reference, square_overlap_reference

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
    # the pole (x, y in [-2.25, -1.95]) reaches into four columns
    assert (sem[..., 2] == manmade).sum() == 4 and (sem[..., 2] == road).sum() == 396
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


def test_column_overlaps_match_the_clipped_area():
    g = torch.Generator().manual_seed(0)
    n, vs = 1500, 0.4
    kind = torch.where(torch.rand(n, generator=g) < 0.5, BOX, CYLINDER)
    half = torch.rand(n, 3, generator=g) * 1.5 + 0.05
    half[:, 1] = torch.where(kind == CYLINDER, half[:, 0], half[:, 1])
    yaw = (torch.rand(n, generator=g) - 0.5) * 2 * math.pi
    d = (torch.rand(n, 2, generator=g) - 0.5) * 2 * (half[:, :2].norm(dim=-1, keepdim=True) + vs)
    got = occupancy.column_overlaps(kind, d, torch.cos(yaw), torch.sin(yaw), half, vs)
    area = square_overlap_reference(kind, d, yaw, half, vs / 2 - occupancy.MARGIN)
    overlap, apart = area > 1e-4, area == 0  # slivers in between are left to rounding
    assert overlap.sum() > 300 and apart.sum() > 300 and (overlap | apart).float().mean() > 0.95
    assert got[overlap].all() and not got[apart].any()


def test_ellipsoid_overlaps_match_the_nearest_point():
    g = torch.Generator().manual_seed(1)
    n, vs = 1500, 0.4
    half = torch.rand(n, 3, generator=g) * 2.0 + 0.1
    yaw = (torch.rand(n, generator=g) - 0.5) * 2 * math.pi
    d = (torch.rand(n, 3, generator=g) - 0.5) * 2 * (half + vs)
    got = occupancy.ellipsoid_overlaps(d, torch.cos(yaw), torch.sin(yaw), half, vs)
    distance = ellipsoid_distance_reference(d, yaw, half, vs / 2 - occupancy.MARGIN)
    overlap, apart = distance < 1 - 1e-6, distance > 1 + 1e-6
    assert overlap.sum() > 300 and apart.sum() > 300 and (overlap | apart).float().mean() > 0.99
    assert got[overlap].all() and not got[apart].any()


def test_voxelize_puts_every_surface_point_in_an_occupied_voxel():
    # Occ3D builds its labels from the LiDAR points in each voxel, so a surface point never lies in a free
    # voxel, and the voxel's class ranks at least as high as the surface's
    world = build_world(0, 0, 4)
    ego2world = torch.tensor(world.ego.pose(1.0), dtype=torch.float32)
    grid = VoxelGrid(lower=(-6.0, -12.0, -1.0), upper=(6.0, 0.0, 5.4))
    occ = materials.material_tables()["occ"]
    sem = occupancy.voxelize(world, grid, ego2world, 1.0, occ)
    prims = world.prims
    g = torch.Generator().manual_seed(2)
    k = 4000  # points per primitive
    u = torch.rand(len(prims.kind), k, 3, generator=g) * 2 - 1
    face = torch.randint(0, 3, (len(prims.kind), k), generator=g)
    on_face = torch.nn.functional.one_hot(face, 3).bool()
    box = torch.where(on_face, u.sign(), u)
    angle = u[..., 0] * math.pi  # cylinder: a cap (face 0) or the side
    radius = torch.where(face == 0, u[..., 1].abs().sqrt(), torch.ones_like(angle))
    height = torch.where(face == 0, u[..., 2].sign(), u[..., 2])
    cylinder = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), height], -1)
    ellipsoid = u / u.norm(dim=-1, keepdim=True)
    kind = prims.kind[:, None, None]
    unit = torch.where(kind == BOX, box, torch.where(kind == CYLINDER, cylinder, ellipsoid))
    local = unit * prims.half[:, None]
    c, s = torch.cos(prims.yaw)[:, None], torch.sin(prims.yaw)[:, None]
    rotated = torch.stack(
        [c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1], local[..., 2]], -1
    )
    world_points = rotated + prims.centers_at(torch.tensor([1.0]))[0][:, None]
    world2ego = torch.linalg.inv(ego2world)
    points = world_points @ world2ego[:3, :3].T + world2ego[:3, 3]
    cls = occ[prims.material][:, None].expand(-1, k)
    cell = (points - grid.lower_tensor()) / grid.voxel_size
    frac = cell - cell.floor()
    # points within 1 cm of a voxel face are left out: float32 rounding decides their voxel
    keep = grid.contains(points) & ((frac > 0.025) & (frac < 0.975)).all(-1)
    assert keep.sum() > 10000
    voxel = sem[tuple(grid.points_to_index(points[keep]).long().T)].long()
    assert (voxel != FREE).all()
    assert (occupancy.PRIORITY[voxel] >= occupancy.PRIORITY[cls[keep]]).all()
