"""Ray weights follow the spec's policy; sampling is weighted and without replacement; ray depth is metric."""

import numpy as np
import pytest
import torch

from renderocc.config import DataConfig
from renderocc.core.camera import project
from renderocc.core.transforms import make_pose, transform_points
from renderocc.data.rays import (
    camera_directions,
    cell_counts,
    grouped_matvec,
    labels_to_rays,
    ray_weights,
    weighted_sample,
)


def test_weights_class_balance_and_frames() -> None:
    cfg = DataConfig(class_balance_power=0.0, ray_balance_cell=None)  # the reference's weights
    cls = torch.tensor([11] * 90 + [15] * 10 + [4] * 5 + [15] * 5)
    is_key = torch.tensor([True] * 105 + [False] * 5)
    points = torch.rand(len(cls), 3)
    w = ray_weights(cls, is_key, points, cfg)
    assert w[0] == pytest.approx(1.0)  # the most frequent class
    assert w[90] == pytest.approx(np.exp(0.005 * (90 / 15 - 1)))
    assert w[100] == pytest.approx(np.exp(0.005 * (90 / 5 - 1)))
    assert w[105] == pytest.approx(0.3 * np.exp(0.005 * (90 / 15 - 1)))
    cls_dynamic = cls.clone()
    cls_dynamic[105:] = 4  # neighbour-frame cars moved since: never drawn, nor counted
    w = ray_weights(cls_dynamic, is_key, points, cfg)
    assert (w[105:] == 0).all() and w[100] == pytest.approx(np.exp(0.005 * (90 / 5 - 1)))
    cls_dynamic[105:] = 9  # a class seen only in dropped neighbour rays: weight 0, not 0 x inf
    w = ray_weights(cls_dynamic, is_key, points, cfg)
    assert (w[105:] == 0).all() and torch.isfinite(w).all()


def test_weights_class_power_and_space_balance() -> None:
    cls = torch.tensor([11] * 8 + [15] * 2)
    is_key = torch.ones(10, dtype=torch.bool)
    # four class-11 points share one 0.4 m cube, four sit alone; the two class-15 points share one
    points = torch.tensor(
        [[0.1, 0.1, 0.1]] * 4 + [[2.0 + i, 0.0, 0.0] for i in range(4)] + [[-5.1, 9.9, 1.3]] * 2
    )
    cfg = DataConfig(class_balance_temperature=0.0, class_balance_power=0.5, ray_balance_cell=None)
    w = ray_weights(cls, is_key, points, cfg)
    assert w[0] == pytest.approx(1.0) and w[8] == pytest.approx((8 / 2) ** 0.5)
    cfg = DataConfig(class_balance_temperature=0.0, class_balance_power=1.0, ray_balance_cell=0.4)
    w = ray_weights(cls, is_key, points, cfg).double()
    # class masses: 11 -> 4 * 1/4 + 4 * 1 = 5, 15 -> 2 * 1/2 = 1; a lone point of class 11 weighs 1
    expected = torch.tensor([0.25] * 4 + [1.0] * 4 + [0.5 * 5] * 2, dtype=torch.float64)
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=0)
    # each cube of class 11 now draws the same total weight
    assert w[:4].sum() == pytest.approx(w[4].item())


@pytest.mark.parametrize("cell", [0.4, 1e-4])  # 1e-4 m: more than 2^31 cubes, so 64-bit keys
def test_cell_counts_match_a_count_by_hand(cell: float) -> None:
    g = torch.Generator().manual_seed(3)
    points = torch.randint(-3, 3, (400, 3), generator=g).float() * 0.4 + 0.2  # cube centres, many repeats
    points[:5] = torch.tensor([[-60.0, 55.0, -2.0]]) + 0.1 * torch.arange(5.0)[:, None]  # far, one cube each
    counts = cell_counts(points, cell)
    cubes = [tuple(v) for v in torch.floor(points.double() / cell).long().tolist()]
    assert counts.tolist() == [cubes.count(c) for c in cubes]


def test_weighted_sample_without_replacement() -> None:
    gen = torch.Generator().manual_seed(0)
    weights = torch.tensor([1.0, 0.0, 3.0, 2.0, 0.0, 4.0])
    picked = weighted_sample(weights, 3, gen)
    assert len(picked) == 3 and len(set(picked.tolist())) == 3 and not {1, 4} & set(picked.tolist())
    assert sorted(weighted_sample(weights, 10, gen).tolist()) == [0, 2, 3, 5]
    first = torch.stack([weighted_sample(torch.tensor([1.0, 3.0]), 1, gen) for _ in range(4000)])
    assert (first == 1).float().mean().item() == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("k", [2, 5])  # fewer than the positive weights, and all of them
def test_weighted_sample_comes_in_draw_order(k: int) -> None:
    """The first n indices are a weighted sample of n: the first is i with probability w_i / sum(w), the
    first two are the pair (i, j) with probability w_i / W * w_j / (W - w_i)."""
    gen = torch.Generator().manual_seed(1)
    weights = torch.tensor([1.0, 0.0, 2.0, 3.0, 4.0])
    draws = torch.stack([weighted_sample(weights, k, gen)[:2] for _ in range(6000)])
    for i in (0, 2, 3, 4):
        share = (weights[i] / weights.sum()).item()
        assert (draws[:, 0] == i).float().mean().item() == pytest.approx(share, abs=0.02)
    pair = ((draws[:, 0] == 4) & (draws[:, 1] == 3)).float().mean().item()
    assert pair == pytest.approx(0.4 * 3 / 6, abs=0.02)


def test_ray_reaches_the_labelled_point() -> None:
    K = torch.tensor(
        [[[500.0, 0, 352], [0, 500.0, 128], [0, 0, 1]], [[300.0, 0, 200], [0, 320.0, 100], [0, 0, 1]]]
    )
    poses = [
        make_pose([0.5, -0.5, 0.5, -0.5], [1.5, 0.2, 1.6]),
        make_pose([0.5, 0.5, -0.5, 0.5], [-1, 0, 1.6]),
    ]
    cam2ego = torch.from_numpy(np.stack(poses)).float()
    points_ego = torch.tensor([[10.0, 2.0, 0.5], [30.0, -4.0, 2.0], [-5.0, 0.5, -1.0]])
    group = torch.tensor([0, 0, 1])
    points_cam = transform_points(torch.linalg.inv(cam2ego)[group], points_ego[:, None])[:, 0]
    uv, z = project(points_cam[:, None], K[group])
    dirs = camera_directions(uv[:, 0], group, K)
    rays_o, rays_d, depth = labels_to_rays(dirs, z[:, 0], group, cam2ego)
    torch.testing.assert_close(rays_d.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(rays_o + depth[:, None] * rays_d, points_ego, atol=1e-4, rtol=0)


@pytest.mark.parametrize("order", ["runs", "scattered", "empty"])
def test_grouped_matvec_is_the_gathered_product(order: str) -> None:
    gen = torch.Generator().manual_seed(0)
    matrices = torch.randn(4, 3, 3, generator=gen)
    group = {
        "runs": torch.tensor([0, 0, 0, 2, 2, 1, 3, 3, 0]),  # runs of a camera, one group twice
        "scattered": torch.randint(0, 4, (60,), generator=gen),  # more runs than the gather costs
        "empty": torch.zeros(0, dtype=torch.long),
    }[order]
    vectors = torch.randn(len(group), 3, generator=gen)
    expected = torch.einsum("pij,pj->pi", matrices[group], vectors)
    torch.testing.assert_close(grouped_matvec(matrices, group, vectors), expected)
