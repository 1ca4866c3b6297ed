"""Study: 2D-only against 3D supervision, and the paper's ablations, on held-out synthetic scenes.

    python benchmarks/study.py --out /tmp/study --device cuda                        # 2d, 3d, 2d+3d
    python benchmarks/study.py --out /tmp/study --settings key-only unweighted rays-9600 rays-76800

One command generates a synthetic training set (40 scenes x 25 keyframes) and held-out scenes (6 others,
same generator), prepares 2D labels, then trains each setting from the same initialisation for the same
budget (--iters steps, capped by --budget-s of wall time per setting) and evaluates the EMA weights on the
held-out scenes: Occ3D mIoU with the camera mask, per-class IoU and RayIoU (SparseOcc's definition, as
`renderocc eval` computes it). It writes study.json, study.md (the tables), curves.png (training loss and
validation mIoU of every setting) and steps.png (held-out mIoU against training steps). An existing --out is
reused: data that is already there is not generated again, and a setting whose results exist is not trained
again (once every setting has its results, the command only writes the tables and the plots), so the
settings can be run in separate calls and reported together. A result scored with an earlier RayIoU (before
SparseOcc's origins and exact traversal) is scored again from the checkpoint it was scored at, without
training.

Long runs (5x, 15x the 1,600 steps), resumable across calls of limited length:

    python benchmarks/study.py --out runs/study --settings reference-2d 2d --schedule constant \
        --iters 24000 --eval-at 1600 8000 --budget-s 0 --call-s 420 --val-every 1600

A cosine schedule depends on the run's total steps, so a longer budget cannot continue a shorter run. Under
--schedule constant (warm-up, then the base lr: the reference release's own schedule, whose step at epoch
100 of 12 never comes) it can: one run per setting (OUT/SETTING-constant) passes every budget, is evaluated
on the held-out scenes at each --eval-at step and at --iters, and continues where the last call stopped.
--call-s caps this call (from its start): training stops at the next step, checkpoints, and the command
exits with status 3 ("run it again"); the next call resumes from the checkpoint (`renderocc train
--resume`), bit for bit. A cosine run over another --iters lives in OUT/SETTING-cosineN and resumes alike.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from renderocc.config import Preset, get_preset, preset_differences, preset_from_dict
from renderocc.core.classes import OCC3D_CLASSES
from renderocc.render.conventions import METRIC, METRIC_ONLY, convert_density

VERSION = "v1.0-synthetic"
DEFAULT_ITERS = 1600
UNFINISHED = 3  # exit status: a run stopped at --call-s; run the same command again
MIN_CALL_S = 30.0  # less training time than this left in a call: leave the run for the next call


@dataclass(frozen=True)
class OnReferenceScale:
    """A density (a read-out threshold) stated on the reference convention's scale: the setting gets the
    density that is exactly as opaque per metre under its own convention."""

    value: float


# the reference's ray sampling: class balance exp(0.005 (n_max / n_c - 1)) alone (before 2026-11-24, evening)
REFERENCE_SAMPLING = {"ray_balance_cell": None, "class_balance_power": 0.0}
RENDER_ONLY = {"line_of_sight": 0.0, "surface": 0.0, "render_outside_points": True}
REFERENCE_2D = {
    "model": {"density_init": None},
    "data": REFERENCE_SAMPLING,
    "render": {"convention": "reference", **dict.fromkeys(METRIC_ONLY)},  # which it refuses
    "loss": RENDER_ONLY | {"free_space": 0.0, "silog_variance_focus": 0.85},
}

# results whose "ray_origins" differ were scored with an earlier RayIoU and are scored again
RAYIOU_ORIGINS = "sparseocc"

# setting -> (supervision, changes to the preset by section)
SETTINGS: dict[str, tuple[str, dict]] = {
    "2d": ("2d", {}),
    "3d": ("3d", {}),
    "2d+3d": ("2d+3d", {}),
    "key-only": ("2d", {"data": {"ray_frame_offsets": (0,)}}),  # no neighbour-frame rays
    "unweighted": (
        "2d",
        {"data": REFERENCE_SAMPLING | {"class_balance_temperature": 0.0, "neighbour_ray_weight": 1.0}},
    ),
    "reference-sampling": ("2d", {"data": REFERENCE_SAMPLING}),
    "class-power-1": ("2d", {"data": {"class_balance_power": 1.0}}),
    # neighbours up to 6 keyframes away
    "frames-13": ("2d", {"data": {"ray_frame_offsets": tuple(range(-6, 7))}}),
    # fewer rays, a cheaper step (issue 18, item 3: 9,600 rays leave the 2D losses at 6.9% of the r50 step)
    "rays-4800": ("2d", {"data": {"max_rays": 4_800}}),
    "rays-9600": ("2d", {"data": {"max_rays": 9_600}}),
    "rays-38400": ("2d", {"data": {"max_rays": 38_400}}),
    "rays-76800": ("2d", {"data": {"max_rays": 76_800}}),
    # all 38,400 rays for the line-of-sight and point-voxel terms, the first 9,600 (4,800) rendered: does the
    # 8.5 read-out's loss at fewer rays come from the free-space and surface points or from the renderer?
    "render-9600": ("2d", {"render": {"rendered_rays": 9_600}}),
    "render-4800": ("2d", {"render": {"rendered_rays": 4_800}}),
    # rays stop at transmittance 1e-3 (the reference's stop) instead of 1e-7: fewer samples behind the
    # surfaces for the renderer, the cost issue 18 item 3 asks to cut; does accuracy hold?
    "stop-1e-3": ("2d", {"render": {"stop_transmittance": 1e-3}}),
    # samples whose alpha or weight is below 1e-4 skipped and rays stopped there: a third of the kept samples
    # of a trained field at 1e-7, and no gradient for the free space they cover
    "skip-1e-4": ("2d", {"render": {"skip_threshold": 1e-4}}),
    # logits read only for kept samples of weight 1e-4 (1e-5, 1e-3) or more; depth, opacity and distortion
    # keep all. At the 6.0 start every weight is under 8.1e-5: 1e-4 renders no semantics until the density
    # grows. The paper presets' 1e-4 from 2026-12-02, 1e-3 from 2026-12-03 and 3e-3 since the twenty-seventh
    # session (semantic-3e-3 is 2d now; semantic-1e-3, semantic-1e-4 and semantic-none, 2d before). 1e-2 and
    # 3e-3 keep mIoU but lose 0.34 and 0.21 RayIoU at 1,600 steps (four and two runs); at 8,000 steps 3e-3
    # loses nothing (one run; 1e-2 not run there).
    "semantic-1e-4": ("2d", {"render": {"semantic_threshold": 1e-4}}),
    "semantic-1e-5": ("2d", {"render": {"semantic_threshold": 1e-5}}),
    "semantic-1e-3": ("2d", {"render": {"semantic_threshold": 1e-3}}),
    "semantic-3e-3": ("2d", {"render": {"semantic_threshold": 3e-3}}),
    "semantic-1e-2": ("2d", {"render": {"semantic_threshold": 1e-2}}),
    "semantic-none": ("2d", {"render": {"semantic_threshold": None}}),
    # what the 2D recipe's additions bring: all of them off (rendering losses and the all-voxel prior, every
    # voxel starting above the read-out: the recipe before 2026-11-24; also with 3D labels), and some of them
    # off or changed. These ran before the balanced sampling, so they keep the reference's.
    "render-only": ("2d", {"model": {"density_init": 10.0}, "loss": RENDER_ONLY, "data": REFERENCE_SAMPLING}),
    "render-only+3d": (
        "2d+3d",
        {"model": {"density_init": 10.0}, "loss": RENDER_ONLY, "data": REFERENCE_SAMPLING},
    ),
    "no-surface": ("2d", {"loss": {"surface": 0.0}, "data": REFERENCE_SAMPLING}),
    "no-line-of-sight": ("2d", {"loss": {"line_of_sight": 0.0}}),
    # the line-of-sight term per crossed voxel, not per point (issue 19: free space above the surfaces)
    "los-voxels": ("2d", {"loss": {"line_of_sight_per_voxel": True}}),
    # the line-of-sight term 3x: does a stronger pull empty the haze far from the surfaces that the per-layer
    # read-out leaves (docs/study/object_probe.py), or does it thin the surfaces too?
    "los-3": ("2d", {"loss": {"line_of_sight": 3.0}}),
    # the rendering losses through each voxel's minimum over its extent (issue 19: the rim voxels that Occ3D
    # calls occupied and the rays cross; render.extent, docs/study/free_grid_readout.py)
    "erode": ("2d", {"render": {"erode": True}}),
    # the all-voxel prior 10x stronger
    "free-space-1": ("2d", {"loss": {"free_space": 1.0}, "data": REFERENCE_SAMPLING}),
    "footprint-1": ("2d", {"loss": {"ground_footprint": 1}}),
    # the reference's 2D recipe, exactly: its rendering conventions (render/conventions.py: samples, units,
    # voxel centres, depth, 52 m cut, losses per sample), its ray sampling, rendering losses only, SILog focus
    # 0.85, every voxel starting transparent, read out at its 8.5 (on its density scale)
    "reference-2d": ("2d", REFERENCE_2D),
    # the same recipe on this project's metric renderer (the study's reference-2d before 2026-12-01), read
    # out at the reference's 8.5 carried over to the metric scale (9.42, render.conventions.convert_density)
    "reference-2d-metric": (
        "2d",
        REFERENCE_2D
        | {
            "render": {"convention": "metric"},
            "loss": REFERENCE_2D["loss"] | {"occupancy_threshold": OnReferenceScale(8.5)},
        },
    ),
    # reference-2d with this project's point-voxel term (loss.surface): does the published recipe lack a term
    # that names the occupied voxel?
    "reference-2d+surface": ("2d", REFERENCE_2D | {"loss": REFERENCE_2D["loss"] | {"surface": 1.0}}),
    # reference-2d without the transparent start: the density head starts at 6 (below the 8.5 read-out), so
    # rendering gradients reach the density from the first step (d sigma / d density ~ 1e-6 at the start)
    "reference-2d-warm": ("2d", REFERENCE_2D | {"model": {"density_init": 6.0}}),
    # the image branch (backbone, neck, view transformer) trained with the LiDAR depth loss alone: a stand-in
    # for the BEVDet detection checkpoint the published models start from, which uses no semantic or 3D label
    "depth-start": ("depth", {}),
    # reference-2d from depth-start's image branch (INIT_FROM)
    "reference-2d-depthstart": ("2d", REFERENCE_2D),
    "2d-depthstart": ("2d", {}),
}
# setting -> the setting whose run gives its image branch (--init)
INIT_FROM = {"reference-2d-depthstart": "depth-start", "2d-depthstart": "depth-start"}


def split_seed(name: str) -> tuple[str, int | None]:
    """'2d-seed1' -> ('2d', 1): a setting trained with another training seed; '2d' -> ('2d', None)."""
    setting, sep, seed = name.rpartition("-seed")
    return (setting, int(seed)) if sep and seed.isdigit() else (name, None)


def checked_setting(name: str) -> str:
    if split_seed(name)[0] not in SETTINGS:
        raise argparse.ArgumentTypeError(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)} (+ -seedN)")
    return name


def setting_preset(base: Preset, name: str) -> tuple[Preset, str]:
    """The preset and supervision of a named setting."""
    if name not in SETTINGS:
        raise KeyError(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}")
    supervision, changes = SETTINGS[name]
    preset = base.replace(**changes)
    threshold = preset.loss.occupancy_threshold
    if isinstance(threshold, OnReferenceScale):
        r = preset.render
        value = convert_density(
            threshold.value, "reference", r.convention, preset.grid, r.step_size, r.density_shift
        )
        preset = preset.replace(loss={"occupancy_threshold": value})
    return preset, supervision


def make_data(out: Path, args: argparse.Namespace) -> Path:
    """Generate (if absent) and prepare the synthetic set; the last --val-scenes scenes are held out."""
    from renderocc.data import prepare
    from renderocc.synth import default_workers, generate

    dataroot = out / "data"
    if not (dataroot / VERSION).is_dir():
        generate(
            dataroot, args.train_scenes + args.val_scenes, args.frames, tuple(args.image_size), args.seed,
            val_scenes=args.val_scenes, device=args.device, workers=default_workers(),
        )  # fmt: skip
    if not (dataroot / "renderocc" / VERSION / "index.json").is_file():
        prepare(dataroot, VERSION, workers=args.workers)
    return dataroot


def run_name(name: str, args: argparse.Namespace) -> str:
    """The folder of a setting's run under --out: NAME for the study's default (cosine over 1,600 steps),
    NAME-constant for the constant schedule (one run for every budget), NAME-cosineN for a cosine over N."""
    if args.schedule == "constant":
        return f"{name}-constant"
    return name if args.iters == DEFAULT_ITERS else f"{name}-cosine{args.iters}"


def milestones(args: argparse.Namespace) -> list[int]:
    """The steps at which a run is scored on the held-out scenes: --eval-at (constant schedule), --iters."""
    return sorted({*args.eval_at, args.iters})


def result_file(run: Path, steps: int, args: argparse.Namespace) -> Path:
    return run / (f"result-{steps:08d}.json" if args.schedule == "constant" else "result.json")


def cached_result(path: Path) -> dict | None:
    """A result file, if it exists and was scored with today's RayIoU."""
    result = json.loads(path.read_text()) if path.is_file() else None
    return result if result and result.get("ray_origins") == RAYIOU_ORIGINS else None


def run_setting(
    name: str, base: Preset, dataroot: Path | None, out: Path, args: argparse.Namespace, deadline: float
) -> list[dict] | None:
    """Train one setting and evaluate it on the held-out scenes at each of its milestones; results cached in
    OUT/<run>/result*.json. None when the call's time ran out first (the run is checkpointed: call again).
    """
    from renderocc.checkpoint import latest_checkpoint, load_model
    from renderocc.eval.evaluate import evaluate_model, write_json_atomic
    from renderocc.train import TrainOptions, train
    from renderocc.train_utils.data import eval_loader, open_index

    run = out / run_name(name, args)
    setting, seed = split_seed(name)
    preset, supervision = setting_preset(base, setting)
    preset = preset.replace(train={"schedule": args.schedule})
    stored = run / "run" / "preset.json"  # a setting whose definition changed must not reuse an old run
    before = preset_from_dict(json.loads(stored.read_text())) if stored.is_file() else preset
    if changed := preset_differences(before, preset, ignore=frozenset()):  # every field, pace included
        raise ValueError(
            f"{run} was trained with another preset than {name!r} has now ({'; '.join(changed)}: its "
            "definition changed); move it away to train the setting again, or use another --out"
        )
    init = None
    if setting in INIT_FROM:  # its run at this call's --iters and --schedule, else its default run
        source = INIT_FROM[setting]
        runs = [out / run_name(source, args) / "run", out / source / "run"]
        init = next((r for r in runs if latest_checkpoint(r) is not None), None)
        if init is None:
            raise FileNotFoundError(
                f"{name} starts from the image branch of {source}, which has no run under {out}; train it "
                f"first (--settings {source}, at these --iters and --schedule or at the defaults)"
            )
    results = []
    for target in milestones(args):
        cached = result_file(run, target, args)
        if (result := cached_result(cached)) is not None:
            results.append(result)
            continue
        stale = json.loads(cached.read_text()) if cached.is_file() else None
        if stale is not None:  # scored with an earlier RayIoU: score the same weights again
            checkpoint = run / "run" / "checkpoints" / f"step-{stale['steps']:08d}"
            if not checkpoint.is_dir():
                raise FileNotFoundError(
                    f"{cached} was scored with an earlier RayIoU and {checkpoint} is gone; delete the result "
                    "file to train the setting again"
                )
            print(f"{run.name}: scoring {checkpoint} again with SparseOcc's RayIoU")
        else:
            left = deadline - time.monotonic()
            if left < MIN_CALL_S:
                return None
            caps = [cap for cap in (args.budget_s, left) if cap and not math.isinf(cap)]
            opts = TrainOptions(
                dataroot, run / "run", VERSION, supervision=supervision, max_iters=target,
                resume=latest_checkpoint(run / "run") is not None, device=args.device,
                seed=args.seed if seed is None else seed, num_workers=args.workers, val_every=args.val_every,
                val_samples=args.val_samples, time_budget_s=min(caps, default=None), compile=args.compile,
                init=init,
            )  # fmt: skip
            checkpoint = train(preset, opts)
        steps = int(checkpoint.name.removeprefix("step-"))
        if steps > target:
            raise ValueError(
                f"{run / 'run'} is at step {steps}, past {target}; its checkpoint there is gone. Evaluate "
                f"it at {steps} with --iters {steps}, or use another --out"
            )
        if steps < target and time.monotonic() >= deadline - 1.0:
            print(
                f"{run.name}: step {steps} of {target} when this call's --call-s ran out; "
                "run the same command again to continue"
            )
            return None
        # else reached, or stopped at --budget-s: the study's protocol scores it where it stands
        device = torch.device(args.device)
        model, preset = load_model(checkpoint, which="ema", device=device)
        index = open_index(dataroot, VERSION)
        loader = eval_loader(index, preset.data, "val", 1, args.workers)
        metrics = evaluate_model(model, loader, preset, index, device, rayiou=True, amp=preset.train.amp)
        metrics.update(
            setting=name, run=run.name, supervision=supervision, schedule=args.schedule, steps=steps,
            convention=preset.render.convention, readout=preset.loss.occupancy_threshold,
        )  # fmt: skip
        if args.calibrate or (stale and "calibrated" in stale):
            metrics["calibrated"] = calibrated_metrics(model, preset, index, loader, device, args)
        write_json_atomic(cached, metrics)
        results.append(metrics)
        if steps < target:
            break  # --budget-s ended the run: later milestones are out of reach
    return results


def calibrated_metrics(
    model, preset: Preset, index, val_loader, device: torch.device, args: argparse.Namespace
) -> dict:
    """The held-out metrics (val_loader) again at the read-out threshold that `renderocc calibrate` picks
    from the training frames' 2D labels, with that threshold and its agreement curve; "per_layer": the
    metrics at its one-threshold-per-height-layer choice."""
    from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, calibrate
    from renderocc.eval.evaluate import evaluate_model
    from renderocc.train_utils.data import eval_loader

    frames = eval_loader(index, preset.data, "train", 1, args.workers, max_samples=64, with_gts=False)
    thresholds = torch.tensor(DEFAULT_THRESHOLDS)
    agreement = calibrate(model, frames, preset, device, thresholds, amp=preset.train.amp)
    calibrated = preset.with_readout(agreement["threshold"])
    metrics = evaluate_model(model, val_loader, calibrated, index, device, rayiou=True, amp=preset.train.amp)
    # and one threshold per height layer, from the same votes
    per_layer = preset.with_readout(agreement["layer_thresholds"])
    layered = evaluate_model(model, val_loader, per_layer, index, device, rayiou=True, amp=preset.train.amp)
    return {"agreement": agreement, **metrics, "per_layer": layered}


def metric_records(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl, one record per (step, kind): a run resumed after a kill logs the steps since
    its last checkpoint twice, and the later record is the one its weights continued from."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = {}
    for line in lines:
        if line.strip():
            record = json.loads(line)
            records[(record["step"], "val/miou" in record)] = record
    return [records[key] for key in sorted(records)]


def curves_png(out: Path, runs: list[str]) -> Path:
    """Training loss and validation mIoU of every run against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    for ax in (ax_loss, ax_miou):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # one colour per setting up to 20
    for name in runs:
        records = metric_records(out / name / "run")
        loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
        miou = [(r["step"], r["val/miou"]) for r in records if r.get("val/miou") is not None]
        if loss:
            ax_loss.plot(*zip(*loss), label=name)
        if miou:
            ax_miou.plot(*zip(*miou), "o-", label=name)
    ax_loss.set(xlabel="step", ylabel="training loss (each setting's own losses)", yscale="log")
    ax_miou.set(xlabel="step", ylabel="val mIoU (%)")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.legend(*ax_miou.get_legend_handles_labels(), loc="center right")  # one legend, beside the plots
    path = out / "curves.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def steps_png(out: Path, results: list[dict]) -> Path:
    """Held-out mIoU against training steps, every run on one axis: the full held-out evaluation at each
    evaluated step (filled markers; hollow and dashed: read out per height layer, with --calibrate) and
    the periodic validation during training (thin line, --val-samples frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colours = plt.get_cmap("tab10").colors
    runs = list(dict.fromkeys(label(r) for r in results))
    for i, run in enumerate(runs):
        colour = colours[i % len(colours)]
        mine = sorted((r for r in results if label(r) == run), key=lambda r: r["steps"])
        val = [(r["step"], r["val/miou"]) for r in metric_records(out / run / "run") if "val/miou" in r]
        if val:
            ax.plot(*zip(*val), "-", color=colour, alpha=0.35, linewidth=1)
        ax.plot([r["steps"] for r in mine], [r["miou"] for r in mine], "o-", color=colour, label=run)
        layered = [(r["steps"], r["calibrated"]["per_layer"]["miou"]) for r in mine if r.get("calibrated")]
        if layered:
            ax.plot(*zip(*layered), "o--", color=colour, markerfacecolor="none", label=f"{run}, per layer")
    ax.set(xlabel="training step", ylabel="held-out mIoU (%)", xscale="log")
    # ticks at the evaluated steps: a log axis over about a decade labels its minor ticks on top of each other
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sorted({r["steps"] for r in results})))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title("filled: held-out scenes; thin: periodic validation; hollow: read out per height layer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / "steps.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def label(r: dict) -> str:
    """A result's row name: its run (the setting, with -constant / -cosineN for other schedules)."""
    return r.get("run", r["setting"])


def readout(value: float, r: dict, base: Preset) -> str:
    """A read-out threshold; under another convention than metric also its metric equivalent, so that
    thresholds of settings with different conventions can be compared."""
    convention = r.get("convention", METRIC)
    if convention == METRIC:
        return f"{value:.1f}"
    metric = convert_density(
        value, convention, METRIC, base.grid, base.render.step_size, base.render.density_shift
    )
    return f"{value:.1f} ({convention}; {metric:.1f} metric)"


def tables(results: list[dict], reference: str | None, base: Preset) -> str:
    """Markdown: the summary per run and evaluated step, then per-class IoU."""

    def fmt(value) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.1f}"  # class absent from both

    # each result against the reference setting's at the same number of steps
    refs = {r["steps"]: r for r in results if r["setting"] == reference}
    lines = [
        "| setting | supervision | read-out | steps | mIoU | RayIoU | mIoU vs " + (reference or "-") + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref = refs.get(r["steps"])
        ratio = f"{100 * r['miou'] / ref['miou']:.0f}%" if ref else "-"
        threshold = readout(r["readout"], r, base) if "readout" in r else "-"
        lines.append(
            f"| {label(r)} | {r['supervision']} | {threshold} | {r['steps']} | {fmt(r['miou'])} | "
            f"{fmt(r.get('rayiou'))} | {ratio} |"
        )
    calibrated = [r for r in results if r.get("calibrated")]
    if calibrated:
        # each read-out against the reference setting's own under the same rule (one threshold / per layer)
        def versus(miou: float, kind: str, steps: int) -> str:
            ref_cal = refs[steps].get("calibrated") if steps in refs else None
            base = ref_cal and (
                ref_cal["miou"] if kind == "global" else ref_cal.get("per_layer", {}).get("miou")
            )
            return f"{100 * miou / base:.0f}%" if base else "-"

        lines += [
            "",
            "| setting | steps | read-out chosen from 2D labels | mIoU | RayIoU | mIoU vs "
            f"{reference or '-'}, same rule |",
            "|---|---|---|---|---|---|",
        ]
        for r in calibrated:
            c = r["calibrated"]
            lines.append(
                f"| {label(r)} | {r['steps']} | {readout(c['agreement']['threshold'], r, base)} | "
                f"{fmt(c['miou'])} | {fmt(c.get('rayiou'))} | {versus(c['miou'], 'global', r['steps'])} |"
            )
            if "per_layer" in c:
                layers = " ".join(f"{t:g}" for t in c["agreement"]["layer_thresholds"])
                per_layer = c["per_layer"]
                lines.append(
                    f"| {label(r)} | {r['steps']} | per z layer: {layers} | {fmt(per_layer['miou'])} | "
                    f"{fmt(per_layer.get('rayiou'))} | {versus(per_layer['miou'], 'per layer', r['steps'])} |"
                )
    names = OCC3D_CLASSES[:17]
    lines += ["", "| setting | steps | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for r in results:
        per_class = " | ".join(fmt(r["per_class_iou"].get(n)) for n in names)
        lines.append(f"| {label(r)} | {r['steps']} | {per_class} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="r50-256x704")
    parser.add_argument(
        "--settings", nargs="+", default=["2d", "3d", "2d+3d"], type=checked_setting, metavar="SETTING",
        help=f"any of {', '.join(SETTINGS)}; SETTING-seedN trains it with training seed N on the same data",
    )  # fmt: skip
    parser.add_argument("--train-scenes", type=int, default=40)
    parser.add_argument("--val-scenes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=25, help="keyframes per scene")
    parser.add_argument("--image-size", type=int, nargs=2, default=(450, 800), metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=DEFAULT_ITERS, help="training steps per setting")
    parser.add_argument(
        "--schedule", default="cosine", choices=("cosine", "constant"),
        help="lr after warm-up: cosine to 1%% at --iters (the preset's), or constant (the reference's; "
        "one run per setting serves every budget, see --eval-at)",
    )  # fmt: skip
    parser.add_argument(
        "--eval-at", type=int, nargs="+", default=[], metavar="STEP",
        help="with --schedule constant: also evaluate on the held-out scenes at these steps on the way",
    )  # fmt: skip
    parser.add_argument(
        "--budget-s", type=float, default=250.0,
        help="wall-time cap of training per setting, after which it is scored where it stands; 0: none",
    )  # fmt: skip
    parser.add_argument(
        "--call-s", type=float, default=0.0,
        help="wall time of this call after which training checkpoints and the command exits with status "
        f"{UNFINISHED}; the same command continues the runs (needs --budget-s 0); 0: none. The stopped run "
        "still validates and saves after it: leave a minute before any hard limit",
    )  # fmt: skip
    parser.add_argument("--val-every", type=int, default=400)
    parser.add_argument("--val-samples", type=int, default=32, help="frames of the periodic validation")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=12, help="data loader (and 2D label) processes")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the network's stages (default: the preset's; its minutes count in --budget-s)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, help="data seed, and the training seed of settings without -seedN"
    )
    parser.add_argument("--no-report", action="store_true", help="train and evaluate only; no tables")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also score each setting at the read-out threshold chosen from 2D labels (renderocc calibrate)",
    )
    parser.add_argument("--data-only", action="store_true", help="generate and prepare the data, then stop")
    args = parser.parse_args()
    started = time.monotonic()
    if args.train_scenes < 1 or args.val_scenes < 1 or args.frames < 2:
        parser.error("need at least 1 training scene, 1 held-out scene and 2 frames per scene")
    if args.eval_at and args.schedule != "constant":
        parser.error("--eval-at needs --schedule constant: a cosine run is only finished at --iters")
    if any(not 0 < step < args.iters for step in args.eval_at):
        parser.error(f"--eval-at steps must lie between 0 and --iters {args.iters}")
    if args.call_s and args.budget_s:
        parser.error(
            "--call-s continues runs across calls, which a cap per setting cannot follow: add --budget-s 0"
        )
    if args.eval_at and args.budget_s:
        parser.error("--eval-at evaluates fixed steps, which --budget-s would cut short: add --budget-s 0")

    base = get_preset(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    pending = [
        name for name in args.settings
        if any(cached_result(result_file(args.out / run_name(name, args), m, args)) is None
               for m in milestones(args))
    ]  # fmt: skip
    dataroot = make_data(args.out, args) if pending or args.data_only else None
    if args.data_only:
        print(f"data ready under {dataroot}")
        return
    deadline = started + args.call_s if args.call_s else math.inf
    results, unfinished = [], []
    for name in args.settings:
        done = run_setting(name, base, dataroot, args.out, args, deadline)
        if done is None:
            unfinished.append(run_name(name, args))
        else:
            results += done
    if unfinished:
        print(f"unfinished: {', '.join(unfinished)}; run the same command again to continue")
        sys.exit(UNFINISHED)
    if args.no_report:
        return
    reference = "3d" if "3d" in args.settings else None
    text = tables(results, reference, base)
    (args.out / "study.json").write_text(json.dumps(results, indent=2))
    (args.out / "study.md").write_text(text + "\n")
    curves = curves_png(args.out, list(dict.fromkeys(label(r) for r in results)))
    steps = steps_png(args.out, results)
    print(text)
    print(f"\nwrote {args.out / 'study.json'}, {args.out / 'study.md'}, {curves} and {steps}")


if __name__ == "__main__":
    main()
