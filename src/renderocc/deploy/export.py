"""`renderocc export`: a checkpoint for one camera rig as an ONNX graph or an AOTInductor package.

    renderocc export --checkpoint RUN --calib rig.json --out DIR [--format onnx|torch] [--device cuda]

The rig file is `renderocc infer --calib`'s JSON with the original size of each camera's images:

    {"cameras": {"CAM_FRONT": {"intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                               "sensor2ego": [[...4x4 camera -> ego...]],
                               "width": 1600, "height": 900},
                 ... every camera of the rig (the six nuScenes cameras, or your own) ...}}

DIR gets the model (`model.onnx` or `model.pt2`), `export.json` (inputs,
outputs, preset, read-out, verification) and `rig.json`. The network's inputs and outputs are described in
`renderocc.deploy.fixed_rig`: images of the key and previous frames and the ego motion between them in,
Occ3D uint8 labels out, the voxel-pooling plan and the read-out thresholds baked in.

`onnx` (opset 18 by default, which TensorRT 10 reads): float32; TensorRT users build an FP16 engine from it.
`torch`: torch.export + AOTInductor (torch >= 2.6), compiled for --device, in float32 by default (on an
H200 it ran r50-256x704 as fast as torch.compile under bf16) or under bf16 autocast with --precision
bfloat16 (on torch 2.11 / H200 that package crashed with a segmentation fault right after compiling, in
our one run); load it with torch._inductor.aoti_load_package, without this package. Before the folder
appears, the exported model runs once beside the eager PyTorch model (TF32 off in float32) on random images
and a small ego motion: its labels must agree on --min-agreement of the voxels (0.999 in float32; 0.99 in
bf16, where any two implementations round differently near the read-out thresholds).
docs/deployment.md has the details.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from renderocc import __version__
from renderocc.deploy.fixed_rig import FixedRigNet
from renderocc.deploy.rig import Rig, read_rig, write_rig
from renderocc.deploy.runtime import EXPORT_FILE, RIG_FILE, ExportedModel
from renderocc.deploy.verify import call_in_child, compare, eager_outputs, example_inputs, run_exported

MODEL_FILES = {"onnx": "model.onnx", "torch": "model.pt2"}
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def rig_tensors(rig: Rig, preset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """intrinsics, img_aug, cam2ego [N, ...] float32 of a rig for the preset's image size."""
    return tuple(
        torch.as_tensor(m, dtype=torch.float32, device=device)
        for m in (rig.intrinsics, rig.img_aug(preset.data), rig.cam2ego)
    )


def export_onnx(net: FixedRigNet, inputs: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    """The net as one ONNX file (weights inside) through the torch.export-based exporter."""
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None:
        raise ValueError("--format onnx needs onnxscript and onnx: pip install 'renderocc[export]'")
    names = ["imgs", "ego2keyego"][: len(inputs)]
    # the ONNX optimiser's notes (constant folding it skips) are not the user's concern
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            net, inputs, str(path), input_names=names, output_names=output_names(net), opset_version=opset,
            dynamo=True, external_data=False, verbose=False,
        )  # fmt: skip
    except TypeError as err:
        if "dynamo" not in str(err):
            raise
        raise ValueError(f"--format onnx needs torch >= 2.5 (the torch.export-based exporter); this is "
                         f"torch {torch.__version__}") from None  # fmt: skip


def export_torch(net: FixedRigNet, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    """The net as an AOTInductor package (torch.export, then compiled for the inputs' device)."""
    import torch._inductor as inductor

    if not hasattr(inductor, "aoti_compile_and_package") or torch_version() < (2, 6):
        raise ValueError(
            f"--format torch needs torch >= 2.6 (AOTInductor packages); this is torch {torch.__version__}; "
            "use --format onnx"
        )
    program = torch.export.export(net, inputs)
    inductor.aoti_compile_and_package(program, package_path=str(path))


@contextlib.contextmanager
def strict_float32(enabled: bool = True):
    """TF32 off on CUDA while a float32 model is traced, compiled and verified: TF32 keeps 10 bits of
    mantissa, and the 0.999 label agreement is a float32 promise."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def exported_outputs(
    path: Path, fmt: str, device: torch.device, inputs: tuple[torch.Tensor, ...]
) -> dict[str, torch.Tensor]:
    """The freshly written export's outputs on `inputs`. An AOTInductor package runs in a child process: its
    runtime can segfault (pytorch/pytorch#166415 is one such bug), and the export must then fail cleanly,
    with a message, rather than end the user's process with its temporary folder left behind."""
    if fmt != "torch":
        return ExportedModel(path, device)(*inputs)
    cpu_inputs = tuple(x.cpu() for x in inputs)
    try:
        return call_in_child(run_exported, str(path), str(device), cpu_inputs)
    except RuntimeError as err:
        raise RuntimeError(
            f"the AOTInductor package crashed the process that ran it ({err}); this is a PyTorch runtime bug "
            f"(torch {torch.__version__}): export with --format onnx, or with another torch version"
        ) from err


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def output_names(net: FixedRigNet) -> list[str]:
    return ["labels", "density", "semantics"] if net.with_logits else ["labels"]


def tensor_specs(names: list[str], tensors) -> list[dict]:
    return [
        {"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        for n, t in zip(names, tensors)
    ]


def export(
    checkpoint: str | Path,
    calib: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    device: str | torch.device = "cpu",
    precision: str = "auto",
    opset: int = 18,
    with_logits: bool = False,
    readout: float | list[float] | None = None,
    weights: str = "ema",
    verify: bool = True,
    min_agreement: float | None = None,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Export a checkpoint for the rig in `calib` into the folder `out` (built under a temporary name and
    renamed into place: an interrupted or failed export leaves nothing behind). Returns `out`."""
    from renderocc.checkpoint import load_model, read_metadata, resolve_checkpoint

    if fmt not in MODEL_FILES:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(MODEL_FILES)}")
    out, device = Path(out), torch.device(device)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it, or another folder")
    rig = read_rig(calib)
    model, preset = load_model(checkpoint, which=weights, device=device)
    if readout is not None:
        preset = preset.with_readout(readout)
    if precision == "auto":  # the precision verified on a GPU for both formats (see the module's notes)
        precision = "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose from auto, {', '.join(PRECISIONS)}")
    if fmt == "onnx" and precision != "float32":
        raise ValueError("--format onnx is float32 (TensorRT builds an FP16 engine from it with --fp16); "
                         "drop --precision")  # fmt: skip
    amp_dtype = PRECISIONS[precision]
    if min_agreement is None:  # two bf16 implementations round differently near the read-out thresholds
        min_agreement = 0.999 if amp_dtype is None else 0.99
    tensors = rig_tensors(rig, preset, device)
    threshold = preset.readout_threshold()
    net = FixedRigNet(model, *tensors, threshold, with_logits=with_logits, amp_dtype=amp_dtype).eval()
    inputs = example_inputs(net)

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        start = time.perf_counter()
        model_file = tmp / MODEL_FILES[fmt]
        with torch.no_grad(), strict_float32(amp_dtype is None):
            outputs = net(*inputs)
            if fmt == "onnx":
                log(f"exporting to ONNX (opset {opset})")
                export_onnx(net, inputs, model_file, opset)
            else:
                log(f"exporting with torch.export and compiling with AOTInductor for {device.type} "
                    f"({precision}; this takes minutes)")  # fmt: skip
                export_torch(net, inputs, model_file)
        log(f"exported in {time.perf_counter() - start:.0f} s")
        source = resolve_checkpoint(checkpoint)
        meta = {
            "format": fmt,
            "model": model_file.name,
            "renderocc_version": __version__,
            "torch_version": torch.__version__,
            "opset": opset if fmt == "onnx" else None,
            "device": device.type,
            "precision": precision,
            "checkpoint": str(source.resolve()),
            "step": int(read_metadata(source).get("step", -1)),
            "weights": weights,
            "preset": preset.to_dict(),
            "readout_threshold": threshold,
            "image_size": list(net.image_size),
            "cameras": list(rig.names),
            "intrinsics": tensors[0].tolist(),
            "img_aug": tensors[1].tolist(),
            "cam2ego": tensors[2].tolist(),
            "rig": rig.to_dict(),
            "inputs": tensor_specs(["imgs", "ego2keyego"], inputs),
            "outputs": tensor_specs(output_names(net), outputs),
        }
        write_rig(rig, tmp / RIG_FILE)
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=1))
        if verify:
            with strict_float32(amp_dtype is None):
                reference = eager_outputs(model, tensors, threshold, *inputs, amp_dtype=amp_dtype)
                result = compare(reference, exported_outputs(tmp, fmt, device, inputs))
            meta["verification"] = {
                "inputs": "random images; previous frame 1 m behind, 2 degrees of yaw",
                "reference": f"eager PyTorch on {device.type}, {precision}",
                **result,
            }
            (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=1))
            logits = (
                f", density within {result['density_max_abs_diff']:.2g} of values up to "
                f"{result['density_max_abs']:.3g}"
                if with_logits
                else ""
            )
            log(f"verified against eager PyTorch: labels agree on {100 * result['label_agreement']:.3f}% of "
                f"voxels{logits}")  # fmt: skip
            if result["label_agreement"] < min_agreement:
                raise ValueError(
                    f"the exported model's labels agree with eager PyTorch on only "
                    f"{100 * result['label_agreement']:.2f}% of voxels (needs {100 * min_agreement:g}%); "
                    "this is an exporter problem: report it with the torch version"
                )
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from renderocc.eval.calibrate import add_readout_arguments

    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True, help="run directory or RUN/checkpoints/step-N")
    parser.add_argument(
        "--calib", required=True, help="the rig: JSON as for `infer --calib`, with width and height"
    )
    parser.add_argument("--out", required=True, help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--format", default="onnx", choices=tuple(MODEL_FILES))
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda (default: cuda when available); a torch package runs only on its kind of device",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", *PRECISIONS),
        help="torch format: autocast dtype (auto: bfloat16 on CUDA, as infer, else float32)",
    )
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--with-logits", action="store_true", help="also output density and semantic logits")
    add_readout_arguments(parser)
    parser.add_argument("--weights", default="ema", choices=("ema", "model"))
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="fraction of voxels whose labels must match eager PyTorch (default 0.999; 0.99 in bf16 / fp16)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with eager PyTorch")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from renderocc.eval.calibrate import load_readout

    readout = load_readout(args.readout) if args.readout else args.threshold
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = export(
        args.checkpoint, args.calib, args.out, args.format, device, args.precision, args.opset,
        args.with_logits, readout, args.weights, not args.no_verify, args.min_agreement, args.overwrite,
    )  # fmt: skip
    print(f"exported to {out}")
    return 0
