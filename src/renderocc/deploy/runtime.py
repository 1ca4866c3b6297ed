"""Running an exported model: an ONNX graph through onnxruntime or an AOTInductor package, and
`renderocc infer --exported DIR`.

An export directory holds the model file, `export.json` (what it takes and gives, the preset, the read-out,
how it was verified) and `rig.json` (the calibration it was exported for, `renderocc infer --calib` format).
Neither runtime needs this package's model code; this module only feeds them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

EXPORT_FILE = "export.json"
RIG_FILE = "rig.json"
NUMPY_DTYPES = {"float32": np.float32, "uint8": np.uint8}


def onnx_providers(device: torch.device) -> tuple[list[str], str | None]:
    """onnxruntime providers for `device`, and a note when CUDA was asked for but this build lacks it."""
    import onnxruntime as ort

    if device.type != "cuda":
        return ["CPUExecutionProvider"], None
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
    return ["CPUExecutionProvider"], (
        f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu); running on the CPU"
    )


class ExportedModel:
    """An export directory loaded for inference on `device` (default: the package's for `torch`, else CUDA
    when onnxruntime has it). Call with imgs [1, T, N, 3, H, W] (and ego2keyego [1, T, 4, 4] when T > 1) ->
    {output name: tensor}, on the device of `imgs` when the runtime runs there, else on the CPU."""

    def __init__(self, path: str | Path, device: str | torch.device | None = None) -> None:
        from renderocc.config import preset_from_dict

        self.path = Path(path)
        meta_path = self.path / EXPORT_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"--exported {self.path}: no {EXPORT_FILE} there; write the folder with `renderocc export`"
            )
        self.meta = json.loads(meta_path.read_text())
        self.preset = preset_from_dict(self.meta["preset"])
        self.format = self.meta["format"]
        model_file = self.path / self.meta["model"]
        if not model_file.is_file():
            raise FileNotFoundError(
                f"{model_file} is missing: the export in {self.path} is incomplete; export again"
            )
        self.inputs = [spec["name"] for spec in self.meta["inputs"]]
        self.outputs = {spec["name"]: spec for spec in self.meta["outputs"]}
        self.note = None
        if self.format == "onnx":
            import onnxruntime as ort

            want = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            providers, self.note = onnx_providers(want)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # keep the per-node placement notes out of the user's output
            self.session = ort.InferenceSession(str(model_file), options, providers=providers)
            self.provider = self.session.get_providers()[0]
            self.device = torch.device("cuda" if self.provider == "CUDAExecutionProvider" else "cpu")
        elif self.format == "torch":
            compiled_for = torch.device(self.meta["device"])
            if device is not None and torch.device(device).type != compiled_for.type:
                raise ValueError(
                    f"--exported {self.path} was compiled for {compiled_for.type}; run it there, or export "
                    f"again with --device {torch.device(device).type}"
                )
            if compiled_for.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"--exported {self.path} was compiled for CUDA and this machine has no GPU")
            from torch._inductor import aoti_load_package

            self.runner = aoti_load_package(str(model_file))
            self.provider = f"AOTInductor ({compiled_for.type})"
            self.device = compiled_for
        else:
            raise ValueError(f"{meta_path}: unknown format {self.format!r}; export again with this version")

    def __call__(self, imgs: torch.Tensor, ego2keyego: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feeds = dict(zip(self.inputs, (imgs, ego2keyego)))
        if self.format == "torch":
            values = self.runner(*(x.to(self.device, non_blocking=True).float() for x in feeds.values()))
            return dict(zip(self.outputs, values))
        if self.device.type == "cuda" and imgs.is_cuda:
            return self._run_bound(feeds)
        arrays = {name: x.detach().float().cpu().numpy() for name, x in feeds.items()}
        return {name: torch.from_numpy(v) for name, v in zip(self.outputs, self.session.run(None, arrays))}

    def _run_bound(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """onnxruntime on CUDA reading and writing torch's GPU memory (no host round trip)."""
        device = next(iter(feeds.values())).device
        binding = self.session.io_binding()
        feeds = {name: x.float().contiguous() for name, x in feeds.items()}
        for name, x in feeds.items():
            binding.bind_input(name, "cuda", device.index or 0, np.float32, tuple(x.shape), x.data_ptr())
        outputs = {
            name: torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]), device=device)
            for name, spec in self.outputs.items()
        }
        for name, y in outputs.items():
            binding.bind_output(
                name, "cuda", device.index or 0, NUMPY_DTYPES[self.outputs[name]["dtype"]], tuple(y.shape),
                y.data_ptr(),
            )  # fmt: skip
        torch.cuda.current_stream(device).synchronize()  # onnxruntime runs on its own stream
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outputs


def rig_mismatch(batch: dict, meta: dict) -> tuple[str | None, str | None]:
    """How a batch's calibration differs from the export's rig: (error, warning), each a phrase or None.

    Another camera count, images of another size (another resize and crop) or other intrinsics are errors:
    the baked-in pooling plan would put features in the wrong voxels. A camera pose off by more than 1 cm or
    0.1 degree is a warning: datasets such as nuScenes fold the ego motion between the LiDAR and the camera
    timestamps into each frame's cam2ego, which a fixed rig leaves out.
    """
    cameras = meta["cameras"]
    K, A, E = (torch.tensor(meta[key], dtype=torch.float64) for key in ("intrinsics", "img_aug", "cam2ego"))
    count = batch["imgs"].shape[2]
    if count != len(cameras):
        return f"{count} cameras where the exported rig has {len(cameras)}: {', '.join(cameras)}", None
    b_K, b_A, b_E = (batch[k][0].double() for k in ("intrinsics", "img_aug", "cam2ego"))  # [T, N, ...]
    aug = (b_A - A).abs().amax(dim=(-1, -2))  # [T, N]
    if aug.max() > 1e-3:
        t, n = divmod(int(aug.argmax()), len(cameras))
        return (
            f"{cameras[n]} (frame {t}) is resized and cropped otherwise: its images are not the rig's size",
            None,
        )
    pixels = (b_K - K).abs().amax(dim=(-1, -2))
    if pixels.max() > 0.5:
        t, n = divmod(int(pixels.argmax()), len(cameras))
        return f"{cameras[n]} (frame {t}) has intrinsics {pixels.max():.1f} px off the rig's", None
    metres = (b_E[..., :3, 3] - E[..., :3, 3]).norm(dim=-1)
    cos = ((b_E[..., :3, :3].transpose(-1, -2) @ E[..., :3, :3]).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    degrees = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    if metres.max() > 0.01 or degrees.max() > 0.1:
        return None, f"camera poses up to {metres.max():.3f} m / {degrees.max():.2f} deg off the rig's"
    return None, None


def run_exported(args: argparse.Namespace) -> int:
    """`renderocc infer --exported DIR`: the same inputs and outputs as with --checkpoint."""
    from tqdm import tqdm

    from renderocc.core.grid import VoxelGrid
    from renderocc.eval.miou import resample_labels
    from renderocc.infer import images_batch, split_loader, write_prediction

    if args.threshold is not None or args.readout is not None:
        raise ValueError("--threshold / --readout: the read-out is part of an export; export again with them")
    if args.batch_size != 1:
        raise ValueError(f"--batch-size {args.batch_size}: exported models take one frame at a time (1)")
    model = ExportedModel(args.exported, args.device)
    if model.note:
        print(f"note: {model.note}")
    preset, num_frames = model.preset, model.meta["inputs"][0]["shape"][1]
    out_grid = VoxelGrid(preset.grid.lower, preset.grid.upper, args.voxel_size)
    out_dir = Path(args.out)
    rig_file = Path(args.exported) / RIG_FILE

    def predict(batch: dict) -> tuple[torch.Tensor, str | None]:
        """Occ3D labels [X', Y', Z'] on the output grid, and how the frame's poses differ from the rig."""
        error, warning = rig_mismatch(batch, model.meta)
        if error:
            raise ValueError(
                f"frame {batch['sample_token'][0]}: {error} ({rig_file}); run on images from the exported "
                "rig, or export for this one"
            )
        imgs = batch["imgs"].to(model.device, non_blocking=True)
        labels = model(imgs, batch["ego2keyego"].to(model.device, non_blocking=True))["labels"]
        return resample_labels(labels, preset.grid, out_grid)[0], warning

    if args.images:
        batch = images_batch(args.images, args.calib or rig_file, preset.data, num_frames)
        labels, warning = predict(batch)
        if warning:
            print(f"warning: {args.calib or rig_file}: {warning}; the export uses its own rig")
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"prediction written to {write_prediction(out_dir, batch['sample_token'][0], labels)}")
        return 0

    loader = split_loader(args, preset.data, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    count, warned = 0, []
    for batch in tqdm(loader, desc=f"infer ({model.provider})", unit="frame", total=len(loader.dataset)):
        labels, warning = predict(batch)
        write_prediction(out_dir, batch["sample_token"][0], labels)
        count += 1
        if warning:
            warned.append(f"{batch['sample_token'][0]}: {warning}")
    if warned:
        print(f"warning: {len(warned)} of {count} frames' calibration differs from the exported rig (first: "
              f"{warned[0]}); the export uses its own rig")  # fmt: skip
    print(f"{count} predictions ({'x'.join(map(str, out_grid.shape))}, uint8) written to {out_dir}")
    return 0
