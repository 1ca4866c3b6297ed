"""`renderocc model-info`: parameter counts per submodule and forward FLOPs of a preset's network."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from renderocc.config import PRESETS, Preset, get_preset
from renderocc.models.occnet import OccupancyNet, build_model

# nuScenes rig order: FRONT_LEFT, FRONT, FRONT_RIGHT, BACK_RIGHT, BACK, BACK_LEFT.
RIG_YAWS_DEG = (55.0, 0.0, -55.0, -110.0, 180.0, 110.0)


def random_batch(preset: Preset, batch_size: int = 1, device: torch.device | str = "cpu") -> dict:
    """A batch with the loader's layout: random images, a level six-camera rig, ego moved 1 m per frame."""
    H, W = preset.data.image_size
    B, T, N = batch_size, 1 + preset.data.prev_frames, len(RIG_YAWS_DEG)
    yaws = torch.tensor(RIG_YAWS_DEG) * math.pi / 180
    zeros, ones = torch.zeros(N), torch.ones(N)
    right = torch.stack([yaws.sin(), -yaws.cos(), zeros], -1)
    down = torch.stack([zeros, zeros, -ones], -1)
    forward = torch.stack([yaws.cos(), yaws.sin(), zeros], -1)
    cam2ego = torch.eye(4).repeat(N, 1, 1)
    cam2ego[:, :3, :3] = torch.stack([right, down, forward], -1)
    cam2ego[:, :3, 3] = torch.tensor([1.0, 0.0, 1.5])
    intrinsics = torch.tensor([[0.8 * W, 0.0, W / 2], [0.0, 0.8 * W, H / 2], [0.0, 0.0, 1.0]])
    ego2keyego = torch.eye(4).repeat(B, T, 1, 1)
    ego2keyego[:, :, 0, 3] = -torch.arange(T, dtype=torch.float32)
    depth_map = torch.rand(B, N, H, W) * 50
    depth_map[torch.rand(B, N, H, W) < 0.95] = 0
    batch = {
        "imgs": torch.randn(B, T, N, 3, H, W),
        "intrinsics": intrinsics.expand(B, T, N, 3, 3),
        "img_aug": torch.eye(3).expand(B, T, N, 3, 3),
        "cam2ego": cam2ego.expand(B, T, N, 4, 4),
        "ego2keyego": ego2keyego,
        "depth_map": depth_map,
    }
    return {k: v.contiguous().to(device) for k, v in batch.items()}


# Dense bf16 tensor-core peaks in TFLOP/s (vendors' datasheets, no sparsity), by a fragment of the device name
# as torch.cuda.get_device_name gives it; the first fragment found wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("RTX 4090", 165.2),
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU (PEAK_BF16_TFLOPS), None for any other device."""
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in device_name), None)


class _FlopCount(TorchDispatchMode):
    """Sums the FLOPs of the ops that torch's FLOP counter has formulas for, as they run (backward included).

    FlopCounterMode would do, but its per-module tracker fails on a forward that runs part of itself without
    gradients (the history frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention that fn() runs, its backward included when it
    runs one (history frames without gradients count their forward only). Gathers, scatters, grid_sample and
    the renderer's Triton kernels have no formula and count 0, as in the usual MFU."""
    with _FlopCount() as counter:
        fn()
    return counter.flops


def parameter_counts(model: OccupancyNet) -> dict[str, int]:
    """Parameters per top-level submodule (and the depth net / stereo parts of the view transformer)."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    vt = model.view_transformer
    counts["view_transformer.depth_net"] = sum(p.numel() for p in vt.depth_net.parameters())
    if vt.stereo is not None:
        counts["view_transformer.stereo"] = sum(p.numel() for p in vt.stereo.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


@torch.no_grad()
def forward_flops(model: OccupancyNet, batch: dict) -> dict[str, int]:
    """Forward FLOPs per submodule (dotted names, two levels deep) and in total.

    Gathers, scatters (voxel pooling) and grid_sample have no FLOP formula and count as 0.
    """
    counter = FlopCounterMode(display=False, depth=3)
    with counter:
        model(batch)
    prefix = type(model).__name__
    flops = {
        name[len(prefix) + 1 :]: int(sum(ops.values()))
        for name, ops in counter.get_flop_counts().items()
        if name.startswith(prefix + ".")
    }
    flops["total"] = int(counter.get_total_flops())
    return flops


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", choices=sorted(PRESETS), help="preset name")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="override data.image_size"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no-flops", action="store_true", help="only count parameters (FLOPs need a forward)"
    )


def run(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    if args.image_size:
        preset = preset.replace(data=dict(image_size=tuple(args.image_size)))
    model = build_model(preset).to(args.device).eval()
    params = parameter_counts(model)
    flops = {} if args.no_flops else forward_flops(model, random_batch(preset, 1, args.device))
    H, W = preset.data.image_size
    X, Y, Z = preset.grid.shape
    print(
        f"preset {preset.name}: {preset.model.backbone}, images {H}x{W} x 6 cameras x "
        f"{1 + preset.data.prev_frames} frames, grid {X}x{Y}x{Z} @ {preset.grid.voxel_size} m"
    )
    print(f"{'module':<28}{'params (M)':>12}{'fwd GFLOPs':>14}")
    for name, count in params.items():
        gflops = f"{flops[name] / 1e9:14.2f}" if name in flops else f"{'':>14}"
        print(f"{name:<28}{count / 1e6:12.3f}{gflops}")
    if flops:
        print("FLOPs: one sample (batch 1), forward; multiply-add = 2 FLOPs; voxel pooling (gather/scatter)")
        print("and grid_sample are not counted (FlopCounterMode has no formula for them).")
    return 0
