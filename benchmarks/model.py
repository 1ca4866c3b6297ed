"""Speed and memory of the occupancy network: training step (forward + backward) and inference latency.

    python benchmarks/model.py --preset demo --device cpu --batch 2
    python benchmarks/model.py --preset swinb-512x1408 --device cuda --batch 1 2 --compile --json out.json

On CUDA both run under bf16 autocast unless --fp32.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from renderocc.config import PRESETS, get_preset
from renderocc.models.info import random_batch
from renderocc.models.occnet import OccupancyNet, build_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> dict:
    """Median / min wall milliseconds over `repeats` calls after `warmup` calls, the median process CPU
    milliseconds (all threads; a load-independent cost on a shared CPU) and the peak CUDA memory."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "cpu_ms": statistics.median(cpu_times),
        "peak_mb": peak,
        "warmup_s": warmup_s,
    }


def train_step(model: OccupancyNet, forward: Callable, batch: dict, amp: bool, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = forward(batch)
        loss = (
            out["density"].mean()
            + out["semantics"].logsumexp(-1).mean()
            + 0.05 * model.depth_loss(out, batch)
        )
    loss.backward()
    model.zero_grad(set_to_none=True)


def inference(forward: Callable, batch: dict, amp: bool, device: torch.device) -> None:
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        forward(batch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="override data.image_size"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    parser.add_argument("--grad-checkpointing", action="store_true", help="set model.grad_checkpointing")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.fp32
    preset = get_preset(args.preset)
    if args.image_size:
        preset = preset.replace(data=dict(image_size=tuple(args.image_size)))
    if args.grad_checkpointing:
        preset = preset.replace(model=dict(grad_checkpointing=True))
    model = build_model(preset).to(device)
    variants = [("eager", model)]
    if args.compile:
        variants.append(("compiled", torch.compile(model)))

    rows = []
    for batch_size in args.batch:
        batch = random_batch(preset, batch_size, device)
        for name, forward in variants:
            model.train()
            step = functools.partial(train_step, model, forward, batch, amp, device)
            result = time_it(step, device, args.warmup, args.repeats)
            rows.append({"mode": "train fwd+bwd", "batch": batch_size, "variant": name, **result})
            print(rows[-1], flush=True)
            if not args.no_inference:
                model.eval()
                step = functools.partial(inference, forward, batch, amp, device)
                result = time_it(step, device, args.warmup, args.repeats)
                rows.append({"mode": "inference", "batch": batch_size, "variant": name, **result})
                print(rows[-1], flush=True)

    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    H, W = preset.data.image_size
    print(
        f"\npreset {preset.name} ({H}x{W}, grid {'x'.join(map(str, preset.grid.shape))}), {machine}, "
        f"{'bf16 autocast' if amp else 'fp32'}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
        + (", backbone gradient checkpointing" if preset.model.grad_checkpointing else "")
    )
    header = ("mode", "batch", "variant", "median ms", "min ms", "CPU ms", "peak MiB", "warmup s")
    print(f"{header[0]:<15}" + "".join(f"{h:>{w}}" for h, w in zip(header[1:], (6, 10, 11, 9, 9, 10, 10))))
    for r in rows:
        print(
            f"{r['mode']:<15}{r['batch']:>6}{r['variant']:>10}{r['median_ms']:>11.1f}{r['min_ms']:>9.1f}"
            f"{r['cpu_ms']:>9.0f}{r['peak_mb']:>10.0f}{r['warmup_s']:>10.1f}"
        )
    if args.json:
        meta = {
            "preset": preset.name,
            "image_size": [H, W],
            "device": machine,
            "amp": amp,
            "torch": torch.__version__,
            "grad_checkpointing": preset.model.grad_checkpointing,
        }
        with open(args.json, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
