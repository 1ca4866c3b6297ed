"""The training loop on the CPU: the 2D loss terms, exact resume, NaN stop, preset-mismatch refusal, CLI
errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from train_fixtures import tiny_preset

import renderocc.train as train_module
from renderocc.checkpoint import latest_checkpoint, load_model, load_weights
from renderocc.cli import main
from renderocc.config import get_preset
from renderocc.render.losses import line_of_sight_free_space
from renderocc.train import NonFiniteLossError, TrainOptions, rendered_losses, train


def test_rays_to_points_outside_the_grid_are_left_to_the_free_space_terms():
    preset = tiny_preset()
    g = torch.Generator().manual_seed(0)
    density = torch.rand(1, *preset.grid.shape, generator=g) * 20
    semantics = torch.randn(1, *preset.grid.shape, 17, generator=g)
    rays_o = torch.tensor([[[0.0, 0.0, 1.5], [0.0, 0.0, 1.5]]])
    points = torch.tensor([[[10.0, 0.0, 0.0], [10.0, 0.0, 9.0]]])  # the road; a roof above the box (5.4 m)
    depth = (points - rays_o).norm(dim=-1)
    batch = {
        "rays_o": rays_o,
        "rays_d": (points - rays_o) / depth.unsqueeze(-1),
        "ray_depth": depth,
        "ray_class": torch.tensor([[11, 15]]),
        "ray_valid": torch.tensor([[True, True]]),
    }
    weights = torch.ones(17)
    losses = rendered_losses(density, semantics, batch, preset, weights)
    assert {"depth", "semantic", "line_of_sight", "surface_occupancy", "surface_semantic"} <= set(losses)
    road_only = rendered_losses(
        density, semantics, batch | {"ray_valid": torch.tensor([[True, False]])}, preset, weights
    )
    for term in ("depth", "semantic", "surface_occupancy", "surface_semantic"):
        torch.testing.assert_close(losses[term], road_only[term])
    assert losses["line_of_sight"] != road_only["line_of_sight"]  # the roof's ray still crosses free space
    as_reference = preset.replace(loss=dict(render_outside_points=True))
    assert rendered_losses(density, semantics, batch, as_reference, weights)["depth"] != losses["depth"]

    per_voxel = preset.replace(loss=dict(line_of_sight_per_voxel=True))
    torch.manual_seed(0)  # the line-of-sight points are drawn afresh on every call
    term = rendered_losses(density, semantics, batch, per_voxel, weights)["line_of_sight"]
    torch.manual_seed(0)
    term_alone = line_of_sight_free_space(density, batch, preset.grid, 8.5, per_voxel=True)
    torch.testing.assert_close(term, preset.loss.line_of_sight * term_alone)


def test_reference_convention_renders_only_rays_labelled_within_52_m():
    preset = tiny_preset().replace(render={"convention": "reference"}, loss={"render_outside_points": True})
    g = torch.Generator().manual_seed(1)
    density = (torch.rand(2, *preset.grid.shape, generator=g) * 20).requires_grad_()
    semantics = torch.randn(2, *preset.grid.shape, 17, generator=g)
    rays_o = torch.tensor([0.0, 0.0, 1.5]).expand(2, 3, 3)
    rays_d = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.2, -0.05], [0.3, 1.0, -0.1], [1.0, -1.0, 0.0]]), dim=-1
    )
    batch = {
        "rays_o": rays_o,
        "rays_d": rays_d.expand(2, 3, 3),
        "ray_depth": torch.tensor([[20.0, 30.0, 60.0], [12.0, 35.0, 60.0]]),
        "ray_class": torch.tensor([[11, 15, 16], [4, 15, 16]]),
        "ray_valid": torch.ones(2, 3, dtype=torch.bool),
    }
    weights = torch.ones(17)
    losses = rendered_losses(density, semantics, batch, preset, weights)
    within = {k: v[:, :2] for k, v in batch.items()}
    expected = rendered_losses(density, semantics, within, preset, weights)
    for name in ("depth", "semantic", "entropy", "distortion"):  # the rendering terms; not the LiDAR point's
        torch.testing.assert_close(losses[name], expected[name])
    sum(losses.values()).backward()
    assert density.grad.abs().sum() > 0


def random_field_and_rays(preset, seed: int) -> tuple:
    """A random field (density, semantics) on the preset's grid, 6 labelled rays per sample of 2 from
    above the ego origin, and class weights."""
    g = torch.Generator().manual_seed(seed)
    density = (torch.rand(2, *preset.grid.shape, generator=g) * 20).requires_grad_()
    semantics = torch.randn(2, *preset.grid.shape, 17, generator=g)
    rays_d = torch.nn.functional.normalize(
        torch.randn(2, 6, 3, generator=g) * torch.tensor([1.0, 1.0, 0.1]), dim=-1
    )
    batch = {
        "rays_o": torch.tensor([0.0, 0.0, 1.5]).expand(2, 6, 3),
        "rays_d": rays_d,
        "ray_depth": 4 + 10 * torch.rand(2, 6, generator=g),
        "ray_class": torch.randint(0, 17, (2, 6), generator=g),
        "ray_frame": torch.zeros(2, 6, dtype=torch.int64),
        "ray_valid": torch.ones(2, 6, dtype=torch.bool),
    }
    return density, semantics, batch, torch.rand(17, generator=g) + 0.5


# the terms on all of a sample's rays, none of them rendered
POINT_TERMS = ("line_of_sight", "surface_occupancy", "surface_semantic", "free_space")


def test_rendered_rays_renders_the_first_rays_and_keeps_all_for_the_point_terms():
    preset = tiny_preset()
    density, semantics, batch, weights = random_field_and_rays(preset, seed=2)
    first_four = preset.replace(render={"rendered_rays": 4})
    torch.manual_seed(0)  # the line-of-sight points are drawn afresh on every call
    losses = rendered_losses(density, semantics, batch, first_four, weights)
    torch.manual_seed(0)
    all_rays = rendered_losses(density, semantics, batch, preset, weights)
    cut = rendered_losses(density, semantics, {k: v[:, :4] for k, v in batch.items()}, preset, weights)
    for name in ("depth", "semantic", "entropy", "distortion"):
        torch.testing.assert_close(losses[name], cut[name])
        assert losses[name] != all_rays[name]
    for name in POINT_TERMS:
        torch.testing.assert_close(losses[name], all_rays[name])
    with pytest.raises(ValueError, match="render.rendered_rays=0"):
        rendered_losses(density, semantics, batch, preset.replace(render={"rendered_rays": 0}), weights)


@pytest.mark.parametrize(
    "render, changed",
    [
        ({"stop_transmittance": 0.5}, ("depth", "semantic", "entropy", "distortion")),  # rays stop sooner
        ({"semantic_threshold": 0.05}, ("semantic",)),  # the light samples' logits left out
        ({"erode": True}, ("depth", "semantic", "entropy", "distortion")),  # a thinner field rendered
    ],
)
def test_render_settings_reach_the_renderer(render, changed):
    """render.stop_transmittance, render.semantic_threshold and render.erode change the rendering terms they
    touch (the first of them at least) and leave the others as they were."""
    preset = tiny_preset()
    density, semantics, batch, weights = random_field_and_rays(preset, seed=3)
    torch.manual_seed(0)  # the line-of-sight points are drawn afresh on every call
    default = rendered_losses(density, semantics, batch, preset, weights)
    torch.manual_seed(0)
    other = rendered_losses(density, semantics, batch, preset.replace(render=render), weights)
    assert other[changed[0]] != default[changed[0]]
    assert set(POINT_TERMS) < other.keys() == default.keys()
    for name in other.keys() - set(changed):
        torch.testing.assert_close(other[name], default[name])


def test_rendered_density_replaces_the_rendered_field_only():
    preset = tiny_preset()
    density, semantics, batch, weights = random_field_and_rays(preset, seed=4)
    losses = {}
    for name, rendered in (("default", None), ("same", density), ("other", density.detach() * 0.5)):
        torch.manual_seed(0)  # the line-of-sight points are drawn afresh on every call
        losses[name] = rendered_losses(density, semantics, batch, preset, weights, rendered_density=rendered)
    for name, value in losses["default"].items():
        torch.testing.assert_close(losses["same"][name], value)
        if name in POINT_TERMS:
            torch.testing.assert_close(losses["other"][name], value)
    assert losses["other"]["depth"] != losses["default"]["depth"]


def test_bad_render_settings_are_refused_before_training(prepared, tmp_path):
    for render, message in (
        ({"stop_transmittance": 1.0}, "render.stop_transmittance=1.0"),
        ({"convention": "reference", "stop_transmittance": 1e-3}, "metric convention"),
        ({"semantic_threshold": -1e-4}, "render.semantic_threshold=-0.0001"),
        ({"rendered_rays": 0}, "render.rendered_rays=0"),
        ({"convention": "reference", "erode": True}, "render.erode=true"),
    ):
        with pytest.raises(ValueError, match=message):
            train(tiny_preset().replace(render=render), options(prepared, tmp_path / "run"))
        assert not (tmp_path / "run").exists()


def options(prepared, out, **kwargs) -> TrainOptions:
    return TrainOptions(
        prepared.dataroot, out, index_dir=prepared.root, progress=False, device="cpu", **kwargs
    )


def failing_at(call: int, make_failure):
    """training_losses that behaves normally except on its `call`-th call (1-based)."""
    original, calls = train_module.training_losses, []

    def losses(*args, **kwargs):
        calls.append(1)
        out = original(*args, **kwargs)
        return make_failure(out) if len(calls) == call else out

    return losses


def test_resume_after_a_kill_reaches_the_same_weights(prepared, tmp_path, monkeypatch):
    preset = tiny_preset(iters=4)
    uninterrupted = train(preset, options(prepared, tmp_path / "a"))

    def killed(out):
        raise KeyboardInterrupt  # the process dies during step 3, after the step-2 checkpoint

    monkeypatch.setattr(train_module, "training_losses", failing_at(3, killed))
    with pytest.raises(KeyboardInterrupt):
        train(preset, options(prepared, tmp_path / "b"))
    assert latest_checkpoint(tmp_path / "b").name == "step-00000002"
    monkeypatch.undo()
    resumed = train(preset, options(prepared, tmp_path / "b", resume=True))

    assert resumed.name == uninterrupted.name == "step-00000004"
    for which in ("model", "ema"):
        a, b = load_weights(uninterrupted, which), load_weights(resumed, which)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{which}.{key} differs after resume"
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert 4 in steps  # a logged record and the final validation


def test_nan_loss_stops_with_step_batch_and_checkpoint(prepared, tmp_path, monkeypatch):
    def poisoned(out):
        return {**out, "depth": out["depth"] * float("nan")}

    monkeypatch.setattr(train_module, "training_losses", failing_at(3, poisoned))
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny_preset(iters=4), options(prepared, tmp_path))
    message = str(err.value)
    assert "step 2" in message and "depth=nan" in message
    tokens = [prepared.tokens[i] for i in prepared.splits["train"]]
    assert any(token in message for token in tokens)
    assert str(tmp_path / "checkpoints" / "step-00000002") in message
    # found at the next sync point (step 4) without a wait per step, before step 4's checkpoint was written
    assert latest_checkpoint(tmp_path).name == "step-00000002"


def test_depth_start_trains_the_image_branch_and_starts_another_run(prepared, tmp_path, capsys):
    from renderocc.checkpoint import IMAGE_BRANCH, load_image_branch
    from renderocc.models import build_model
    from renderocc.train_utils.rng import seed_everything

    preset = tiny_preset(iters=2)
    depth_run = train(preset, options(prepared, tmp_path / "depth", supervision="depth"))
    seed_everything(0)  # as train() does before building its model
    fresh = dict(build_model(preset).named_parameters())  # (the encoder's batch-norm statistics do move)
    trained = load_weights(depth_run, "model")
    changed = {k for k, v in fresh.items() if not torch.equal(v, trained[k])}
    assert any(k.startswith("view_transformer.") for k in changed)  # the depth net learned
    assert not any(k.startswith(("encoder.", "heads.")) for k in changed)  # nothing else did

    torch.manual_seed(1)
    model = build_model(preset)
    encoder = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(IMAGE_BRANCH)}
    assert load_image_branch(model, tmp_path / "depth") > 0
    ema = load_weights(depth_run, "ema")
    for key, value in model.state_dict().items():
        expected = ema[key] if key.startswith(IMAGE_BRANCH) else encoder[key]
        assert torch.equal(value, expected), key

    train(preset, options(prepared, tmp_path / "2d", max_iters=1, init=str(tmp_path / "depth")))
    assert (
        f"image branch ({len([k for k in ema if k.startswith(IMAGE_BRANCH)])} tensors)"
        in capsys.readouterr().out
    )
    other = preset.replace(model={"neck_channels": 24})
    with pytest.raises(ValueError, match="--init .*image branch does not fit.*another shape"):
        train(other, options(prepared, tmp_path / "other", init=str(tmp_path / "depth")))


def test_a_failed_compilation_retries_with_eager_losses_then_eagerly():
    calls, undone, lines = [], [], []

    def compiled(batch):
        calls.append("compiled")
        raise RuntimeError("inductor: no kernel\n(traceback)")

    def eager_losses(batch):  # fails while the network is still compiled
        calls.append("eager losses")
        if not undone:
            raise RuntimeError("inductor again")
        return {"depth": 1.0}

    losses, step = train_module.first_compiled_step(
        compiled, {}, lambda: eager_losses, lambda: undone.append(True), lines.append
    )
    assert losses == {"depth": 1.0} and step is eager_losses
    assert calls == ["compiled", "eager losses", "eager losses"] and undone == [True]
    assert lines == [
        "warning: torch.compile failed (RuntimeError: inductor: no kernel); the 2D losses eager",
        "warning: torch.compile failed (RuntimeError: inductor again); training eagerly",
    ]


def test_training_survives_a_failed_compilation_of_the_losses(prepared, tmp_path, monkeypatch, capsys):
    def broken_compile(fn, **kwargs):  # the 2D losses fail to compile; the network compiles (to itself)
        if fn is not rendered_losses:
            return fn

        def failing(*args, **kwargs):
            raise RuntimeError("triton: PassManager::run failed")

        return failing

    monkeypatch.setattr(torch, "compile", broken_compile)
    final = train(tiny_preset(iters=2), options(prepared, tmp_path, compile=True))
    assert final.name == "step-00000002"
    out = capsys.readouterr().out
    assert "torch.compile failed (RuntimeError: triton: PassManager::run failed); the 2D losses eager" in out
    assert "training eagerly" not in out and "torch.compile: first step took" in out


def test_time_budget_stops_with_a_checkpoint(prepared, tmp_path):
    final = train(tiny_preset(iters=4), options(prepared, tmp_path, time_budget_s=0.0))
    assert final.name == "step-00000001"  # the first step always runs, then the budget is spent
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 1]  # its training record and its validation


def test_resume_under_another_recipe_is_refused_and_another_pace_is_not(prepared, tmp_path):
    preset = tiny_preset(iters=2)
    train(preset, options(prepared, tmp_path))
    longer = {"max_iters": 3, "val_every": 3}
    other = preset.replace(data={"max_rays": 128}, train=longer)  # e.g. a --set forgotten on resume
    saved = re.escape(str(tmp_path / "preset.json"))
    message = rf"another recipe \(data.max_rays: 256 -> 128\); resume with --preset {saved}"
    with pytest.raises(ValueError, match=message):
        train(other, options(prepared, tmp_path, resume=True))
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert load_model(tmp_path)[1].data.max_rays == 256
    # more steps and another validation interval change how the run goes on, not what it learns
    resumed = train(preset.replace(train=longer), options(prepared, tmp_path, resume=True))
    assert resumed.name == "step-00000003"


def test_checkpoint_of_another_preset_is_refused(tiny_run):
    model, preset = load_model(tiny_run)  # its own preset, from the checkpoint's metadata
    assert preset.grid.voxel_size == 1.6
    with pytest.raises(ValueError, match=r"preset 'demo'.*(missing|another shape).*neck"):
        load_model(tiny_run, get_preset("demo"))


def test_cli_rejects_unknown_preset_missing_dataroot_and_stale_out(prepared, tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--dataroot", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "valid presets: demo, r50-256x704, swinb-512x1408" in capsys.readouterr().err
    args = ["train", "--preset", "demo", "--dataroot", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--preset", "demo", "--dataroot", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "renderocc prepare --dataroot" in capsys.readouterr().err


def test_two_gloo_processes_train_under_torchrun(prepared, tmp_path):
    """DDP on the CPU: `torchrun --nproc-per-node 2` runs the same command as a single process."""
    import subprocess
    import sys

    from renderocc.config import preset_to_json

    preset_file = tmp_path / "tiny.json"
    preset_file.write_text(preset_to_json(tiny_preset(iters=2)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "renderocc.cli"]
    cmd += ["train", "--preset", str(preset_file), "--dataroot", str(prepared.dataroot)]
    cmd += ["--out", str(tmp_path / "run")]
    cmd += ["--device", "cpu", "--no-progress", "--index", str(prepared.root)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert latest_checkpoint(tmp_path / "run").name == "step-00000002"
    # rank 0 alone names the next step, the read-out calibration, with the same data arguments
    hint = f"renderocc calibrate --checkpoint {tmp_path / 'run'} --dataroot {prepared.dataroot} --index"
    assert done.stdout.count(hint) == 1
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["samples_per_s"] > 0
