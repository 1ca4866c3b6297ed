"""Deployment: one model in every form (eager, torch.compile, ONNX through onnxruntime, the AOTInductor
package), each exported, verified against eager PyTorch on synthetic frames and timed at batch 1.

    python benchmarks/export.py --out /tmp/export --preset r50-256x704 [--checkpoint RUN] [--forms ...]

Data: a synthetic set is generated under OUT/data on the first call (3 scenes x 16 keyframes, 450x800)
unless --dataroot names a prepared one; the rig is the first validation keyframe's calibration. Weights:
--checkpoint, else random weights made to vary like trained ones (`deploy.verify.vary_like_trained`), read
out at each z layer's median density, so that half the voxels sit near their threshold (the hardest case
for agreement).
Everything is cached under OUT (data, the checkpoint, the exports, each form's row in results.json), so the
forms can be measured over several calls; every call prints the table of all rows so far.

Per form:
- verify: against eager PyTorch in the same precision on --verify-frames validation frames: the lowest label
  agreement, the fraction of voxels occupied, the largest density and semantic logit differences relative to
  the largest magnitude;
- model alone: key + previous frame's images on the device -> labels on the host, median of --repeats;
- from JPEGs: the loader (--num-workers) reads and decodes the images of both frames, the model runs, the
  labels reach the host: frames/s over --frames frames (the loader alone is timed too: the slower one shows).
Forms: `eager` (OccupancyNet as `renderocc infer` runs it: bf16 autocast on CUDA), `fixed` (the fixed-rig
network in eager mode), `compiled` (torch.compile of the fixed-rig network, --compile-mode), `onnx`
(onnxruntime, its CUDA provider when installed, else the CPU with a note) and `torch` (the AOTInductor
package, bf16 autocast on CUDA, measured in a child process since its runtime has crashed its process). One
form that fails is reported in the table and the others still run.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import statistics
import time
import traceback
from pathlib import Path

import torch

from renderocc.checkpoint import checkpoint_preset, load_model, save_checkpoint
from renderocc.config import get_preset
from renderocc.deploy.export import export, rig_tensors, strict_float32
from renderocc.deploy.fixed_rig import FixedRigNet
from renderocc.deploy.rig import read_rig, rig_from_index, write_rig
from renderocc.deploy.runtime import ExportedModel
from renderocc.deploy.verify import call_in_child, compare, eager_outputs, vary_like_trained
from renderocc.models import build_model
from renderocc.train_utils.data import eval_loader, open_index

FORMS = ("eager", "fixed", "compiled", "onnx", "torch")
VERSION = "v1.0-synthetic"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_data(args: argparse.Namespace):
    """The prepared index (generated under OUT/data on the first call)."""
    if args.dataroot:
        return open_index(args.dataroot, args.version)
    root = Path(args.out) / "data"
    if not (root / "renderocc").is_dir():
        from renderocc.data import prepare
        from renderocc.synth import default_workers, generate

        generate(
            root, scenes=3, frames=16, image_size=(450, 800), val_scenes=2, device=str(args.device),
            workers=default_workers(),
        )  # fmt: skip
        prepare(root, VERSION, workers=8)
    return open_index(root, VERSION)


def prepare_checkpoint(args: argparse.Namespace, index, rig_file: Path) -> Path:
    """--checkpoint, or random weights made to vary like trained ones, read out at each layer's median."""
    if args.checkpoint:
        return Path(args.checkpoint)
    run = Path(args.out) / f"run-{args.preset}"
    if (run / "checkpoints").is_dir():
        return run
    preset = get_preset(args.preset)
    torch.manual_seed(0)
    model = build_model(preset).to(args.device)
    train = [to_device(b, args.device) for b in frames(index, preset, "train", 2)]
    vary_like_trained(model, train)
    batch = to_device(frames(index, preset, "val", 1)[0], args.device)
    rig = rig_tensors(read_rig(rig_file), preset, args.device)
    density = eager_outputs(model, rig, 0.0, batch["imgs"], batch["ego2keyego"])["density"][0]
    thresholds = torch.quantile(density.flatten(0, 1).float(), 0.5, dim=0, interpolation="midpoint")
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    save_checkpoint(
        run, 0, state, {k: v.clone() for k, v in state.items()}, {}, preset.with_readout(thresholds.tolist())
    )
    return run


def frames(index, preset, split: str, count: int, workers: int = 0) -> list[dict]:
    loader = eval_loader(index, preset.data, split, 1, workers, max_samples=count, with_gts=False)
    return list(loader)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def make_runner(
    form: str, args, checkpoint: Path, rig_file: Path, model, preset, rig, sample: dict, log
) -> tuple:
    """(run(batch) -> {labels (, density, semantics)} , precision, runtime, export seconds, note); `sample` is
    a batch on the device to compile with."""
    amp = args.device.type == "cuda" and preset.train.amp
    amp_dtype = torch.bfloat16 if amp else None
    if form != "eager" and args.precision != "auto":
        amp_dtype = None if args.precision == "float32" else torch.bfloat16
    threshold = preset.readout_threshold()
    if form == "eager":

        def run(batch):  # the per-frame calibration, as `renderocc infer`
            with torch.no_grad(), torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(batch)
            from renderocc.models import occupancy_readout

            return {"labels": occupancy_readout(out["density"].float(), out["semantics"].float(), threshold)}

        return run, amp_dtype, "PyTorch", None, None
    if form in ("fixed", "compiled"):
        net = FixedRigNet(model, *rig, threshold, with_logits=True, amp_dtype=amp_dtype).eval()
        start = time.perf_counter()
        if form == "compiled":
            net = torch.compile(net, mode=args.compile_mode)
            with torch.no_grad():
                net(*inputs_of(sample))  # compile now, not in a timing
        seconds = time.perf_counter() - start if form == "compiled" else None

        def run(batch):
            with torch.no_grad():
                return dict(zip(("labels", "density", "semantics"), net(*inputs_of(batch))))

        return (
            run,
            amp_dtype,
            f"PyTorch{' ' + args.compile_mode if form == 'compiled' else ''}",
            seconds,
            None,
        )
    fmt = "onnx" if form == "onnx" else "torch"
    precision = "float32" if fmt == "onnx" else args.precision
    out = Path(args.out) / f"{args.preset}-{fmt}-{precision}"
    seconds = None
    if not (out / "export.json").is_file():
        start = time.perf_counter()
        export(
            checkpoint, rig_file, out, fmt, args.device, precision, with_logits=True, log=log, overwrite=True
        )
        seconds = time.perf_counter() - start
    exported = ExportedModel(out, args.device)

    def run(batch):
        return exported(*inputs_of(batch))

    precision = torch.bfloat16 if exported.meta["precision"] == "bfloat16" else None
    return run, precision, exported.provider, seconds, exported.note


def inputs_of(batch: dict) -> tuple[torch.Tensor, ...]:
    return (batch["imgs"], batch["ego2keyego"]) if batch["imgs"].shape[1] > 1 else (batch["imgs"],)


def measure(form: str, args, index, checkpoint: Path, rig_file: Path, val: list[dict], log) -> dict:
    model, preset = load_model(checkpoint, device=args.device)
    rig = rig_tensors(read_rig(rig_file), preset, args.device)
    sample = to_device(val[0], args.device)
    run, precision, runtime, export_s, note = make_runner(
        form, args, checkpoint, rig_file, model, preset, rig, sample, log
    )
    row = {
        "form": form,
        "precision": str(precision or torch.float32).removeprefix("torch."),
        "runtime": runtime,
    }
    row |= {"export_s": export_s, "note": note}
    row["key"] = f"{form}-{row['precision']}" + (f"-{args.compile_mode}" if form == "compiled" else "")

    # onnxruntime without its CUDA provider on a GPU machine takes seconds a frame: only a few frames
    cpu_fallback = "CPU" in runtime and args.device.type == "cuda"

    # verification: against eager PyTorch in the same precision, on the rig's calibration (eager is the
    # reference itself)
    worst = None
    verify = 0 if form == "eager" else 1 if cpu_fallback else args.verify_frames
    for batch in val[:verify]:
        batch = to_device(batch, args.device)
        inputs = inputs_of(batch)
        reference = eager_outputs(model, rig, preset.readout_threshold(), *inputs, amp_dtype=precision)
        result = compare(reference, run(batch))
        if worst is None or result["label_agreement"] < worst["label_agreement"]:
            worst = result
        for name in ("density", "semantics"):
            relative = result[f"{name}_max_abs_diff"] / result[f"{name}_max_abs"]
            row[f"{name}_diff"] = max(row.get(f"{name}_diff", 0.0), relative)
    row["label_agreement"] = worst["label_agreement"] if worst else None
    row["occupied"] = worst["occupied_fraction"] if worst else None

    # model alone: inputs resident on the device, labels to the host
    batch = sample
    repeats, warmup = (2, 1) if cpu_fallback else (args.repeats, args.warmup)
    times = []
    for i in range(warmup + repeats):
        sync(args.device)
        start = time.perf_counter()
        labels = run(batch)["labels"]
        sync(args.device)  # the whole device: a runtime may launch on a stream of its own
        labels.cpu()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    row["model_ms"] = statistics.median(times)

    # from JPEGs: loader -> device -> model -> labels on the host
    count = 3 if cpu_fallback else args.frames
    loader = eval_loader(index, preset.data, "val", 1, args.num_workers, max_samples=count, with_gts=False)
    start, done = None, 0
    for batch in loader:  # the clock starts once the first frame is through (worker start-up left out)
        labels = run(to_device(batch, args.device))["labels"]
        sync(args.device)
        labels.cpu()
        if start is None:
            start = time.perf_counter()
        else:
            done += 1
    row["jpeg_fps"] = done / (time.perf_counter() - start) if done else float("nan")
    row["frames"] = done
    return row


def measure_isolated(form: str, args, index, checkpoint: Path, rig_file: Path, val: list[dict]) -> dict:
    """`measure` in this (child) process, with the main process's float32 setting: for call_in_child, so a
    runtime that crashes its process (the AOTInductor package on torch 2.11) costs only its own row."""
    faulthandler.enable()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    with strict_float32(args.precision == "float32"):
        return measure(form, args, index, checkpoint, rig_file, val, log)


def loader_fps(index, preset, args) -> float:
    loader = eval_loader(
        index, preset.data, "val", 1, args.num_workers, max_samples=args.frames, with_gts=False
    )
    batches = iter(loader)
    next(batches)  # as in the from-JPEGs pass: worker start-up left out
    start = time.perf_counter()
    count = sum(1 for _ in batches)
    return count / (time.perf_counter() - start)


def print_table(rows: list[dict], header: str) -> None:
    print(header)
    columns = ("labels agree", 13), ("occupied", 9), ("logits diff", 12), ("export s", 9), ("model ms", 10)
    print(f"{'form':<10}{'precision':<10}{'runtime':<30}" + "".join(f"{c:>{w}}" for c, w in columns)
          + f"{'model fps':>10}{'JPEG fps':>9}")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['form']:<10}failed: {r['error']}")
            continue
        agree = "reference" if r["label_agreement"] is None else f"{100 * r['label_agreement']:.3f}%"
        occupied = "" if r["occupied"] is None else f"{100 * r['occupied']:.0f}%"
        export_s = "" if r["export_s"] is None else f"{r['export_s']:.0f}"
        diff = f"{max(r['density_diff'], r['semantics_diff']):.1e}" if "density_diff" in r else ""
        ms = r["model_ms"]
        print(f"{r['form']:<10}{r['precision']:<10}{r['runtime'][:29]:<30}{agree:>13}{occupied:>9}{diff:>12}"
              f"{export_s:>9}{ms:>10.1f}{1e3 / ms:>10.1f}{r['jpeg_fps']:>9.1f}")  # fmt: skip
    for r in rows:
        if r.get("note"):
            print(f"note ({r['form']}): {r['note']}")


def main() -> None:
    faulthandler.enable()  # a crash inside a runtime (the AOTInductor package's segfaults) prints its stack
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="working folder (data, checkpoint, exports, results)")
    parser.add_argument("--preset", default="r50-256x704")
    parser.add_argument(
        "--checkpoint", default=None, help="a trained run (default: random weights, see above)"
    )
    parser.add_argument("--dataroot", default=None, help="a prepared dataset (default: generated under OUT)")
    parser.add_argument("--version", default=None)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode of the `compiled` form")  # fmt: skip
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="of fixed, compiled, torch (auto: bf16 autocast on CUDA, as infer)")  # fmt: skip
    parser.add_argument("--verify-frames", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--frames", type=int, default=32, help="frames of the from-JPEGs pass")
    parser.add_argument("--num-workers", type=int, default=8)
    args = parser.parse_args()
    args.device = torch.device(args.device)
    if args.precision == "float32":  # verify in true float32: TF32 convolutions round like bf16 (10 bits)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    index = prepare_data(args)
    rig_file = out / "rig.json"
    if not rig_file.is_file():
        write_rig(rig_from_index(index, int(index.splits["val"][0])), rig_file)
    checkpoint = prepare_checkpoint(args, index, rig_file)
    preset = checkpoint_preset(checkpoint)
    val = frames(index, preset, "val", max(args.verify_frames, 1))
    results_file = out / f"results-{args.preset}.json"
    rows = {r["key"]: r for r in json.loads(results_file.read_text())} if results_file.is_file() else {}
    for form in args.forms:
        log(f"{form}: export, verify, time")
        try:
            if form == "torch":  # in a child process: see measure_isolated
                row = call_in_child(measure_isolated, form, args, index, checkpoint, rig_file, val)
            else:
                row = measure(form, args, index, checkpoint, rig_file, val, log)
        except Exception as err:  # one form failing must not cost the others' numbers
            traceback.print_exc()
            row = {
                "form": form,
                "key": f"{form}-{args.precision}",
                "error": f"{type(err).__name__}: {str(err)[:200]}",
            }
        rows[row["key"]] = row
        rows = dict(sorted(rows.items(), key=lambda kv: FORMS.index(kv[1]["form"])))
        results_file.write_text(json.dumps(list(rows.values()), indent=1))
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "CPU"
    header = (f"{args.preset}, batch 1, {name}, torch {torch.__version__}; loader alone "
              f"{loader_fps(index, preset, args):.1f} frames/s with {args.num_workers} workers")  # fmt: skip
    print_table(list(rows.values()), header)


if __name__ == "__main__":
    main()
