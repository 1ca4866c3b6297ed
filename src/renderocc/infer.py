"""`renderocc infer`: Occ3D-format occupancy (<sample_token>.npz, `semantics` uint8) from a checkpoint.

Two inputs: a prepared dataset (`--dataroot`, every frame of a split), or one frame of camera images in a
folder (`--images DIR --calib calib.json`). The calibration file is JSON, the folder format's calib.json:

    {"token": "frame-0001",                       (optional; default: the folder's name)
     "cameras": {"CAM_FRONT": {"image": "CAM_FRONT.jpg",
                               "intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                               "sensor2ego": [[...4x4 camera -> ego...]],
                               "distortion": [k1, k2, p1, p2, k3]},   (optional, see docs/data_format.md)
                 ... the cameras of the rig the model was trained on ...}}

The six nuScenes cameras are taken in nuScenes order; any other rig in the file's order.

A single frame has no history: the previous frame the temporal model expects is the frame itself, as at
the first keyframe of a scene. Predictions are written on the Occ3D label grid (0.4 m by default), so the
coarse demo model's output is upsampled (nearest) to it, and `renderocc eval --pred` scores them as is.
"""

from __future__ import annotations

import argparse
import functools
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from renderocc.config import DataConfig, Preset
from renderocc.core.camera import CAMERAS
from renderocc.core.files import atomic_write, read_json
from renderocc.core.grid import VoxelGrid
from renderocc.data.batch import batch_to
from renderocc.eval.calibrate import add_readout_arguments, with_readout_arguments


def _matrix(value, shape: tuple[int, int], where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape or not np.isfinite(array).all():
        raise ValueError(f"{where} must be a finite {shape[0]}x{shape[1]} matrix, got shape {array.shape}")
    return array


def images_batch(images_dir: str | Path, calib_path: str | Path, cfg: DataConfig, num_frames: int) -> dict:
    """The model's input batch (B = 1) for one frame of six images and their calibration."""
    from renderocc.data.augment import IMAGENET_MEAN, IMAGENET_STD, image_aug_matrix, warp_image
    from renderocc.data.images import read_image

    images_dir, calib_path = Path(images_dir), Path(calib_path)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images {images_dir} is not a folder holding the six camera images")
    calib = read_json(calib_path, "--calib", "see `renderocc infer --help` for its format")
    cameras = calib.get("cameras", {})
    if not isinstance(cameras, dict) or not cameras:
        raise ValueError(f'{calib_path}: "cameras" must map camera names to their calibration')
    names = CAMERAS if set(CAMERAS) <= set(cameras) else list(cameras)
    imgs, intrinsics, sensor2ego, img_aug = [], [], [], []
    mean, std = (torch.from_numpy(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    for cam in names:
        entry = cameras[cam]
        where = f"{calib_path}: cameras.{cam}"
        K = _matrix(entry.get("intrinsics"), (3, 3), f"{where}.intrinsics")
        pose = _matrix(entry.get("sensor2ego"), (4, 4), f"{where}.sensor2ego")
        path = images_dir / entry.get("image", f"{cam}.jpg")
        img, decode_scale = read_image(path)
        if entry.get("distortion") is not None:  # undistorted as `renderocc prepare` does for training
            img, K = _undistort(img, K, entry, where)
        h0, w0 = round(img.shape[0] / decode_scale[1]), round(img.shape[1] / decode_scale[0])
        aug, _ = image_aug_matrix((h0, w0), cfg.image_size, cfg, None)
        pixels = torch.as_tensor(warp_image(img, aug, decode_scale, cfg.image_size), dtype=torch.float32)
        imgs.append((pixels / 255.0 - mean) / std)  # [3, H, W], ImageNet-normalised as the data loader does
        intrinsics.append(K), sensor2ego.append(pose), img_aug.append(aug)

    def frames(values) -> torch.Tensor:  # [N, ...] -> [1, T, N, ...]; the history is the frame itself
        t = (
            values.float()
            if torch.is_tensor(values)
            else torch.from_numpy(np.asarray(values, dtype=np.float32))
        )
        return t[None, None].expand(1, num_frames, *t.shape).contiguous()

    return {
        "imgs": frames(torch.stack(imgs)),
        "intrinsics": frames(np.stack(intrinsics)),
        "img_aug": frames(np.stack(img_aug)),
        "cam2ego": frames(np.stack(sensor2ego)),
        "ego2keyego": torch.eye(4).expand(1, num_frames, 4, 4).contiguous(),
        "sample_token": [str(calib.get("token", images_dir.name))],
    }


def _undistort(img: np.ndarray, K: np.ndarray, entry: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A full-size image resampled to its pinhole camera (pinhole_intrinsics, default K), and that K."""
    from renderocc.data.undistort import check_distortion, remap_image, undistort_map

    model = entry.get("distortion_model", "opencv")
    coeffs = check_distortion(model, entry["distortion"], f"{where}.distortion")
    K_out = _matrix(entry.get("pinhole_intrinsics", K), (3, 3), f"{where}.pinhole_intrinsics")
    src, ok = undistort_map(model, coeffs, K, K_out, img.shape[:2])
    return remap_image(img, src, ok), K_out


def write_prediction(out_dir: Path, token: str, semantics: torch.Tensor) -> Path:
    """<out_dir>/<token>.npz with `semantics` uint8 [X, Y, Z], written atomically."""
    labels = semantics.cpu().numpy().astype(np.uint8)
    return atomic_write(Path(out_dir) / f"{token}.npz", lambda f: np.savez_compressed(f, semantics=labels))


MODEL_KEYS = ("imgs", "intrinsics", "img_aug", "cam2ego", "ego2keyego")  # what the network reads of a batch
CAMERA_KEYS = ("intrinsics", "img_aug", "cam2ego")  # a frame's camera: its history entries depend on it


class Predictor:
    """Occ3D labels uint8 [B, *out_grid.shape] of batches: the network (bf16 on CUDA when train.amp), the
    read-out and the resampling to `out_grid`. On CUDA it replays as a CUDA graph per batch shape
    (GraphedCall): at batch 1 the network's launches, not its arithmetic, set the pace.

    Streaming (`stream`, batch 1, a model with one history frame): when a batch's history frame
    (batch['history_token']) is the frame of the previous call, with the same camera, its features are the
    ones that call computed (OccupancyNet.forward's `history`), so the backbone runs on the key frame's
    images alone; the labels are the same. A streaming loader (eval_loader's `stream`) then leaves those
    images out. Anything else, a scene's first frame or a frame out of order, is computed from its images.

    uint8 images (eval_loader's `uint8_images`) are normalised by the model, on the device.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preset: Preset,
        out_grid: VoxelGrid,
        device: torch.device,
        cuda_graphs: bool = True,
        stream: bool = True,
    ) -> None:
        from renderocc.models.view_transformer import HISTORY
        from renderocc.train_utils.cuda_graphs import GraphedCall

        self.history_keys = HISTORY
        self.model, self.device = model, device
        self.stream = stream and model.num_frames == 2
        threshold = preset.readout_threshold()  # per-layer thresholds made a tensor once, outside any graph
        if not isinstance(threshold, int | float):
            threshold = torch.tensor(threshold, device=device)
        # a function of its own state, not a bound method: a Predictor that held itself through its graph
        # would outlive its last use until Python's cycle collector, and when that runs in a data loader
        # worker forked meanwhile, the worker's copy of the CUDA graph fails to free itself (a warning)
        labels_of = functools.partial(_labels_of, model, preset, threshold, out_grid, device, self.stream)
        graphed = cuda_graphs and device.type == "cuda"
        self._labels = GraphedCall(labels_of, model) if graphed else labels_of
        # (token, camera, history entries) of the last frame: on CUDA the entries are a graph's outputs,
        # valid until that graph's next replay, which copies them in as its inputs first
        self._last: tuple[str, torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._last_token: str | None = None  # for the error when a streaming loader's order was broken
        self.reused = 0  # frames whose history frame came from the previous call

    @torch.no_grad()
    def __call__(self, batch: dict) -> torch.Tensor:
        """batch (host or device; host saves a sync when streaming) -> labels [B, *out_grid.shape]."""
        history, self._last = self._history(batch), None
        inputs = {k: batch[k] for k in MODEL_KEYS}
        if history is not None:  # the history frame's images are not needed (nor copied to the device)
            inputs["imgs"] = inputs["imgs"][:, :1]
        inputs = batch_to(inputs, self.device)
        frames, needed = inputs["imgs"].shape[1], self.model.num_frames
        if history is not None:
            inputs |= {f"history_{k}": v for k, v in history.items()}
        elif frames < needed:  # a streaming loader left the history images out
            own = "history_token" in batch and batch["history_token"] == batch["sample_token"]
            if not own:  # (a scene's first frame is its own history: its images are those of the key frame)
                raise ValueError(
                    f"batch {batch.get('sample_token')}: the images of its history frame "
                    f"{batch.get('history_token')} were left out (a streaming loader), but the last frame "
                    f"this Predictor ran was {self._last_token}; run a streaming loader's batches in its "
                    "order through one Predictor, or make the loader with stream=False"
                )
            inputs["imgs"] = inputs["imgs"][:, :1].expand(-1, needed, -1, -1, -1, -1).contiguous()
        was_training = self.model.training
        self.model.eval()
        out = self._labels(inputs)
        self.model.train(was_training)
        if self.stream and len(out["labels"]) == 1 and "sample_token" in batch:
            camera = _camera(batch, 0)
            entries = {k: out[f"history_{k}"] for k in self.history_keys}
            self._last = (batch["sample_token"][0], camera, entries)
        self._last_token = batch.get("sample_token", [None])[0]
        return out["labels"].clone()  # a graph's output is overwritten by its next replay

    def _history(self, batch: dict) -> dict[str, torch.Tensor] | None:
        """The previous call's history entries when they are this batch's history frame's, else None."""
        if self._last is None or len(batch.get("history_token", ())) != 1:
            return None
        token, camera, entries = self._last
        if batch["history_token"][0] != token or not torch.equal(_camera(batch, 1).to(camera.device), camera):
            return None
        self.reused += 1
        return entries


def _labels_of(
    model: torch.nn.Module,
    preset: Preset,
    threshold: float | torch.Tensor,
    out_grid: VoxelGrid,
    device: torch.device,
    stream: bool,
    batch: dict,
) -> dict[str, torch.Tensor]:
    """The labels [B, *out_grid.shape] of a device batch, and with `stream` its frame's history entries."""
    from renderocc.eval.miou import resample_labels
    from renderocc.models import occupancy_readout
    from renderocc.models.view_transformer import HISTORY
    from renderocc.train_utils.amp import autocast

    history = {k: batch[f"history_{k}"] for k in HISTORY} if "history_features" in batch else None
    with autocast(device, preset.train.amp):
        out = model(batch, history, return_history=stream)
    labels = occupancy_readout(out["density"].float(), out["semantics"].float(), threshold)
    labels = {"labels": resample_labels(labels, preset.grid, out_grid)}
    return labels | {f"history_{k}": v for k, v in out.get("history", {}).items()}


def _camera(batch: dict, t: int) -> torch.Tensor:
    """Frame t's intrinsics, image augmentation and cam2ego, flattened: [B, N * 25]."""
    return torch.cat([batch[k][:, t].flatten(1) for k in CAMERA_KEYS], 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="run directory or RUN/checkpoints/step-N")
    model.add_argument("--exported", help="folder from `renderocc export` (its rig is the --calib default)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataroot", help="dataset prepared by `renderocc prepare`")
    source.add_argument("--images", help="folder of one frame's six camera images (needs --calib)")
    parser.add_argument("--calib", help="calibration JSON for --images (intrinsics, sensor2ego per camera)")
    parser.add_argument("--version", default=None, help="prepared nuScenes version (default: the only one)")
    parser.add_argument("--index", default=None, help="prepared index (default: DATAROOT/renderocc/VERSION)")
    parser.add_argument("--split", default="val", help="split of the index to predict (default: val)")
    parser.add_argument("--out", required=True, help="folder for <sample_token>.npz")
    parser.add_argument("--voxel-size", type=float, default=0.4, help="output grid voxel (Occ3D: 0.4 m)")
    parser.add_argument("--weights", default="ema", choices=("ema", "model"))
    add_readout_arguments(parser)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-samples", type=int, default=None, help="only the first N frames of the split")
    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="load every frame's history images (by default, at batch 1, the frames of a scene run in order "
        "and each reuses the features of the frame before it, its history frame; the labels are the same)",
    )


def split_loader(
    args: argparse.Namespace, cfg: DataConfig, batch_size: int, stream: bool = False, uint8: bool = False
) -> torch.utils.data.DataLoader:
    """The loader over --split of the --dataroot dataset (--version, --index, --max-samples, --num-workers),
    without Occ3D labels and rays: the frames `renderocc infer` predicts. stream, uint8 (images): see
    eval_loader."""
    from renderocc.train_utils.data import eval_loader, open_index

    index = open_index(args.dataroot, args.version, args.index)
    if args.split not in index.splits:
        raise KeyError(f"unknown --split {args.split!r}; valid: {', '.join(index.splits)}")
    return eval_loader(
        index, cfg, args.split, batch_size, args.num_workers, max_samples=args.max_samples, with_gts=False,
        with_rays=False, stream=stream, uint8_images=uint8,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from renderocc.checkpoint import load_model

    if args.exported:
        from renderocc.deploy.runtime import run_exported

        return run_exported(args)
    if args.images and not args.calib:
        raise ValueError("--images needs --calib calib.json (intrinsics and sensor2ego of the six cameras)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, preset = load_model(args.checkpoint, which=args.weights, device=device)
    preset = with_readout_arguments(preset, args)
    out_grid = VoxelGrid(preset.grid.lower, preset.grid.upper, args.voxel_size)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.images:
        batch = images_batch(args.images, args.calib, preset.data, model.num_frames)
        # one frame: nothing to replay, so no graph
        labels = Predictor(model, preset, out_grid, device, cuda_graphs=False)(batch)[0]
        path = write_prediction(out_dir, batch["sample_token"][0], labels)
        print(f"prediction written to {path}")
        return 0

    stream = args.batch_size == 1 and not args.no_stream
    loader = split_loader(args, preset.data, args.batch_size, stream, uint8=True)  # Predictor normalises
    count, predict = 0, Predictor(model, preset, out_grid, device, stream=stream)
    for batch in tqdm(
        loader, desc="infer", unit="batch", total=math.ceil(len(loader.dataset) / args.batch_size)
    ):
        for token, labels in zip(batch["sample_token"], predict(batch)):
            write_prediction(out_dir, token, labels)
            count += 1
    print(f"{count} predictions ({'x'.join(map(str, out_grid.shape))}, uint8) written to {out_dir}")
    return 0
