"""The generated dataset: devkit loading, LiDAR/camera label agreement, Occ3D labels and masks."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

from renderocc.core.classes import FREE, LIDARSEG_CLASSES, LIDARSEG_TO_OCC3D, OCC3D_CLASSES
from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import invert_pose, make_pose, transform_points

matplotlib.use("Agg")
nuscenes = pytest.importorskip("nuscenes.nuscenes")

VERSION = "v1.0-synthetic"


@pytest.fixture(scope="module")
def nusc(tiny_dataset):
    # a colormap that encodes each lidarseg index in the red channel, so devkit colours decode to labels
    colormap = {name: (index, 0, 0) for index, name in enumerate(LIDARSEG_CLASSES)}
    return nuscenes.NuScenes(VERSION, str(tiny_dataset), verbose=False, colormap=colormap)


def _pose(record: dict) -> np.ndarray:
    return make_pose(record["rotation"], record["translation"])


def test_tables_and_files(nusc, tiny_dataset):
    assert [s["name"] for s in nusc.scene] == ["scene-0000", "scene-0001"]
    assert json.loads((tiny_dataset / "splits.json").read_text()) == {
        "train": ["scene-0000"],
        "val": ["scene-0001"],
    }
    assert len(nusc.sample) == 6 and len(nusc.lidarseg) == 6
    scene = nusc.scene[0]
    sample = nusc.get("sample", scene["first_sample_token"])
    assert sample["prev"] == "" and sample["next"] != ""
    assert len(sample["data"]) == 7
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert cam["timestamp"] > lidar["timestamp"] and cam["ego_pose_token"] != lidar["ego_pose_token"]
    assert (cam["height"], cam["width"]) == (90, 160)
    points = np.fromfile(tiny_dataset / lidar["filename"], dtype=np.float32).reshape(-1, 5)
    labels = np.fromfile(tiny_dataset / nusc.get("lidarseg", lidar["token"])["filename"], dtype=np.uint8)
    assert 20_000 < len(points) < 36_000 and len(labels) == len(points)
    assert set(np.unique(points[:, 4]).astype(int)) <= set(range(32)) and points[:, 3].max() <= 255
    # ground points lie on z = 0 in the ego frame (lidar frame: x right, y forward, z up on the roof)
    lidar2ego = _pose(nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"]))
    assert np.allclose(lidar2ego[:3, 1], [1, 0, 0]) and lidar2ego[2, 3] > 1.5
    road = labels == LIDARSEG_CLASSES.index("flat.driveable_surface")
    assert road.sum() > 1000
    assert np.abs(transform_points(lidar2ego, points[road, :3])[:, 2]).max() < 0.02
    categories = {c["name"]: c["index"] for c in nusc.category}
    assert categories == {name: i for i, name in enumerate(LIDARSEG_CLASSES)}


def test_lidar_labels_agree_with_camera_semantics(nusc, tiny_dataset):
    """Project lidarseg points into every camera through the devkit and compare with the camera's own
    semantic render of the same instant, regenerated from the seed."""
    from renderocc.synth import materials, sensors
    from renderocc.synth.city import build_world
    from renderocc.synth.rig import nuscenes_rig

    tables = materials.material_tables()
    agree, total = 0, 0
    for scene_index, scene in enumerate(nusc.scene):
        world = build_world(0, scene_index, scene["nbr_samples"])
        first = nusc.get("sample", scene["first_sample_token"])
        sample = nusc.get("sample", first["next"])
        global2world = invert_pose(world.world2global)
        for cam in nuscenes_rig((90, 160)):
            sd = nusc.get("sample_data", sample["data"][cam.name])
            cam2world = (
                global2world
                @ _pose(nusc.get("ego_pose", sd["ego_pose_token"]))
                @ _pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
            )
            time = (sd["timestamp"] - first["timestamp"]) / 1e6
            render = sensors.render_cameras(
                world, [cam], torch.tensor(cam2world, dtype=torch.float32)[None], torch.tensor([time]), tables
            )
            points, coloring, _ = nusc.explorer.map_pointcloud_to_image(
                sample["data"]["LIDAR_TOP"], sd["token"], show_lidarseg=True
            )
            labels = np.rint(np.asarray(coloring)[:, 0] * 255).astype(int)
            u = np.clip(points[0].astype(int), 0, 159)
            v = np.clip(points[1].astype(int), 0, 89)
            seen = render["semantics"][0].numpy()[v, u]
            agree += int((seen == LIDARSEG_TO_OCC3D[labels]).sum())
            total += len(labels)
    assert total > 5000
    assert agree / total > 0.9, f"only {agree / total:.1%} of projected lidar labels match the camera render"


def test_devkit_renders_lidarseg_in_image(nusc, tmp_path):
    out = tmp_path / "lidarseg_front.png"
    nusc.render_pointcloud_in_image(
        nusc.sample[1]["token"],
        camera_channel="CAM_FRONT",
        show_lidarseg=True,
        out_path=str(out),
        verbose=False,
    )
    assert out.stat().st_size > 1000


def test_occ3d_labels_and_masks(nusc, tiny_dataset):
    grid = VoxelGrid()
    for sample in nusc.sample:
        scene = nusc.get("scene", sample["scene_token"])
        gts = np.load(tiny_dataset / "gts" / scene["name"] / sample["token"] / "labels.npz")
        assert sorted(gts.files) == ["mask_camera", "mask_lidar", "semantics"]
        sem, cam, lid = gts["semantics"], gts["mask_camera"], gts["mask_lidar"]
        assert sem.shape == cam.shape == lid.shape == (200, 200, 16)
        assert sem.dtype == cam.dtype == lid.dtype == np.uint8
        assert sem.max() <= FREE and set(np.unique(cam)) <= {0, 1} and set(np.unique(lid)) <= {0, 1}
        # the ego stands on the road: the voxel layer holding z = 0 under it is driveable surface
        assert sem[100, 100, 2] == OCC3D_CLASSES.index("driveable_surface")
        assert (sem == FREE).mean() > 0.5 and (sem[..., 2] != FREE).mean() > 0.9
        # cameras see the road 6-10 m ahead (nearer, it is below the field of view) and the air above it,
        # and nothing below the road surface
        assert cam[116:125, 99:101, 2].all() and cam[116:125, 99:101, 5].all()
        assert cam[..., 0].sum() < 0.01 * cam[..., 2].sum()
        assert 0.02 < cam.mean() < 0.8 and 0.01 < lid.mean() < cam.mean()
        # annotated objects occupy the voxel at their box centre with their class
        ego2global = _pose(
            nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
        )
        checked = 0
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            centre = transform_points(invert_pose(ego2global), np.asarray(ann["translation"])[None])
            idx = grid.points_to_index(torch.tensor(centre, dtype=torch.float32))[0]
            if not grid.contains(torch.tensor(centre, dtype=torch.float32))[0] or ann["size"][2] < 1.0:
                continue
            expected = LIDARSEG_TO_OCC3D[LIDARSEG_CLASSES.index(ann["category_name"])]
            # bicycles/motorcycles without a rider have nothing at the box centre's height: test their base
            z = 2 if ann["category_name"].startswith("vehicle.") and ann["size"][0] < 1.0 else int(idx[2])
            checked += int(sem[idx[0], idx[1], z] == expected)
        assert checked >= 1


def test_scenes_in_worker_processes_write_the_same_files(tmp_path):
    import hashlib

    from renderocc.synth import generate

    def digests(root):
        return {
            str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    config = {"scenes": 3, "frames": 2, "image_size": (48, 80), "val_scenes": 1, "progress": False}
    one = generate(tmp_path / "one", workers=1, **config)
    two = generate(tmp_path / "two", workers=2, **config)
    assert digests(two) == digests(one)  # tables, images, sweeps, labels: byte for byte
