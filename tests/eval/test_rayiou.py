"""RayIoU: exact first hits (against a per-ray float64 walker and analytic scenes), origins, the metric."""

import math

import numpy as np
import pytest
import torch
from rayiou_reference import walk_rays

from renderocc.core.classes import FREE
from renderocc.core.grid import VoxelGrid
from renderocc.eval.rayiou import RayIoUMeter, first_hits, lidar_ray_directions, select_origins

GRID = VoxelGrid(lower=(-20.0, -20.0, -1.0), upper=(20.0, 20.0, 5.4), voxel_size=0.4)  # 100 x 100 x 16
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def scene() -> torch.Tensor:
    labels = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    labels[:, :, 0] = 11  # road
    labels[70:80, 40:60, 1:5] = 4  # a car 8 m ahead
    labels[:, 85:, :] = 15  # a wall on the left
    return labels


def test_first_hit_is_where_the_ray_leaves_the_first_occupied_voxel():
    origin = torch.tensor([[0.1, 0.1, 0.5]], dtype=torch.float64)
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    threads = torch.get_num_threads()
    cls, depth = first_hits(scene(), GRID, origin.expand(4, 3), rays_d)
    assert torch.get_num_threads() == threads  # the walk's one CPU thread is given back
    assert cls.tolist() == [4, 11, FREE, 15]
    expected = [8.4 - 0.1, 0.5 - (-1.0), 5.4 - 0.5, 14.4 - 0.1]  # car back face, road bottom, box top, wall
    torch.testing.assert_close(depth, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)


def test_wall_at_a_known_distance_oblique_rays():
    # a wall filling the voxel slab x in [12, 12.4): rays leave it through x = 12.4 unless they cross a y or
    # z face of the voxel they entered first; the exit is the nearest of those faces
    labels = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    labels[80, :, :] = 15
    origin = np.array([0.13, -0.21, 1.84])
    rng = np.random.default_rng(0)
    yaw, pitch = rng.uniform(-1.0, 1.0, 200), rng.uniform(-0.15, 0.15, 200)
    dirs = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], -1)
    cls, depth = first_hits(labels, GRID, torch.from_numpy(origin).expand(200, 3), torch.from_numpy(dirs))
    t_in = (12.0 - origin[0]) / dirs[:, 0]  # where each ray enters the wall
    inside_box = np.abs(origin[2] + t_in * dirs[:, 2] - 2.2) < 3.2
    entry = origin + t_in[:, None] * dirs
    lo = np.floor((entry - np.array(GRID.lower)) / 0.4) * 0.4 + np.array(GRID.lower)  # the voxel entered
    far = np.where(dirs > 0, lo + 0.4, lo)
    far[:, 0] = 12.4
    exit_ = ((far - origin) / dirs).min(-1)
    assert inside_box.sum() > 100
    assert (cls.numpy() == np.where(inside_box, 15, FREE)).all()
    np.testing.assert_allclose(depth.numpy()[inside_box], exit_[inside_box], rtol=0, atol=1e-9)


def test_a_voxel_clipped_for_5_cm_is_a_hit():
    # one car voxel [x 8..8.4, y 0..0.4]; a 45-degree ray in its mid-z plane cuts its corner (8.4, 0) on a
    # chord of 0.05 m. Marching every 0.2 m would step over it.
    labels = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    labels[70, 50, 5] = 4
    leg = 0.05 / math.sqrt(2)
    d = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64) / math.sqrt(2)
    z = 1.2  # the voxel's mid height
    enter = torch.tensor([8.4 - leg, 0.0, z], dtype=torch.float64)  # on the bottom face y = 0
    origin = enter - 10 * d  # 10 m back along the ray
    cls, depth = first_hits(labels, GRID, origin, d)
    assert cls.item() == 4
    assert depth.item() == pytest.approx(10 + 0.05, abs=1e-9)  # leaves through x = 8.4 after 5 cm
    # moved 2.5 cm off the corner, the ray misses the voxel
    cls, _ = first_hits(labels, GRID, origin + torch.tensor([0.03, -0.03, 0.0], dtype=torch.float64), d)
    assert cls.item() == FREE


def test_origins_on_faces_outside_the_box_and_degenerate_rays():
    labels = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    labels[:, :, 0] = 11  # road, z in [-1, -0.6)
    labels[50, 50, 3] = 4  # a voxel z in [0.2, 0.6) above (0..0.4, 0..0.4)
    down = torch.tensor([[0.0, 0.0, -1.0]])
    # an origin on the face z = 0.6 between the car voxel and the free voxel above: the free voxel comes
    # first (a point on a face belongs to the voxel above), for zero length, then the car voxel
    cls, depth = first_hits(labels, GRID, torch.tensor([[0.2, 0.2, 0.6]]), down)
    assert (cls.item(), depth.item()) == (4, pytest.approx(0.4))
    # an origin on the face z = 0.2 at the bottom of the car voxel: its own voxel is the car's, left at once
    cls, depth = first_hits(labels, GRID, torch.tensor([[0.2, 0.2, 0.2]]), down)
    assert (cls.item(), depth.item()) == (4, pytest.approx(0.0, abs=1e-6))
    # from 2 m above the box, straight down through x = 5 m: enters at z = 5.4, road left at z = -1
    cls, depth = first_hits(labels, GRID, torch.tensor([[5.0, 5.0, 7.4]]), down)
    assert (cls.item(), depth.item()) == (11, pytest.approx(8.4))
    # rays that never enter the box, and a zero direction, are misses at depth 0
    origins = torch.tensor([[0.0, 0.0, 7.4], [30.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    cls, depth = first_hits(labels, GRID, origins, rays_d)
    assert cls.tolist() == [FREE] * 3 and depth.tolist() == [0.0] * 3
    # the last float below the box's upper x face is inside the box (it used to index voxel 100)
    x = torch.nextafter(torch.tensor(20.0), torch.tensor(0.0))
    cls, depth = first_hits(labels, GRID, torch.tensor([[x, 0.2, 0.2]]), torch.tensor([[-1.0, 0.0, 0.0]]))
    assert (cls.item(), depth.item()) == (4, pytest.approx(20.0 - 0.0, abs=1e-5))


def test_ties_at_edges_step_z_then_y_then_x():
    # a diagonal ray through voxel corners passes the voxels beside each corner for zero length; as in
    # SparseOcc's kernel the z step comes first, then y, then x
    labels = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    origin = torch.tensor([[0.2, 0.2, 0.4]], dtype=torch.float64)  # centre of voxel (50, 50, 3)
    d = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64) / math.sqrt(2)  # through the corner (0.4, 0.4)
    labels[50, 51, 3] = 7  # beside the corner, +y: passed for zero length (y steps before x)
    labels[51, 50, 3] = 9  # beside the corner, +x: not passed
    cls, depth = first_hits(labels, GRID, origin, d)
    assert (cls.item(), depth.item()) == (7, pytest.approx(0.2 * math.sqrt(2)))
    labels[50, 51, 3] = FREE
    cls, depth = first_hits(labels, GRID, origin, d)
    assert (cls.item(), depth.item()) == (FREE, pytest.approx(19.8 * math.sqrt(2)))  # the box corner


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(4))
def test_first_hits_match_a_per_ray_float64_walker(seed, device):
    gen = torch.Generator().manual_seed(seed)
    grid = VoxelGrid(lower=(-4.0, -3.2, -1.0), upper=(4.0, 3.2, 1.4), voxel_size=0.4)  # 20 x 16 x 6
    occupancy = (0.05, 0.15, 0.35)[seed % 3]
    labels = torch.randint(0, FREE, (2, *grid.shape), generator=gen, dtype=torch.uint8)
    labels[torch.rand(labels.shape, generator=gen) > occupancy] = FREE
    r = 3000
    lo, hi = torch.tensor(grid.lower), torch.tensor(grid.upper)
    rays_o = lo - 1 + torch.rand(r, 3, generator=gen) * (hi - lo + 2)  # some outside the box
    on_face = torch.rand(r, 3, generator=gen) < 0.1  # some on voxel faces, some at voxel centres
    snapped = lo + torch.round((rays_o - lo) / 0.4) * 0.4
    rays_o = torch.where(on_face, snapped, rays_o)
    rays_o[: r // 10] = grid.index_to_points(torch.randint(0, 6, (r // 10, 3), generator=gen))
    rays_d = torch.randn(r, 3, generator=gen)
    rays_d[torch.rand(r, 3, generator=gen) < 0.15] = 0.0  # rays along axes and in axis planes
    rays_d[r // 10 : r // 5] = torch.tensor([1.0, -1.0, 0.0])  # diagonals: ties between axes
    rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cls, depth = first_hits(labels.to(device), grid, rays_o.to(device), rays_d.to(device))
    for v in range(2):
        ref_cls, ref_depth = walk_rays(labels[v].numpy(), grid, rays_o.numpy(), rays_d.numpy())
        assert (cls[v].cpu().numpy() == ref_cls).all()
        np.testing.assert_allclose(depth[v].cpu().numpy(), ref_depth, rtol=0, atol=1e-9)
    assert (cls != FREE).float().mean() > 0.1  # the scenes are not trivially empty


def test_select_origins_keeps_39_m_and_thins_to_8():
    # 20 keyframes 5 m apart along x, the key frame 10th: 15 lie within 39 m, thinned to 8 evenly
    origins = np.stack([np.arange(20) * 5.0 - 50 + 0.9, np.zeros(20), np.full(20, 1.8)], -1)
    assert (select_origins(origins, 10)[:, 0] == origins[[3, 5, 7, 9, 11, 13, 15, 17], 0]).all()
    # 10 within range: round(linspace(0, 9, 8)) = 0 1 3 4 5 6 8 9 (the key frame itself may be left out)
    origins[:, 0] += 40
    assert (select_origins(origins, 2)[:, 0] == origins[[0, 1, 3, 4, 5, 6, 8, 9], 0]).all()
    # |y| counts too, z does not; fewer than 8 are all kept, in order
    few = np.array([[1.0, 0, 1.8], [0, 39.0, 1.8], [-38.9, 38.9, 30.0], [0, -39.5, 1.8]])
    assert (select_origins(few, 0) == few[[0, 2]]).all()
    assert (select_origins(few, 3, "key-frame") == few[[3]]).all()
    with pytest.raises(ValueError, match="valid: sparseocc, key-frame"):
        select_origins(few, 0, "window")


def test_lidar_ray_directions_match_sparseocc():
    dirs = lidar_ray_directions().double()
    assert dirs.shape == (39 * 360, 3)
    assert (dirs.norm(dim=-1) - 1).abs().max() < 1e-6
    pitch = torch.asin(dirs[::360, 2])
    assert pitch[0].item() == pytest.approx(-math.pi / 4, abs=1e-6)
    assert pitch[-2] < 0.21 <= pitch[-1]


def score(pred: torch.Tensor) -> dict:
    meter = RayIoUMeter(GRID, azimuth_step_deg=4.0)
    meter.update(pred, scene(), torch.tensor([[0.0, 0.0, 1.84], [2.0, 0.0, 1.84]]))
    return meter.compute()


def test_rayiou_perfect_shifted_and_empty():
    perfect = score(scene())
    assert perfect["rayiou"] == pytest.approx(100.0)
    shifted = score(torch.roll(scene(), 5, 0))  # everything 2 m further ahead / behind
    assert 0 < shifted["rayiou"] < 100
    # a 2 m error passes only the 4 m threshold for the car
    assert shifted["per_class_rayiou"]["car"] < 100
    assert shifted["rayiou@1"] <= shifted["rayiou@2"] <= shifted["rayiou@4"]
    assert score(torch.full(GRID.shape, FREE, dtype=torch.uint8))["rayiou"] == 0.0


def test_rayiou_counts_by_hand():
    # two rays along +x from one origin: GT wall at 8 m (class 15) for both; the prediction has it 1.6 m
    # nearer for one ray and a car at the right depth for the other
    gt = torch.full(GRID.shape, FREE, dtype=torch.uint8)
    gt[70, :, :] = 15  # x in [8, 8.4)
    pred = gt.clone()
    pred[66, 50, 5] = 15  # x in [6.4, 6.8), on the ray y = 0.2, z = 1.2: depth 6.8 against 8.4
    pred[70, 52, 5] = 4  # the car, on the ray y = 1.0
    meter = RayIoUMeter(GRID)
    meter.directions = torch.tensor([[1.0, 0.0, 0.0]])
    meter.update(pred, gt, torch.tensor([[0.0, 0.2, 1.2], [0.0, 1.0, 1.2]]))
    result = meter.compute()
    assert meter.gt_count[15] == 2 and meter.pred_count[15] == 1 and meter.pred_count[4] == 1
    assert meter.tp[:, 15].tolist() == [0, 1, 1]  # |6.8 - 8.4| = 1.6 m: within 2 and 4 m, not 1 m
    # IoU of manmade: 0 / (2 + 1 - 0), 1 / (2 + 1 - 1) twice; of car: 0 / (0 + 1 - 0)
    assert result["rayiou@1"] == pytest.approx(0.0)
    assert result["rayiou@2"] == pytest.approx(100 * (0.5 + 0) / 2)
    assert result["rayiou"] == pytest.approx(100 * (0 + 0.25 + 0.25) / 3)


def test_frames_walked_together_count_as_walked_one_by_one():
    gen = torch.Generator().manual_seed(0)
    frames = []
    for i in range(5):
        gt = torch.roll(scene(), 3 * i, 0)
        pred = gt.clone()
        pred[torch.rand(gt.shape, generator=gen) < 0.05] = 4
        frames.append((pred, gt, torch.tensor([[0.0, 0.0, 1.84], [2.0 * i, 1.0, 1.84]][: 1 + i % 2])))
    counts = []
    for per_walk in (1, 3):
        meter = RayIoUMeter(GRID, azimuth_step_deg=6.0, frames_per_walk=per_walk)
        for frame in frames:
            meter.update(*frame)
        assert len(meter.pending) == (0, 2)[per_walk > 1]  # the last two wait for compute
        rayiou = meter.compute()["rayiou"]
        counts.append((meter.gt_count.tolist(), meter.pred_count.tolist(), meter.tp.tolist(), rayiou))
    assert counts[0] == counts[1]
    assert sum(counts[0][0]) > 0 and 0 < counts[0][3] < 100
