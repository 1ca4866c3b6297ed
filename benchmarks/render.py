"""Benchmark: forward + backward of volume rendering + rendering losses, fused Triton vs PyTorch reference.

GPU (default when CUDA is present): 38,400 rays per sample through the Occ3D grid (200x200x16, 17 classes,
step 0.2 m), batch 1 and 2, for a freshly initialised field, a trained-like one (dense ground and boxes, free
elsewhere) and a network-like one (the same scene as a haze; `make_field`); median ms and peak extra memory
over the inputs. `--check` first compares the two implementations on the GPU. CPU: the torch reference per
sample in the demo preset's setting (100x100x8 grid at 0.8 m, 8,192 rays, step 0.4 m). Then the 2D losses of a
training step as `renderocc train` computes them (r50-256x704 on the GPU, demo on the CPU): all of them,
replayed as CUDA graphs, and all but each term beside the renderer's own, with wall and GPU-busy ms.

    PYTHONPATH=src python benchmarks/render.py [--check] [--convention reference] [--json out.json]

--dataroot D (a prepared dataset, e.g. the study's /tmp/st/data) also times the 2D losses on a real training
batch: its rays through the network's field (its initialisation, or a trained one with --weights RUN), and the
same rays through the synthetic fields, with the samples each ray keeps. The synthetic rays and fields
understate a training step's cost: real rays cross more of the grid, and a network's field keeps more samples.

--rays N [N ...] and --batch B [B ...] time other ray budgets and batch sizes (every combination, in one
call): the renderer's cost grows with the samples the rays keep, so the ray budget is the recipe's lever.

--convention reference times the published release's conventions (render/conventions.py) instead of this
project's metric ones: samples from the ray origin out to the 39 m sphere and its background shell. --sweep
times the fused kernels per (samples per step of a ray's loop, warps per ray, what is read and added per
interpolation cell rather than per sample, the backward kernel's register cap) on batch 1 and keeps the one
with the least GPU-busy time for the rest of the run (fused.CHUNK, fused.NUM_WARPS, fused.MERGE_CELLS,
fused.BACKWARD_MAXNREG). --merge-cells off density logits both times the real batch's 2D losses (--dataroot)
under each of those modes. GPU-busy ms (the kernels' summed time, from the profiler) is printed beside the
wall ms: at these sizes the wall time is mostly the host launching kernels."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from renderocc.config import LossConfig, Preset, get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.render import fused, volume_render
from renderocc.render.conventions import METRIC, METRIC_ONLY
from renderocc.render.losses import (
    class_weights_from_counts,
    rendering_losses,
)
from renderocc.train_utils.cuda_graphs import GraphedLosses

FIELDS = ("fresh", "trained", "network-like")


def make_field(kind: str, grid: VoxelGrid, batch: int, classes: int, device: str, seed: int) -> tuple:
    """density [B, X, Y, Z] and semantics [B, X, Y, Z, C] leaves, one of FIELDS: 'fresh', 'trained' (ground
    and boxes, sharp and opaque, free elsewhere) or 'network-like' (the same scene blurred into a haze).

    A trained network's field is neither sharp nor free: on a real batch its rays keep 137 samples and 46 of
    them weigh 1e-4 or more (mean opacity 0.94), against 77 kept on 'trained'. 'network-like' is the
    trained scene box-filtered twice over 5^3 voxels, scaled to a raw density of 20, over a haze of 3 +
    1.5 N(0, 1): on this benchmark's rays it keeps 100 samples, 49 of them weigh 1e-4 or more and 34 1e-3,
    opacity 0.80 (the CPU renderer, 1,500 rays). The kernels' cost follows those counts."""
    if kind not in FIELDS:
        raise ValueError(f"make_field: kind {kind!r}; valid: {', '.join(FIELDS)}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch, *grid.shape)
    semantics = torch.randn(*shape, classes, generator=g)
    if kind == "fresh":  # the density head's final softplus over a freshly initialised layer
        density = F.softplus(0.5 * torch.randn(*shape, generator=g))
    else:
        centers = grid.voxel_centers()
        density = torch.full(shape, 1e-3)
        density[..., :2] = 30.0  # ground: the two lowest layers (z < -0.2 m)
        for b in range(batch):
            lo = torch.rand(60, 3, generator=g) * torch.tensor([76.0, 76.0, 0.0]) - torch.tensor(
                [38.0, 38.0, -0.2]
            )
            size = torch.rand(60, 3, generator=g) * torch.tensor([4.0, 4.0, 3.0]) + torch.tensor(
                [1.0, 1.0, 1.0]
            )
            inside = (centers[None] >= lo[:, None, None, None]) & (
                centers[None] < (lo + size)[:, None, None, None]
            )
            density[b][inside.all(-1).any(0)] = 30.0
        density = density + 0.1 * torch.rand(shape, generator=g)
        if kind == "network-like":
            blurred = (density > 10.0).float()[:, None]
            box = torch.ones(1, 1, 5, 5, 5)
            inside = F.conv3d(torch.ones_like(blurred), box, padding=2)  # a mean over the grid's voxels only
            for _ in range(2):
                blurred = F.conv3d(blurred, box, padding=2) / inside
            haze = 3.0 + 1.5 * torch.randn(shape, generator=g)
            density = haze + (20.0 - 3.0) * blurred[:, 0].clamp(0, 1).sqrt()
    return (density.to(device).requires_grad_(), semantics.to(device).requires_grad_())


def make_rays(batch: int, rays: int, classes: int, device: str, seed: int) -> dict:
    """Camera-like rays: key-frame origins near the ego rig, neighbour-frame ones up to 15 m along x;
    directions all round in azimuth, -25..10 deg in elevation; LiDAR-like depths and classes."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    origins = torch.tensor([0.0, 0.0, 1.6]) + 0.8 * (torch.rand(batch, rays, 3, generator=g) - 0.5)
    frame = torch.randint(-3, 4, (batch, rays), generator=g)
    origins[..., 0] += 5.0 * frame
    azimuth = 2 * math.pi * torch.rand(batch, rays, generator=g)
    elevation = torch.deg2rad(-25 + 35 * torch.rand(batch, rays, generator=g))
    dirs = torch.stack(
        [elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()], -1
    )
    return {
        "rays_o": origins.to(device),
        "rays_d": dirs.to(device),
        "ray_depth": (2 + 48 * torch.rand(batch, rays, generator=g)).to(device),
        "ray_class": torch.randint(0, classes, (batch, rays), generator=g).to(device),
        "ray_frame": frame.to(device),
        "ray_valid": torch.ones(batch, rays, dtype=torch.bool, device=device),
    }


CONVENTION = METRIC  # --convention


def step(field, rays, grid, step_size, impl, cfg, weights, backward: bool = True) -> torch.Tensor:
    out = volume_render(
        *field, rays["rays_o"], rays["rays_d"], grid, step_size, implementation=impl, convention=CONVENTION
    )
    loss = sum(rendering_losses(out, rays, cfg, weights, CONVENTION).values())
    if backward:
        loss.backward()
    return loss


def cleared(fn, leaves):
    """fn, called with the gradients of leaves cleared first (so a backward does not accumulate into them)."""

    def run():
        for t in leaves:
            t.grad = None
        return fn()

    return run


def time_fn(fn, leaves, repeats: int, device: str) -> tuple[float, float]:
    """Median ms of fn() (gradients of leaves cleared before each call), and peak memory above the inputs
    in MB (CUDA only)."""
    run = cleared(fn, leaves)
    for _ in range(2):
        run()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for t in leaves:
            t.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(1e3 * (time.perf_counter() - start))
        peak = float("nan")
    return statistics.median(times), peak


def time_step(
    field, rays, grid, step_size, impl, cfg, weights, repeats: int, device: str, backward: bool = True
) -> tuple[float, float]:
    """Median ms of forward (+ backward) of rendering + losses, and peak memory above the inputs in MB."""
    return time_fn(
        lambda: step(field, rays, grid, step_size, impl, cfg, weights, backward), field, repeats, device
    )


def gpu_busy_ms(fn, repeats: int = 5, table: str = "") -> float:
    """Mean summed CUDA kernel time of a call of fn(), in ms (launch overhead excluded); prints the kernel
    table under the title `table` if given."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    if table:
        print(f"profile {table} ({repeats} calls)")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels) / 1e3 / repeats


def under_convention(preset: Preset) -> Preset:
    """The preset rendering under --convention: under the reference's, without the metric-only settings
    (the paper presets' semantic threshold), which it refuses."""
    metric_only = {} if CONVENTION == METRIC else dict.fromkeys(METRIC_ONLY)
    return preset.replace(render={"convention": CONVENTION, **metric_only})


def time_training_terms(
    preset: Preset, field, rays, weights, repeats: int, device: str, kernels: bool = False
) -> list[dict]:
    """Forward + backward of the 2D losses of a training step (`train.rendered_losses` with the preset's
    losses, bf16 autocast on CUDA): all together (also as CUDA graphs, on CUDA) and all but each term.
    Median wall ms (synchronised) and, on CUDA, GPU-busy ms (summed kernel time), so launch-bound terms
    show. A term's cost is "all 2D losses" less "all but" it."""
    from renderocc.train import rendered_losses

    base = under_convention(preset)
    extra = ("free_space", "line_of_sight", "surface")  # the terms beside the renderer's own
    settings = {
        "all 2D losses": base.loss,
        "renderer's losses only": replace(base.loss, **dict.fromkeys(extra, 0.0)),
        **{f"all but {term}": replace(base.loss, **{term: 0.0}) for term in extra},
    }
    rows = []
    for name, loss_cfg in settings.items():
        losses = functools.partial(
            rendered_losses, preset=replace(base, loss=loss_cfg), class_weights=weights
        )
        variants = {name: losses}
        if device == "cuda" and name == "all 2D losses":
            variants[f"{name}, CUDA graphs"] = GraphedLosses(losses)
        for label, fn in variants.items():

            def run(fn=fn):
                for t in field:
                    t.grad = None
                with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                    loss = sum(fn(*field, rays).values())
                loss.backward()

            ms, mb = time_fn(run, (), repeats, device)
            title = f"{label}, batch {field[0].shape[0]}" if kernels and label == "all 2D losses" else ""
            busy = gpu_busy_ms(run, table=title) if device == "cuda" else float("nan")
            rows.append(dict(terms=label, median_ms=ms, gpu_busy_ms=busy, peak_extra_mb=mb))
            print(f"terms {label:30s} {ms:8.2f} ms wall, {busy:8.2f} ms GPU busy", flush=True)
    return rows


def check(grid, step_size, classes, device) -> list[dict]:
    """Fused vs reference on the GPU: relative errors of the outputs and the grid gradients."""
    rows = []
    cfg = LossConfig()
    for kind in FIELDS:
        field = make_field(kind, grid, 2, classes, device, seed=11)
        rays = make_rays(2, 4096, classes, device, seed=12)
        res = {}
        for impl in ("torch", "triton"):
            for t in field:
                t.grad = None
            out = volume_render(
                *field,
                rays["rays_o"],
                rays["rays_d"],
                grid,
                step_size,
                implementation=impl,
                convention=CONVENTION,
            )
            loss = sum(rendering_losses(out, rays, cfg, None, CONVENTION).values())
            loss.backward()
            res[impl] = [out.depth, out.semantics, out.opacity, out.distortion, field[0].grad, field[1].grad]
        names = ("depth", "semantics", "opacity", "distortion", "grad_density", "grad_semantics")
        row = {"field": kind, "impl": "triton"}
        for name, a, b in zip(names, res["torch"], res["triton"]):
            row[name] = float((a.detach().double() - b.detach().double()).norm() / a.detach().double().norm())
        rows.append(row)
        print("check", kind, " ".join(f"{k}={v:.2e}" for k, v in list(row.items())[2:]), flush=True)
    return rows


# (samples per step, warps per ray, fused.MERGE_CELLS, fused.BACKWARD_MAXNREG): the merge modes at the
# fastest per-sample walk, then the backward's register caps in the default mode
CONFIGS = (
    tuple((chunk, warps, "off", None) for chunk, warps in ((8, 1), (16, 1), (32, 1), (64, 2)))
    + tuple((32, 1, mode, None) for mode in fused.MERGE_MODES[1:])
    + tuple((32, 1, "density", registers) for registers in (64, 72, 80))
)


def step_busy_ms(field, rays, grid, step_size, impl, cfg, weights) -> float:
    """GPU-busy ms of forward + backward of rendering + losses (gradients cleared first, as time_step)."""
    return gpu_busy_ms(cleared(lambda: step(field, rays, grid, step_size, impl, cfg, weights), field))


def sweep(grid, step_size, rays_per_sample, classes, cfg, weights, repeats) -> list[dict]:
    """Wall and GPU-busy ms of the fused path per (samples per step, warps per ray, merge mode, the
    backward's register cap) on batch 1 of each field; leaves the configuration with the least GPU-busy time
    set for the rest of the run (wall time at batch 1 is mostly the host's launches)."""
    rows = []
    for kind in FIELDS:
        field = make_field(kind, grid, 1, classes, "cuda", seed=1)
        rays = make_rays(1, rays_per_sample, classes, "cuda", seed=101)
        for chunk, warps, merge, registers in CONFIGS:
            fused.CHUNK, fused.NUM_WARPS = chunk, warps
            fused.MERGE_CELLS, fused.BACKWARD_MAXNREG = merge, registers
            ms, _ = time_step(field, rays, grid, step_size, "triton", cfg, weights, repeats, "cuda")
            busy = step_busy_ms(field, rays, grid, step_size, "triton", cfg, weights)
            rows.append(dict(field=kind, chunk=chunk, num_warps=warps, merge_cells=merge,
                             backward_maxnreg=registers, median_ms=ms, gpu_busy_ms=busy))  # fmt: skip
            print(
                f"sweep {kind:12s} chunk={chunk:3d} num_warps={warps} merge={merge:8s} maxnreg={registers}"
                f" {ms:8.2f} ms wall, {busy:8.2f} GPU busy",
                flush=True,
            )
    key = ("chunk", "num_warps", "merge_cells", "backward_maxnreg")
    best = min(CONFIGS, key=lambda c: sum(r["gpu_busy_ms"] for r in rows if tuple(r[k] for k in key) == c))
    fused.CHUNK, fused.NUM_WARPS, fused.MERGE_CELLS, fused.BACKWARD_MAXNREG = best
    print(
        f"sweep: least GPU-busy (samples per step, warps, merge mode, backward maxnreg) = {best}", flush=True
    )
    return rows


def profile(grid, step_size, rays_per_sample, classes, cfg, weights) -> None:
    """Kernel time table of fused forward + backward steps on each of FIELDS (batch 1)."""
    for kind in FIELDS:
        field = make_field(kind, grid, 1, classes, "cuda", seed=1)
        rays = make_rays(1, rays_per_sample, classes, "cuda", seed=101)
        time_step(field, rays, grid, step_size, "triton", cfg, weights, 3, "cuda")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step(field, rays, grid, step_size, "triton", cfg, weights)
            torch.cuda.synchronize()
        print(f"profile {kind} (5 steps)")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


# besides the preset's: what a coarser skip threshold (which is also where rays stop), only an earlier stop,
# or only a semantic threshold (logits read for fewer kept samples) would keep and change
SKIP_THRESHOLDS = (1e-5, 1e-4, 1e-3)
STOP_TRANSMITTANCES = (1e-5, 1e-4, 1e-3)
SEMANTIC_THRESHOLDS = (1e-5, 1e-4, 1e-3)


def render_batch(field, batch: dict, preset: Preset, skip_threshold: float, stop=None, semantic=None):
    """RenderOutput of the batch's valid rays through field (no gradients), at this skip threshold, stop
    transmittance and semantic threshold (None: the renderer's defaults)."""
    r = preset.render
    with torch.no_grad():
        return volume_render(
            *field, batch["rays_o"], batch["rays_d"], preset.grid, r.step_size, r.density_shift,
            skip_threshold, convention=CONVENTION, ray_mask=batch["ray_valid"], stop_transmittance=stop,
            semantic_threshold=semantic,
        )  # fmt: skip


def skip_sweep(field, batch: dict, preset: Preset) -> list[dict]:
    """Kept samples per ray at coarser skip thresholds, and at the preset's with earlier stops or semantic
    thresholds, and how far depth, the semantics and the argmax class move from the preset's: what fewer
    samples would cost the rendered outputs (not the gradients)."""
    valid = batch["ray_valid"]
    r = preset.render
    settings = [(r.skip_threshold, r.stop_transmittance, r.semantic_threshold)]
    settings += [(skip, None, r.semantic_threshold) for skip in SKIP_THRESHOLDS]
    # the reference convention has its own stop and reads every kept sample's logits
    if CONVENTION == METRIC:
        settings += [(r.skip_threshold, stop, r.semantic_threshold) for stop in STOP_TRANSMITTANCES]
        settings += [(r.skip_threshold, r.stop_transmittance, sem) for sem in SEMANTIC_THRESHOLDS]
    outs = [render_batch(field, batch, preset, *setting) for setting in settings]
    base = outs[0]
    rows = []
    for (skip, stop, threshold), out in zip(settings, outs):
        moved = (out.depth - base.depth)[valid].abs()
        same = (out.semantics.argmax(-1) == base.semantics.argmax(-1))[valid].float().mean()
        sem, base_sem = out.semantics[valid], base.semantics[valid]  # the relative move, over valid rays
        sem_moved = (sem - base_sem).norm() / base_sem.norm().clamp_min(1e-12)
        kept = float(out.samples[valid].float().mean())
        rows.append(dict(skip_threshold=skip, stop_transmittance=stop, semantic_threshold=threshold,
                         kept_samples=kept, depth_moved_mean=float(moved.mean()),
                         depth_moved_max=float(moved.max()), semantics_moved=float(sem_moved),
                         same_class=float(same)))  # fmt: skip
        print(
            f"skip threshold {skip:g}, stop {'at it' if stop is None else f'{stop:g}'}, semantic threshold "
            f"{'none' if threshold is None else f'{threshold:g}'}: {kept:.1f} kept samples per ray, depth "
            f"moved {moved.mean():.4f} m (max {moved.max():.3f}), semantics moved {sem_moved:.2%}, argmax "
            f"class unchanged on {same:.2%} of rays",
            flush=True,
        )
    return rows


def real_batch_terms(args: argparse.Namespace) -> dict:
    """The 2D losses of a training batch (batch 2) from --dataroot: its rays through the network's field
    and through the synthetic ones, with each ray's kept samples (RenderOutput.samples); and the network
    field's kept samples at coarser skip thresholds (`skip_sweep`)."""
    from renderocc.checkpoint import load_model
    from renderocc.data.batch import batch_to
    from renderocc.models import build_model
    from renderocc.train import resolve_preset
    from renderocc.train_utils.data import open_index, train_loader

    preset = under_convention(resolve_preset(args.preset))
    index = open_index(args.dataroot, args.version)
    if args.weights:  # refused, naming the keys, when they do not fit the preset's network
        model = load_model(args.weights, preset, "model", args.device)[0]
    else:
        model = build_model(preset).to(args.device).eval()
    weights = class_weights_from_counts(torch.as_tensor(index.class_counts)).to(args.device)
    loader = train_loader(index, preset.data, 2, 2, 0, 0, 0, 1, pin_memory=args.device == "cuda")
    batch = batch_to(next(iter(loader)), torch.device(args.device))
    with torch.no_grad(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
        outputs = model(batch)
    network = tuple(outputs[k].float().detach().requires_grad_() for k in ("density", "semantics"))
    grid = preset.grid
    classes = network[1].shape[-1]
    fields = {
        "network" + (" (--weights)" if args.weights else " (initial)"): network,
        "trained-like": make_field("trained", grid, 2, classes, args.device, seed=2),
        "network-like": make_field("network-like", grid, 2, classes, args.device, seed=2),
        "fresh": make_field("fresh", grid, 2, classes, args.device, seed=2),
    }
    rows, r = [], preset.render
    merges = args.merge_cells or [fused.MERGE_CELLS]
    valid = batch["ray_valid"]
    for name, field in fields.items():
        out = render_batch(field, batch, preset, r.skip_threshold, r.stop_transmittance, r.semantic_threshold)
        kept = out.samples[valid].float()
        print(
            f"real rays, {name} field: {kept.mean():.1f} kept samples per ray (90th percentile "
            f"{kept.quantile(0.9):.0f}), opacity {out.opacity[valid].mean():.2f}",
            flush=True,
        )
        for merge in merges:  # the same kept samples in every mode, read and scattered per sample or per cell
            fused.MERGE_CELLS = merge
            label = f"{name}{f', merge {merge}' if args.merge_cells else ''}"
            for row in time_training_terms(preset, field, batch, weights, args.repeats, args.device):
                rows.append(
                    dict(field=label, merge_cells=merge, batch=2, kept_samples=float(kept.mean()), **row)
                )
    return {"terms": rows, "skip_sweep": skip_sweep(network, batch, preset)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="compare implementations on the device first")
    parser.add_argument("--no-reference", action="store_true", help="skip timing the torch reference")
    parser.add_argument("--sweep", action="store_true", help="time the fused kernels' block sizes (batch 1)")
    parser.add_argument("--profile", action="store_true", help="CUDA kernel times: fused step, 2D losses")
    parser.add_argument(
        "--convention", default="metric", choices=("metric", "reference"), help="render.convention to time"
    )
    parser.add_argument("--dataroot", help="also time the 2D losses on a real training batch from here")
    parser.add_argument("--version", default=None, help="the dataset's version (with --dataroot)")
    parser.add_argument(
        "--preset", default="r50-256x704", help="with --dataroot: preset name or RUN/preset.json"
    )
    parser.add_argument("--weights", metavar="RUN", help="with --dataroot: the network's trained weights")
    parser.add_argument(
        "--rays", type=int, nargs="+", help="rays per sample (default: 38,400 on CUDA, the demo's on CPU)"
    )
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes to time (default: 1 2 on CUDA)")
    parser.add_argument(
        "--merge-cells", nargs="+", choices=fused.MERGE_MODES,
        help="with --dataroot: time the 2D losses with the fused renderer in each of these modes (what it "
        "reads and adds per interpolation cell); default: fused.MERGE_CELLS, or the sweep's choice",
    )  # fmt: skip
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.merge_cells and args.device != "cuda":
        parser.error("--merge-cells chooses between fused CUDA kernels; off CUDA the PyTorch renderer runs")
    global CONVENTION
    CONVENTION = args.convention
    classes = 17
    weights = class_weights_from_counts(torch.logspace(4, 9, classes)).to(args.device)
    cfg = LossConfig()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = {"device": device_name, "convention": args.convention, "rows": [], "training_terms": []}
    preset_name = "r50-256x704" if args.device == "cuda" else "demo"  # whose 2D losses are timed
    preset = get_preset(preset_name)
    if args.device == "cuda":
        grid, step_size, rays_per_sample, batches = VoxelGrid(), 0.2, 38_400, (1, 2)
        variants = ["triton"] + ([] if args.no_reference else ["torch"])
        if args.check:
            results["check"] = check(grid, step_size, classes, args.device)
    else:
        grid, step_size, rays_per_sample, batches = (
            preset.grid,
            preset.render.step_size,
            preset.data.max_rays,
            (1,),
        )
        variants = ["torch"]
    ray_counts = args.rays or [rays_per_sample]
    batches = args.batch or batches
    if args.sweep and args.device == "cuda":
        results["sweep"] = sweep(grid, step_size, rays_per_sample, classes, cfg, weights, args.repeats)
    if args.device == "cuda":
        results["config"] = {
            "chunk": fused.CHUNK,
            "num_warps": fused.NUM_WARPS,
            "merge_cells": fused.MERGE_CELLS,
            "backward_maxnreg": fused.BACKWARD_MAXNREG,
        }
    if args.profile and args.device == "cuda":
        profile(grid, step_size, rays_per_sample, classes, cfg, weights)
    for kind, batch, rays_per_sample in itertools.product(FIELDS, batches, ray_counts):
        field = make_field(kind, grid, batch, classes, args.device, seed=batch)
        rays = make_rays(batch, rays_per_sample, classes, args.device, seed=100 + batch)
        for impl in variants:
            repeats = args.repeats if impl == "triton" else max(3, args.repeats // 4)
            ms, mb = time_step(field, rays, grid, step_size, impl, cfg, weights, repeats, args.device)
            with torch.no_grad():
                fwd_ms, _ = time_step(
                    field, rays, grid, step_size, impl, cfg, weights, repeats, args.device, False
                )
            busy = (
                step_busy_ms(field, rays, grid, step_size, impl, cfg, weights)
                if args.device == "cuda"
                else float("nan")
            )
            row = dict(
                field=kind,
                batch=batch,
                impl=impl,
                median_ms=ms,
                ms_per_sample=ms / batch,
                forward_ms=fwd_ms,
                gpu_busy_ms=busy,
            )
            row.update(
                peak_extra_mb=mb, grid=list(grid.shape), rays_per_sample=rays_per_sample, step=step_size
            )
            results["rows"].append(row)
            print(
                f"{kind:12s} B={batch} rays={rays_per_sample} {impl:17s} {ms:9.2f} ms ({busy:.2f} GPU busy) "
                f"{mb:8.1f} MB, forward only {fwd_ms:.2f} ms",
                flush=True,
            )
        # the training step's 2D losses (the fused renderer on CUDA)
        impl = "triton" if args.device == "cuda" else "torch"
        for row in time_training_terms(preset, field, rays, weights, args.repeats, args.device, args.profile):
            results["training_terms"].append(
                dict(field=kind, batch=batch, rays_per_sample=rays_per_sample, impl=impl, **row)
            )
    setting = f"grid {grid.shape} x {classes}, step {step_size} m, {CONVENTION}"
    config = results.get("config")
    print(f"\n{results['device']}: {setting}" + (f", fused config {config}" if config else ""))
    header = f"{'field':12s} {'B':>2s} {'rays':>6s} {'impl':17s} {'median ms':>10s} {'ms/sample':>10s}"
    print(f"{header} {'extra MB':>9s} {'fwd ms':>8s} {'GPU busy ms':>12s}")
    for r in results["rows"]:
        cells = f"{r['median_ms']:10.2f} {r['ms_per_sample']:10.2f} {r['peak_extra_mb']:9.1f}"
        cells += f" {r['forward_ms']:8.2f} {r['gpu_busy_ms']:12.2f}"
        print(f"{r['field']:12s} {r['batch']:2d} {r['rays_per_sample']:6d} {r['impl']:17s} {cells}")
    print(f"\n2D losses of a training step ({preset_name}), forward + backward (a term: all less all but it)")
    header = f"{'losses':52s} {'field':12s} {'B':>2s} {'rays':>6s} {'median ms':>10s} {'GPU busy ms':>12s}"
    print(f"{header} {'extra MB':>9s}")
    for r in results["training_terms"]:
        cells = f"{r['median_ms']:10.2f} {r['gpu_busy_ms']:12.2f} {r['peak_extra_mb']:9.1f}"
        print(f"{r['terms']:52s} {r['field']:12s} {r['batch']:2d} {r['rays_per_sample']:6d} {cells}")
    if args.dataroot:
        results["real_batch"] = real_batch_terms(args)
        print(f"\n2D losses of a real training batch ({args.preset}, batch 2), forward + backward")
        print(f"{'losses':30s} {'field':32s} {'kept/ray':>9s} {'median ms':>10s} {'GPU busy ms':>12s}")
        for r in results["real_batch"]["terms"]:
            cells = f"{r['kept_samples']:9.1f} {r['median_ms']:10.2f} {r['gpu_busy_ms']:12.2f}"
            print(f"{r['terms']:30s} {r['field']:32s} {cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
