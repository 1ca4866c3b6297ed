"""Training-step throughput: median step time, samples/s and rays/s of a preset on a prepared dataset.

    python benchmarks/train.py --dataroot D --preset demo r50-256x704 --batch-size 1 2 [--device cuda]
    python benchmarks/train.py --dataroot D --preset r50-256x704 --batch-size 2 --stages

Each step is what `renderocc train` does (forward, rendering + losses, backward, AdamW, EMA), on real
batches from the data loader; loading time is reported separately so a slow loader shows. Under torchrun
every process runs its own share and rank 0 prints global numbers (samples/s summed over processes), and
where the step goes beyond one process's work: the same step under DDP's no_sync (no gradient all-reduce)
takes turns with the synced one on every process; the slowest process's no_sync step less rank 0's is the
wait for stragglers, and the synced step less the slowest no_sync step the all-reduce that backward does
not hide.

    torchrun --nproc-per-node 2 benchmarks/train.py --dataroot D --preset r50-256x704 --batch-size 2

--stages adds how the step splits between backbone, view transform, 3D encoder, rendering, optimiser and
the data loader's wait, each stage timed on its own, and the marginal cost of rendering + 2D losses: the
whole step less the same step without them. Timed alone, a stage pays its own host launch overhead; inside
a step most of it hides behind GPU work already queued, so the marginal cost is the figure to quote.

--weights RUN starts the network from a run's weights instead of its initialisation. The renderer's cost
depends on the field: an untrained network's density is about even, so rays run far and keep many samples,
while a trained one stops rays at their first surface and skips the free space, as in most of a real run.

    python benchmarks/train.py --dataroot D --preset RUN/preset.json --batch-size 2 --stages --weights RUN

--profile N lists the N costliest GPU kernels of a step; with --stages also those of the 2D losses alone,
which the step's list mixes with the network's:

    python benchmarks/train.py --dataroot D --preset RUN/preset.json --stages --weights RUN --profile 40

--set SECTION.FIELD=VALUE changes every preset of the call, e.g. the ray budget (issue 18, item 3):

    python benchmarks/train.py --dataroot D --preset r50-256x704 --stages --set data.max_rays=9600

A compiled preset (train.compile) compiles the 2D losses around the renderer too; --eager-losses leaves them
eager, the row to compare with. --merge-cells off density logits both times each row with the fused
renderer in each of those modes (`render.fused.MERGE_CELLS`: what it reads and scatters per interpolation
cell rather than per sample), in one call; --backward-registers 0 64 likewise with the backward kernel's
register cap (`render.fused.BACKWARD_MAXNREG`, 0: none).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import gc
import json
import math
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from renderocc.checkpoint import load_model
from renderocc.config import Preset, with_overrides
from renderocc.data.batch import batch_to
from renderocc.models import build_model
from renderocc.models.info import counted_flops, peak_bf16_tflops
from renderocc.render import fused
from renderocc.render.losses import class_weights_from_counts
from renderocc.train import compile_stages, forward_backward, losses_2d_fn, param_groups, resolve_preset
from renderocc.train_utils import distributed
from renderocc.train_utils.cuda_graphs import GraphedLosses
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


def stage_fns(raw, batch: dict, preset, losses_2d, optimizer, ema, amp: bool) -> dict[str, Callable]:
    """Each stage of a training step as a call, forward + backward, each on its own detached inputs.

    Backward gradients of a stage's outputs are random (the work of backward does not depend on them). The
    stages' sum comes close to the whole step; the rest is what a whole graph overlaps or adds.
    """
    device = batch["imgs"].device
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=amp)
    with torch.no_grad(), autocast():
        features = raw.frame_features(batch["imgs"])
        volumes, *_ = raw.view_transformer(features, batch)
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
            out, depth_logits, _ = raw.view_transformer(features.detach().requires_grad_(), batch)
            loss = preset.loss.lidar_depth * raw.depth_loss({"depth_logits": depth_logits}, batch)
        backward(tuple(v for v in out if v.requires_grad), loss)

    def encoder() -> None:
        with autocast():
            out = raw.decode([v.detach().requires_grad_() for v in volumes], batch["ego2keyego"])
        backward(out)

    def rendering() -> None:
        d, s = density.detach().requires_grad_(), semantics.detach().requires_grad_()
        with autocast():
            loss = sum(losses_2d(d, s, batch).values())
        loss.backward()

    def optimiser() -> None:
        torch.nn.utils.clip_grad_norm_(raw.parameters(), preset.train.grad_clip)
        optimizer.step()
        ema.update(raw)

    return {
        "backbone+neck": backbone,
        "view transform": view_transform,
        "3D encoder+heads": encoder,
        "rendering+2D losses": rendering,
        "optimiser+EMA": optimiser,
    }


def one_step(step_fn, batch: dict, raw, optimizer, ema, preset) -> torch.Tensor:
    """One training step as `renderocc train` takes it (step_fn from `renderocc.train.forward_backward`),
    without waiting for the GPU: returns whether the loss was finite, on the device."""
    losses = step_fn(batch)
    finite = torch.isfinite(torch.stack(list(losses.values())).sum())  # the loop's NonFiniteWatch
    torch.nn.utils.clip_grad_norm_(raw.parameters(), preset.train.grad_clip)
    optimizer.step()
    ema.update(raw)
    return finite


ROUND = 6  # steps queued back to back per timed round


def time_steps(
    steps: dict, batches, raw, optimizer, ema, preset, args, contexts: dict | None = None
) -> dict[str, dict]:
    """Whole training steps of each step function in `steps`, in rounds of ROUND steps that the host queues
    without waiting for the GPU in between, as `renderocc train` does (it waits only every few steps, to
    log). Each round's batches are on the device before its clock starts, so the loader's pace is timed
    apart (load_ms: per batch, its wait and copy). The step functions take turns round by round (so a drift
    of the GPU's clocks hits all alike), each inside its `contexts[name]()` if any. Per name: ms per step of
    every round after the warm-up, loader ms per batch, and the labelled rays of each batch."""
    contexts = contexts or {}
    device = next(raw.parameters()).device
    times = {name: {"step_ms": [], "load_ms": [], "rays": []} for name in steps}
    rounds = math.ceil(args.warmup / ROUND) + math.ceil(args.steps / ROUND)
    for i in range(rounds):
        timed = i >= math.ceil(args.warmup / ROUND)
        for name, step in steps.items():
            t0 = time.perf_counter()
            queued = [batch_to(next(batches), device) for _ in range(ROUND)]
            sync(device)
            t1 = time.perf_counter()
            with contexts.get(name, contextlib.nullcontext)():
                finite = [one_step(step, batch, raw, optimizer, ema, preset) for batch in queued]
            sync(device)
            t2 = time.perf_counter()
            if not bool(torch.stack(finite).all()):
                raise RuntimeError(f"non-finite loss in a {name} step")
            if timed:
                times[name]["step_ms"].append((t2 - t1) * 1e3 / ROUND)
                times[name]["load_ms"].append((t1 - t0) * 1e3 / ROUND)
                times[name]["rays"] += [int(batch["ray_valid"].sum()) for batch in queued]
    return times


def kernel_table(fn: Callable[[], object], device: torch.device, rows: int) -> str:
    """The GPU kernels of ROUND calls of fn, most GPU time first (a table; fn ungraphed, so that each
    kernel shows by name: replayed in a CUDA graph its GPU time is the same)."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(ROUND):
            fn()
        sync(device)
    averages = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):  # renamed in newer torch
        try:
            return averages.table(sort_by=key, row_limit=rows)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=rows)


def sync_audit(step, batch: dict, raw, optimizer, ema, preset) -> collections.Counter:
    """Where one training step makes the host wait for the GPU: counts per innermost project source line
    (CUDA's sync debug mode; waits inside backward are charged to the `loss.backward()` line). Each wait
    drains the GPU's queue, so the launches after it are no longer hidden behind queued work."""
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        stack = traceback.extract_stack()[:-1]
        ours = [f for f in stack if "renderocc" in f.filename or f.filename == __file__]
        where = ours[-1] if ours else None
        sites[f"{Path(where.filename).name}:{where.lineno} {where.line}" if where else filename] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            one_step(step, batch, raw, optimizer, ema, preset)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sites


def bench(
    preset_name: str, preset: Preset, batch_size: int, args, dist, merge_cells: str, maxnreg: int | None
) -> dict:
    device = dist.device
    fused.MERGE_CELLS, fused.BACKWARD_MAXNREG = merge_cells, maxnreg
    preset = preset.replace(train={"batch_size": batch_size})
    index = open_index(args.dataroot, args.version)
    # a trained field: the run's weights, refused (naming the keys) when they do not fit the preset's network
    model = load_model(args.weights, preset, "model")[0].train() if args.weights else build_model(preset)
    model = model.to(device)
    raw = model
    contexts = {}
    if dist.enabled:
        ids = [device] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        contexts["no_sync"] = model.no_sync  # the step without its gradient all-reduce (weights drift apart)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
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
    compiled = args.compile or (args.compile is None and preset.train.compile)
    compile_losses = compiled and not args.eager_losses
    # the rendering stage of --stages, timed on its own
    losses_2d = GraphedLosses(losses_2d_fn(preset, weights, compile_losses), args.graphs != "off")
    graphs = "losses" if dist.enabled and args.graphs == "step" else args.graphs
    step_of = functools.partial(forward_backward, model, raw, preset, "2d", weights)
    step = step_of(graphs=graphs, compile_losses=compile_losses)
    # the model alone: the 2D losses replaced by a zero that keeps the model's outputs in the graph, so the
    # step's marginal rendering cost is what the two differ by
    without_2d_losses = step_of(graphs=graphs, losses_2d=lambda d, s, b: {"zero": (d.mean() + s.mean()) * 0})

    batches = iter(loader)
    # FLOPs of one step as it really runs (eager, before compiling): forward of every frame, backward of the
    # key frame's branch
    flops = counted_flops(lambda: step_of(graphs="off")(batch_to(next(batches), device)))
    if compiled:
        compile_stages(raw)  # in place: the step functions above run the compiled stages from here on
    if device.type == "cuda":
        # what an earlier row left in reference cycles (each CUDA-graph capture's autograd class is in one)
        # would count in this row's peak: the peak of three presets in one call rose row by row
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    steps = {"step": step} | ({"without": without_2d_losses} if args.stages else {})
    steps |= {name: step for name in contexts}
    times = time_steps(steps, batches, raw, optimizer, ema, preset, args, contexts)
    step_ms, load_ms, rays = times["step"]["step_ms"], times["step"]["load_ms"], times["step"]["rays"]
    ranks = []
    if dist.enabled:  # every process's compute-only step and loader wait: their spread shows stragglers
        own = times["no_sync"]
        ranks = distributed.gather_objects(
            (statistics.median(own["step_ms"]), statistics.median(own["load_ms"]))
        )
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    stages, syncs = {}, {}
    if args.sync_audit and device.type == "cuda":
        syncs = dict(sync_audit(step, batch_to(next(batches), device), raw, optimizer, ema, preset))
    if args.profile:
        ungraphed = step_of(graphs="off")
        queued = iter([batch_to(next(batches), device) for _ in range(ROUND)])
        print(f"\n{preset_name} batch {batch_size}: GPU kernels of {ROUND} steps, without CUDA graphs")
        print(kernel_table(lambda: one_step(ungraphed, next(queued), raw, optimizer, ema, preset), device,
                           args.profile))  # fmt: skip
    if args.stages:
        batch = batch_to(next(batches), device)
        fns = stage_fns(raw, batch, preset, losses_2d, optimizer, ema, amp)
        stages = {name: median_ms(fn, device, args.steps) for name, fn in fns.items()}
        stages["step without 2D losses"] = statistics.median(times["without"]["step_ms"])
        if args.profile:  # the 2D losses' own kernels, which the step's table mixes with the model's
            print(f"\n{preset_name} batch {batch_size}: GPU kernels of the 2D losses alone, {ROUND} calls")
            alone = stage_fns(raw, batch, preset, losses_2d.fn, optimizer, ema, amp)
            print(kernel_table(alone["rendering+2D losses"], device, args.profile))
    step = statistics.median(step_ms)
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    tflops = flops / step / 1e9  # per process
    grad_mb = sum(p.numel() * p.element_size() for p in raw.parameters() if p.requires_grad) / 2**20
    return {
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "gflops_per_step": flops / 1e9,
        "stages": stages,
        "syncs": syncs,
        "ranks": ranks,  # per process: (median ms of the step without all-reduce, median loader wait ms)
        "grad_mb": grad_mb,
        "preset": preset_name,
        "merge_cells": merge_cells,
        "backward_maxnreg": maxnreg,
        "weights": args.weights or "initialisation",
        "compiled": "stages and losses" if compile_losses else "stages" if compiled else "no",
        "batch": batch_size,
        "gpus": dist.world_size,
        "step_ms": step,
        "wait_ms": statistics.median(load_ms),
        "samples_s": batch_size * dist.world_size * 1e3 / step,
        "rays_s": statistics.median(rays) * dist.world_size * 1e3 / step,
        "peak_gb": peak_gb,
    }


def print_stages(row: dict) -> None:
    """The stage split of one row, with the loader wait, as shares of the measured step."""
    print(f"\n{row['preset']} batch {row['batch']}: forward + backward of each stage on its own")
    print(f"{'stage':<22}{'ms':>9}{'% of step':>11}")
    parts = {**row["stages"], "data loading (wait)": row["wait_ms"]}
    without = parts.pop("step without 2D losses")
    for name, ms in parts.items():
        print(f"{name:<22}{ms:>9.1f}{100 * ms / row['step_ms']:>10.1f}%")
    total = sum(parts.values())
    print(f"{'sum of stages':<22}{total:>9.1f}{100 * total / row['step_ms']:>10.1f}%")
    print(f"{'whole step':<22}{row['step_ms']:>9.1f}{100.0:>10.1f}%")
    marginal = row["step_ms"] - without
    print(f"{'step without 2D losses':<22}{without:>9.1f}{100 * without / row['step_ms']:>10.1f}%")
    share = 100 * marginal / row["step_ms"]
    print(f"{'2D losses, marginal':<22}{marginal:>9.1f}{share:>10.1f}%  (step less step without them)")


def print_scaling(row: dict) -> None:
    """Where a step on several processes goes beyond one process's work."""
    alone, waits = zip(*row["ranks"])
    exposed, straggle = row["step_ms"] - max(alone), max(alone) - alone[0]
    print(f"\n{row['preset']} batch {row['batch']} x {row['gpus']} processes: beyond one process's work")
    lines = [
        ("step, gradients all-reduced (DDP)", f"{row['step_ms']:.1f} ms"),
        ("the same step under no_sync, rank 0", f"{alone[0]:.1f} ms"),
        ("wait for the slowest rank's no_sync step", f"{straggle:.1f} ms ({min(alone):.1f} - {max(alone):.1f}"
         " ms over ranks)"),
        ("all-reduce that backward leaves exposed", f"{exposed:.1f} ms ({100 * exposed / row['step_ms']:.1f}%"
         f" of the step; {row['grad_mb']:.0f} MB of gradients)"),
        ("loader wait, least - most", f"{min(waits):.1f} - {max(waits):.1f} ms"),
    ]  # fmt: skip
    for name, value in lines:
        print(f"{name:<42}{value}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument(
        "--preset", nargs="+", default=["demo"], help="preset names, or preset JSONs such as RUN/preset.json"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="change one field of every preset, as `renderocc train --set` does (repeatable)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the network's stages and the 2D losses (default: the preset's train.compile)",
    )  # fmt: skip
    parser.add_argument(
        "--eager-losses", action="store_true",
        help="with --compile, leave the 2D losses eager (the row before they were compiled)",
    )  # fmt: skip
    parser.add_argument(
        "--graphs", choices=("step", "losses", "off"), default="step",
        help="CUDA graphs: the whole forward + backward, the 2D losses only, or none",
    )  # fmt: skip
    parser.add_argument("--stages", action="store_true", help="also split the step by stage (one process)")
    parser.add_argument(
        "--sync-audit", action="store_true", help="list where a step makes the host wait for the GPU (CUDA)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="print the top ROWS GPU kernels of a step (with --stages: also of the 2D losses alone)",
    )
    parser.add_argument(
        "--weights", metavar="RUN", help="start from this run's (or checkpoint's) weights: a trained field"
    )
    parser.add_argument(
        "--merge-cells", nargs="+", choices=fused.MERGE_MODES,
        help="a row each with the fused renderer in these modes (what it reads and scatters per "
        "interpolation cell); default: render.fused.MERGE_CELLS",
    )  # fmt: skip
    parser.add_argument(
        "--backward-registers", nargs="+", type=int, metavar="N",
        help="a row each with the fused backward kernel capped at N registers a thread (0: no cap); "
        "default: render.fused.BACKWARD_MAXNREG",
    )  # fmt: skip
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    try:  # a bad preset or --set fails here, not after the first preset's rows
        presets = {name: with_overrides(resolve_preset(name), args.set) for name in args.preset}
    except (KeyError, ValueError, FileNotFoundError) as err:
        parser.error(err.args[0] if isinstance(err, KeyError) else str(err))
    dist = distributed.setup(args.device)
    if args.stages and dist.enabled:
        parser.error("--stages times stages of one process; run it without torchrun")
    for flag in ("merge_cells", "backward_registers"):
        if getattr(args, flag) and dist.device.type != "cuda":
            option = "--" + flag.replace("_", "-")
            parser.error(f"{option} chooses between fused CUDA kernels; off CUDA the PyTorch renderer runs")
    if any(n < 0 for n in args.backward_registers or ()):
        parser.error("--backward-registers: a register count, or 0 for no cap")
    merges = args.merge_cells or [fused.MERGE_CELLS]
    caps = [n or None for n in args.backward_registers or ()] or [fused.BACKWARD_MAXNREG]

    def label(name: str, merge: str, cap: int | None) -> str:
        return (name + (f"+merge-{merge}" if args.merge_cells else "")
                + (f"+regs-{cap or 'any'}" if args.backward_registers else ""))  # fmt: skip

    rows = [
        bench(label(name, merge, cap), preset, b, args, dist, merge, cap)
        for name, preset in presets.items() for b in args.batch_size for merge in merges for cap in caps
    ]  # fmt: skip
    if dist.is_main:
        name = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "CPU"
        print(
            f"device: {name} x {dist.world_size}; step ms: median over rounds of {ROUND} steps queued back "
            f"to back ({args.steps} steps after {args.warmup} warm-up), as `renderocc train` runs them; "
            f"weights: {args.weights or 'initialisation'}; torch.compile: {rows[0]['compiled']}"
        )
        print(f"{'preset':<16}{'batch':>6}{'gpus':>5}{'step ms':>10}{'wait ms':>9}{'samples/s':>11}"
              f"{'rays/s':>11}{'peak GB':>9}{'TFLOP/s':>9}{'MFU':>7}")  # fmt: skip
        for r in rows:
            mfu = f"{100 * r['mfu']:>6.1f}%" if r["mfu"] is not None else f"{'':>7}"
            print(f"{r['preset']:<16}{r['batch']:>6}{r['gpus']:>5}{r['step_ms']:>10.1f}{r['wait_ms']:>9.1f}"
                  f"{r['samples_s']:>11.2f}{r['rays_s']:>11.0f}{r['peak_gb']:>9.2f}"
                  f"{r['tflops']:>9.1f}{mfu}")  # fmt: skip
        print(
            "TFLOP/s: matrix-product, convolution and attention FLOPs of a step (forward of every frame,\n"
            "backward of the key frame's branch), per process; MFU: against the device's dense bf16 peak."
        )
        for r in rows:
            if r["stages"]:
                print_stages(r)
            if r["ranks"]:
                print_scaling(r)
            if r["syncs"]:
                print(f"\n{r['preset']} batch {r['batch']}: where a step waits for the GPU (count, line)")
                for site, count in sorted(r["syncs"].items(), key=lambda item: -item[1]):
                    print(f"{count:>4}  {site}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    distributed.cleanup()


if __name__ == "__main__":
    main()
