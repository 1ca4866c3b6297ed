import math

import torch

from renderocc.core import pixel_rays, project, transform_points, unproject


def intrinsics(f: float = 400.0, cx: float = 320.0, cy: float = 240.0) -> torch.Tensor:
    return torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=torch.float64)


def test_project_unproject_round_trip():
    K = intrinsics()
    points = torch.rand(100, 3, dtype=torch.float64) * torch.tensor([20, 10, 50]) + torch.tensor([-10, -5, 1])
    uv, depth = project(points, K)
    torch.testing.assert_close(depth, points[:, 2])
    torch.testing.assert_close(unproject(uv, depth, K), points)


def test_principal_point_projects_optical_axis():
    uv, depth = project(torch.tensor([[0.0, 0.0, 7.0]], dtype=torch.float64), intrinsics())
    torch.testing.assert_close(uv, torch.tensor([[320.0, 240.0]], dtype=torch.float64))


def test_pixel_rays_hit_the_unprojected_point():
    K = intrinsics()
    # camera looking forward along ego x: camera z -> ego x, camera x -> ego -y, camera y -> ego -z
    cam2ego = torch.eye(4, dtype=torch.float64)
    cam2ego[:3, :3] = torch.tensor([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64)
    cam2ego[:3, 3] = torch.tensor([1.5, 0.2, 1.6])
    uv = torch.rand(50, 2, dtype=torch.float64) * torch.tensor([640, 480])
    z = torch.rand(50, dtype=torch.float64) * 40 + 1
    rays_o, rays_d, z_to_dist = pixel_rays(uv, K, cam2ego)
    torch.testing.assert_close(rays_d.norm(dim=-1), torch.ones(50, dtype=torch.float64))
    target = transform_points(cam2ego, unproject(uv, z, K))
    torch.testing.assert_close(rays_o + rays_d * (z * z_to_dist)[:, None], target)
    # the optical axis ray points along ego +x
    _, axis_d, factor = pixel_rays(torch.tensor([[320.0, 240.0]], dtype=torch.float64), K, cam2ego)
    torch.testing.assert_close(axis_d, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    assert math.isclose(float(factor), 1.0)
