"""The training step's forward and backward (`forward_backward`): eager, compiled and replayed as one CUDA
graph give the same losses and gradients; graphed inference gives the eager labels. The CUDA tests run on a
GPU machine, not in CI."""

from __future__ import annotations

import pytest
import torch
from test_train_cuda_graphs import field_and_rays
from train_fixtures import tiny_preset

from renderocc.core.grid import VoxelGrid
from renderocc.infer import Predictor
from renderocc.models import build_model
from renderocc.models.info import random_batch
from renderocc.train import compile_stages, forward_backward, rendered_losses

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def step_batch(preset, batch_size: int, device: str, seed: int) -> dict:
    """A batch with the loader's layout: random images on a level rig, and labelled rays."""
    torch.manual_seed(seed)
    _, _, rays = field_and_rays(preset, batch_size, preset.data.max_rays, device, seed)
    return random_batch(preset, batch_size, device) | rays


def losses_and_grads(step, model, batch) -> tuple[dict, dict]:
    losses = {k: v.clone() for k, v in step(batch).items()}
    return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(first: tuple[dict, dict], second: tuple[dict, dict], rtol: float, atol: float) -> None:
    (losses_a, grads_a), (losses_b, grads_b) = first, second
    assert losses_a.keys() == losses_b.keys() and grads_a.keys() == grads_b.keys()
    for name in losses_a:
        torch.testing.assert_close(losses_a[name], losses_b[name], rtol=rtol, atol=atol, msg=name)
    for name in grads_a:  # relative to the tensor's scale: bf16 / reordered sums differ elementwise
        scale = grads_a[name].abs().max().clamp_min(1e-12)
        err = (grads_a[name] - grads_b[name]).abs().max() / scale
        assert err < rtol, f"gradient of {name}: max error {float(err):.2e} of its largest entry"


# torch 2.11's CPU inductor cannot generate the 3D encoder's backward here (a scatter codegen assertion, seen
# on the GPU machine with or without the losses compiled); training then falls back to eager. A wrong value
# still fails the test.
@pytest.mark.xfail(
    torch.__version__.startswith("2.11."),
    reason="torch 2.11 CPU inductor: the encoder's backward",
    raises=torch._dynamo.exc.BackendCompilerFailed,
    strict=False,
)
def test_compiled_stages_and_losses_give_the_eager_losses_and_gradients(monkeypatch):
    # about 100 s on 2 idle cores: inductor compiles C++ for the CPU
    # the demo preset's network, shrunk, every 2D loss on: eager against torch.compile of backbone, neck,
    # encoder, heads and the 2D losses (the renderer stays eager inside them)
    # float32 (no bf16 autocast, which CPUs with native bf16 would use): the comparison is about compilation
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # eager's line-of-sight draws
    compiled_fns, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled_fns.append(fn) or real_compile(fn, **kw))
    preset = tiny_preset().replace(train=dict(amp=False))
    torch.manual_seed(0)
    model = build_model(preset).train()
    batch = step_batch(preset, 1, "cpu", seed=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(2)
    eager = losses_and_grads(forward_backward(model, model, preset, "2d", None, graphs="off"), model, batch)
    undo = compile_stages(model)
    step = forward_backward(model, model, preset, "2d", None, graphs="off", compile_losses=True)
    model.load_state_dict(state)  # the eager step moved the batch-norm statistics
    torch.manual_seed(2)
    compiled = losses_and_grads(step, model, batch)
    assert rendered_losses in compiled_fns and "line_of_sight" in compiled[0]
    assert_same_step(eager, compiled, rtol=1e-3, atol=1e-5)
    undo()
    assert "forward" not in vars(model.backbone)


@cuda
@pytest.mark.parametrize("channels_last, compile_losses", [(True, False), (False, False), (True, True)])
def test_the_replayed_step_gives_the_eager_losses_and_gradients(channels_last, compile_losses, monkeypatch):
    # compiled losses sum in another order, which TF32 convolutions and bf16 autocast amplify to 1% of the
    # first layer's largest gradient (H200): they are compared in float32 throughout
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", not compile_losses)
    preset = tiny_preset().replace(
        model=dict(channels_last=channels_last),
        data=dict(prev_frames=1),
        loss=dict(line_of_sight=0.0),
        train=dict(amp=not compile_losses),
    )
    torch.manual_seed(0)
    model = build_model(preset).cuda().train()
    eager = forward_backward(model, model, preset, "2d", None, graphs="off")
    graphed = forward_backward(model, model, preset, "2d", None, graphs="step", compile_losses=compile_losses)
    for seed in (1, 2, 3):  # capture on the first batch, replay on fresh ones
        batch = step_batch(preset, 2, "cuda", seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        expected = losses_and_grads(eager, model, batch)
        after_eager = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        replayed = losses_and_grads(graphed, model, batch)
        assert_same_step(expected, replayed, rtol=1e-3, atol=1e-5)
        for name, value in model.state_dict().items():  # batch-norm statistics moved as by one eager step
            torch.testing.assert_close(value, after_eager[name], rtol=1e-3, atol=1e-5, msg=name)


@cuda
@pytest.mark.parametrize("compile_losses", [False, True])
def test_the_replayed_step_draws_fresh_line_of_sight_points(compile_losses):
    preset = tiny_preset()
    model = build_model(preset).cuda().train()
    graphed = forward_backward(model, model, preset, "2d", None, graphs="step", compile_losses=compile_losses)
    batch = step_batch(preset, 1, "cuda", seed=4)
    first = graphed(batch)["line_of_sight"].clone()
    assert not torch.equal(first, graphed(batch)["line_of_sight"])


@cuda
def test_graphed_inference_gives_the_eager_labels():
    preset = tiny_preset().replace(data=dict(prev_frames=1))
    model = build_model(preset).cuda()
    out_grid = VoxelGrid(preset.grid.lower, preset.grid.upper, 0.8)
    eager = Predictor(model, preset, out_grid, torch.device("cuda"), cuda_graphs=False)
    graphed = Predictor(model, preset, out_grid, torch.device("cuda"))
    for seed in (0, 1):
        batch = step_batch(preset, 1, "cuda", seed)
        labels = graphed(batch)
        assert labels.shape == (1, *out_grid.shape) and labels.dtype == torch.uint8
        agree = (labels == eager(batch)).float().mean()
        assert agree > 0.999  # bf16 rounding may flip voxels right at the threshold
