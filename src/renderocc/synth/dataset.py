"""`generate`: simulate scenes and write them as nuScenes v1.0 + nuScenes-lidarseg + Occ3D `gts/`."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from renderocc.core.classes import FREE
from renderocc.core.files import replace_dir
from renderocc.core.grid import VoxelGrid
from renderocc.synth import materials, occupancy, sensors
from renderocc.synth.city import KEYFRAME_DT, build_world
from renderocc.synth.labels2d import (
    PseudoLabelConfig,
    depth_to_png,
    label_image_paths,
    pseudo_labels,
    write_label_images,
)
from renderocc.synth.rig import CAMERA_DELAYS_US, LIDAR_NAME, Camera, lidar_sensor2ego, nuscenes_rig
from renderocc.synth.stats import SceneStats
from renderocc.synth.tables import (
    Tables,
    add_annotations,
    add_log_and_calibration,
    add_sample_data,
    token,
)
from renderocc.synth.world import World

BASE_TIMESTAMP_US = 1_600_000_000_000_000


def default_workers() -> int:
    """Scenes simulated at once by default: one per core, at most 8 (each process holds a world and, on a GPU,
    a CUDA context). On 2 cores, 2 workers wrote 24 keyframes at 450x800 in 28.7 s against 43.6 s."""
    return max(1, min(8, os.cpu_count() or 1))


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    try:
        import simplejpeg

        path.write_bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=90, colorspace="RGB"))
    except ImportError:
        Image.fromarray(rgb).save(path, quality=90)


def _check_args(
    out: Path, scenes: int, frames: int, image_size: tuple[int, int], val_scenes: int | None
) -> int:
    if scenes < 1:
        raise ValueError(f"--scenes must be >= 1, got {scenes}")
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    h, w = image_size
    if h < 16 or w < 16 or h > 4096 or w > 4096:
        raise ValueError(
            f"--image-size {h} {w} is out of range; use H and W between 16 and 4096 (e.g. 450 800)"
        )
    val = (max(1, scenes // 4) if scenes > 1 else 0) if val_scenes is None else val_scenes
    if not 0 <= val <= scenes:
        raise ValueError(f"--val-scenes must be between 0 and --scenes ({scenes}), got {val}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; choose another --out")
    return val


def generate(
    out: Path,
    scenes: int,
    frames: int,
    image_size: tuple[int, int] = (450, 800),
    seed: int = 0,
    val_scenes: int | None = None,
    version: str = "v1.0-synthetic",
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    pseudo: PseudoLabelConfig | None = None,
    workers: int = 1,
) -> Path:
    """Write `scenes` scenes of `frames` keyframes (0.5 s apart) to `out` and return it.

    Layout: out/<version>/*.json, out/samples/{CAM_*,LIDAR_TOP}/, out/lidarseg/<version>/, out/maps/,
    out/gts/<scene>/<sample_token>/labels.npz, out/splits.json (val = the last `val_scenes` scenes; default
    max(1, scenes // 4), none for a single scene), out/labels2d/dense/ (perfect depth and class images per
    camera image) and, with `pseudo`, out/labels2d/pseudo/ (degraded ones, synth.labels2d). Written to a
    temporary sibling and renamed at the end, so an interrupted run leaves nothing that looks complete; an
    existing non-empty `out` needs `overwrite`. workers > 1 simulates that many scenes at once, each in its
    own process; the dataset is the same file for file.
    """
    out = Path(out)
    image_size = (int(image_size[0]), int(image_size[1]))
    val = _check_args(out, scenes, frames, image_size, val_scenes)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA GPU; use --device cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    threads = torch.get_num_threads()
    # One intra-op thread: per-keyframe tensors are small, and OpenMP spin-waiting collapses throughput on a
    # shared CPU; file encoding runs in writer threads instead.
    torch.set_num_threads(1)
    try:
        stats = _write_dataset(
            tmp, scenes, frames, image_size, seed, val, version, torch.device(device), progress, pseudo,
            workers,
        )  # fmt: skip
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    if progress:
        print(stats.table())
    return out


def _write_dataset(
    root: Path,
    scenes: int,
    frames: int,
    image_size: tuple[int, int],
    seed: int,
    val: int,
    version: str,
    device: torch.device,
    progress: bool,
    pseudo: PseudoLabelConfig | None,
    workers: int = 1,
) -> SceneStats:
    channels = [c.name for c in nuscenes_rig(image_size)] + [LIDAR_NAME]
    for ch in channels:
        (root / "samples" / ch).mkdir(parents=True)
    (root / "lidarseg" / version).mkdir(parents=True)
    (root / "maps").mkdir()
    tables = Tables(seed)
    for ch in channels:
        tables.add(
            "sensor",
            {
                "token": token(seed, "sensor", ch),
                "channel": ch,
                "modality": "lidar" if ch == LIDAR_NAME else "camera",
            },
        )
    map_token = token(seed, "map")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / f"{map_token}.png")
    tables.add(
        "map",
        {
            "token": map_token,
            "log_tokens": [],
            "category": "semantic_prior",
            "filename": f"maps/{map_token}.png",
        },
    )
    stats = SceneStats()
    names = [f"scene-{i:04d}" for i in range(scenes)]
    jobs = [
        (root, version, seed, i, name, frames, image_size, str(device), pseudo)
        for i, name in enumerate(names)
    ]
    bar = tqdm(total=scenes * frames, desc="synth", unit="keyframe", disable=not progress)
    if workers == 1:
        results = (_write_scene_files(*job, bar=bar) for job in jobs)
    else:  # spawned: CUDA cannot be used in a forked child
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, scenes), mp_context=context) as pool:
            futures = [pool.submit(_write_scene_files, *job) for job in jobs]
            try:
                for future in as_completed(futures):
                    future.result()  # the first failure ends the run
                    bar.update(frames)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        results = (future.result() for future in futures)
    # the tables take each scene's rows in scene order, as one process would have written them
    for rows, scene_stats in results:
        for table, new in rows.items():
            tables.rows[table] += new
        stats.merge(scene_stats)
    bar.close()
    tables.rows["map"][0]["log_tokens"] = [row["token"] for row in tables.rows["log"]]
    tables.write(root, version)
    splits = {"train": names[: scenes - val], "val": names[scenes - val :]}
    (root / "splits.json").write_text(json.dumps(splits, indent=1))
    return stats


def _write_scene_files(
    root: Path,
    version: str,
    seed: int,
    index: int,
    name: str,
    frames: int,
    image_size: tuple[int, int],
    device: str,
    pseudo: PseudoLabelConfig | None,
    bar: tqdm | None = None,
) -> tuple[dict[str, list[dict]], SceneStats]:
    """Simulate scene `index` and write its files under `root`; returns its table rows (by table) and its
    statistics. Runs in the calling process or in a worker process of `_write_dataset`."""
    torch.set_num_threads(1)  # see generate
    device = torch.device(device)
    tables = Tables(seed)
    before = {table: len(rows) for table, rows in tables.rows.items()}  # the fixed tables every Tables has
    stats = SceneStats()
    world = build_world(seed, index, frames).to(device)
    # file encoding (JPEG, zlib) releases the GIL: writer threads overlap it with the simulation
    with ThreadPoolExecutor(max_workers=max(2, min(8, (os.cpu_count() or 2) // 2))) as pool:
        pending: list[Future] = []
        _write_scene(
            root, version, tables, world, name, index, frames, nuscenes_rig(image_size),
            materials.material_tables(device), VoxelGrid(), stats, pool, pending, seed, bar, pseudo,
        )  # fmt: skip
        for f in pending:
            f.result()
    return {table: rows[before[table] :] for table, rows in tables.rows.items()}, stats


def _ground_truth(
    world: World,
    grid: VoxelGrid,
    ego2world: np.ndarray,
    time: float,
    sweep: dict[str, torch.Tensor],
    distance: torch.Tensor,
    intrinsics: torch.Tensor,
    cam2world: torch.Tensor,
    mats: dict[str, torch.Tensor],
) -> dict[str, np.ndarray]:
    """Occ3D labels of one keyframe in its ego frame (ego2world [4, 4] at `time`): semantics, and the masks
    from the LiDAR sweep's rays and the cameras' per-pixel surface distances [C, H, W]."""
    ego2world_t = torch.tensor(ego2world, dtype=torch.float32, device=distance.device)
    semantics = occupancy.voxelize(world, grid, ego2world_t, time, mats["occ"])
    occupied = semantics != FREE
    world2ego = torch.linalg.inv(ego2world_t)
    returned = torch.isfinite(sweep["t"])
    rays_o = sweep["rays_o"][returned] @ world2ego[:3, :3].T + world2ego[:3, 3]
    rays_d = sweep["rays_d"][returned] @ world2ego[:3, :3].T
    mask_lidar = occupancy.traverse(occupied, grid, rays_o, rays_d, sweep["t"][returned])
    mask_camera = occupancy.camera_visibility(grid, distance, intrinsics, world2ego @ cam2world)
    return {
        "semantics": semantics.cpu().numpy(),
        "mask_lidar": mask_lidar.cpu().numpy().astype(np.uint8),
        "mask_camera": mask_camera.cpu().numpy().astype(np.uint8),
    }


def _write_scene(
    root: Path,
    version: str,
    tables: Tables,
    world: World,
    name: str,
    index: int,
    frames: int,
    cameras: list[Camera],
    mats: dict[str, torch.Tensor],
    grid: VoxelGrid,
    stats: SceneStats,
    pool: ThreadPoolExecutor,
    pending: list[Future],
    seed: int,
    bar: tqdm | None,
    pseudo: PseudoLabelConfig | None,
) -> None:
    """Simulate one scene keyframe by keyframe: images, sweep, labels, and all its table rows."""
    device = world.prims.center.device
    f32 = torch.float32
    scene_token = token(seed, "scene", index)
    log_token = token(seed, "log", index)
    calib = add_log_and_calibration(tables, seed, index, log_token, cameras, lidar_sensor2ego())
    sensor2ego = torch.tensor(np.stack([c.sensor2ego for c in cameras]), dtype=f32, device=device)
    lidar2ego_t = torch.tensor(lidar_sensor2ego(), dtype=f32, device=device)
    h, w = cameras[0].image_size
    intrinsics = torch.tensor(np.stack([c.intrinsics for c in cameras]), dtype=f32, device=device)
    scene_start = BASE_TIMESTAMP_US + index * 1_000_000_000
    samples, by_channel, tracks = [], {ch: [] for ch in calib}, {}
    for k in range(frames):
        t_lidar = k * KEYFRAME_DT
        ts_lidar = scene_start + round(t_lidar * 1e6)
        sample_token = token(seed, "sample", index, k)
        samples.append(
            tables.add(
                "sample",
                {
                    "token": sample_token,
                    "timestamp": ts_lidar,
                    "prev": "",
                    "next": "",
                    "scene_token": scene_token,
                },
            )
        )
        cam_ts = [ts_lidar + d for d in CAMERA_DELAYS_US]
        cam_times = np.array([(ts - scene_start) / 1e6 for ts in cam_ts])
        ego_cam = world.ego.pose(cam_times)  # [C, 4, 4] ego2world at each camera's instant
        ego_key = world.ego.pose(t_lidar)
        cam2world = torch.tensor(ego_cam, dtype=f32, device=device) @ sensor2ego
        render = sensors.render_cameras(
            world, cameras, cam2world, torch.tensor(cam_times, dtype=f32, device=device), mats
        )
        lidar2world = torch.tensor(ego_key, dtype=f32, device=device) @ lidar2ego_t
        sweep = sensors.lidar_sweep(world, lidar2world, t_lidar, mats, seed + index * 7919 + k)
        # files
        rgb = render["rgb"].cpu().numpy()
        label_images = {"dense": (depth_to_png(render["depth"]), render["lidarseg"].cpu().numpy())}
        if pseudo is not None:
            depth, cls = pseudo_labels(
                render["depth"],
                render["lidarseg"],
                render["instance"],
                pseudo,
                seed * 1_000_003 + index * 7919 + k,
            )
            label_images["pseudo"] = (depth_to_png(depth), cls.to(torch.uint8).cpu().numpy())
        for c, cam in enumerate(cameras):
            sd = add_sample_data(
                tables,
                seed,
                index,
                k,
                cam.name,
                sample_token,
                cam_ts[c],
                ego_cam[c],
                world,
                calib[cam.name]["token"],
                name,
                "jpg",
                h,
                w,
            )
            by_channel[cam.name].append(sd)
            pending.append(pool.submit(_save_jpeg, root / sd["filename"], rgb[c]))
            for kind, (depth_mm, classes) in label_images.items():
                paths = label_image_paths(root, kind, sd["filename"])
                pending.append(pool.submit(write_label_images, *paths, depth_mm[c], classes[c]))
        sd = add_sample_data(
            tables,
            seed,
            index,
            k,
            LIDAR_NAME,
            sample_token,
            ts_lidar,
            ego_key,
            world,
            calib[LIDAR_NAME]["token"],
            name,
            "pcd",
            0,
            0,
        )
        by_channel[LIDAR_NAME].append(sd)
        points = torch.cat([sweep["points"], sweep["intensity"][:, None], sweep["ring"][:, None].float()], 1)
        points_np = points.cpu().numpy().astype(np.float32)
        lidarseg = sweep["lidarseg"].cpu().numpy().astype(np.uint8)
        seg_name = f"lidarseg/{version}/{sd['token']}_lidarseg.bin"
        tables.add("lidarseg", {"token": sd["token"], "sample_data_token": sd["token"], "filename": seg_name})
        pending.append(pool.submit(points_np.tofile, root / sd["filename"]))
        pending.append(pool.submit(lidarseg.tofile, root / seg_name))
        gts = _ground_truth(
            world, grid, ego_key, t_lidar, sweep, render["distance"], intrinsics, cam2world, mats
        )
        gt_dir = root / "gts" / name / sample_token
        gt_dir.mkdir(parents=True)
        pending.append(pool.submit(np.savez_compressed, gt_dir / "labels.npz", **gts))
        stats.update(gts["semantics"], gts["mask_camera"], lidarseg)
        add_annotations(tables, seed, world, sample_token, t_lidar, sweep["instance"].cpu().numpy(), tracks)
        if bar is not None:
            bar.update(1)
    tables.link("sample", samples)
    for rows in by_channel.values():
        tables.link("sample_data", rows)
    for inst, rows in tracks.items():
        tables.link("sample_annotation", rows)
        tables.add(
            "instance",
            {
                "token": token(seed, "instance", index, inst),
                "category_token": tables.category_token(world.instances[inst].category),
                "nbr_annotations": len(rows),
                "first_annotation_token": rows[0]["token"],
                "last_annotation_token": rows[-1]["token"],
            },
        )
        for row in rows:
            row["instance_token"] = token(seed, "instance", index, inst)
    tables.add(
        "scene",
        {
            "token": scene_token,
            "log_token": log_token,
            "nbr_samples": frames,
            "first_sample_token": samples[0]["token"],
            "last_sample_token": samples[-1]["token"],
            "name": name,
            "description": ", ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in world.style.items()
            ),
        },
    )
