"""Training-step throughput: median step time, samples/s and rays/s of a preset on a prepared dataset.

    python benchmarks/train.py --dataroot D --preset demo r50-256x704 --batch-size 1 2 [--device cuda]

Each step is what `renderocc train` does (forward, rendering + losses, backward, AdamW, EMA), on real
batches from the data loader; loading time is reported separately so a slow loader shows. Under torchrun
every process runs its own share and rank 0 prints global numbers (samples/s summed over processes).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from renderocc.config import get_preset
from renderocc.data.batch import batch_to
from renderocc.models import build_model
from renderocc.render.losses import class_weights_from_counts
from renderocc.train import param_groups, training_losses
from renderocc.train_utils import distributed
from renderocc.train_utils.data import open_index, train_loader
from renderocc.train_utils.ema import EMA


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(preset_name: str, batch_size: int, args, dist) -> dict:
    device = dist.device
    preset = get_preset(preset_name).replace(train={"batch_size": batch_size})
    index = open_index(args.dataroot, args.version)
    model = build_model(preset).to(device)
    raw = model
    if dist.enabled:
        ids = [device] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if args.compile:
        model = torch.compile(model)
    ema = EMA(raw, preset.train.ema_decay)
    optimizer = torch.optim.AdamW(
        param_groups(raw, preset.train.weight_decay), lr=preset.train.lr, fused=True
    )
    weights = class_weights_from_counts(torch.as_tensor(index.class_counts)).to(device)
    loader = train_loader(
        index, preset.data, batch_size, args.num_workers, 0, 0, dist.rank, dist.world_size,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    amp = preset.train.amp and device.type == "cuda"
    step = functools.partial(
        training_losses, model, raw, preset=preset, supervision="2d", class_weights=weights
    )
    batches = iter(loader)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms, load_ms, rays = [], [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = batch_to(next(batches), device)
        sync(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = sum(step(batch=batch).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), preset.train.grad_clip)
        optimizer.step()
        ema.update(raw)
        sync(device)
        t2 = time.perf_counter()
        if i >= args.warmup:
            step_ms.append((t2 - t1) * 1e3)
            load_ms.append((t1 - t0) * 1e3)
            rays.append(int(batch["ray_valid"].sum()))
    step = statistics.median(step_ms)
    return {
        "preset": preset_name,
        "batch": batch_size,
        "gpus": dist.world_size,
        "step_ms": step,
        "wait_ms": statistics.median(load_ms),
        "samples_s": batch_size * dist.world_size * 1e3 / step,
        "rays_s": statistics.median(rays) * dist.world_size * 1e3 / step,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--preset", nargs="+", default=["demo"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    dist = distributed.setup(args.device)
    rows = [bench(p, b, args, dist) for p in args.preset for b in args.batch_size]
    if dist.is_main:
        name = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "CPU"
        print(f"device: {name} x {dist.world_size}, median of {args.steps} steps after {args.warmup} warm-up")
        print(f"{'preset':<16}{'batch':>6}{'gpus':>5}{'step ms':>10}{'wait ms':>9}{'samples/s':>11}"
              f"{'rays/s':>11}{'peak GB':>9}")  # fmt: skip
        for r in rows:
            print(f"{r['preset']:<16}{r['batch']:>6}{r['gpus']:>5}{r['step_ms']:>10.1f}{r['wait_ms']:>9.1f}"
                  f"{r['samples_s']:>11.2f}{r['rays_s']:>11.0f}{r['peak_gb']:>9.2f}")  # fmt: skip
    distributed.cleanup()


if __name__ == "__main__":
    main()
