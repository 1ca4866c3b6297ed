"""Study: what RenderOcc loses without LiDAR. The same model and steps trained from three 2D label sources.

    python benchmarks/label_sources.py --out /tmp/label_sources --device cuda

- lidar:  LiDAR points projected into the images (today's labels; the nuScenes-format index);
- dense:  perfect per-pixel depth and class images from the synthetic cameras, no LiDAR at all (the folder
          format, `renderocc convert --no-points --label-images dense`);
- pseudo: degraded ones imitating a 2D segmentor and a monocular depth model (synth.labels2d.
          PseudoLabelConfig: per-image depth scale error, distance-growing noise, a 40 m cut-off, eroded
          class boundaries, confused similar classes, small objects missed), no LiDAR either.

One command generates the synthetic set once (--train-scenes + --val-scenes scenes, written with its dense
and pseudo label images), prepares the three indexes, trains each source from the same initialisation for
the same steps (benchmarks/study.py's recipe and caps) and scores the EMA weights on the same held-out
frames through the nuScenes index (so RayIoU casts from the same LiDAR origins for all three): Occ3D mIoU
with the camera mask and RayIoU, read out at the preset's threshold and per height layer as `renderocc
calibrate` chooses from each source's own training labels (no 3D label is used by any source). It prints
one table and writes label_sources.json / .md. Everything is cached under --out: a second call with the
same --out reuses the data and every finished source, so the study can be split across calls.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from study import VERSION  # benchmarks/study.py: the same data layout and recipe

from renderocc.config import get_preset
from renderocc.core.classes import OCC3D_CLASSES

SOURCES = ("lidar", "dense", "pseudo")


def make_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Generate (if absent) the synthetic set with its label images and prepare the three indexes; returns
    each source's dataroot (the nuScenes set for lidar, a converted folder-format set for the others)."""
    from renderocc.data import prepare
    from renderocc.data.convert import convert
    from renderocc.synth import default_workers, generate
    from renderocc.synth.labels2d import load_pseudo_config

    nuscenes = out / "data"
    started = time.perf_counter()
    if not (nuscenes / VERSION).is_dir():
        generate(
            nuscenes, args.train_scenes + args.val_scenes, args.frames, tuple(args.image_size), args.seed,
            val_scenes=args.val_scenes, device=args.device, pseudo=load_pseudo_config(args.pseudo_config),
            workers=default_workers(),
        )  # fmt: skip
    if not (nuscenes / "renderocc" / VERSION / "index.json").is_file():
        prepare(nuscenes, VERSION, workers=args.workers)
    roots = {"lidar": nuscenes}
    for kind in ("dense", "pseudo"):
        root = out / f"folder-{kind}"
        if not (root / "dataset.json").is_file():
            convert(nuscenes, VERSION, root, points=False, label_images=kind)
        if not (root / "renderocc" / "folder" / "index.json").is_file():
            prepare(root, workers=args.workers, image_labels=args.image_labels)
        roots[kind] = root
    print(f"data ready in {time.perf_counter() - started:.0f} s")
    return roots


def run_source(name: str, roots: dict[str, Path], out: Path, args: argparse.Namespace) -> dict:
    """Train on one label source and score it on the held-out frames; cached in out/<name>/result.json."""
    from renderocc.checkpoint import load_model
    from renderocc.eval.calibrate import DEFAULT_THRESHOLDS, calibrate
    from renderocc.eval.evaluate import evaluate_model, write_json_atomic
    from renderocc.train import TrainOptions, train
    from renderocc.train_utils.data import eval_loader, open_index

    result_file = out / name / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    started = time.perf_counter()
    opts = TrainOptions(
        roots[name], out / name / "run", supervision="2d", max_iters=args.iters, device=args.device,
        seed=args.seed, num_workers=args.workers, val_every=args.val_every, val_samples=args.val_samples,
        time_budget_s=args.budget_s,
    )  # fmt: skip
    checkpoint = train(get_preset(args.preset), opts)
    trained_s = time.perf_counter() - started
    device = torch.device(args.device)
    model, preset = load_model(checkpoint, which="ema", device=device)
    held_out = open_index(roots["lidar"], VERSION)  # the same frames, labels and ray origins for every source
    loader = eval_loader(held_out, preset.data, "val", 1, args.workers)
    metrics = evaluate_model(model, loader, preset, held_out, device, rayiou=True, amp=preset.train.amp)
    # the per-layer read-out, chosen from this source's own training labels (no LiDAR for dense / pseudo)
    own = open_index(roots[name])
    frames = eval_loader(own, preset.data, "train", 1, args.workers, max_samples=64, with_gts=False)
    votes = calibrate(model, frames, preset, device, torch.tensor(DEFAULT_THRESHOLDS), amp=preset.train.amp)
    layered = evaluate_model(
        model, loader, preset.with_readout(votes["layer_thresholds"]), held_out, device, rayiou=True,
        amp=preset.train.amp,
    )  # fmt: skip
    lines = (out / name / "run" / "metrics.jsonl").read_text().splitlines()
    speeds = [json.loads(line).get("samples_per_s") for line in lines if line.strip()]
    speeds = sorted(s for s in speeds if s)
    metrics.update(
        source=name, steps=int(checkpoint.name.removeprefix("step-")), train_s=trained_s,
        samples_per_s=speeds[len(speeds) // 2] if speeds else None, per_layer=layered,
        layer_thresholds=votes["layer_thresholds"], labels_per_frame=_labels_per_frame(own),
    )  # fmt: skip
    write_json_atomic(result_file, metrics)
    return metrics


def _labels_per_frame(index) -> float:
    """Mean labelled pixels per training keyframe (all cameras) of an index."""
    from renderocc.data.labels import load_labels

    train = index.splits["train"][:: max(1, len(index.splits["train"]) // 50)]
    return float(sum(len(load_labels(index, int(s)).cls) for s in train) / max(1, len(train)))


def table(results: list[dict]) -> str:
    def fmt(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"

    ref = next((r for r in results if r["source"] == "lidar"), None)
    lines = [
        "| 2D labels | labelled pixels / frame | steps | samples/s | mIoU | RayIoU | mIoU, per-layer "
        "read-out | RayIoU, per-layer | per-layer mIoU vs lidar |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        layered = r["per_layer"]
        base = ref["per_layer"]["miou"] if ref else math.nan
        ratio = f"{100 * layered['miou'] / base:.0f}%" if base > 0 else "-"
        lines.append(
            f"| {r['source']} | {r['labels_per_frame']:,.0f} | {r['steps']} | {fmt(r['samples_per_s'])} | "
            f"{fmt(r['miou'])} | {fmt(r.get('rayiou'))} | {fmt(layered['miou'])} | "
            f"{fmt(layered.get('rayiou'))} | {ratio} |"
        )
    names = OCC3D_CLASSES[:17]
    lines += ["", "per-class IoU, per-layer read-out:", "", "| 2D labels | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for r in results:
        lines.append(
            f"| {r['source']} | "
            + " | ".join(fmt(r["per_layer"]["per_class_iou"].get(n)) for n in names)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--preset", default="r50-256x704")
    parser.add_argument("--train-scenes", type=int, default=40)
    parser.add_argument("--val-scenes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=25, help="keyframes per scene")
    parser.add_argument("--image-size", type=int, nargs=2, default=(450, 800), metavar=("H", "W"))
    parser.add_argument(
        "--image-labels", type=int, default=8_192, help="labelled pixels kept per label image"
    )
    parser.add_argument("--pseudo-config", default=None, help="JSON overriding PseudoLabelConfig fields")
    parser.add_argument("--iters", type=int, default=1600, help="training steps per source")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time cap of training per source")
    parser.add_argument("--val-every", type=int, default=400)
    parser.add_argument("--val-samples", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=12, help="data loader (and 2D label) processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-only", action="store_true", help="generate and prepare the data, then stop")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    roots = make_data(args.out, args)
    if args.data_only:
        return
    results = [run_source(name, roots, args.out, args) for name in args.sources]
    text = table(results)
    (args.out / "label_sources.json").write_text(json.dumps(results, indent=2))
    (args.out / "label_sources.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.out / 'label_sources.json'} and {args.out / 'label_sources.md'}")


if __name__ == "__main__":
    main()
