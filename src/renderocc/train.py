"""`renderocc train`: the training loop, on the CPU, one GPU or many GPUs under torchrun (DDP).

    renderocc train --preset demo --dataroot D --out RUN [--supervision 2d|3d|2d+3d|depth] [--resume]
    torchrun --nproc-per-node 8 -m renderocc.cli train --preset swinb-512x1408 --dataroot D --out RUN

One step: a batch whose content depends only on (seed, step) -> the network's density and semantic grids
-> volume rendering along the batch's LiDAR-labelled camera rays -> 2D losses on those rays (rendering, line
of sight, the LiDAR point's voxel) and/or 3D voxel losses -> AdamW with grad-norm clipping -> EMA of the
weights. Checkpoints every `checkpoint_every` steps hold everything needed to continue bit-for-bit with
--resume.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from renderocc.checkpoint import (
    check_compatible,
    checkpoint_preset,
    latest_checkpoint,
    load_image_branch,
    load_train_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from renderocc.cli import CLIError
from renderocc.config import (
    PRESETS,
    Preset,
    get_preset,
    preset_differences,
    preset_from_dict,
    preset_to_json,
    with_overrides,
)
from renderocc.data.batch import batch_to
from renderocc.eval.evaluate import evaluate_model, label_grid
from renderocc.train_utils import distributed
from renderocc.train_utils.amp import autocast
from renderocc.train_utils.cpu_threads import CpuThreads
from renderocc.train_utils.cuda_graphs import GraphedCall, GraphedLosses, LossFn
from renderocc.train_utils.data import eval_loader, open_index, train_loader
from renderocc.train_utils.ema import EMA
from renderocc.train_utils.resume import plan_batch
from renderocc.train_utils.rng import derived_seed, rng_state, seed_everything, set_rng_state
from renderocc.train_utils.schedule import lr_factor

# "depth": the LiDAR depth loss alone, which trains the image branch only (backbone, neck, view transformer):
# a start for another run (--init) standing in for the detection checkpoint the published models start from
SUPERVISION = ("2d", "3d", "2d+3d", "depth")
LOG_EVERY = 10  # steps between logged records (each costs a device sync)
METRICS_FILE = "metrics.jsonl"


class NonFiniteLossError(CLIError):
    """A loss became NaN / inf; the message names the step, the batch and the checkpoint to go back to."""


@dataclass
class TrainOptions:
    """What a training run needs besides the preset."""

    dataroot: str | Path
    out: str | Path
    version: str | None = None
    index_dir: str | Path | None = None  # a prepared index outside DATAROOT/renderocc/VERSION
    supervision: str = "2d"
    max_iters: int | None = None  # overrides the preset's epochs / max_iters
    resume: bool = False
    batch_size: int | None = None  # per process; None: the preset's
    keep_global_batch: bool = False  # on resume: batch = the checkpoint's global batch / processes
    change_global_batch: bool = False  # on resume: accept another global batch than the checkpoint's
    device: str | None = None  # None: CUDA when available
    compile: bool | None = None  # None: the preset's train.compile
    seed: int = 0
    num_workers: int | None = None
    val_every: int | None = None
    val_samples: int | None = None  # cap on validation frames (all of the val split when None)
    time_budget_s: float | None = None  # stop early, validated and checkpointed, once training ran this long
    progress: bool = True
    init: str | Path | None = None  # start the image branch from this run or checkpoint (load_image_branch)
    # CPU only: re-choose the intra-op threads as other processes load the cores (train_utils.cpu_threads).
    # Faster on a shared machine, but the thread count changes float summation order, so a seeded run is
    # no longer bit-for-bit repeatable: the demo opts in, everything else keeps a fixed count.
    adapt_cpu_threads: bool = False


def training_losses(
    model: torch.nn.Module,
    raw_model: torch.nn.Module,
    batch: dict,
    preset: Preset,
    supervision: str,
    class_weights: torch.Tensor,
    losses_2d: LossFn | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted loss terms of one batch. 2D: rendering losses along the labelled rays, the free-space priors
    and the LiDAR points' voxels (`losses_2d(density, semantics, batch)`, by default `rendered_losses`
    eagerly); 3D: voxel losses.

    Every setting keeps the view transformer's LiDAR depth loss, as the published models do.
    """
    from renderocc.render.voxel_losses import voxel_losses

    outputs = model(batch)
    losses = {"lidar_depth": preset.loss.lidar_depth * raw_model.depth_loss(outputs, batch)}
    if "2d" in supervision:
        fn = losses_2d or losses_2d_fn(preset, class_weights)
        losses |= fn(outputs["density"], outputs["semantics"], batch)
    if "3d" in supervision:
        gt = batch["voxel_semantics"]
        losses |= voxel_losses(
            outputs["density"],
            outputs["semantics"],
            gt,
            batch["mask_camera"],
            preset.grid,
            preset.loss,
            label_grid=label_grid(preset.grid, tuple(gt.shape[1:])),
        )  # unweighted 3D cross-entropy, as the 3D-supervised baselines train
    return losses


def rendered_losses(
    density: torch.Tensor,
    semantics: torch.Tensor,
    batch: dict,
    preset: Preset,
    class_weights: torch.Tensor,
    rendered_density: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted 2D losses: the batch's rays rendered through density [B, X, Y, Z] and semantics
    [B, X, Y, Z, K], the free-space priors and the voxels that hold the rays' LiDAR points. rendered_density
    [B, X, Y, Z]: render through this field instead (the priors and voxel terms keep density)."""
    from renderocc.render import volume_render
    from renderocc.render.extent import extent_min
    from renderocc.render.losses import (
        first_rays,
        free_space_prior,
        line_of_sight_free_space,
        rendered_rays,
        rendering_losses,
        surface_losses,
    )

    r, cfg, grid = preset.render, preset.loss, preset.grid
    # rendered: the first render.rendered_rays of the rays, less those the rendering losses do not score
    scored = rendered_rays(first_rays(batch, r.rendered_rays), grid, cfg, r.convention)
    if rendered_density is None:
        rendered_density = extent_min(density) if r.erode else density
    rendered = volume_render(
        rendered_density,
        semantics,
        scored["rays_o"],
        scored["rays_d"],
        grid,
        r.step_size,
        r.density_shift,
        r.skip_threshold,
        r.implementation,
        r.convention,
        scored["ray_valid"],
        r.stop_transmittance,
        r.semantic_threshold,
    )
    losses = rendering_losses(rendered, scored, cfg, class_weights, r.convention)
    threshold = cfg.occupancy_threshold
    if cfg.free_space:
        losses["free_space"] = cfg.free_space * free_space_prior(density, threshold)
    if cfg.line_of_sight:
        losses["line_of_sight"] = cfg.line_of_sight * line_of_sight_free_space(
            density, batch, grid, threshold, per_voxel=cfg.line_of_sight_per_voxel
        )
    if cfg.surface:
        occupancy, semantic = surface_losses(
            density, semantics, batch, grid, threshold, class_weights, cfg.ground_footprint
        )
        losses["surface_occupancy"] = cfg.surface * occupancy
        losses["surface_semantic"] = cfg.surface * semantic
    return losses


def losses_2d_fn(preset: Preset, class_weights: torch.Tensor | None, compiled: bool = False) -> LossFn:
    """`rendered_losses` of the preset: (density, semantics, batch) -> its terms; compiled: under
    torch.compile, which fuses the few hundred small kernels around the renderer's own into a few dozen."""
    losses = torch.compile(rendered_losses, dynamic=False) if compiled else rendered_losses
    return functools.partial(losses, preset=preset, class_weights=class_weights)


def forward_backward(
    model: torch.nn.Module,
    raw_model: torch.nn.Module,
    preset: Preset,
    supervision: str,
    class_weights: torch.Tensor,
    graphs: str = "step",
    losses_2d: LossFn | None = None,
    compile_losses: bool = False,
) -> Callable[[dict], dict[str, torch.Tensor]]:
    """One step's forward and backward: batch -> its weighted loss terms (detached), with the gradients of
    their sum in the parameters' `.grad`.

    graphs (on CUDA): "step" replays the whole forward and backward as one CUDA graph (GraphedCall; one
    process, since DDP's all-reduce runs outside graphs), "losses" the 2D losses only (GraphedLosses), "off"
    none.
    losses_2d: the 2D loss terms, `losses_2d_fn(preset, class_weights, compile_losses)` by default. bf16
    autocast when train.amp (on CUDA, and on CPUs with native bf16: train_utils.amp).
    """
    device = next(raw_model.parameters()).device
    graphs = graphs if device.type == "cuda" else "off"
    fn_2d = losses_2d or losses_2d_fn(preset, class_weights, compile_losses)

    def step(batch: dict, fn_2d: LossFn) -> dict[str, torch.Tensor]:
        with autocast(device, preset.train.amp, cpu=True):
            losses = training_losses(model, raw_model, batch, preset, supervision, class_weights, fn_2d)
        raw_model.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        return {k: v.detach() for k, v in losses.items()}

    if graphs == "step":
        return GraphedCall(functools.partial(step, fn_2d=fn_2d), raw_model)
    return functools.partial(step, fn_2d=GraphedLosses(fn_2d, graphs == "losses"))


def compile_stages(model: torch.nn.Module) -> Callable[[], None]:
    """torch.compile the network's image backbone, neck, 3D encoder and heads in place (the state-dict keys do
    not change); returns the function that puts them back to eager.

    Compiled one by one rather than whole: the view transformer's per-frame loop and the renderer gain
    nothing from it. On an H200 this took the Swin-B step from 380 to 244 ms; compilation costs minutes.
    """
    stages = [model.backbone, model.neck, model.encoder, model.heads]
    for stage in stages:
        stage.forward = torch.compile(stage.forward)

    def undo() -> None:
        for stage in stages:
            del stage.forward  # the instance attribute: the class's forward shows again

    return undo


def first_compiled_step(
    step_fn: Callable[[dict], dict],
    batch: dict,
    with_eager_losses: Callable[[], Callable[[dict], dict]],
    uncompile: Callable[[], None],
    write: Callable[[str], None],
) -> tuple[dict, Callable[[dict], dict]]:
    """Run the first step, which compiles; returns its losses and the step function to keep.

    A compiler failure (any exception) costs a one-line warning, not the run: the step runs again with the
    2D losses eager (`with_eager_losses()` builds that step), then, failing again, with the network eager too
    (`uncompile`). The losses go first: compiled, they save a millisecond a step, the network tens; a network
    that cannot compile is thus tried twice.
    """
    tic = time.perf_counter()
    for fallback in ("the 2D losses eager", "training eagerly"):
        try:
            losses = step_fn(batch)
        except Exception as err:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            write(f"warning: torch.compile failed ({reason}); {fallback}")
            if fallback == "training eagerly":
                uncompile()
            step_fn = with_eager_losses()
        else:
            write(f"torch.compile: first step took {time.perf_counter() - tic:.0f} s (compilation)")
            return losses, step_fn
    return step_fn(batch), step_fn  # all eager: what fails now is not the compiler


def total_iterations(preset: Preset, opts: TrainOptions, train_samples: int, global_batch: int) -> int:
    """The schedule's length in steps; epochs count steps of `global_batch` samples."""
    if opts.max_iters is not None:
        return opts.max_iters
    if preset.train.max_iters is not None:
        return preset.train.max_iters
    return preset.train.epochs * math.ceil(train_samples / global_batch)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices / kernels only; biases and norm scales are left alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def log_metrics(run_dir: Path, record: dict, writer) -> None:
    """Append one record to RUN/metrics.jsonl and to TensorBoard (when installed)."""
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, record["step"])


def tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics.jsonl has everything
        return None
    return SummaryWriter(str(run_dir / "tb"))


class Throughput:
    """Steps and rays since the last reset; the ray count stays on the device until it is read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.tic, self.steps, self.rays = time.perf_counter(), 0, torch.zeros((), device=self.device)

    def add(self, rays: torch.Tensor) -> None:
        self.steps += 1
        self.rays += rays

    def rates(self, batch_size: int) -> tuple[float, float]:
        """(samples/s, rays/s) summed over all processes."""
        elapsed = time.perf_counter() - self.tic
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        rays = float(distributed.mean_across(self.rays.float())) * world
        return self.steps * batch_size * world / elapsed, rays / elapsed


class NonFiniteWatch:
    """Whether a step's loss was NaN / inf, noted on the device and read at the loop's sync points.

    Checking every step would make the host wait for the GPU once per step, which then idles while the
    optimiser and the next batch are launched. A step after a non-finite one only spoils weights that no
    checkpoint holds: checkpoints are written after a check.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.pending: dict[int, tuple[torch.Tensor, list[str]]] = {}  # step -> (loss terms, sample tokens)

    def add(self, step: int, terms: torch.Tensor, tokens: list[str]) -> None:
        """terms [K]: the step's loss terms (not to be changed later)."""
        bad = ~torch.isfinite(terms.sum())
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
        self.pending[step] = (terms, tokens)

    def check(self, names: list[str], last_good: Path | None) -> None:
        """Raise NonFiniteLossError naming the first bad step since the last check (on any process)."""
        bad = int(self.first_bad)
        pending, self.pending = self.pending, {}
        if distributed.all_true(bad < 0, self.first_bad.device):
            return
        if bad < 0:
            raise NonFiniteLossError(
                f"non-finite loss on another process before step {max(pending) + 1}; last good checkpoint: "
                f"{last_good or 'none yet'} (lower the lr and restart from it with --resume)"
            )
        terms, tokens = pending[bad]
        values = ", ".join(f"{k}={v:.4g}" for k, v in zip(names, terms.tolist()))
        raise NonFiniteLossError(
            f"non-finite loss at step {bad} ({values}); batch sample tokens: {', '.join(tokens)}; last good "
            f"checkpoint: {last_good or 'none yet'} (lower the lr and restart from it with --resume)"
        )


def restore(
    checkpoint: Path, state: dict, model, ema: EMA, optimizer, scheduler, rank: int, world: int, seed: int
) -> int:
    """Load everything a checkpoint (and its training `state`) holds into the training objects; returns the
    step to continue from."""
    weights = load_weights(checkpoint, "model")
    check_compatible(model, weights, f"checkpoint {checkpoint}")
    model.load_state_dict(weights)
    ema.load_state_dict(load_weights(checkpoint, "ema"), state["ema_updates"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step, rng = int(state["step"]), state["rng"]  # one RNG entry per process
    if len(rng) == world:
        set_rng_state(rng[rank])
    else:  # another process count: no stream maps onto a process; fresh ones, distinct, fixed by the step
        seed_everything(derived_seed(seed, step, rank))
    return step


def train(preset: Preset, opts: TrainOptions) -> Path:
    """Train `preset` on a prepared dataset; returns the final checkpoint directory."""
    from renderocc.render.conventions import METRIC, resolve
    from renderocc.render.losses import check_rendered_rays

    if opts.supervision not in SUPERVISION:
        raise ValueError(f"--supervision {opts.supervision!r}; choose from {', '.join(SUPERVISION)}")
    r = preset.render
    check_rendered_rays(r.rendered_rays)
    resolve(  # before any step
        r.convention, preset.grid, r.step_size, r.skip_threshold, r.stop_transmittance, r.semantic_threshold
    )
    if r.erode and r.convention != METRIC:
        raise ValueError(
            f"render.erode=true is for the metric convention (render.convention={r.convention!r} "
            "interpolates between other voxel centres): set render.erode=false or render.convention='metric'"
        )
    dist = distributed.setup(opts.device)
    device = dist.device
    run_dir = Path(opts.out)
    seed_everything(opts.seed + dist.rank)
    last_good = latest_checkpoint(run_dir) if opts.resume else None
    if opts.resume and last_good is None:
        raise FileNotFoundError(
            f"--resume: no checkpoint under {run_dir / 'checkpoints'}; drop --resume to start"
        )
    saved = load_train_state(last_good) if last_good is not None else None
    plan = plan_batch(
        saved, last_good, preset.train.batch_size, dist.world_size, opts.seed, opts.batch_size,
        opts.keep_global_batch, opts.change_global_batch,
    )  # fmt: skip
    preset = preset.replace(train={"batch_size": plan.batch_size})
    if last_good is not None and (changed := preset_differences(checkpoint_preset(last_good), preset)):
        raise ValueError(
            f"--resume: {last_good} was trained with another recipe ({'; '.join(changed)}); resume with "
            f"--preset {run_dir / 'preset.json'}, or with the --preset and --set the run started with"
        )
    cfg = preset.train

    index = open_index(opts.dataroot, opts.version, opts.index_dir)
    if "3d" in opts.supervision and not index.has_gts:
        raise FileNotFoundError(
            f"--supervision {opts.supervision} needs Occ3D labels; index {index.root} has none"
        )
    from renderocc.models import build_model
    from renderocc.render.losses import class_weights_from_counts

    class_weights = class_weights_from_counts(torch.as_tensor(index.class_counts)).to(device)
    total_iters = total_iterations(preset, opts, len(index.splits["train"]), plan.schedule_batch)

    model = build_model(preset).to(device)
    if opts.init is not None and saved is None:  # a resumed run has the weights it trained since
        count = load_image_branch(model, opts.init)
        if dist.is_main:
            print(f"image branch ({count} tensors) from {resolve_checkpoint(opts.init)}")
    ema = EMA(model, cfg.ema_decay)
    # fused: one kernel for all parameters (on the CPU too), several times faster than the per-tensor loop
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=True)
    schedule = functools.partial(
        lr_factor, warmup_iters=cfg.warmup_iters, total_iters=total_iters, kind=cfg.schedule
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    start_step = 0
    if saved is not None:
        start_step = restore(
            last_good, saved, model, ema, optimizer, scheduler, dist.rank, dist.world_size, opts.seed
        )
        if dist.is_main and (note := plan.change_note(start_step, total_iters)):
            print(note)
    elif dist.is_main and (run_dir / "checkpoints").is_dir() and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints; pass --resume to continue or another --out"
        )

    raw_model = model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=opts.supervision == "depth",  # the 3D encoder and heads get no gradient
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: each convolution's fastest algorithm, once
    compiled = cfg.compile if opts.compile is None else opts.compile
    uncompile = compile_stages(raw_model) if compiled else None
    graphs = "off" if not cfg.cuda_graphs else "losses" if dist.enabled else "step"
    step_fn = forward_backward(
        model, raw_model, preset, opts.supervision, class_weights, graphs, compile_losses=compiled
    )

    workers = cfg.num_workers if opts.num_workers is None else opts.num_workers
    loader = train_loader(
        index, preset.data, cfg.batch_size, workers, opts.seed, plan.samples_seen, dist.rank,
        dist.world_size, pin_memory=device.type == "cuda", with_gts="3d" in opts.supervision,
    )  # fmt: skip
    val_every = opts.val_every or cfg.val_every
    has_val = index.has_gts and len(index.splits.get("val", ())) > 0
    writer = None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "preset.json").write_text(preset_to_json(preset) + "\n")
        writer = tensorboard_writer(run_dir)

    def checkpoint(step: int) -> Path:
        states = distributed.gather_objects(rng_state())  # every process's RNG, for an exact resume
        train_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": states,
            "ema_updates": ema.updates,
            "supervision": opts.supervision,
            **plan.checkpoint_fields(step - start_step),
        }
        path = run_dir / "checkpoints" / f"step-{step:08d}"
        if dist.is_main:
            path = save_checkpoint(
                run_dir,
                step,
                raw_model.state_dict(),
                ema.state_dict(),
                train_state,
                preset,
                cfg.keep_checkpoints,
            )
        return path

    bar = tqdm(
        total=total_iters,
        initial=start_step,
        desc="train",
        unit="it",
        disable=not (opts.progress and dist.is_main),
    )
    model.train()
    batches = iter(loader)
    # a CPU shared with other processes: the threads of the cores they leave (train_utils.cpu_threads)
    threads = CpuThreads() if opts.adapt_cpu_threads and device.type == "cpu" and not dist.enabled else None
    meter = Throughput(device)
    watch = NonFiniteWatch(device)
    started = time.perf_counter()
    for step in range(start_step, total_iters):
        batch = batch_to(next(batches), device)
        if step == start_step and uncompile is not None:  # compilation happens in the first step
            with_eager_losses = functools.partial(
                forward_backward, model, raw_model, preset, opts.supervision, class_weights, graphs
            )
            losses, step_fn = first_compiled_step(step_fn, batch, with_eager_losses, uncompile, bar.write)
        else:
            losses = step_fn(batch)
        terms = torch.stack(list(losses.values()))  # a copy: a graph's outputs change at its next replay
        watch.add(step, terms, batch["sample_token"])
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(raw_model)
        if threads is not None:
            threads.update()

        done = step + 1
        meter.add(batch["ray_valid"].sum())
        val_due = has_val and done % val_every == 0
        checkpoint_due = done % cfg.checkpoint_every == 0
        # The host waits for the GPU only here: between these points it queues steps ahead of the GPU
        sync_point = done % LOG_EVERY == 0 or done == total_iters or val_due or checkpoint_due
        over_time = opts.time_budget_s is not None and time.perf_counter() - started >= opts.time_budget_s
        # every process must agree to stop at the same step, hence the all-reduce, at sync points only
        out_of_time = (
            over_time if not dist.enabled else sync_point and not distributed.all_true(not over_time, device)
        )
        last = done == total_iters or out_of_time
        if sync_point or last:
            watch.check(list(losses), last_good)
        if done % LOG_EVERY == 0 or last:
            samples_per_s, rays_per_s = meter.rates(cfg.batch_size)
            record = {
                "step": done,
                "loss": float(distributed.mean_across(terms.sum())),
                **{f"loss/{k}": float(v) for k, v in zip(losses, terms)},
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "samples_per_s": samples_per_s,
                "rays_per_s": rays_per_s,
            }
            if threads is not None:
                record["cpu_threads"] = torch.get_num_threads()
            if dist.is_main:
                log_metrics(run_dir, record, writer)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    rays_s=f"{record['rays_per_s']:.0f}",
                    samples_s=f"{record['samples_per_s']:.2f}",
                )
            meter.reset()
        bar.update(1)

        if has_val and (val_due or last):
            loader_val = eval_loader(  # scoring reads no rays: the loader leaves them out
                index, preset.data, "val", cfg.batch_size, 0, dist.rank, dist.world_size, opts.val_samples,
                with_rays=False,
            )  # fmt: skip
            with ema.applied_to(raw_model):
                distributed.broadcast_buffers(raw_model)  # every process scores with rank 0's EMA, as saved
                metrics = evaluate_model(
                    raw_model, loader_val, preset, index, device, False, amp=cfg.amp, progress=False
                )
            if dist.is_main:
                log_metrics(run_dir, {"step": done, "val/miou": metrics["miou"]}, writer)
                bar.write(
                    f"step {done}: val mIoU {metrics['miou']:.2f} (EMA weights, {metrics['frames']} frames)"
                )
            meter.reset()  # validation time is not training throughput
        if checkpoint_due or last:
            last_good = checkpoint(done)
            meter.reset()
        if out_of_time:
            bar.write(f"time budget of {opts.time_budget_s:.0f} s reached at step {done} of {total_iters}")
            break
    bar.close()
    if threads is not None:
        threads.restore()
    if writer is not None:
        writer.close()
    final = last_good if last_good is not None else latest_checkpoint(run_dir)
    if start_step >= total_iters and dist.is_main:
        print(f"nothing to do: {final} is already at step {start_step} of {total_iters}")
    distributed.cleanup()
    return final


RESUME_HELP = """\
--resume continues under the recipe the run started with: a preset that differs from the checkpoint's
(other than in batch, workers, intervals, compile, graphs or length) is refused; --preset RUN/preset.json
resumes with the run's own.

Several processes (GPUs, nodes) under torchrun: each step takes a global batch of B x processes samples
(B = --batch-size or the preset's) from one data stream fixed by --seed, split in rank order, so 2 processes
x 2 samples train on the same samples, augmented alike, as 1 x 4; an epoch-based schedule counts its steps
in global batches.

--resume on another process count or batch: the checkpoint records its global batch (and seed: another
--seed is refused), and a run that would take another global batch stops and says what to pass:
  --keep-global-batch    B = the checkpoint's global batch / processes: the same batches and lr schedule as
                         the run would have had (not bit-identical weights: gradients are averaged in another
                         order, BatchNorm statistics come from B samples, random loss points are reseeded)
  --change-global-batch  the new global batch: the data stream continues where it stopped (no sample repeated
                         or skipped), the lr schedule keeps its steps and its learning rate (not rescaled);
                         --max-iters N changes its length, and the run prints the N that sees as many samples
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = RESUME_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--preset",
        required=True,
        help=f"one of: {', '.join(PRESETS)}, or a preset JSON (e.g. RUN/preset.json)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="change one field of the preset, e.g. --set data.max_rays=9600 (repeatable; VALUE as JSON)",
    )  # fmt: skip
    parser.add_argument(
        "--dataroot", required=True, help="nuScenes-format dataset prepared by `renderocc prepare`"
    )
    parser.add_argument("--version", default=None, help="prepared nuScenes version (default: the only one)")
    parser.add_argument("--index", default=None, help="prepared index (default: DATAROOT/renderocc/VERSION)")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, tb/")
    parser.add_argument(
        "--supervision", default="2d", choices=SUPERVISION,
        help="2D rays, 3D voxels or both; depth: the LiDAR depth loss alone (an image-branch start, --init)",
    )  # fmt: skip
    parser.add_argument(
        "--init", default=None, metavar="RUN",
        help="start backbone, neck and view transformer from this run's (or checkpoint's) EMA weights, e.g. "
        "a --supervision depth run; the 3D encoder and heads start fresh",
    )  # fmt: skip
    parser.add_argument("--max-iters", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="samples per process and step (default: the preset's)"
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--keep-global-batch",
        action="store_true",
        help="with --resume on another process count: batch per process = the checkpoint's global batch / "
        "processes (the same batches and lr schedule)",
    )
    resume.add_argument(
        "--change-global-batch",
        action="store_true",
        help="with --resume: continue with another global batch than the checkpoint's (see below)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the network's stages and the 2D losses (default: the preset's train.compile)",
    )
    parser.add_argument(
        "--no-cuda-graphs", action="store_true", help="launch the step eagerly (for debugging or profiling)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=None, help="data loader processes per GPU")
    parser.add_argument("--val-every", type=int, default=None, help="validation mIoU every N steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def resolve_preset(name: str) -> Preset:
    """A preset by name, or from a JSON file such as a run's (edited) preset.json: a field it misspells or
    a value of the wrong type is refused, naming the file and the field."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"--preset {path} not found; give a preset name ({', '.join(PRESETS)}) or a file"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--preset {path} is not valid JSON: {err}") from None
        return preset_from_dict(data, source=str(path))
    return get_preset(name)


def run(args: argparse.Namespace) -> int:
    preset = with_overrides(resolve_preset(args.preset), args.set)
    if args.no_cuda_graphs:
        preset = preset.replace(train={"cuda_graphs": False})
    for flag, value in (("--max-iters", args.max_iters), ("--batch-size", args.batch_size)):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} must be positive, got {value}")
    opts = TrainOptions(
        dataroot=args.dataroot,
        out=args.out,
        version=args.version,
        index_dir=args.index,
        supervision=args.supervision,
        max_iters=args.max_iters,
        resume=args.resume,
        batch_size=args.batch_size,
        keep_global_batch=args.keep_global_batch,
        change_global_batch=args.change_global_batch,
        device=args.device,
        compile=args.compile,
        seed=args.seed,
        num_workers=args.num_workers,
        val_every=args.val_every,
        progress=not args.no_progress,
        init=args.init,
    )
    final = train(preset, opts)
    if os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {final}")
        if args.supervision == "depth":
            print(f"an image-branch start: renderocc train --init {args.out} ... (any supervision)")
        if args.supervision == "2d":  # a 2D-trained density has no fixed scale: the read-out is chosen after
            data = f"--dataroot {args.dataroot}" + "".join(
                f" --{flag} {value}"
                for flag, value in (("version", args.version), ("index", args.index))
                if value
            )
            readout = Path(args.out) / "readout.json"
            print(
                f"read-out thresholds from 2D labels: renderocc calibrate --checkpoint {args.out} {data} "
                f"--json {readout}; then pass --readout {readout} to eval / infer"
            )
    return 0
