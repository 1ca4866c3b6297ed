"""GraphedLosses: eager off CUDA; on CUDA the replayed graphs give the eager losses and gradients, with fresh
random line-of-sight points on every replay (the CUDA tests run on a GPU machine, not in CI)."""

from __future__ import annotations

import threading

import pytest
import torch
from train_fixtures import tiny_preset

from renderocc.train import losses_2d_fn, rendered_losses
from renderocc.train_utils.cuda_graphs import GraphedLosses

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def field_and_rays(preset, batch: int, rays: int, device: str, seed: int):
    """density [B, X, Y, Z] and semantics [B, X, Y, Z, 17] leaves, and labelled rays from near the ego car."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *preset.grid.shape)
    density = (torch.rand(shape, generator=g) * 20).to(device).requires_grad_()
    semantics = torch.randn(*shape, 17, generator=g).to(device).requires_grad_()
    azimuth = 2 * torch.pi * torch.rand(batch, rays, generator=g)
    elevation = torch.deg2rad(-30 + 35 * torch.rand(batch, rays, generator=g))
    rays_d = torch.stack(
        [elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()], -1
    )
    batch_rays = {
        "rays_o": torch.tensor([0.0, 0.0, 1.5]) + torch.rand(batch, rays, 3, generator=g) - 0.5,
        "rays_d": rays_d,
        "ray_depth": 2 + 40 * torch.rand(batch, rays, generator=g),
        "ray_class": torch.randint(0, 17, (batch, rays), generator=g),
        "ray_valid": torch.rand(batch, rays, generator=g) < 0.9,
    }
    return density, semantics, {k: v.to(device) for k, v in batch_rays.items()}


def losses_and_grads(fn, density, semantics, batch):
    density.grad = semantics.grad = None
    losses = fn(density, semantics, batch)
    sum(losses.values()).backward()
    return {k: v.detach().clone() for k, v in losses.items()}, density.grad.clone(), semantics.grad.clone()


def test_off_cuda_the_losses_run_eagerly():
    preset = tiny_preset()
    density, semantics, batch = field_and_rays(preset, 2, 64, "cpu", seed=0)
    calls = []

    def counted(*args):
        calls.append(1)
        return rendered_losses(*args, preset=preset.replace(loss=dict(line_of_sight=0.0)), class_weights=None)

    graphed = GraphedLosses(counted)
    eager = counted(density, semantics, batch)
    assert graphed(density, semantics, batch).keys() == eager.keys()
    for term, value in graphed(density, semantics, batch).items():
        torch.testing.assert_close(value, eager[term])
    assert len(calls) == 3  # every call ran the function itself


# torch 2.11's Triton failed to compile one of the compiled losses' fused reductions for these inputs on an
# H200 ("PassManager::run failed" in make_ttgir; the r50 preset's losses compiled): `renderocc train` then
# retries with the losses eager (train.first_compiled_step). A wrong value still fails the test.
KNOWN_COMPILER_FAILURE = pytest.mark.xfail(raises=torch._dynamo.exc.BackendCompilerFailed, strict=False)


@cuda
@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=KNOWN_COMPILER_FAILURE)])
def test_replays_match_eager_losses_and_gradients_on_new_inputs(compiled):
    preset = tiny_preset().replace(loss=dict(line_of_sight=0.0))
    weights = torch.rand(17, device="cuda") + 0.5
    fn = losses_2d_fn(preset, weights)
    graphed = GraphedLosses(losses_2d_fn(preset, weights, compiled))
    for seed, batch_size in ((1, 2), (2, 2), (3, 1)):  # two replays of one capture, then a second capture
        inputs = field_and_rays(preset, batch_size, 512, "cuda", seed)
        expected = losses_and_grads(fn, *inputs)
        got = losses_and_grads(graphed, *inputs)
        assert got[0].keys() == expected[0].keys()
        for term in expected[0]:
            torch.testing.assert_close(got[0][term], expected[0][term], rtol=1e-5, atol=1e-6)
        for grad, want in zip(got[1:], expected[1:]):  # atomic adds: summation order may differ
            torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)
    assert len(graphed._graphed) == 2  # one capture per input signature


@cuda
def test_line_of_sight_points_are_drawn_afresh_on_every_replay():
    preset = tiny_preset().replace(loss=dict(line_of_sight=1.0))
    fn = losses_2d_fn(preset, None)
    graphed = GraphedLosses(fn)
    inputs = field_and_rays(preset, 2, 256, "cuda", seed=4)
    draws = [losses_and_grads(graphed, *inputs)[0] for _ in range(4)]
    line_of_sight = torch.stack([d["line_of_sight"] for d in draws])
    assert line_of_sight.unique().numel() == 4
    eager = torch.stack([losses_and_grads(fn, *inputs)[0]["line_of_sight"] for _ in range(32)])
    assert abs(line_of_sight.mean() - eager.mean()) < 4 * eager.std() + 1e-6  # the same distribution
    torch.testing.assert_close(draws[0]["depth"], draws[-1]["depth"])  # the rest is deterministic


@cuda
def test_capture_survives_pinned_allocations_in_another_thread():
    # what the data loader's pin-memory thread does while the first step captures: fresh pinned buffers
    preset = tiny_preset().replace(loss=dict(line_of_sight=0.0))
    fn = losses_2d_fn(preset, None)
    inputs = field_and_rays(preset, 2, 256, "cuda", seed=5)
    stop = threading.Event()

    def pin() -> None:
        while not stop.is_set():
            torch.empty(1 << 20, pin_memory=True)
            torch._C._host_emptyCache()  # so that the next buffer is a fresh cudaHostAlloc

    thread = threading.Thread(target=pin)
    thread.start()
    try:
        got = losses_and_grads(GraphedLosses(fn), *inputs)
    finally:
        stop.set()
        thread.join()
    expected = losses_and_grads(fn, *inputs)
    for term in expected[0]:
        torch.testing.assert_close(got[0][term], expected[0][term], rtol=1e-5, atol=1e-6)
