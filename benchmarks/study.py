"""Study: 2D-only against 3D supervision, and the paper's ablations, on held-out synthetic scenes.

    python benchmarks/study.py --out /tmp/study --device cuda                        # 2d, 3d, 2d+3d
    python benchmarks/study.py --out /tmp/study --settings key-only unweighted rays-9600 rays-76800

One command generates a synthetic training set (40 scenes x 25 keyframes) and held-out scenes (6 others,
same generator), prepares 2D labels, then trains each setting from the same initialisation for the same
budget (--iters steps, capped by --budget-s of wall time per setting) and evaluates the EMA weights on the
held-out scenes: Occ3D mIoU with the camera mask, per-class IoU and RayIoU (SparseOcc's definition, as
`renderocc eval` computes it). It writes study.json, study.md (the tables) and curves.png (training loss and
validation mIoU of every setting). An existing --out is reused: data that is already there is not generated
again, and a setting whose results exist is not trained again (once every setting has its
OUT/<setting>/result.json, the command only writes the tables and the plot), so the settings can be run in
separate calls and reported together. A result scored with an earlier RayIoU (before SparseOcc's origins and
exact traversal) is scored again from the setting's last checkpoint, without training.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from renderocc.config import Preset, get_preset
from renderocc.core.classes import OCC3D_CLASSES

VERSION = "v1.0-synthetic"

# the reference's ray sampling: class balance exp(0.005 (n_max / n_c - 1)) alone (before 2026-11-24, evening)
REFERENCE_SAMPLING = {"ray_balance_cell": None, "class_balance_power": 0.0}
RENDER_ONLY = {"line_of_sight": 0.0, "surface": 0.0, "render_outside_points": True}

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
    "rays-9600": ("2d", {"data": {"max_rays": 9_600}}),
    "rays-38400": ("2d", {"data": {"max_rays": 38_400}}),
    "rays-76800": ("2d", {"data": {"max_rays": 76_800}}),
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
    # the all-voxel prior 10x stronger
    "free-space-1": ("2d", {"loss": {"free_space": 1.0}, "data": REFERENCE_SAMPLING}),
    "footprint-1": ("2d", {"loss": {"ground_footprint": 1}}),
    # the reference's 2D recipe: every voxel starts transparent, no free-space prior, SILog focus 0.85
    "reference-2d": (
        "2d",
        {
            "model": {"density_init": None},
            "data": REFERENCE_SAMPLING,
            "loss": RENDER_ONLY | {"free_space": 0.0, "silog_variance_focus": 0.85},
        },
    ),
}


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
    return base.replace(**changes), supervision


def make_data(out: Path, args: argparse.Namespace) -> Path:
    """Generate (if absent) and prepare the synthetic set; the last --val-scenes scenes are held out."""
    from renderocc.data import prepare
    from renderocc.synth import generate

    dataroot = out / "data"
    if not (dataroot / VERSION).is_dir():
        generate(
            dataroot, args.train_scenes + args.val_scenes, args.frames, tuple(args.image_size), args.seed,
            val_scenes=args.val_scenes, device=args.device,
        )  # fmt: skip
    if not (dataroot / "renderocc" / VERSION / "index.json").is_file():
        prepare(dataroot, VERSION, workers=args.workers)
    return dataroot


def cached_result(out: Path, name: str) -> dict | None:
    """A setting's result.json, if it exists and was scored with today's RayIoU."""
    path = out / name / "result.json"
    result = json.loads(path.read_text()) if path.is_file() else None
    return result if result and result.get("ray_origins") == RAYIOU_ORIGINS else None


def run_setting(name: str, base: Preset, dataroot: Path | None, out: Path, args: argparse.Namespace) -> dict:
    """Train one setting and evaluate it on the held-out scenes; cached in out/<name>/result.json.

    A result.json scored with an earlier RayIoU is scored again from the run's last checkpoint.
    """
    from renderocc.checkpoint import load_model, resolve_checkpoint
    from renderocc.eval.evaluate import evaluate_model, write_json_atomic
    from renderocc.train import TrainOptions, train
    from renderocc.train_utils.data import eval_loader, open_index

    result_file = out / name / "result.json"
    if (cached := cached_result(out, name)) is not None:
        return cached
    setting, seed = split_seed(name)
    preset, supervision = setting_preset(base, setting)
    stale = json.loads(result_file.read_text()) if result_file.is_file() else None
    if stale is not None:  # scored with an earlier RayIoU: score the trained weights again
        try:
            checkpoint = resolve_checkpoint(out / name / "run")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{result_file} was scored with an earlier RayIoU and {out / name / 'run'} has no checkpoint "
                "to score again; delete the result.json to train the setting again"
            ) from None
        print(f"{name}: scoring {checkpoint} again with SparseOcc's RayIoU")
    else:
        opts = TrainOptions(
            dataroot, out / name / "run", VERSION, supervision=supervision, max_iters=args.iters,
            device=args.device, seed=args.seed if seed is None else seed, num_workers=args.workers,
            val_every=args.val_every, val_samples=args.val_samples, time_budget_s=args.budget_s,
        )  # fmt: skip
        checkpoint = train(preset, opts)
    device = torch.device(args.device)
    model, preset = load_model(checkpoint, which="ema", device=device)
    index = open_index(dataroot, VERSION)
    loader = eval_loader(index, preset.data, "val", 1, args.workers)
    metrics = evaluate_model(model, loader, preset, index, device, rayiou=True, amp=preset.train.amp)
    metrics.update(setting=name, supervision=supervision, steps=int(checkpoint.name.removeprefix("step-")))
    if args.calibrate or (stale and "calibrated" in stale):
        metrics["calibrated"] = calibrated_metrics(model, preset, index, loader, device, args)
    write_json_atomic(result_file, metrics)
    return metrics


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


def curves_png(out: Path, names: list[str]) -> Path:
    """Training loss and validation mIoU of every setting against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    for ax in (ax_loss, ax_miou):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # one colour per setting up to 20
    for name in names:
        lines = (out / name / "run" / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
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


def tables(results: list[dict], reference: str | None) -> str:
    """Markdown: the summary per setting, then per-class IoU."""

    def fmt(value) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.1f}"  # class absent from both

    ref = next((r["miou"] for r in results if r["setting"] == reference), None)
    lines = [
        "| setting | supervision | steps | mIoU | RayIoU | mIoU vs " + (reference or "-") + " |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{100 * r['miou'] / ref:.0f}%" if ref else "-"
        lines.append(
            f"| {r['setting']} | {r['supervision']} | {r['steps']} | {fmt(r['miou'])} | "
            f"{fmt(r.get('rayiou'))} | {ratio} |"
        )
    calibrated = [r for r in results if r.get("calibrated")]
    if calibrated:
        # each read-out against the reference setting's own under the same rule (one threshold / per layer)
        ref_cal = next((r["calibrated"] for r in calibrated if r["setting"] == reference), None)

        def versus(miou: float, kind: str) -> str:
            base = ref_cal and (
                ref_cal["miou"] if kind == "global" else ref_cal.get("per_layer", {}).get("miou")
            )
            return f"{100 * miou / base:.0f}%" if base else "-"

        lines += [
            "",
            "| setting | read-out chosen from 2D labels | mIoU | RayIoU | mIoU vs "
            f"{reference or '-'}, same rule |",
            "|---|---|---|---|---|",
        ]
        for r in calibrated:
            c = r["calibrated"]
            lines.append(
                f"| {r['setting']} | {c['agreement']['threshold']:.1f} | {fmt(c['miou'])} | "
                f"{fmt(c.get('rayiou'))} | {versus(c['miou'], 'global')} |"
            )
            if "per_layer" in c:
                layers = " ".join(f"{t:g}" for t in c["agreement"]["layer_thresholds"])
                lines.append(
                    f"| {r['setting']} | per z layer: {layers} | {fmt(c['per_layer']['miou'])} | "
                    f"{fmt(c['per_layer'].get('rayiou'))} | {versus(c['per_layer']['miou'], 'per layer')} |"
                )
    names = OCC3D_CLASSES[:17]
    lines += ["", "| setting | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in results:
        per_class = " | ".join(fmt(r["per_class_iou"].get(n)) for n in names)
        lines.append(f"| {r['setting']} | {per_class} |")
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
    parser.add_argument("--iters", type=int, default=1600, help="training steps per setting")
    parser.add_argument("--budget-s", type=float, default=250.0, help="wall-time cap of training per setting")
    parser.add_argument("--val-every", type=int, default=400)
    parser.add_argument("--val-samples", type=int, default=32, help="frames of the periodic validation")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=12, help="data loader (and 2D label) processes")
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
    if args.train_scenes < 1 or args.val_scenes < 1 or args.frames < 2:
        parser.error("need at least 1 training scene, 1 held-out scene and 2 frames per scene")

    base = get_preset(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    pending = [name for name in args.settings if cached_result(args.out, name) is None]
    dataroot = make_data(args.out, args) if pending or args.data_only else None
    if args.data_only:
        print(f"data ready under {dataroot}")
        return
    results = [run_setting(name, base, dataroot, args.out, args) for name in args.settings]
    if args.no_report:
        return
    reference = "3d" if "3d" in args.settings else None
    text = tables(results, reference)
    (args.out / "study.json").write_text(json.dumps(results, indent=2))
    (args.out / "study.md").write_text(text + "\n")
    curves = curves_png(args.out, args.settings)
    print(text)
    print(f"\nwrote {args.out / 'study.json'}, {args.out / 'study.md'} and {curves}")


if __name__ == "__main__":
    main()
