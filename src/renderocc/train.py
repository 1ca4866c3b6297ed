"""`renderocc train`: the training loop, on the CPU, one GPU or many GPUs under torchrun (DDP).

    renderocc train --preset demo --dataroot D --out RUN [--supervision 2d|3d|2d+3d] [--resume]
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
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from renderocc.checkpoint import (
    check_compatible,
    latest_checkpoint,
    load_train_state,
    load_weights,
    preset_from_dict,
    preset_to_json,
    save_checkpoint,
)
from renderocc.cli import CLIError
from renderocc.config import PRESETS, Preset, get_preset
from renderocc.data.batch import batch_to
from renderocc.eval.evaluate import evaluate_model, label_grid
from renderocc.train_utils import distributed
from renderocc.train_utils.cuda_graphs import GraphedLosses, LossFn
from renderocc.train_utils.data import eval_loader, open_index, train_loader
from renderocc.train_utils.ema import EMA
from renderocc.train_utils.rng import rng_state, seed_everything, set_rng_state
from renderocc.train_utils.schedule import lr_factor

SUPERVISION = ("2d", "3d", "2d+3d")
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
    device: str | None = None  # None: CUDA when available
    compile: bool | None = None  # None: the preset's train.compile
    seed: int = 0
    num_workers: int | None = None
    val_every: int | None = None
    val_samples: int | None = None  # cap on validation frames (all of the val split when None)
    time_budget_s: float | None = None  # stop early, validated and checkpointed, once training ran this long
    progress: bool = True


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
        fn = losses_2d or functools.partial(rendered_losses, preset=preset, class_weights=class_weights)
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
    density: torch.Tensor, semantics: torch.Tensor, batch: dict, preset: Preset, class_weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Weighted 2D losses: the batch's rays rendered through density [B, X, Y, Z] and semantics
    [B, X, Y, Z, K], the free-space priors and the voxels that hold the rays' LiDAR points."""
    from renderocc.render import volume_render
    from renderocc.render.losses import (
        free_space_prior,
        line_of_sight_free_space,
        rendered_rays,
        rendering_losses,
        surface_losses,
    )

    r, cfg, grid = preset.render, preset.loss, preset.grid
    scored = rendered_rays(batch, grid, cfg, r.convention)  # only these are rendered
    rendered = volume_render(
        density,
        semantics,
        batch["rays_o"],
        batch["rays_d"],
        grid,
        r.step_size,
        r.density_shift,
        r.skip_threshold,
        r.implementation,
        r.convention,
        scored["ray_valid"],
    )
    losses = rendering_losses(rendered, scored, cfg, class_weights, r.convention)
    threshold = cfg.occupancy_threshold
    if cfg.free_space:
        losses["free_space"] = cfg.free_space * free_space_prior(density, threshold)
    if cfg.line_of_sight:
        losses["line_of_sight"] = cfg.line_of_sight * line_of_sight_free_space(
            density, batch, grid, threshold
        )
    if cfg.surface:
        occupancy, semantic = surface_losses(
            density, semantics, batch, grid, threshold, class_weights, cfg.ground_footprint
        )
        losses["surface_occupancy"] = cfg.surface * occupancy
        losses["surface_semantic"] = cfg.surface * semantic
    return losses


def total_iterations(preset: Preset, opts: TrainOptions, train_samples: int, world_size: int) -> int:
    if opts.max_iters is not None:
        return opts.max_iters
    if preset.train.max_iters is not None:
        return preset.train.max_iters
    per_epoch = math.ceil(train_samples / (preset.train.batch_size * world_size))
    return preset.train.epochs * per_epoch


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


def restore(checkpoint: Path, model, ema: EMA, optimizer, scheduler, rank: int, world_size: int) -> int:
    """Load everything a checkpoint holds into the training objects; returns the step to continue from."""
    weights = load_weights(checkpoint, "model")
    check_compatible(model, weights, f"checkpoint {checkpoint}")
    model.load_state_dict(weights)
    state = load_train_state(checkpoint)
    ema.load_state_dict(load_weights(checkpoint, "ema"), state["ema_updates"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]  # one entry per process; another process count continues from rank 0's streams
    set_rng_state(rng[rank] if len(rng) == world_size else rng[0])
    return int(state["step"])


def train(preset: Preset, opts: TrainOptions) -> Path:
    """Train `preset` on a prepared dataset; returns the final checkpoint directory."""
    if opts.supervision not in SUPERVISION:
        raise ValueError(f"--supervision {opts.supervision!r}; choose from {', '.join(SUPERVISION)}")
    cfg = preset.train
    dist = distributed.setup(opts.device)
    device = dist.device
    run_dir = Path(opts.out)
    seed_everything(opts.seed + dist.rank)

    index = open_index(opts.dataroot, opts.version, opts.index_dir)
    if "3d" in opts.supervision and not index.has_gts:
        raise FileNotFoundError(
            f"--supervision {opts.supervision} needs Occ3D labels; index {index.root} has none"
        )
    from renderocc.models import build_model
    from renderocc.render.losses import class_weights_from_counts

    class_weights = class_weights_from_counts(torch.as_tensor(index.class_counts)).to(device)
    total_iters = total_iterations(preset, opts, len(index.splits["train"]), dist.world_size)

    model = build_model(preset).to(device)
    ema = EMA(model, cfg.ema_decay)
    # fused: one kernel for all parameters (on the CPU too), several times faster than the per-tensor loop
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=True)
    schedule = functools.partial(
        lr_factor, warmup_iters=cfg.warmup_iters, total_iters=total_iters, kind=cfg.schedule
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    start_step = 0
    last_good = latest_checkpoint(run_dir) if opts.resume else None
    if opts.resume and last_good is None:
        raise FileNotFoundError(
            f"--resume: no checkpoint under {run_dir / 'checkpoints'}; drop --resume to start"
        )
    if last_good is not None:
        start_step = restore(last_good, model, ema, optimizer, scheduler, dist.rank, dist.world_size)
    elif dist.is_main and (run_dir / "checkpoints").is_dir() and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints; pass --resume to continue or another --out"
        )

    raw_model = model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    if cfg.compile if opts.compile is None else opts.compile:
        model = torch.compile(model)
    amp = cfg.amp and device.type == "cuda"
    losses_2d = GraphedLosses(
        functools.partial(rendered_losses, preset=preset, class_weights=class_weights), cfg.cuda_graphs
    )

    workers = cfg.num_workers if opts.num_workers is None else opts.num_workers
    loader = train_loader(
        index, preset.data, cfg.batch_size, workers, opts.seed, start_step, dist.rank, dist.world_size,
        pin_memory=device.type == "cuda",
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
            "world_size": dist.world_size,
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
    meter = Throughput(device)
    started = time.perf_counter()
    for step in range(start_step, total_iters):
        batch = batch_to(next(batches), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses = training_losses(
                model, raw_model, batch, preset, opts.supervision, class_weights, losses_2d
            )
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # checked after backward: the wait for the GPU then idles it only while the optimiser is launched
        if not distributed.all_true(bool(torch.isfinite(loss)), device):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite loss at step {step} ({terms}); batch sample tokens: "
                f"{', '.join(batch['sample_token'])}; last good checkpoint: {last_good or 'none yet'} "
                "(lower the lr and restart from it with --resume)"
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(raw_model)

        done = step + 1
        meter.add(batch["ray_valid"].sum())
        # every process must agree to stop at the same step, hence the all-reduce
        out_of_time = opts.time_budget_s is not None and not distributed.all_true(
            time.perf_counter() - started < opts.time_budget_s, device
        )
        last = done == total_iters or out_of_time
        if done % LOG_EVERY == 0 or last:
            samples_per_s, rays_per_s = meter.rates(cfg.batch_size)
            record = {
                "step": done,
                "loss": float(distributed.mean_across(loss.detach())),
                **{f"loss/{k}": float(v.detach()) for k, v in losses.items()},
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "samples_per_s": samples_per_s,
                "rays_per_s": rays_per_s,
            }
            if dist.is_main:
                log_metrics(run_dir, record, writer)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    rays_s=f"{record['rays_per_s']:.0f}",
                    samples_s=f"{record['samples_per_s']:.2f}",
                )
            meter.reset()
        bar.update(1)

        if has_val and (done % val_every == 0 or last):
            loader_val = eval_loader(
                index, preset.data, "val", cfg.batch_size, 0, dist.rank, dist.world_size, opts.val_samples
            )
            with ema.applied_to(raw_model):
                metrics = evaluate_model(
                    raw_model, loader_val, preset, index, device, False, amp=amp, progress=False
                )
            if dist.is_main:
                log_metrics(run_dir, {"step": done, "val/miou": metrics["miou"]}, writer)
                bar.write(
                    f"step {done}: val mIoU {metrics['miou']:.2f} (EMA weights, {metrics['frames']} frames)"
                )
            meter.reset()  # validation time is not training throughput
        if done % cfg.checkpoint_every == 0 or last:
            last_good = checkpoint(done)
            meter.reset()
        if out_of_time:
            bar.write(f"time budget of {opts.time_budget_s:.0f} s reached at step {done} of {total_iters}")
            break
    bar.close()
    if writer is not None:
        writer.close()
    final = last_good if last_good is not None else latest_checkpoint(run_dir)
    if start_step >= total_iters and dist.is_main:
        print(f"nothing to do: {final} is already at step {start_step} of {total_iters}")
    distributed.cleanup()
    return final


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        required=True,
        help=f"one of: {', '.join(PRESETS)}, or a preset JSON (e.g. RUN/preset.json)",
    )
    parser.add_argument(
        "--dataroot", required=True, help="nuScenes-format dataset prepared by `renderocc prepare`"
    )
    parser.add_argument("--version", default=None, help="prepared nuScenes version (default: the only one)")
    parser.add_argument("--index", default=None, help="prepared index (default: DATAROOT/renderocc/VERSION)")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, tb/")
    parser.add_argument("--supervision", default="2d", choices=SUPERVISION, help="2D rays, 3D voxels or both")
    parser.add_argument("--max-iters", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument(
        "--no-cuda-graphs", action="store_true", help="run the 2D losses eagerly (for debugging or profiling)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=None, help="data loader processes per GPU")
    parser.add_argument("--val-every", type=int, default=None, help="validation mIoU every N steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def resolve_preset(name: str) -> Preset:
    """A preset by name, or from a JSON file such as a run's preset.json."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"--preset {path} not found; give a preset name ({', '.join(PRESETS)}) or a file"
            )
        return preset_from_dict(json.loads(path.read_text()))
    return get_preset(name)


def run(args: argparse.Namespace) -> int:
    preset = resolve_preset(args.preset)
    if args.no_cuda_graphs:
        preset = preset.replace(train={"cuda_graphs": False})
    if args.max_iters is not None and args.max_iters <= 0:
        raise ValueError(f"--max-iters must be positive, got {args.max_iters}")
    opts = TrainOptions(
        dataroot=args.dataroot,
        out=args.out,
        version=args.version,
        index_dir=args.index,
        supervision=args.supervision,
        max_iters=args.max_iters,
        resume=args.resume,
        device=args.device,
        compile=args.compile,
        seed=args.seed,
        num_workers=args.num_workers,
        val_every=args.val_every,
        progress=not args.no_progress,
    )
    final = train(preset, opts)
    if os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {final}")
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
