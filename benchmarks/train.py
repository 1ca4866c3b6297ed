"""Training-step throughput: median step time, samples/s and rays/s of a preset on a prepared dataset.

    python benchmarks/train.py --dataroot D --preset demo r50-256x704 --batch-size 1 2 [--device cuda]
    python benchmarks/train.py --dataroot D --preset r50-256x704 --batch-size 2 --stages

Each step is what `renderocc train` does (forward, rendering + losses, backward, AdamW, EMA), on real
batches from the data loader; loading time is reported separately so a slow loader shows. Under torchrun
every process runs its own share and rank 0 prints global numbers (samples/s summed over processes).
--stages adds how the step splits between backbone, view transform, 3D encoder, rendering, optimiser and
the data loader's wait.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import torch

from renderocc.config import get_preset
from renderocc.data.batch import batch_to
from renderocc.models import build_model
from renderocc.render.losses import class_weights_from_counts
from renderocc.train import param_groups, rendered_losses, training_losses
from renderocc.train_utils import distributed
from renderocc.train_utils.data import open_index, train_loader
from renderocc.train_utils.ema import EMA


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() in ms, synchronised around each call."""
    times = []
    for i in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def stage_split(
    raw, batch: dict, preset, weights, optimizer, ema, amp: bool, repeats: int
) -> dict[str, float]:
    """Median ms of each stage of a training step, forward + backward, each on its own detached inputs.

    Backward gradients of a stage's outputs are random (the work of backward does not depend on them). The
    stages' sum comes close to the whole step; the rest is what a whole graph overlaps or adds.
    """
    device = batch["imgs"].device
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=amp)
    with torch.no_grad(), autocast():
        features = raw.frame_features(batch["imgs"])
        volumes, _ = raw.view_transformer(features, batch)
        density, semantics = (x.float() for x in raw.decode(volumes, batch["ego2keyego"]))

    def backward(outputs: tuple[torch.Tensor, ...], extra: torch.Tensor | None = None) -> None:
        grads = [torch.randn_like(o) for o in outputs]
        if extra is not None:
            outputs, grads = (*outputs, extra), [*grads, torch.ones_like(extra)]
        torch.autograd.backward(outputs, grads)

    def backbone() -> None:
        with autocast():
            out = raw.frame_features(batch["imgs"])
        backward((out,))

    def view_transform() -> None:
        with autocast():
            out, depth_logits = raw.view_transformer(features.detach().requires_grad_(), batch)
            loss = preset.loss.lidar_depth * raw.depth_loss({"depth_logits": depth_logits}, batch)
        backward((out,), loss)

    def encoder() -> None:
        with autocast():
            out = raw.decode(volumes.detach().requires_grad_(), batch["ego2keyego"])
        backward(out)

    def rendering() -> None:
        d, s = density.detach().requires_grad_(), semantics.detach().requires_grad_()
        with autocast():
            loss = sum(rendered_losses(d, s, batch, preset, weights).values())
        loss.backward()

    def optimiser() -> None:
        torch.nn.utils.clip_grad_norm_(raw.parameters(), preset.train.grad_clip)
        optimizer.step()
        ema.update(raw)

    stages = {
        "backbone+neck": backbone,
        "view transform": view_transform,
        "3D encoder+heads": encoder,
        "rendering+2D losses": rendering,
        "optimiser+EMA": optimiser,
    }
    return {name: median_ms(fn, device, repeats) for name, fn in stages.items()}


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
    stages = stage_split(raw, batch, preset, weights, optimizer, ema, amp, args.steps) if args.stages else {}
    return {
        "stages": stages,
        "preset": preset_name,
        "batch": batch_size,
        "gpus": dist.world_size,
        "step_ms": step,
        "wait_ms": statistics.median(load_ms),
        "samples_s": batch_size * dist.world_size * 1e3 / step,
        "rays_s": statistics.median(rays) * dist.world_size * 1e3 / step,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def print_stages(row: dict) -> None:
    """The stage split of one row, with the loader wait, as shares of the measured step."""
    print(f"\n{row['preset']} batch {row['batch']}: forward + backward of each stage on its own")
    print(f"{'stage':<22}{'ms':>9}{'% of step':>11}")
    parts = {**row["stages"], "data loading (wait)": row["wait_ms"]}
    for name, ms in parts.items():
        print(f"{name:<22}{ms:>9.1f}{100 * ms / row['step_ms']:>10.1f}%")
    total = sum(parts.values())
    print(f"{'sum of stages':<22}{total:>9.1f}{100 * total / row['step_ms']:>10.1f}%")
    print(f"{'whole step':<22}{row['step_ms']:>9.1f}{100.0:>10.1f}%")


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
    parser.add_argument("--stages", action="store_true", help="also split the step by stage (one process)")
    parser.add_argument("--json", help="write the rows to this file")
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
        for r in rows:
            if r["stages"]:
                print_stages(r)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    distributed.cleanup()


if __name__ == "__main__":
    main()
