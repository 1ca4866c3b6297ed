"""Ray casting is voxel-exact; renders show each class's colour where its geometry is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vis_scenes import CAR, GRID, PEDESTRIAN, ROAD, VEGETATION, box

from renderocc.core import FREE, OCC3D_COLORS, invert_pose, project, transform_points
from renderocc.vis.voxel_render import (
    BACKGROUND,
    EGO_COLOR,
    bev_image,
    cast_rays,
    chase_camera,
    chebyshev_distance,
    look_at_camera,
    render_voxels,
)


def is_shade_of(pixels: np.ndarray, cls: int, tol: float = 0.02) -> np.ndarray:
    """Whether RGB pixels [..., 3] are a brightness-scaled copy of a class colour (faces are shaded)."""
    color = OCC3D_COLORS[cls].astype(np.float64)
    p = pixels.astype(np.float64)
    scale = (p @ color) / (color @ color)
    return (np.abs(p - scale[..., None] * color).max(-1) <= 255 * tol + 1.5) & (scale > 0.2)


def pixel_of(camera, point: tuple[float, float, float]) -> tuple[int, int]:
    """(row, col) where a metric ego-frame point appears in `camera`."""
    p_cam = transform_points(invert_pose(camera.cam2ego), torch.tensor([point]))
    uv, depth = project(p_cam, camera.intrinsics)
    assert depth[0] > 0
    return int(uv[0, 1]), int(uv[0, 0])


def reference_first_hit(occupied: np.ndarray, rays_o: np.ndarray, rays_d: np.ndarray) -> np.ndarray:
    """First occupied voxel by dense marching (step 1/200 voxel): [N, 3], -1 where missed."""
    t = np.arange(0, 200.0, 0.002, dtype=np.float64)
    out = np.full((len(rays_o), 3), -1)
    for i, (o, d) in enumerate(zip(rays_o, rays_d)):  # test-only reference: small N
        idx = np.floor((o + t[:, None] * d - GRID.lower) / GRID.voxel_size).astype(int)
        inside = ((idx >= 0) & (idx < GRID.shape)).all(1)
        idx = idx[inside]
        hit = occupied[idx[:, 0], idx[:, 1], idx[:, 2]]
        if hit.any():
            out[i] = idx[np.argmax(hit)]
    return out


def test_cast_rays_matches_dense_marching():
    rng = np.random.default_rng(0)
    occupied = rng.random(GRID.shape) < 0.002  # sparse clutter: the distance field makes long jumps
    occupied[:, :, 0] = rng.random(GRID.shape[:2]) < 0.5
    n = 60
    rays_o = np.stack([rng.uniform(-60, 60, n), rng.uniform(-60, 60, n), rng.uniform(-2, 30, n)], 1)
    targets = np.stack([rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), rng.uniform(-1, 5, n)], 1)
    rays_d = targets - rays_o
    rays_d /= np.linalg.norm(rays_d, axis=1, keepdims=True)
    hits = cast_rays(
        torch.from_numpy(occupied), torch.tensor(rays_o).float(), torch.tensor(rays_d).float(), GRID
    )
    expected = reference_first_hit(occupied, rays_o, rays_d)
    assert (expected[:, 0] >= 0).sum() > n // 2
    agree = (hits.voxel.numpy() == expected).all(1)
    assert agree.mean() >= 0.97, f"{(~agree).sum()} of {n} rays disagree"  # grazing edges may differ
    assert torch.equal(hits.hit, torch.from_numpy(expected[:, 0] >= 0))


def test_cast_rays_reports_entered_face_and_distance():
    occupied = torch.zeros(GRID.shape, dtype=torch.bool)
    occupied[150, 100, 5] = True  # centre (20.2, 0.2, 1.2)
    rays_o = torch.tensor([[0.0, 0.2, 1.2], [20.2, 0.2, 30.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    hits = cast_rays(occupied, rays_o, rays_d, GRID)
    assert hits.voxel.tolist() == [[150, 100, 5], [150, 100, 5]]
    assert hits.axis.tolist() == [0, 2] and hits.sign.tolist() == [1, -1]
    assert torch.allclose(hits.t, torch.tensor([20.0, 30.0 - 1.4]), atol=1e-3)


def test_chebyshev_distance_matches_brute_force():
    occupied = torch.zeros(GRID.shape, dtype=torch.bool)
    occupied[10, 20, 3] = occupied[100, 150, 12] = True
    dist = chebyshev_distance(occupied, cap=16)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in GRID.shape], indexing="ij"), -1)
    points = torch.tensor([[10, 20, 3], [100, 150, 12]])
    brute = (idx[..., None, :] - points).abs().amax(-1).amin(-1).clamp(max=16)
    assert torch.equal(dist.long(), brute)


def test_car_ahead_shows_car_colour_where_it_projects(scene):
    camera = chase_camera(320, 180)
    img = render_voxels(scene, camera)
    r, c = pixel_of(camera, (12.0, 0.0, 1.4))  # centre of the car's roof
    assert is_shade_of(img[r - 2 : r + 3, c - 2 : c + 3], CAR).all()
    r, c = pixel_of(camera, (12.5, -7.6, 1.8))  # pedestrian top, right of the car
    assert is_shade_of(img[r, c - 1 : c + 2], PEDESTRIAN).any()
    r, c = pixel_of(camera, (5.0, 10.0, -0.2))  # open road left of the ego
    assert is_shade_of(img[r, c], ROAD)
    r, c = pixel_of(camera, (0.0, 13.0, 2.6))  # hedge top
    assert is_shade_of(img[r, c], VEGETATION)
    # The car is in the upper middle of the picture: nowhere in the left or right quarter.
    car_cols = np.nonzero(is_shade_of(img, CAR).any(0))[0]
    assert car_cols.min() > 320 // 4 and car_cols.max() < 3 * 320 // 4


def test_empty_grid_renders_background_only():
    empty = np.full(GRID.shape, FREE, np.uint8)
    img = render_voxels(empty, chase_camera(160, 90), draw_ego=False)
    assert (img == np.array(BACKGROUND, np.uint8)).all()
    with_ego = render_voxels(empty, chase_camera(160, 90))
    ego = (with_ego != np.array(BACKGROUND, np.uint8)).any(-1)
    assert 0 < ego.mean() < 0.05
    scale = with_ego[ego].astype(float) / np.array(EGO_COLOR)
    assert np.ptp(scale, axis=1).max() < 0.02  # the ego box is drawn in shades of its one colour


def test_mask_hides_voxels(scene):
    camera = chase_camera(240, 135)
    mask = np.ones(GRID.shape, bool)
    box(mask, (-40, -40, -1), (40, 0, 5.4), False)  # hide the right half (y < 0), where the car half lies
    img = render_voxels(scene, camera, mask=mask)
    assert not is_shade_of(img, PEDESTRIAN).any()
    assert is_shade_of(img, VEGETATION).any()
    shown = render_voxels(scene, camera)
    assert is_shade_of(shown, CAR).sum() > is_shade_of(img, CAR).sum() > 0


def test_faces_are_shaded_differently(scene):
    camera = look_at_camera((2.0, -6.0, 6.0), (12.0, 0.0, 0.6), 200, 120, fov_y_deg=40)
    img = render_voxels(scene, camera, edges=False)
    car = img[is_shade_of(img, CAR)]
    brightness = np.unique(car.max(-1))
    assert len(brightness) >= 3  # top, back and side faces of the car


def test_bev_shows_top_class_oriented_like_the_ego():
    sem = np.full(GRID.shape, FREE, np.uint8)
    box(sem, (20, 20, -1), (24, 24, 0.2), ROAD)  # ahead-left: road under a tree crown
    box(sem, (20, 20, 1.0), (24, 24, 3.0), VEGETATION)
    box(sem, (-30, -30, -1), (-26, -26, 0.2), CAR)  # behind-right
    bev = bev_image(sem, scale=1, draw_ego=False)
    assert bev.shape == (200, 200, 3)
    top_left, bottom_right = bev[:100, :100], bev[100:, 100:]
    assert is_shade_of(top_left, VEGETATION).sum() == 100 and not is_shade_of(top_left, ROAD).any()
    assert is_shade_of(bottom_right, CAR).sum() == 100
    shade = {c: float(bev[is_shade_of(bev, c)][0].max()) / OCC3D_COLORS[c].max() for c in (CAR, VEGETATION)}
    assert shade[CAR] < shade[VEGETATION]  # the lower top surface is drawn darker
    with_ego = bev_image(sem, scale=2)
    assert (with_ego[196:204, 198:202] == EGO_COLOR).all()


def test_render_rejects_bad_grids():
    with pytest.raises(ValueError, match="grid shape"):
        render_voxels(np.zeros((10, 10, 10), np.uint8), chase_camera(8, 8))
    with pytest.raises(ValueError, match="class 40"):
        render_voxels(np.full(GRID.shape, 40, np.uint8), chase_camera(8, 8))
