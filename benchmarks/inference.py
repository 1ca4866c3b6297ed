"""End-to-end inference speed: frames/s from the dataset's files to Occ3D labels on the host.

    python benchmarks/inference.py --dataroot D --preset r50-256x704 swinb-512x1408 [--compile]

Each frame goes the way `renderocc infer` takes it: the loader reads and decodes the six key-frame images
and their history frame, the model runs (bf16 on CUDA), the read-out labels the voxels, they are resampled
to the 0.4 m Occ3D grid and copied to the host (writing the .npz is left out: that is disk speed). Also
printed: the model + read-out alone on one resident batch, and the loader alone, so the slower of the two
shows. Weights are random; speed does not depend on them.
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(preset_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    preset = get_preset(preset_name)
    index = open_index(args.dataroot, args.version)
    model = build_model(preset).to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.compile:
        compile_stages(model)
    out_grid = VoxelGrid(preset.grid.lower, preset.grid.upper, 0.4)
    split = "val" if "val" in index.splits else next(iter(index.splits))

    def loader():
        return eval_loader(
            index, preset.data, split, 1, args.num_workers, max_samples=args.frames, with_gts=False
        )

    t0 = time.perf_counter()
    count = sum(1 for _ in loader())
    loader_fps = count / (time.perf_counter() - t0)

    batch = next(iter(loader()))
    predict = Predictor(model, preset, out_grid, device, cuda_graphs=not args.no_cuda_graphs)
    eager = Predictor(model, preset, out_grid, device, cuda_graphs=False)
    flops = counted_flops(lambda: eager(batch))
    model_ms = []
    for i in range(args.warmup + args.repeats):
        sync(device)
        t0 = time.perf_counter()
        predict(batch).cpu()
        if i >= args.warmup:
            model_ms.append((time.perf_counter() - t0) * 1e3)

    sync(device)
    frames, t0 = 0, time.perf_counter()
    for batch in loader():
        predict(batch).cpu()
        frames += 1
    end_to_end_fps = frames / (time.perf_counter() - t0)
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    tflops = flops / statistics.median(model_ms) / 1e9
    return {
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "preset": preset_name,
        "frames": frames,
        "workers": args.num_workers,
        "fps": end_to_end_fps,
        "model_ms": statistics.median(model_ms),
        "loader_fps": loader_fps,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--preset", nargs="+", default=["demo"])
    parser.add_argument("--frames", type=int, default=64, help="frames of the end-to-end pass")
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network's stages")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="launch the network eagerly")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [bench(p, args, device) for p in args.preset]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, batch 1, {args.num_workers} loader workers, compile={args.compile}, "
          f"CUDA graphs={not args.no_cuda_graphs}")  # fmt: skip
    print(f"{'preset':<16}{'frames':>7}{'end-to-end fps':>16}{'model+readout ms':>18}{'loader fps':>12}"
          f"{'peak GB':>9}{'TFLOP/s':>9}{'MFU':>7}")  # fmt: skip
    for r in rows:
        mfu = f"{100 * r['mfu']:>6.1f}%" if r["mfu"] is not None else f"{'':>7}"
        print(f"{r['preset']:<16}{r['frames']:>7}{r['fps']:>16.1f}{r['model_ms']:>18.1f}{r['loader_fps']:>12.1f}"
              f"{r['peak_gb']:>9.2f}{r['tflops']:>9.1f}{mfu}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
