"""`renderocc export` to ONNX, run by onnxruntime on the CPU against eager PyTorch on synthetic frames;
`renderocc infer --exported`; refusals of bad input; the AOTInductor package without this package's code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from deploy_fixtures import PRESET, frames

from renderocc.checkpoint import load_model
from renderocc.cli import main
from renderocc.deploy import read_rig
from renderocc.deploy.export import rig_tensors
from renderocc.deploy.runtime import ExportedModel, rig_mismatch
from renderocc.deploy.verify import eager_outputs

# Stated tolerance of an fp32 export on the CPU: labels agree on >= 99.9% of voxels, and the density and
# semantic logits differ by at most 1e-3 of their largest magnitude (measured: up to 7e-5).
MIN_AGREEMENT = 0.999
LOGIT_TOLERANCE = 1e-3


def check_against_eager(exported: ExportedModel, checkpoint, rig_file, batches) -> None:
    model, preset = load_model(checkpoint)
    rig = rig_tensors(read_rig(rig_file), preset, torch.device("cpu"))
    for batch in batches:
        inputs = (batch["imgs"], batch["ego2keyego"])
        reference = eager_outputs(model, rig, preset.readout_threshold(), *inputs)
        outputs = exported(*inputs)
        assert outputs["labels"].dtype == torch.uint8 and outputs["labels"].shape == (1, *preset.grid.shape)
        agreement = (outputs["labels"] == reference["labels"]).double().mean().item()
        occupied = (reference["labels"] != 17).double().mean().item()
        assert agreement >= MIN_AGREEMENT and 0.2 < occupied < 0.8  # half the voxels near their threshold
        for name in ("density", "semantics"):
            scale = reference[name].abs().max()
            assert (outputs[name] - reference[name]).abs().max() <= LOGIT_TOLERANCE * scale, name


def test_onnx_export_agrees_with_eager_on_synthetic_frames(
    onnx_export, demo_checkpoint, rig_file, deploy_prepared
):
    meta = json.loads((onnx_export / "export.json").read_text())
    assert meta["format"] == "onnx" and meta["opset"] == 18 and meta["precision"] == "float32"
    T, (H, W) = 1 + PRESET.data.prev_frames, PRESET.data.image_size
    assert meta["inputs"] == [
        {"name": "imgs", "shape": [1, T, 6, 3, H, W], "dtype": "float32"},
        {"name": "ego2keyego", "shape": [1, T, 4, 4], "dtype": "float32"},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["labels", "density", "semantics"]
    assert len(meta["readout_threshold"]) == PRESET.grid.shape[2]  # the checkpoint's per-layer read-out
    assert meta["verification"]["label_agreement"] >= MIN_AGREEMENT
    saved, given = read_rig(onnx_export / "rig.json"), read_rig(rig_file)
    assert np.array_equal(saved.cam2ego, given.cam2ego) and np.array_equal(saved.intrinsics, given.intrinsics)
    assert saved.image_sizes == given.image_sizes == ((90, 160),) * 6

    # TensorRT-readable: the voxel pooling is a ScatterND add, every GridSample is 4D (the stereo's); the
    # temporal warp is gathers
    graph = onnx.load(onnx_export / "model.onnx").graph
    ops = {node.op_type for node in graph.node}
    assert "ScatterND" in ops and {"Gather", "GridSample"} <= ops
    scatter = [n for n in graph.node if n.op_type == "ScatterND"]
    assert all(a.s == b"add" for n in scatter for a in n.attribute if a.name == "reduction")

    exported = ExportedModel(onnx_export, "cpu")
    assert exported.provider == "CPUExecutionProvider"
    check_against_eager(exported, demo_checkpoint, rig_file, frames(deploy_prepared, "val"))


def frame_folder(prepared, rig_file, tmp_path) -> Path:
    """The validation scene's first keyframe as six JPEGs named as the rig says."""
    sample = int(prepared.splits["val"][0])
    folder = tmp_path / "frame"
    folder.mkdir()
    for n, name in enumerate(read_rig(rig_file).images):
        shutil.copy(prepared.image_path(sample, n), folder / name)
    return folder


def test_infer_exported_matches_infer_checkpoint(
    onnx_export, demo_checkpoint, rig_file, deploy_prepared, tmp_path, capsys
):
    folder = frame_folder(deploy_prepared, rig_file, tmp_path)
    common = ["--images", str(folder), "--device", "cpu"]
    assert main(["infer", "--exported", str(onnx_export), *common, "--out", str(tmp_path / "a")]) == 0
    args = ["infer", "--checkpoint", str(demo_checkpoint), *common, "--calib", str(rig_file)]
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = np.load(tmp_path / "a" / "frame.npz")["semantics"]
    b = np.load(tmp_path / "b" / "frame.npz")["semantics"]
    assert a.shape == b.shape == (200, 200, 16) and a.dtype == np.uint8  # on the Occ3D grid, as infer writes
    assert (a == b).mean() >= MIN_AGREEMENT and 0.2 < (b != 17).mean() < 0.8

    # a whole split from the prepared dataset; the synthetic frames' camera poses move by a few cm
    # (ego motion between the LiDAR and camera times), which the fixed rig leaves out: a warning, not an error
    out = tmp_path / "split"
    dataset = ["--dataroot", str(deploy_prepared.dataroot), "--index", str(deploy_prepared.root)]
    assert (
        main(["infer", "--exported", str(onnx_export), *dataset, "--out", str(out), "--num-workers", "0"])
        == 0
    )
    assert {p.stem for p in out.glob("*.npz")} == {
        deploy_prepared.tokens[i] for i in deploy_prepared.splits["val"]
    }
    assert "differs from the exported rig" in capsys.readouterr().out


def test_bad_input_gets_one_line_errors(
    onnx_export, demo_checkpoint, rig_file, deploy_prepared, tmp_path, capsys, monkeypatch
):
    def error(args: list[str]) -> str:
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    export = ["export", "--checkpoint", str(demo_checkpoint), "--device", "cpu"]
    assert "exists; pass --overwrite" in error([*export, "--calib", str(rig_file), "--out", str(onnx_export)])
    missing = tmp_path / "missing.json"
    assert f"rig {missing} not found" in error(
        [*export, "--calib", str(missing), "--out", str(tmp_path / "x")]
    )
    rig = json.loads(rig_file.read_text())
    for camera in rig["cameras"].values():
        camera["width"], camera["height"] = 60, 40
    (tmp_path / "small.json").write_text(json.dumps(rig))
    message = error([*export, "--calib", str(tmp_path / "small.json"), "--out", str(tmp_path / "x")])
    assert "lies outside its 60x40 image; give the width and height these intrinsics belong to" in message
    for camera in rig["cameras"].values():
        del camera["width"]
    (tmp_path / "nosize.json").write_text(json.dumps(rig))
    message = error([*export, "--calib", str(tmp_path / "nosize.json"), "--out", str(tmp_path / "x")])
    assert "nosize.json: cameras.CAM_FRONT_LEFT: width and height must give the camera's original" in message

    # an export that fails its verification, or fails half-way, leaves nothing behind (the exporter is
    # replaced by a copy of the session's export, or by one that writes half a file and fails)
    def copy(net, inputs, path, opset):
        shutil.copy(onnx_export / "model.onnx", path)

    def fail(net, inputs, path, opset):
        path.write_bytes(b"half")
        raise ValueError("disk full")

    out = tmp_path / "refused"
    args = [*export, "--calib", str(rig_file), "--out", str(out), "--with-logits"]
    monkeypatch.setattr("renderocc.deploy.export.export_onnx", copy)
    assert "agree with eager PyTorch on only" in error([*args, "--min-agreement", "1.5"])
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    monkeypatch.setattr("renderocc.deploy.export.export_onnx", fail)
    assert error(args).endswith("disk full")
    assert not out.exists() and not list(tmp_path.glob(".refused*"))

    infer = ["infer", "--out", str(tmp_path / "pred"), "--device", "cpu"]
    folder = frame_folder(deploy_prepared, rig_file, tmp_path)
    assert "no export.json there" in error([*infer, "--exported", str(tmp_path), "--images", str(folder)])
    exported = [*infer, "--exported", str(onnx_export), "--images", str(folder)]
    assert "the read-out is part of an export" in error([*exported, "--threshold", "3"])
    # images of another size than the rig's: the baked-in pooling plan does not fit them
    from PIL import Image

    name = read_rig(rig_file).images[1]
    Image.open(folder / name).resize((320, 180)).save(folder / name)
    message = error(exported)
    assert "CAM_FRONT (frame 0) is resized and cropped otherwise" in message and "rig.json" in message
    # a rig of another camera count (the checkpoint is camera-agnostic, the exported plan is not)
    batch = frames(deploy_prepared, "val")[0]
    batch["imgs"] = batch["imgs"][:, :, :5]
    problem, _ = rig_mismatch(batch, json.loads((onnx_export / "export.json").read_text()))
    assert problem.startswith("5 cameras where the exported rig has 6: CAM_FRONT_LEFT, CAM_FRONT")


@pytest.mark.slow
def test_torch_package_runs_without_this_package(demo_checkpoint, rig_file, deploy_prepared, tmp_path):
    """AOTInductor compiles for minutes on 2 CPU cores: slow."""
    out = tmp_path / "torch"
    args = ["export", "--checkpoint", str(demo_checkpoint), "--calib", str(rig_file), "--out", str(out)]
    assert main([*args, "--format", "torch", "--device", "cpu", "--with-logits"]) == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == "torch" and meta["precision"] == "float32" and meta["device"] == "cpu"

    batch = frames(deploy_prepared, "val")[1]
    inputs = tmp_path / "inputs.pt"
    torch.save({"imgs": batch["imgs"], "ego2keyego": batch["ego2keyego"]}, inputs)
    # a fresh interpreter where importing renderocc fails, so the package can only use torch
    script = (
        "import sys; sys.modules['renderocc'] = None\n"
        "import torch\n"
        "from torch._inductor import aoti_load_package\n"
        f"x = torch.load({str(inputs)!r})\n"
        f"out = aoti_load_package({str(out / 'model.pt2')!r})(x['imgs'], x['ego2keyego'])\n"
        f"torch.save(list(out), {str(tmp_path / 'outputs.pt')!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=300)
    labels, density, semantics = torch.load(tmp_path / "outputs.pt")
    model, preset = load_model(demo_checkpoint)
    rig = rig_tensors(read_rig(rig_file), preset, torch.device("cpu"))
    reference = eager_outputs(model, rig, preset.readout_threshold(), batch["imgs"], batch["ego2keyego"])
    assert (labels == reference["labels"]).double().mean() >= MIN_AGREEMENT
    assert (density - reference["density"]).abs().max() <= LOGIT_TOLERANCE * reference["density"].abs().max()
    check_against_eager(ExportedModel(out, "cpu"), demo_checkpoint, rig_file, frames(deploy_prepared, "val"))


def test_a_runtime_crash_in_the_verifying_child_is_an_error():
    import faulthandler

    from renderocc.deploy.verify import call_in_child

    assert torch.equal(call_in_child(torch.arange, 3), torch.arange(3))  # the child's result comes back
    with pytest.raises(RuntimeError, match="signal SIGSEGV"):
        call_in_child(faulthandler._sigsegv)  # what the AOTInductor runtime did on torch 2.11
