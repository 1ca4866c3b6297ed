"""The fixed-rig network against OccupancyNet, its pooling plan against voxel_pool, its gather warp against
grid_sample (float64, fresh random inputs), and the rig file's round trip."""

from __future__ import annotations

import math

import pytest
import torch
from deploy_fixtures import layer_medians

from renderocc.config import get_preset
from renderocc.core.camera import CAMERAS
from renderocc.core.grid import VoxelGrid
from renderocc.deploy import FixedRigNet, warp_to_key_trilinear
from renderocc.deploy.rig import rig_from_dict
from renderocc.deploy.verify import eager_outputs, example_inputs, vary_like_trained
from renderocc.models import build_model
from renderocc.models.temporal import warp_to_key
from renderocc.models.voxel_pool import frustum_points, pool_index, voxel_pool

GRID = VoxelGrid(lower=(-8.0, -8.0, -1.0), upper=(8.0, 8.0, 5.4), voxel_size=0.8)  # 20 x 20 x 8
YAWS = (55.0, 0.0, -55.0, -110.0, 180.0, 110.0)


def rig(image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A nuScenes-like ring of six level cameras: intrinsics, img_aug (resize and crop), cam2ego [6, ...]."""
    H, W = image_size
    cam2ego = []
    for yaw in map(math.radians, YAWS):
        pose = torch.eye(4)
        pose[:3, :3] = torch.tensor(
            [[math.sin(yaw), 0.0, math.cos(yaw)], [-math.cos(yaw), 0.0, math.sin(yaw)], [0.0, -1.0, 0.0]]
        )
        pose[:3, 3] = torch.tensor([1.0, 0.2, 1.5])
        cam2ego.append(pose)
    K = torch.tensor([[0.4 * W, 0.0, 0.6 * W], [0.0, 0.4 * W, 0.6 * H], [0.0, 0.0, 1.0]])
    aug = torch.tensor([[0.5, 0.0, -0.1 * W], [0.0, 0.5, -0.2 * H], [0.0, 0.0, 1.0]])
    return K.expand(6, 3, 3), aug.expand(6, 3, 3), torch.stack(cam2ego)


def pose(yaw_deg: float, translation) -> torch.Tensor:
    yaw = math.radians(yaw_deg)
    out = torch.eye(4, dtype=torch.float64)
    out[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    out[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return out[None]


@pytest.mark.parametrize("seed", range(4))
def test_gather_warp_equals_grid_sample(seed):
    gen = torch.Generator().manual_seed(seed)
    volume = torch.randn(1, 5, *GRID.shape, generator=gen, dtype=torch.float64)
    # fractions of voxels, a yaw that is not a multiple of 90 degrees, parts of the key grid outside the
    # previous one on every side
    yaw = float(torch.empty(()).uniform_(-30, 30, generator=gen))
    shift = (torch.rand(3, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([6.0, 6.0, 2.0])
    ego2keyego = pose(yaw, shift.tolist())
    expected = warp_to_key(volume, ego2keyego, GRID)
    got = warp_to_key_trilinear(volume, ego2keyego, GRID)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # float32 coordinates in both (they differ in rounding), the values in float64
    assert (got == 0).all(1).sum() > 0 and (got != 0).all(1).sum() > 0


def test_pooling_plan_equals_voxel_pool():
    preset = get_preset("demo").replace(grid=GRID, data=dict(image_size=(64, 96)))
    model = build_model(preset).eval()
    net = FixedRigNet(model, *rig((64, 96)), 8.5)
    vt = model.view_transformer
    N, D, (h, w) = 6, len(vt.depths), net.feature_size
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(N, D, h, w, generator=gen, dtype=torch.float64).softmax(1)
    context = torch.randn(N, 7, h, w, generator=gen, dtype=torch.float64)
    points = frustum_points(*rig((64, 96)), vt.depths, (64, 96), (h, w))
    expected = voxel_pool(probs[None], context[None], pool_index(points[None], GRID), GRID.shape)
    got = net.pool(probs, context.double())
    inside = net.pool_points.numel()
    assert 0 < inside < N * D * h * w  # the plan left the points outside the grid out
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stereo, prev_frames", [(True, 1), (False, 1), (False, 0)])
def test_fixed_rig_net_equals_occupancy_net(stereo, prev_frames):
    preset = get_preset("demo").replace(
        grid=GRID, data=dict(image_size=(64, 96), prev_frames=prev_frames), model=dict(stereo=stereo)
    )
    torch.manual_seed(0)
    model = build_model(preset)
    calib = rig((64, 96))
    net = FixedRigNet(model, *calib, 0.0, with_logits=True)
    inputs = example_inputs(net, seed=1)
    batches = [
        {"imgs": inputs[0] * s, "ego2keyego": torch.eye(4).repeat(1, 1 + prev_frames, 1, 1)} for s in (1, 2)
    ]
    for batch in batches:
        for key, m in zip(("intrinsics", "img_aug", "cam2ego"), calib):
            batch[key] = m[None, None].expand(1, 1 + prev_frames, *m.shape)
    vary_like_trained(model, batches)
    reference = eager_outputs(model, calib, 0.0, *inputs)
    # per-layer read-out at each layer's median: half the voxels on either side
    thresholds = layer_medians(reference["density"])
    net = FixedRigNet(model, *calib, thresholds.tolist(), with_logits=True).eval()
    reference = eager_outputs(model, calib, thresholds, *inputs)
    with torch.no_grad():
        labels, density, semantics = net(*inputs)
    assert labels.dtype == torch.uint8 and (labels == reference["labels"]).double().mean() >= 0.999
    assert 0.3 < (labels != 17).double().mean() < 0.7
    torch.testing.assert_close(density, reference["density"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(semantics, reference["semantics"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"imgs: got shape .* this model takes \[1, "):
        net(inputs[0][:, :, :5], *inputs[1:])
    if prev_frames:
        with pytest.raises(ValueError, match="ego2keyego: this model takes"):
            net(inputs[0])


def test_rig_round_trip_and_img_aug():
    K, _, E = rig((450, 800))
    cameras = {
        cam: {"intrinsics": K[n].tolist(), "sensor2ego": E[n].tolist(), "width": 800, "height": 450}
        for n, cam in enumerate(reversed(CAMERAS))  # any order in the file: nuScenes order in the rig
    }
    cameras["CAM_BACK"] |= {"width": 1600, "height": 900, "distortion": [0.1, 0, 0, 0, 0]}
    cameras["CAM_BACK"]["pinhole_intrinsics"] = (K[0] * 0.5).tolist()
    parsed = rig_from_dict({"cameras": cameras}, "rig.json")
    assert parsed.names == CAMERAS and parsed.images[1] == "CAM_FRONT.jpg"
    assert parsed.image_sizes[4] == (900, 1600) and parsed.image_sizes[0] == (450, 800)
    assert (parsed.intrinsics[4] == (K[0] * 0.5).numpy()).all()  # a distorted camera enters as its pinhole
    again = rig_from_dict(parsed.to_dict(), "again")
    assert again.names == parsed.names and again.image_sizes == parsed.image_sizes
    assert (again.cam2ego == parsed.cam2ego).all() and (again.intrinsics == parsed.intrinsics).all()
    aug = parsed.img_aug(get_preset("r50-256x704").data)
    # 450x800 and 900x1600 scale to cover 256x704 (x0.88, x0.44), both crop the top and keep the bottom
    assert aug[0, 0, 0] == pytest.approx(0.88) and aug[4, 0, 0] == pytest.approx(0.44)
    assert aug[0, 1, 2] == pytest.approx(-(450 * 0.88 - 256))
    # another rig is taken in the file's order
    other = rig_from_dict({"cameras": {"left": cameras["CAM_FRONT"], "front": cameras["CAM_BACK"]}}, "mine")
    assert other.names == ("left", "front") and len(other.intrinsics) == 2
    cameras["CAM_FRONT"]["sensor2ego"] = [[1, 0], [0, 1]]
    with pytest.raises(
        ValueError, match=r"rig.json: cameras.CAM_FRONT.sensor2ego must be a finite 4x4 matrix"
    ):
        rig_from_dict({"cameras": cameras}, "rig.json")
    with pytest.raises(ValueError, match='rig.json: "cameras" must map camera names'):
        rig_from_dict({"cams": cameras}, "rig.json")
