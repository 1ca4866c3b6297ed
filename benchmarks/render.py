"""Benchmark: forward + backward of volume rendering + rendering losses, fused Triton vs PyTorch reference.

GPU (default when CUDA is present): 38,400 rays per sample through the Occ3D grid (200x200x16, 17
classes, step 0.2 m), batch 1 and 2, for a freshly initialised field and a trained-like one (dense
ground and boxes, free elsewhere); median ms and peak extra memory over the inputs. `--check` first
compares the two implementations on the GPU. CPU: the torch reference per sample in the demo preset's
setting (100x100x8 grid at 0.8 m, 8,192 rays, step 0.4 m). Then the 2D losses of a training step as
`renderocc train` computes them (r50-256x704 on the GPU, demo on the CPU): all of them, replayed as CUDA
graphs, and all but each term beside the renderer's own, with wall and GPU-busy ms.

    PYTHONPATH=src python benchmarks/render.py [--check] [--convention reference] [--json out.json]

--convention reference times the published release's conventions (render/conventions.py) instead of this
project's metric ones: samples from the ray origin out to the 39 m sphere and its background shell.
--merge both times the fused backward with run-length merged atomic adds (fused.MERGE_ATOMICS, off by
default until timed) and with per-sample ones, row by row; --count-runs only counts, on any device, how
many atomic adds the merge saves on the GPU setting's inputs (kept samples per interpolation cell along
each ray).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from renderocc.config import LossConfig, get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.render import fused, volume_render
from renderocc.render.losses import (
    class_weights_from_counts,
    rendering_losses,
)
from renderocc.train_utils.cuda_graphs import GraphedLosses


def make_field(kind: str, grid: VoxelGrid, batch: int, classes: int, device: str, seed: int) -> tuple:
    """density [B, X, Y, Z] and semantics [B, X, Y, Z, C] leaves; 'fresh' or 'trained' (ground + boxes)."""
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


CONVENTION = "metric"  # --convention


def step(field, rays, grid, step_size, impl, cfg, weights, backward: bool = True) -> torch.Tensor:
    out = volume_render(
        *field, rays["rays_o"], rays["rays_d"], grid, step_size, implementation=impl, convention=CONVENTION
    )
    loss = sum(rendering_losses(out, rays, cfg, weights, CONVENTION).values())
    if backward:
        loss.backward()
    return loss


def time_fn(fn, leaves, repeats: int, device: str) -> tuple[float, float]:
    """Median ms of fn() (gradients of leaves cleared before each call), and peak memory above the inputs
    in MB (CUDA only)."""

    def run():
        for t in leaves:
            t.grad = None
        fn()

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


def time_training_terms(
    preset_name: str, field, rays, weights, repeats: int, device: str, kernels: bool = False
) -> list[dict]:
    """Forward + backward of the 2D losses of a training step (`train.rendered_losses` with the preset's
    losses, bf16 autocast on CUDA): all together (also as CUDA graphs, on CUDA) and all but each term.
    Median wall ms (synchronised) and, on CUDA, GPU-busy ms (summed kernel time), so launch-bound terms
    show. A term's cost is "all 2D losses" less "all but" it."""
    from renderocc.train import rendered_losses

    base = get_preset(preset_name).replace(render={"convention": CONVENTION})
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


def triton_variants(merges: tuple[bool, ...]) -> list[tuple[str, bool | None]]:
    """(label, fused.MERGE_ATOMICS) of the fused implementation per --merge setting."""
    if len(merges) == 1:
        return [("triton", merges[0])]
    return [("triton" if m else "triton-per-sample", m) for m in merges]


def set_merge(merge: bool | None) -> None:
    if merge is not None:
        fused.MERGE_ATOMICS = merge


def check(grid, step_size, classes, device, merges=(True,)) -> list[dict]:
    """Fused vs reference on the GPU: relative errors of the outputs and the grid gradients (per merge
    setting of the fused backward)."""
    rows = []
    cfg = LossConfig()
    for kind in ("fresh", "trained"):
        field = make_field(kind, grid, 2, classes, device, seed=11)
        rays = make_rays(2, 4096, classes, device, seed=12)
        res = {}
        for impl, merge in [("torch", None), *triton_variants(merges)]:
            set_merge(merge)
            for t in field:
                t.grad = None
            out = volume_render(
                *field,
                rays["rays_o"],
                rays["rays_d"],
                grid,
                step_size,
                implementation="torch" if impl == "torch" else "triton",
                convention=CONVENTION,
            )
            loss = sum(rendering_losses(out, rays, cfg, None, CONVENTION).values())
            loss.backward()
            res[impl] = [out.depth, out.semantics, out.opacity, out.distortion, field[0].grad, field[1].grad]
        names = ("depth", "semantics", "opacity", "distortion", "grad_density", "grad_semantics")
        for impl, _ in triton_variants(merges):
            row = {"field": kind, "impl": impl}
            for name, a, b in zip(names, res["torch"], res[impl]):
                row[name] = float(
                    (a.detach().double() - b.detach().double()).norm() / a.detach().double().norm()
                )
            rows.append(row)
            print("check", kind, impl, " ".join(f"{k}={v:.2e}" for k, v in list(row.items())[2:]), flush=True)
    set_merge(merges[0])
    return rows


def _previous(mask: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Index of the previous sample of each ray (samples ks in the last dimension) where mask holds, or -1."""
    idx = torch.where(mask, ks, -1).cummax(-1).values
    return torch.cat([torch.full_like(idx[..., :1], -1), idx[..., :-1]], -1)


def atomic_counts(
    density, rays_o, rays_d, grid, step_size, classes, skip=1e-7, convention=None, chunk=2048
) -> dict:
    """The fused backward's atomic adds per sample and merged per run (fused.MERGE_ATOMICS) for density
    [B, X, Y, Z] and rays [B, R, 3], replayed in PyTorch: the kernel's kept samples (keep_a: alpha at least
    the skip threshold before the ray stops; keep_w: its weight too) and interpolation cells (base index,
    strides and, "reference", which corners are in the grid). Lanes: element-wise atomic adds (a sample
    adds 1 density value and C semantic ones at each in-grid corner of its cell)."""
    from renderocc.render.conventions import resolve
    from renderocc.render.reference import _interpolate, alpha_from_density
    from renderocc.render.sampling import (
        ray_box_intersection,
        reference_samples,
        sample_counts,
        sample_positions,
    )
    from renderocc.render.volume import DEFAULT_DENSITY_SHIFT

    device = density.device
    conv = resolve(convention or CONVENTION, grid, step_size, skip)
    shape = torch.tensor(grid.shape, device=device)
    origin = torch.tensor(conv.origin, device=device)
    scale = torch.tensor(conv.scale, device=device)
    if conv.reference:
        rays_o = (rays_o - torch.tensor(conv.center, device=device)) / conv.radius
        t_near = torch.zeros(rays_o.shape[:2], device=device)
        num = torch.where((rays_d != 0).any(-1), len(conv.t), 0)
    else:
        t_near, t_far = ray_box_intersection(rays_o, rays_d, grid)
        num = sample_counts(t_near, t_far, step_size)
        t_near = torch.where(num > 0, t_near, torch.zeros_like(t_near))
    total = dict.fromkeys(
        ("samples", "weighted", "runs", "density", "density_merged", "sem", "sem_merged"), 0
    )
    for start in range(0, rays_o.shape[1], chunk):
        part = slice(start, start + chunk)
        k_max = int(num[:, part].max())
        if k_max == 0:
            continue
        ks = torch.arange(k_max, device=device)
        exists = ks < num[:, part, None]
        if conv.reference:
            _, q, kept = reference_samples(rays_o[:, part], rays_d[:, part], conv, k_max)
            exists &= kept
        else:
            _, q = sample_positions(rays_o[:, part], rays_d[:, part], t_near[:, part], k_max, step_size)
        dens, _ = _interpolate(density, density.unsqueeze(1), q, grid, conv)
        tau, alpha = alpha_from_density(dens, conv.interval, DEFAULT_DENSITY_SHIFT)
        keep = exists & (alpha >= skip) & (alpha > 0)
        tau = torch.where(keep, tau, torch.zeros_like(tau))
        trans = torch.exp(-(torch.cumsum(tau, -1) - tau))
        keep_a = keep & (trans >= conv.stop_transmittance)
        keep_w = keep_a & (trans * alpha >= skip)
        u = (q - origin) * scale
        if conv.zero_outside:
            i = torch.floor(u).long()
            low, high = (i >= 0) & (i < shape), (i >= -1) & (i < shape - 1)
            corners = (low.long() + high.long()).prod(-1)
            bits = (low.long() * torch.tensor([1, 4, 16], device=device)).sum(-1)
            bits = bits + (high.long() * torch.tensor([2, 8, 32], device=device)).sum(-1)
        else:
            i = torch.minimum(torch.minimum(u.clamp_min(0.0), (shape - 1).to(u.dtype)).long(), shape - 1)
            corners = torch.full_like(i[..., 0], 8)
            bits = torch.zeros_like(i[..., 0])
        strides = ((i < shape - 1).long() * torch.tensor([4, 2, 1], device=device)).sum(-1)
        base = (i[..., 0] * grid.shape[1] + i[..., 1]) * grid.shape[2] + i[..., 2]
        key = base * 512 + strides * 64 + bits  # the kernel's cell: equal keys, equal masked corners
        prev = _previous(keep_a, ks)
        new_run = keep_a & ((prev < 0) | (key != key.gather(-1, prev.clamp_min(0))))
        run = torch.cumsum(new_run, -1)
        prev_w = _previous(keep_w, ks)
        new_sem_run = keep_w & ((prev_w < 0) | (run != run.gather(-1, prev_w.clamp_min(0))))
        total["samples"] += int(keep_a.sum())
        total["weighted"] += int(keep_w.sum())
        total["runs"] += int(new_run.sum())
        total["density"] += int((corners * keep_a).sum())
        total["density_merged"] += int((corners * new_run).sum())
        total["sem"] += classes * int((corners * keep_w).sum())
        total["sem_merged"] += classes * int((corners * new_sem_run).sum())
    total["atomic_lanes"] = total["density"] + total["sem"]
    total["atomic_lanes_merged"] = total["density_merged"] + total["sem_merged"]
    total["samples_per_run"] = total["samples"] / max(1, total["runs"])
    total["saved"] = 1 - total["atomic_lanes_merged"] / max(1, total["atomic_lanes"])
    return total


def count_runs(classes: int, device: str) -> list[dict]:
    """`atomic_counts` on the GPU setting's inputs: batch 1 of each field, seeds as timed, 38,400 rays
    through the Occ3D grid at 0.2 m steps."""
    grid, step_size, rays_per_sample = VoxelGrid(), 0.2, 38_400
    rows = []
    for kind in ("fresh", "trained"):
        density = make_field(kind, grid, 1, classes, device, seed=1)[0].detach()
        rays = make_rays(1, rays_per_sample, classes, device, seed=101)
        total = atomic_counts(density, rays["rays_o"], rays["rays_d"], grid, step_size, classes)
        rows.append(dict(field=kind, convention=CONVENTION, **total))
        lanes, merged = total["atomic_lanes"], total["atomic_lanes_merged"]
        print(
            f"runs {kind:8s} {CONVENTION}: {total['samples']} kept samples ({total['weighted']} weighted) in "
            f"{total['runs']} runs, {total['samples_per_run']:.2f} per run; atomic lanes {lanes} per sample, "
            f"{merged} merged: {100 * total['saved']:.1f}% saved",
            flush=True,
        )
    return rows


CONFIGS = ((1, 1), (2, 1), (2, 2), (4, 4))  # (rays per program, warps)


def sweep(grid, step_size, rays_per_sample, classes, cfg, weights, repeats) -> list[dict]:
    """Median ms of the fused path per (rays per program, warps) on batch 1 of both fields; leaves the
    fastest configuration set for the rest of the run."""
    rows = []
    for kind in ("fresh", "trained"):
        field = make_field(kind, grid, 1, classes, "cuda", seed=1)
        rays = make_rays(1, rays_per_sample, classes, "cuda", seed=101)
        for block, warps in CONFIGS:
            fused.BLOCK_RAYS, fused.NUM_WARPS = block, warps
            ms, _ = time_step(field, rays, grid, step_size, "triton", cfg, weights, repeats, "cuda")
            rows.append({"field": kind, "block_rays": block, "num_warps": warps, "median_ms": ms})
            print(f"sweep {kind:8s} block_rays={block:3d} num_warps={warps} {ms:8.2f} ms", flush=True)
    best = min(
        CONFIGS, key=lambda c: sum(r["median_ms"] for r in rows if (r["block_rays"], r["num_warps"]) == c)
    )
    fused.BLOCK_RAYS, fused.NUM_WARPS = best
    print(f"sweep: fastest (rays per program, warps) = {best}", flush=True)
    return rows


def profile(grid, step_size, rays_per_sample, classes, cfg, weights) -> None:
    """Kernel time table of fused forward + backward steps on both fields (batch 1)."""
    for kind in ("fresh", "trained"):
        field = make_field(kind, grid, 1, classes, "cuda", seed=1)
        rays = make_rays(1, rays_per_sample, classes, "cuda", seed=101)
        time_step(field, rays, grid, step_size, "triton", cfg, weights, 3, "cuda")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step(field, rays, grid, step_size, "triton", cfg, weights)
            torch.cuda.synchronize()
        print(f"profile {kind} (5 steps)")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


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
    parser.add_argument(
        "--merge",
        default="on" if fused.MERGE_ATOMICS else "off",
        choices=("on", "off", "both"),
        help="fused backward: run-length merged atomic adds, per-sample ones, or both timed in turn",
    )
    parser.add_argument(
        "--count-runs", action="store_true", help="only count the atomic adds the merge saves, and exit"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    global CONVENTION
    CONVENTION = args.convention
    classes = 17
    merges = {"on": (True,), "off": (False,), "both": (True, False)}[args.merge]
    set_merge(merges[0])
    if args.count_runs:
        runs = count_runs(classes, args.device)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"convention": args.convention, "runs": runs}, f, indent=1)
        return 0
    weights = class_weights_from_counts(torch.logspace(4, 9, classes)).to(args.device)
    cfg = LossConfig()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = {"device": device_name, "convention": args.convention, "rows": [], "training_terms": []}
    if args.device == "cuda":
        grid, step_size, rays_per_sample, batches = VoxelGrid(), 0.2, 38_400, (1, 2)
        preset_name = "r50-256x704"
        variants = triton_variants(merges) + ([] if args.no_reference else [("torch", None)])
        if args.check:
            results["check"] = check(grid, step_size, classes, args.device, merges)
    else:
        preset_name = "demo"
        preset = get_preset(preset_name)
        grid, step_size, rays_per_sample, batches = (
            preset.grid,
            preset.render.step_size,
            preset.data.max_rays,
            (1,),
        )
        variants = [("torch", None)]
    if args.sweep and args.device == "cuda":
        results["sweep"] = sweep(grid, step_size, rays_per_sample, classes, cfg, weights, args.repeats)
    if args.device == "cuda":
        results["config"] = {
            "block_rays": fused.BLOCK_RAYS,
            "num_warps": fused.NUM_WARPS,
            "merge_atomics": list(merges),
        }
    if args.profile and args.device == "cuda":
        profile(grid, step_size, rays_per_sample, classes, cfg, weights)
    for kind in ("fresh", "trained"):
        for batch in batches:
            field = make_field(kind, grid, batch, classes, args.device, seed=batch)
            rays = make_rays(batch, rays_per_sample, classes, args.device, seed=100 + batch)
            for label, merge in variants:
                set_merge(merge)
                impl = "torch" if label == "torch" else "triton"
                repeats = args.repeats if impl == "triton" else max(3, args.repeats // 4)
                ms, mb = time_step(field, rays, grid, step_size, impl, cfg, weights, repeats, args.device)
                with torch.no_grad():
                    fwd_ms, _ = time_step(
                        field, rays, grid, step_size, impl, cfg, weights, repeats, args.device, False
                    )
                row = dict(
                    field=kind,
                    batch=batch,
                    impl=label,
                    median_ms=ms,
                    ms_per_sample=ms / batch,
                    forward_ms=fwd_ms,
                )
                row.update(
                    peak_extra_mb=mb, grid=list(grid.shape), rays_per_sample=rays_per_sample, step=step_size
                )
                results["rows"].append(row)
                print(
                    f"{kind:8s} B={batch} {label:17s} {ms:9.2f} ms {mb:8.1f} MB, "
                    f"forward only {fwd_ms:.2f} ms",
                    flush=True,
                )
            # the training step's 2D losses run the fused renderer on CUDA: once per merge setting there
            for label, merge in triton_variants(merges) if args.device == "cuda" else [("torch", None)]:
                set_merge(merge)
                if len(merges) > 1 and args.device == "cuda":
                    print(f"2D losses with {label}", flush=True)
                for row in time_training_terms(
                    preset_name, field, rays, weights, args.repeats, args.device, args.profile
                ):
                    if len(merges) > 1 and args.device == "cuda":
                        row["terms"] = f"{row['terms']} ({label})"
                    results["training_terms"].append(dict(field=kind, batch=batch, impl=label, **row))
            set_merge(merges[0])
    setting = (
        f"{rays_per_sample} rays/sample, grid {grid.shape} x {classes}, step {step_size} m, {CONVENTION}"
    )
    config = results.get("config")
    print(f"\n{results['device']}: {setting}" + (f", fused config {config}" if config else ""))
    header = f"{'field':8s} {'B':>2s} {'impl':17s} {'median ms':>10s} {'ms/sample':>10s}"
    print(f"{header} {'extra MB':>9s} {'fwd ms':>8s}")
    for r in results["rows"]:
        cells = f"{r['median_ms']:10.2f} {r['ms_per_sample']:10.2f} {r['peak_extra_mb']:9.1f}"
        cells += f" {r['forward_ms']:8.2f}"
        print(f"{r['field']:8s} {r['batch']:2d} {r['impl']:17s} {cells}")
    print(f"\n2D losses of a training step ({preset_name}), forward + backward (a term: all less all but it)")
    print(f"{'losses':52s} {'field':8s} {'B':>2s} {'median ms':>10s} {'GPU busy ms':>12s} {'extra MB':>9s}")
    for r in results["training_terms"]:
        cells = f"{r['median_ms']:10.2f} {r['gpu_busy_ms']:12.2f} {r['peak_extra_mb']:9.1f}"
        print(f"{r['terms']:52s} {r['field']:8s} {r['batch']:2d} {cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
