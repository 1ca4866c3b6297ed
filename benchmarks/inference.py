"""End-to-end inference speed: frames/s from the dataset's files to Occ3D labels on the host.

    python benchmarks/inference.py --dataroot D --preset r50-256x704 swinb-512x1408 [--compile]

Each frame goes the way `renderocc infer` takes it: the loader reads and decodes the key frame's six images
(and, stateless, its history frame's six), the model runs (bf16 on CUDA), the read-out labels the voxels,
they are resampled to the 0.4 m Occ3D grid and copied to the host (writing the .npz is left out: that is
disk speed). Also printed: the model + read-out alone on resident batches, and the loader alone, so the
slower of the two shows. Weights are random; speed does not depend on them.

Three modes, measured in one call. `stateless` is inference before streaming: every frame loads its
history frame's images and runs the backbone on both, and the loader also samples the training rays and
ships float32 images, as eval_loader did for every caller. `streaming` is `renderocc infer` now: frames in
split order, each reusing the previous frame's features as its history frame's, from a loader without
history images and rays that ships uint8 images (the Predictor normalises them on the device). Its model
time is the median over frames that reused their history (a scene's first frame runs stateless).
`stateless, lean` is that loader with every history frame's images: the loader's share of the gain.

End-to-end fps is over the whole pass, the loader workers' start included (as before); steady fps leaves
out the first --num-workers frames, which a short split (a val split of 12 frames) is mostly made of.
Loader fps is the loader alone, its start included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from renderocc.config import get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.infer import Predictor
from renderocc.models import build_model
from renderocc.models.info import counted_flops, peak_bf16_tflops
from renderocc.train import compile_stages
from renderocc.train_utils.data import eval_loader, open_index

# mode -> (eval_loader options, Predictor streams); "stateless" is inference before streaming
MODES = {
    "stateless": ({}, False),
    "stateless, lean": ({"with_rays": False, "uint8_images": True}, False),
    "streaming": ({"with_rays": False, "uint8_images": True, "stream": True}, True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn) -> float:
    """Milliseconds of fn(), the device's queue included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def model_ms(
    predict: Predictor, batches: list[dict], args: argparse.Namespace, device: torch.device
) -> float:
    """Median ms of model + read-out + copy to the host per frame, on resident batches: one batch repeated
    (stateless), or the frames in order (streaming: the frames that reused their history frame's)."""
    if not predict.stream:
        times = [timed(device, lambda: predict(batches[0]).cpu()) for _ in range(args.warmup + args.repeats)]
        return statistics.median(times[args.warmup :])
    times = []
    for lap in range(1 + max(1, args.repeats // len(batches))):  # the first lap warms up (graph captures)
        for batch in batches:
            reused = predict.reused
            ms = timed(device, lambda b=batch: predict(b).cpu())
            if lap > 0 and predict.reused > reused:
                times.append(ms)
    if not times:
        raise ValueError("no frame reused its history frame: the split's frames need scenes of 2+ keyframes")
    return statistics.median(times)


def bench(preset_name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One row per mode of MODES."""
    preset = get_preset(preset_name)
    index = open_index(args.dataroot, args.version)
    model = build_model(preset).to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.compile:
        compile_stages(model)
    split = "val" if "val" in index.splits else next(iter(index.splits))
    return [bench_mode(model, preset, index, split, mode, args, device) for mode in MODES]


def bench_mode(model, preset, index, split: str, mode: str, args: argparse.Namespace, device) -> dict:
    """Loader alone, model + read-out alone, and end to end, in one mode."""
    options, stream = MODES[mode]
    out_grid = VoxelGrid(preset.grid.lower, preset.grid.upper, 0.4)

    def loader():
        return eval_loader(
            index, preset.data, split, 1, args.num_workers, max_samples=args.frames, with_gts=False, **options
        )

    def predictor(graphs: bool) -> Predictor:
        return Predictor(
            model, preset, out_grid, device, cuda_graphs=graphs and not args.no_cuda_graphs, stream=stream
        )

    t0 = time.perf_counter()
    count = sum(1 for _ in loader())
    loader_fps = count / (time.perf_counter() - t0)

    batches = list(loader()) if stream else [next(iter(loader()))]
    eager = predictor(graphs=False)
    if len(batches) > 1:
        eager(batches[0])  # the next frame's history
    flops = counted_flops(lambda: eager(batches[min(1, len(batches) - 1)]))
    predict = predictor(graphs=True)
    ms = model_ms(predict, batches, args, device)  # also captures the graphs the end-to-end pass replays
    batches.clear()  # their host memory

    predict.reused = 0
    sync(device)
    frames, t0, done = 0, time.perf_counter(), []
    for batch in loader():
        predict(batch).cpu()
        frames += 1
        done.append(time.perf_counter())
    end_to_end_fps = frames / (done[-1] - t0)
    # after every worker delivered its first frame: without the workers' start, which a short pass is mostly
    skip = args.num_workers
    steady_fps = (frames - 1 - skip) / (done[-1] - done[skip]) if frames > skip + 1 else float("nan")
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    tflops = flops / ms / 1e9
    return {
        "preset": preset.name,
        "mode": mode,
        "frames": frames,
        "reused": predict.reused,
        "workers": args.num_workers,
        "fps": end_to_end_fps,
        "steady_fps": steady_fps,
        "model_ms": ms,
        "loader_fps": loader_fps,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--preset", nargs="+", default=["demo"])
    parser.add_argument(
        "--frames", type=int, default=64, help="frames of the end-to-end pass (from the split's start)"
    )
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network's stages")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="launch the network eagerly")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [row for p in args.preset for row in bench(p, args, device)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, batch 1, {args.num_workers} loader workers, compile={args.compile}, "
          f"CUDA graphs={not args.no_cuda_graphs}")  # fmt: skip
    print(f"{'preset':<16}{'mode':<18}{'frames':>7}{'reused':>7}{'end-to-end fps':>16}{'steady fps':>11}"
          f"{'model+readout ms':>18}{'loader fps':>12}{'peak GB':>9}{'TFLOP/s':>9}{'MFU':>7}")  # fmt: skip
    for r in rows:
        mfu = f"{100 * r['mfu']:>6.1f}%" if r["mfu"] is not None else f"{'':>7}"
        print(f"{r['preset']:<16}{r['mode']:<18}{r['frames']:>7}{r['reused']:>7}{r['fps']:>16.1f}"
              f"{r['steady_fps']:>11.1f}{r['model_ms']:>18.1f}{r['loader_fps']:>12.1f}{r['peak_gb']:>9.2f}"
              f"{r['tflops']:>9.1f}{mfu}")  # fmt: skip
    for preset in args.preset:
        by_mode = {r["mode"]: r for r in rows if r["preset"] == preset}
        old, new = by_mode["stateless"], by_mode["streaming"]
        print(f"{preset}, streaming against stateless: model + read-out "
              f"{old['model_ms'] / new['model_ms']:.2f}x faster, end to end {new['fps'] / old['fps']:.2f}x, "
              f"loader {new['loader_fps'] / old['loader_fps']:.2f}x")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
