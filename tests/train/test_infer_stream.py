"""Streaming inference: a frame's history features reused from the frame before it give the same outputs as
computing them from the history frame's images, across scene boundaries and out of order; the streaming
loader leaves those images out."""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref

import numpy as np
import pytest
import torch

from renderocc.checkpoint import save_checkpoint
from renderocc.cli import main
from renderocc.config import get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.infer import Predictor
from renderocc.models import build_model
from renderocc.train_utils.data import eval_loader, history_in_order

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scenes(prepared):
    """The prepared tiny dataset with an `all` split: scene-0000's three keyframes, then scene-0001's."""
    return dataclasses.replace(prepared, splits={**prepared.splits, "all": np.arange(len(prepared))})


def _model(preset):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    with torch.no_grad():  # stereo's last layer starts at zero (no effect): give it one
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _run(model, preset, batches, stream: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Labels and densities of each batch through one Predictor, and how many reused their history."""
    densities = []
    hook = model.register_forward_hook(lambda m, i, out: densities.append(out["density"].clone()))
    predict = Predictor(model, preset, VoxelGrid(voxel_size=0.4), CPU, stream=stream)
    labels = [predict(b) for b in batches]
    hook.remove()
    return labels, densities, predict.reused


@pytest.mark.parametrize("stereo", [True, False])
def test_streaming_gives_the_stateless_outputs(scenes, stereo):
    preset = get_preset("demo").replace(model={"stereo": stereo})
    model = _model(preset)
    full = list(eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False))
    with torch.no_grad():
        preset = preset.with_readout(float(model(full[0])["density"].median()))  # half the voxels occupied
    labels, densities, reused = _run(model, preset, full, stream=False)
    assert reused == 0 and 0.1 < (labels[0] != 17).float().mean() < 0.9  # labels tell densities apart

    streamed = list(
        eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False, stream=True)
    )
    assert [b["imgs"].shape[1] for b in streamed] == [1] * 6
    for batches in (streamed, full):  # a streaming loader's batches, and full ones in order
        s_labels, s_densities, reused = _run(model, preset, batches, stream=True)
        assert reused == 4  # all but each scene's first keyframe (its history is itself)
        for a, b, da, db in zip(labels, s_labels, densities, s_densities, strict=True):
            assert torch.equal(a, b) and torch.equal(da, db)  # float32 on the CPU: bit for bit

    order = [0, 2, 1, 3, 4, 5]  # out of order: 2 and 1 compute their history; 4 and 5 reuse it again
    s_labels, s_densities, reused = _run(model, preset, [full[i] for i in order], stream=True)
    assert reused == 2
    for i, b, db in zip(order, s_labels, s_densities, strict=True):
        assert torch.equal(labels[i], b) and torch.equal(densities[i], db)


def test_history_features_are_used(scenes):
    """Another frame's features as history change the outputs: the cache is not a no-op."""
    preset = get_preset("demo").replace(model={"stereo": True})
    model = _model(preset)
    full = list(eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False))
    with torch.no_grad():
        right = model(full[0], return_history=True)["history"]
        wrong = model(full[4], return_history=True)["history"]
        own = model(full[1])["density"]
        assert torch.equal(model(full[1], right)["density"], own)
        assert not torch.equal(model(full[1], wrong)["density"], own)


def test_predictor_is_freed_by_its_last_reference():
    """No Predictor holds itself (its labels function is not a bound method), so it is freed when dropped:
    left to the cycle collector, its CUDA graph could be freed in a loader worker forked meanwhile, which
    fails."""
    preset = get_preset("demo")
    gc.disable()
    try:
        predict = Predictor(build_model(preset), preset, VoxelGrid(voxel_size=0.4), CPU)
        dropped = weakref.ref(predict)
        del predict
        assert dropped() is None
    finally:
        gc.enable()


def test_streaming_loader_needs_its_order(scenes):
    preset = get_preset("demo")
    model = _model(preset)
    streamed = list(
        eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False, stream=True)
    )
    predict = Predictor(model, preset, VoxelGrid(voxel_size=0.4), CPU)
    predict(streamed[0])  # a scene's first keyframe: its own images are its history's
    with pytest.raises(ValueError, match="were left out"):
        predict(streamed[2])
    with pytest.raises(ValueError, match="were left out"):  # nor without streaming
        Predictor(model, preset, VoxelGrid(voxel_size=0.4), CPU, stream=False)(streamed[1])


def test_streaming_loader_leaves_out_what_is_cached(scenes):
    cfg = get_preset("demo").data
    full = eval_loader(scenes, cfg, "all", 1, 0, with_gts=False, with_rays=False)
    streamed = eval_loader(scenes, cfg, "all", 1, 2, with_gts=False, with_rays=False, stream=True)  # workers
    for a, b in zip(full, streamed, strict=True):
        assert torch.equal(b["imgs"][:, 0], a["imgs"][:, 0]) and b["imgs"].shape[1] == 1
        assert b["history_token"] == a["history_token"]
        for key in ("intrinsics", "img_aug", "cam2ego", "ego2keyego"):
            assert torch.equal(a[key], b[key])
        assert "rays_o" not in b and "depth_map" not in b
    tokens = [scenes.tokens[i] for i in range(6)]
    assert [b["history_token"][0] for b in full] == [tokens[0], *tokens[:2], tokens[3], *tokens[3:5]]

    # every second frame on two processes: no frame follows its history frame, only scene starts
    assert history_in_order(scenes, cfg, "all", [0, 2, 4]) == {0}
    assert history_in_order(scenes, cfg, "all", [1, 3, 5]) == {3}
    assert history_in_order(scenes, dataclasses.replace(cfg, prev_frames=0), "all", list(range(6))) == set()
    # another image size, another image augmentation: the history frame's features would differ
    arrays = {**scenes.arrays, "image_hw": scenes.arrays["image_hw"].copy()}
    arrays["image_hw"][1] += 16
    resized = dataclasses.replace(scenes, arrays=arrays)
    assert history_in_order(resized, cfg, "all", list(range(6))) == {0, 3, 4, 5}
    with pytest.raises(ValueError, match="batch 1"):
        eval_loader(scenes, cfg, "all", 2, 0, stream=True)


def test_infer_and_eval_cli_stream_by_default(scenes, prepared, tmp_path):
    from train_fixtures import tiny_preset

    preset = tiny_preset().replace(data={"prev_frames": 1}, model={"stereo": True})
    state = _model(preset).state_dict()
    ema = {k: v.clone() for k, v in state.items()}
    checkpoint = save_checkpoint(tmp_path / "run", 1, state, ema, {}, preset)
    common = ["--checkpoint", str(checkpoint), "--dataroot", str(prepared.dataroot)]
    common += ["--index", str(prepared.root), "--device", "cpu", "--num-workers", "0"]
    for flags, name in (([], "stream"), (["--no-stream"], "full")):
        assert main(["infer", *common, "--out", str(tmp_path / name), *flags]) == 0
        args = ["eval", *common, "--no-rayiou", "--json", str(tmp_path / f"{name}.json"), *flags]
        assert main(args) == 0
    for path in (tmp_path / "full").glob("*.npz"):
        assert np.array_equal(
            np.load(path)["semantics"], np.load(tmp_path / "stream" / path.name)["semantics"]
        )
    metrics = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("stream", "full")]
    assert metrics[0]["per_class_iou"] == metrics[1]["per_class_iou"] and metrics[0]["frames"] == 3


def test_uint8_images_are_the_float_images_rounded(scenes):
    """A uint8 loader's pixels, normalised by the Predictor, are the float loader's to within the rounding."""
    from renderocc.data.augment import IMAGENET_STD, PIXEL_SCALE, PIXEL_SHIFT

    preset = get_preset("demo")
    model = _model(preset)
    full = next(iter(eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False)))
    rounded = next(
        iter(
            eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False, uint8_images=True)
        )
    )
    assert rounded["imgs"].dtype == torch.uint8 and rounded["imgs"].shape == full["imgs"].shape
    normalised = rounded["imgs"].float().mul_(PIXEL_SCALE).add_(PIXEL_SHIFT)
    half_level = 0.5 / (255 * float(IMAGENET_STD.min()))
    assert (normalised - full["imgs"]).abs().max() <= half_level + 1e-5

    # the Predictor normalises as the loader does: the same labels and densities as from those floats
    labels, densities, _ = _run(model, preset, [rounded, rounded | {"imgs": normalised}], stream=False)
    assert torch.equal(labels[0], labels[1]) and torch.equal(densities[0], densities[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_streaming_gives_the_eager_stateless_labels(scenes):
    """Replayed as CUDA graphs, the history entries are a graph's outputs fed back as its inputs."""
    from train_fixtures import tiny_preset

    preset = tiny_preset().replace(data={"prev_frames": 1}, model={"stereo": True})
    model = _model(preset)
    with torch.no_grad():
        first = next(iter(eval_loader(scenes, preset.data, "all", 1, 0, with_gts=False, with_rays=False)))
        preset = preset.with_readout(float(model(first)["density"].median()))
    model = model.cuda()
    options = {"with_gts": False, "with_rays": False, "uint8_images": True}
    full = list(eval_loader(scenes, preset.data, "all", 1, 0, **options))
    streamed = list(eval_loader(scenes, preset.data, "all", 1, 0, stream=True, **options))
    cuda, grid = torch.device("cuda"), VoxelGrid(voxel_size=0.8)
    eager = Predictor(model, preset, grid, cuda, cuda_graphs=False, stream=False)
    expected = [eager(b) for b in full]
    graphed = Predictor(model, preset, grid, cuda)
    for _ in range(2):  # the second lap replays both graphs
        for b, labels in zip(streamed, expected, strict=True):
            assert (graphed(b) == labels).float().mean() > 0.99  # bf16 flips voxels near the threshold
    assert graphed.reused == 8
