"""The whole network: output shapes per preset, gradients, autocast, the LiDAR depth loss."""

import pytest
import torch
from model_fixtures import SMALL_GRID, make_batch

from renderocc.config import get_preset
from renderocc.models.occnet import OccupancyNet, build_model

SMALL_IMAGES = dict(image_size=(64, 176))


def small(name: str, **model):
    """A preset at 64 x 176 images over a 20 x 20 x 8 grid; model fields as given."""
    return get_preset(name).replace(grid=SMALL_GRID, data=SMALL_IMAGES, model=model)


@pytest.mark.parametrize(
    "preset",
    [
        get_preset("demo").replace(data=SMALL_IMAGES),
        small("r50-256x704"),
        small("swinb-512x1408", neck_channels=128),
    ],
    ids=["demo", "r50-256x704", "swinb-512x1408"],
)
def test_output_shapes_per_preset(preset):
    model = build_model(preset).eval()
    batch = make_batch(preset, batch_size=2)
    with torch.no_grad():
        out = model(batch)
    X, Y, Z = preset.grid.shape
    D = round((preset.model.depth_bins[1] - preset.model.depth_bins[0]) / preset.model.depth_bins[2])
    assert out["density"].shape == (2, X, Y, Z) and out["density"].dtype == torch.float32
    assert out["semantics"].shape == (2, X, Y, Z, 17) and out["semantics"].is_contiguous()
    assert out["depth_logits"].shape == (2, 6, D, 4, 11)
    assert (out["density"] >= 0).all() and torch.isfinite(out["semantics"]).all()


def test_backward_reaches_backbone_and_stereo():
    preset = small(
        "r50-256x704", backbone="resnet18", neck_channels=32, depth_net_channels=32, grad_checkpointing=True
    )
    model = build_model(preset)
    assert model.view_transformer.stereo is not None
    batch = make_batch(preset)
    out = model(batch)
    loss = out["density"].mean() + out["semantics"].logsumexp(-1).mean() + model.depth_loss(out, batch)
    loss.backward()
    for name in (
        "backbone.model.conv1.weight",
        "neck.lateral4.weight",
        "view_transformer.stereo.refine.1.weight",
        "encoder.stages.0.0.conv1.0.weight",
        "heads.density.2.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_uint8_images_are_normalised_by_the_model():
    from renderocc.data.augment import PIXEL_SCALE, PIXEL_SHIFT

    preset = get_preset("demo").replace(grid=SMALL_GRID, data=SMALL_IMAGES)
    model = build_model(preset).eval()
    batch = make_batch(preset)
    pixels = torch.randint(
        0, 256, batch["imgs"].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        from_uint8 = model(batch | {"imgs": pixels})
        from_float = model(batch | {"imgs": pixels.float() * PIXEL_SCALE + PIXEL_SHIFT})
    torch.testing.assert_close(from_uint8["density"], from_float["density"])
    torch.testing.assert_close(from_uint8["semantics"], from_float["semantics"])


def test_bf16_autocast_runs_and_returns_fp32():
    preset = get_preset("demo").replace(grid=SMALL_GRID, data=SMALL_IMAGES)
    model = build_model(preset)
    batch = make_batch(preset)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        loss = out["density"].mean() + out["semantics"].mean() + model.depth_loss(out, batch)
    loss.backward()
    assert out["density"].dtype == torch.float32 and torch.isfinite(loss)


def test_depth_loss_rewards_the_lidar_bin():
    preset = get_preset("demo").replace(data=SMALL_IMAGES)  # bins 1, 2, ..., 44 m
    model = build_model(preset)
    depth_map = torch.zeros(1, 6, 64, 176)
    depth_map[0, 2, 17, 40] = 12.2  # feature cell (1, 2) of camera 2: nearest bin 12 m = index 11
    depth_map[0, 2, 18, 41] = 30.0  # same cell, farther: min-pooling keeps the nearest return
    depth_map[0, 4, 0, 0] = 80.0  # beyond the bins: ignored
    logits = torch.zeros(1, 6, 44, 4, 11)
    uniform = model.view_transformer.depth_loss(logits, depth_map)
    torch.testing.assert_close(uniform, torch.log(torch.tensor(44.0)))
    logits[0, 2, 11, 1, 2] = 20.0
    assert model.view_transformer.depth_loss(logits, depth_map) < 1e-6
    logits[0, 2, 11, 1, 2], logits[0, 2, 29, 1, 2] = 0.0, 20.0  # confident in the far return: penalised
    assert model.view_transformer.depth_loss(logits, depth_map) > 10


def test_depth_loss_is_the_mean_over_labelled_cells():
    preset = get_preset("demo").replace(data=SMALL_IMAGES)  # bins 1, 2, ..., 44 m
    model = build_model(preset)
    g = torch.Generator().manual_seed(3)
    depth_map = torch.where(
        torch.rand(2, 6, 64, 176, generator=g) < 0.002, 60 * torch.rand(2, 6, 64, 176), 0.0
    )
    logits = torch.randn(2, 6, 44, 4, 11, generator=g, dtype=torch.float64)
    # reference: each cell's nearest return, its bin, and cross-entropy over the cells with a bin in range
    cells = depth_map.view(12, 4, 16, 11, 16).permute(0, 1, 3, 2, 4).reshape(12, 4, 11, 256)
    nearest = torch.where(cells > 0, cells, torch.full_like(cells, float("inf"))).amin(-1)
    bins = torch.round(nearest - 1.0)
    labelled = torch.isfinite(bins) & (bins >= 0) & (bins < 44)
    log_p = logits.flatten(0, 1).log_softmax(1).permute(0, 2, 3, 1)[labelled]
    expected = -log_p.gather(1, bins[labelled].long().unsqueeze(1)).mean()
    assert labelled.sum() > 20 and (~labelled).sum() > 20
    torch.testing.assert_close(model.view_transformer.depth_loss(logits, depth_map), expected.float())

    empty = logits.clone().requires_grad_()
    loss = model.view_transformer.depth_loss(empty, torch.zeros(2, 6, 64, 176))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(empty.grad) == 0


def test_bad_inputs_are_named():
    preset = get_preset("demo").replace(grid=SMALL_GRID, data=SMALL_IMAGES)
    with pytest.raises(ValueError, match="image_size"):
        OccupancyNet(preset.replace(data=dict(image_size=(60, 176))))
    model = build_model(preset)
    batch = make_batch(preset.replace(data=dict(image_size=(64, 192))))
    with pytest.raises(ValueError, match="batch\\['imgs'\\]"):
        model(batch)
