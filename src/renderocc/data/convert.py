"""`renderocc convert`: a nuScenes-format dataset (real or synthetic) written in the folder format.

Images, LiDAR points (with their nuScenes-lidarseg ids and a classes.json mapping those to Occ3D) and the
Occ3D labels are carried over; the synthetic set's label images (labels2d/, written by `renderocc synth`)
can be carried as well, and the LiDAR left out, to make a camera-only dataset. Files are hard-linked where
the file system allows (else copied), so a converted copy costs little disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from renderocc.core.classes import OCC3D_CLASSES
from renderocc.core.files import replace_dir
from renderocc.data.folder import CALIB_FILE, CLASSES_FILE, DATASET_FILE, FORMAT, FORMAT_VERSION, FRAME_FILE
from renderocc.data.index import Index, build_index, scene_splits
from renderocc.synth.labels2d import label_image_paths

LABEL_IMAGES = ("dense", "pseudo")  # the label image kinds `renderocc synth` writes under labels2d/


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _category_names(dataroot: Path, version: str, count: int) -> list[str]:
    path = dataroot / version / "category.json"
    names = {int(c["index"]): c["name"] for c in json.loads(path.read_text()) if "index" in c}
    return [names.get(i, str(i)) for i in range(count)]


def convert(
    dataroot: str | Path,
    version: str,
    out: str | Path,
    points: bool = True,
    label_images: str | None = None,
    with_gts: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write `version` under `dataroot` to `out` in the folder format; returns `out`. Frames keep their
    nuScenes sample tokens. `points`: carry the LiDAR points as a 2D label source; `label_images`: carry
    the synthetic label images of that kind ("dense" or "pseudo"). Written to a hidden sibling and renamed
    at the end, so `out` is never half-written."""
    dataroot, out = Path(dataroot).resolve(), Path(out).resolve()
    if label_images is not None and label_images not in LABEL_IMAGES:
        raise ValueError(f"--label-images {label_images!r} is unknown; use one of {', '.join(LABEL_IMAGES)}")
    if not points and label_images is None:
        raise ValueError("nothing to label the images with: keep the LiDAR points or pass --label-images")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    index = build_index(dataroot, version, out, with_gts=with_gts)
    splits = scene_splits(dataroot, version)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(index, tmp, splits, points, label_images, version)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(
    index: Index,
    root: Path,
    splits: dict[str, list[str]],
    points: bool,
    label_images: str | None,
    version: str,
) -> None:
    a, dataroot = index.arrays, index.dataroot
    present = set(index.scenes)
    root.mkdir(parents=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "splits": {k: [s for s in v if s in present] for k, v in splits.items()},
        "source": f"renderocc convert of {dataroot} {version}",
    }
    (root / DATASET_FILE).write_text(json.dumps(meta, indent=1))
    # point classes and the synthetic label images are both nuScenes-lidarseg ids: one class map for both
    lut = a["lidarseg_to_occ3d"]
    names = _category_names(dataroot, version, len(lut))
    classes = [{"id": i, "name": names[i], "to": OCC3D_CLASSES[int(lut[i])]} for i in range(len(lut))]
    (root / CLASSES_FILE).write_text(json.dumps({"classes": classes}, indent=1))
    written_calib: set[str] = set()
    for s in tqdm(range(len(index)), desc="convert", unit="frame"):
        scene, token = index.scenes[s], index.tokens[s]
        scene_dir = root / "scenes" / scene
        calib = {
            "cameras": {
                cam: {
                    "intrinsics": a["intrinsics"][s, n].tolist(),
                    "sensor2ego": a["cam2camego"][s, n].tolist(),
                }
                for n, cam in enumerate(index.cameras)
            }
        }
        if points:
            calib["points"] = {"LIDAR_TOP": {"sensor2ego": a["lidar2ego"][s].tolist()}}
        if scene not in written_calib:
            scene_dir.mkdir(parents=True)
            (scene_dir / CALIB_FILE).write_text(json.dumps(calib, indent=1))
            written_calib.add(scene)
            scene_calib = calib
        frame_dir = scene_dir / token
        cameras = {}
        for n, cam in enumerate(index.cameras):
            src = index.image_path(s, n)
            entry = {"image": f"{cam}{src.suffix}", "ego2world": a["camego2global"][s, n].tolist()}
            if calib["cameras"][cam] != scene_calib["cameras"][cam]:  # recalibrated within the scene
                entry.update(calib["cameras"][cam])
            _place(src, frame_dir / entry["image"])
            if label_images is not None:
                depth, cls = label_image_paths(dataroot, label_images, index.images[s][n])
                for path, key in ((depth, "depth"), (cls, "classes")):
                    if not path.is_file():
                        flag = " --pseudo-labels" if label_images == "pseudo" else ""
                        raise FileNotFoundError(
                            f"label image {path} not found; generate the data with `renderocc synth{flag}` "
                            f"to have {label_images} label images"
                        )
                    entry[key] = f"{cam}_{key}.png"
                    _place(path, frame_dir / entry[key])
            cameras[cam] = entry
        frame = {
            "token": token,
            "timestamp": int(a["timestamps"][s]),
            "ego2world": a["ego2global"][s].tolist(),
            "cameras": cameras,
        }
        if points:
            raw = np.fromfile(dataroot / index.lidar[s], dtype=np.float32).reshape(-1, 5)
            ids = np.fromfile(dataroot / index.lidarseg[s], dtype=np.uint8)
            np.savez(frame_dir / "LIDAR_TOP.npz", points=raw[:, :3], classes=ids)
            frame["points"] = {"LIDAR_TOP": {"file": "LIDAR_TOP.npz"}}
            if calib["points"] != scene_calib["points"]:
                frame["points"]["LIDAR_TOP"]["sensor2ego"] = calib["points"]["LIDAR_TOP"]["sensor2ego"]
        if index.gts is not None:
            _place(dataroot / index.gts[s], frame_dir / "labels.npz")
            frame["occupancy"] = "labels.npz"
        (frame_dir / FRAME_FILE).write_text(json.dumps(frame, indent=1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="the nuScenes-format dataset (holds VERSION/)")
    parser.add_argument("--version", required=True, help="e.g. v1.0-trainval, v1.0-mini, v1.0-synthetic")
    parser.add_argument("--out", required=True, help="folder to write the folder-format dataset to")
    parser.add_argument(
        "--no-points", action="store_true", help="leave the LiDAR out (a camera-only dataset)"
    )
    parser.add_argument(
        "--label-images", choices=LABEL_IMAGES, default=None,
        help="carry the synthetic set's label images: dense (perfect) or pseudo (degraded)",
    )  # fmt: skip
    parser.add_argument("--no-gts", action="store_true", help="leave the Occ3D labels out")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out after success")


def run(args: argparse.Namespace) -> int:
    out = convert(
        args.dataroot, args.version, args.out, points=not args.no_points, label_images=args.label_images,
        with_gts=not args.no_gts, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {out} in the folder format; next: renderocc prepare --dataroot {out}")
    return 0
