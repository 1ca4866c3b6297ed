"""CUDA graphs: a training step's whole forward and backward, or inference, as one replay (GraphedCall); or
the 2D losses alone (GraphedLosses, for DDP, whose gradient all-reduce stays outside a graph)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from renderocc.data.batch import RAY_KEYS

LOSS_KEYS = tuple(k for k in RAY_KEYS if k != "ray_frame")  # the batch keys the 2D losses read

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

    def __init__(self, fn: LossFn, enabled: bool = True, keys: tuple[str, ...] = LOSS_KEYS) -> None:
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


class GraphedCall:
    """`fn(batch) -> {name: tensor}` captured as one CUDA graph per batch signature and replayed: a training
    step's forward and backward (`fn` runs the backward itself; with grad enabled the parameters' `.grad` are
    the graph's buffers), or inference.

    Eagerly, an r50 training step launches a few thousand kernels, and on an H200 the host took longer to
    launch them (about 85 ms) than the GPU to run them (about 60 ms); batch-1 inference is launch-bound the
    same way. A replay launches them all at once. `fn` must be capturable: no host waits, no Python branch
    on tensor values, fixed shapes per signature; it reads the batch's tensors only (copied into static
    buffers before each replay). Random draws are fresh on every replay. The outputs are the graph's static
    tensors: read them before the next call.

    Capture runs `WARMUP` eager calls first (cuDNN autotuning, Triton compilation, allocator pools); the
    model's buffers (batch-norm statistics) are restored after them, so they count as no training step.
    """

    WARMUP = 3

    def __init__(self, fn: Callable[[dict], dict[str, torch.Tensor]], model: torch.nn.Module) -> None:
        self.fn, self.model = fn, model
        self._graphs: dict[tuple, tuple] = {}

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        signature = tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in tensors.items())
        signature += (torch.is_grad_enabled(),)
        if signature not in self._graphs:
            self._graphs[signature] = self._capture(tensors)
        static_in, graph, outputs, grads = self._graphs[signature]
        for key, value in tensors.items():
            static_in[key].copy_(value, non_blocking=True)
        graph.replay()
        for param, grad in grads:  # .grad may point at another capture's buffers: point it at this one's
            param.grad = grad
        return outputs

    def _capture(self, tensors: dict[str, torch.Tensor]) -> tuple:
        training = torch.is_grad_enabled()
        params = [p for p in self.model.parameters() if p.requires_grad] if training else []
        buffers = [(b, b.clone()) for b in self.model.buffers()]
        static_in = {k: v.clone() for k, v in tensors.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.WARMUP):
                for p in params:
                    p.grad = None
                self.fn(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        for p in params:  # the backward allocates them in the graph's pool: fixed addresses for every replay
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            outputs = self.fn(static_in)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        grads = [(p, p.grad) for p in params if p.grad is not None]
        return static_in, graph, outputs, grads
