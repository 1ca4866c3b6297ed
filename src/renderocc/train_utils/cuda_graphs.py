"""Replay the 2D losses' forward and backward as CUDA graphs: two launches a step instead of hundreds."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

RAY_KEYS = ("rays_o", "rays_d", "ray_depth", "ray_class", "ray_valid")

LossFn = Callable[[torch.Tensor, torch.Tensor, dict], dict[str, torch.Tensor]]


class GraphedLosses:
    """`fn(density, semantics, batch) -> {name: scalar}` captured as a forward and a backward CUDA graph per
    input signature, then replayed; eager off CUDA, without grad, or when disabled.

    The 2D losses are some two hundred small kernels (ray-box tests, gathers, masked means) around the fused
    renderer. Launched one by one from Python they cost the r50 step more in launch overhead than in GPU
    time; a replay launches them all at once. `fn` must be capturable: no host syncs, no Python branch on
    tensor values, and it may read only the batch's `keys` (fixed shapes per signature). Random draws (the
    line-of-sight points) are fresh on every replay. Inputs are float32 (the model's outputs), so the losses
    are captured without autocast, which changes none of their ops.

    This is `torch.cuda.make_graphed_callables` with one change: captures are thread-local, so the data
    loader's pin-memory thread, which allocates pinned memory while the step runs, cannot invalidate them.
    """

    WARMUP = 3  # eager runs on the capture stream first: Triton compiles, lazy CUDA init, allocator pools

    def __init__(self, fn: LossFn, enabled: bool = True, keys: tuple[str, ...] = RAY_KEYS) -> None:
        self.fn, self.enabled, self.keys = fn, enabled, keys
        self._graphed: dict[tuple, Callable] = {}

    def __call__(self, density: torch.Tensor, semantics: torch.Tensor, batch: dict) -> dict:
        if not (self.enabled and density.is_cuda and torch.is_grad_enabled()):
            return self.fn(density, semantics, batch)
        inputs = (density, semantics, *(batch[k] for k in self.keys))
        signature = tuple((tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in inputs)
        if signature not in self._graphed:
            self._graphed[signature] = self._capture(inputs)
        return self._graphed[signature](*inputs)

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> Callable:
        """Warm up, capture the forward and the backward (one memory pool), and wrap their replays in an
        autograd function of the inputs."""
        static_in = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in inputs)
        differentiable = [t for t in static_in if t.requires_grad]

        def forward() -> dict[str, torch.Tensor]:
            with torch.autocast("cuda", enabled=False):
                return self.fn(static_in[0], static_in[1], dict(zip(self.keys, static_in[2:])))

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.WARMUP):
                losses = forward()
                torch.autograd.grad(tuple(losses.values()), differentiable, allow_unused=True)
        torch.cuda.current_stream().wait_stream(stream)

        fwd_graph, bwd_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        capture = functools.partial(torch.cuda.graph, stream=stream, capture_error_mode="thread_local")
        with capture(fwd_graph):
            static_losses = forward()
        names, static_out = list(static_losses), tuple(static_losses.values())
        static_grad_out = tuple(torch.empty_like(o) for o in static_out)
        with capture(bwd_graph, pool=fwd_graph.pool()):
            grads = iter(torch.autograd.grad(static_out, differentiable, static_grad_out, allow_unused=True))
        static_grad_in = tuple(next(grads) if t.requires_grad else None for t in static_in)

        class Replay(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
                for static, arg in zip(static_in, args):
                    if static.data_ptr() != arg.data_ptr():
                        static.copy_(arg)
                fwd_graph.replay()
                return tuple(o.detach() for o in static_out)

            @staticmethod
            @torch.autograd.function.once_differentiable
            def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
                for static, grad in zip(static_grad_out, grads):
                    static.copy_(grad)
                bwd_graph.replay()
                return tuple(None if g is None else g.detach() for g in static_grad_in)

        return lambda *args: dict(zip(names, Replay.apply(*args)))
