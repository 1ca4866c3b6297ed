"""A demo-preset checkpoint whose read-out is not decided by rounding, the rig of the tiny synthetic dataset,
and the checkpoint's ONNX export, once per session."""

from __future__ import annotations

import pytest
import torch
from deploy_fixtures import PRESET, frames, layer_medians

from renderocc.checkpoint import save_checkpoint
from renderocc.cli import main
from renderocc.deploy.export import rig_tensors
from renderocc.deploy.rig import read_rig, rig_from_index, write_rig
from renderocc.deploy.verify import eager_outputs, vary_like_trained
from renderocc.models import build_model


@pytest.fixture(scope="session")
def deploy_prepared(tiny_dataset, tmp_path_factory):
    from renderocc.data import prepare

    return prepare(tiny_dataset, "v1.0-synthetic", out=tmp_path_factory.mktemp("deploy_index"), workers=0)


@pytest.fixture(scope="session")
def rig_file(deploy_prepared, tmp_path_factory):
    """The rig of the validation scene's first keyframe (images 90 x 160)."""
    rig = rig_from_index(deploy_prepared, int(deploy_prepared.splits["val"][0]))
    return write_rig(rig, tmp_path_factory.mktemp("rig") / "rig.json")


@pytest.fixture(scope="session")
def demo_checkpoint(deploy_prepared, rig_file, tmp_path_factory):
    """Random weights made to vary like trained ones, read out at each z layer's median density on the first
    validation frame (about half the voxels occupied: the hardest case for agreement)."""
    torch.manual_seed(0)
    model = vary_like_trained(build_model(PRESET), frames(deploy_prepared, "train")[:2])
    batch = frames(deploy_prepared, "val")[0]
    rig = rig_tensors(read_rig(rig_file), PRESET, torch.device("cpu"))
    density = eager_outputs(model, rig, 0.0, batch["imgs"], batch["ego2keyego"])["density"][0]
    thresholds = layer_medians(density[None]).tolist()
    run = tmp_path_factory.mktemp("demo_run")
    state = model.state_dict()
    ema = {k: v.clone() for k, v in state.items()}
    save_checkpoint(run, 1, state, ema, {}, PRESET.with_readout(thresholds), keep=1)
    return run


@pytest.fixture(scope="session")
def onnx_export(demo_checkpoint, rig_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "onnx"
    args = ["export", "--checkpoint", str(demo_checkpoint), "--calib", str(rig_file), "--out", str(out)]
    assert main([*args, "--format", "onnx", "--device", "cpu", "--with-logits"]) == 0
    return out
