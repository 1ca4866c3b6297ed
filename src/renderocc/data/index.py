"""The sample index: per keyframe its scene, neighbours, camera and LiDAR files, calibration and poses.

Built once from the nuScenes tables by the official devkit and stored as `index.json` (metadata, splits,
file paths) plus `index_arrays.npz` (calibration and poses, float64), so training never loads the devkit.
Paths of dataset files are relative to the dataroot; the index records the dataroot and nuScenes version
it was built from and refuses to serve another one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from renderocc.core.camera import CAMERAS
from renderocc.core.classes import LIDARSEG_TO_OCC3D, lidarseg_index
from renderocc.core.files import atomic_write
from renderocc.core.transforms import invert_pose, make_pose

FORMAT = "renderocc-index"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ARRAYS_FILE = "index_arrays.npz"
# Official devkit splits for the real releases; any other version lists its scenes in DATAROOT/splits.json.
OFFICIAL_SPLITS = {"v1.0-trainval": ("train", "val"), "v1.0-mini": ("mini_train", "mini_val")}
ARRAY_KEYS = (
    "timestamps",
    "scene_first",
    "scene_last",
    "intrinsics",
    "cam2camego",
    "camego2global",
    "image_hw",
    "lidar2ego",
    "ego2global",
    "lidarseg_to_occ3d",
)


def default_index_dir(dataroot: str | Path, version: str) -> Path:
    """Where `renderocc prepare` writes the index of a dataset unless told otherwise."""
    return Path(dataroot) / "renderocc" / version


def prepare_hint(dataroot: str | Path, version: str) -> str:
    if version == "folder":  # renderocc.data.folder.VERSION
        return f"run `renderocc prepare --dataroot {dataroot} --format folder`"
    return f"run `renderocc prepare --dataroot {dataroot} --version {version}`"


@dataclass
class Index:
    """All keyframes of the train and val scenes, ordered by scene and time (S samples, N cameras).

    Arrays: timestamps int64 [S] (LiDAR, µs); scene_first / scene_last int64 [S] (sample range of the
    scene); intrinsics [S, N, 3, 3]; cam2camego [S, N, 4, 4] (camera sensor2ego); camego2global
    [S, N, 4, 4] (ego pose at the camera's own timestamp); image_hw int64 [S, N, 2]; lidar2ego [S, 4, 4];
    ego2global [S, 4, 4] (ego pose at the LiDAR timestamp, the sample's ego frame, as Occ3D uses);
    lidarseg_to_occ3d uint8 [L] (this dataset's lidarseg index -> Occ3D class).
    """

    root: Path
    dataroot: Path
    version: str
    cameras: tuple[str, ...]
    tokens: list[str]
    scenes: list[str]
    prev_tokens: list[str]
    next_tokens: list[str]
    images: list[list[str]]
    lidar: list[str]
    lidarseg: list[str]
    gts: list[str] | None
    splits: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    class_counts: np.ndarray | None = None  # int64 [17] 2D label pixels per Occ3D class, train split
    # model class -> the dataset's own class names mapped to it (a folder dataset's class map); None: Occ3D's
    class_names: dict[int, list[str]] | None = None
    _position: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def has_gts(self) -> bool:
        return self.gts is not None

    def position(self, token: str) -> int:
        """Sample index of a sample token."""
        if not self._position:
            self._position = {t: i for i, t in enumerate(self.tokens)}
        return self._position[token]

    def image_path(self, sample: int, cam: int) -> Path:
        return self.dataroot / self.images[sample][cam]

    def label_path(self, sample: int) -> Path:
        return self.root / "labels" / f"{self.tokens[sample]}.npz"

    def gts_path(self, sample: int) -> Path:
        if self.gts is None:
            raise FileNotFoundError(
                f"index {self.root} was prepared without Occ3D ground truth; put it under "
                f"{self.dataroot / 'gts'} and {prepare_hint(self.dataroot, self.version)}"
            )
        return self.dataroot / self.gts[sample]

    def neighbour(self, sample: int, offset: int) -> int | None:
        """Sample index `offset` keyframes away within the same scene, None past the scene's ends."""
        j = sample + offset
        ok = self.arrays["scene_first"][sample] <= j <= self.arrays["scene_last"][sample]
        return int(j) if ok else None

    def cam2ego(self, sample: int) -> np.ndarray:
        """Cameras -> the sample's (LiDAR-time) ego frame, [N, 4, 4]; includes ego motion between the two."""
        a = self.arrays
        return invert_pose(a["ego2global"][sample]) @ a["camego2global"][sample] @ a["cam2camego"][sample]

    def lidar2cam(self, sample: int) -> np.ndarray:
        """LiDAR -> each camera at the camera's own timestamp, [N, 4, 4] (the 2D label chain of the spec)."""
        a = self.arrays
        lidar2global = a["ego2global"][sample] @ a["lidar2ego"][sample]
        return invert_pose(a["cam2camego"][sample]) @ invert_pose(a["camego2global"][sample]) @ lidar2global


def scene_splits(dataroot: Path, version: str) -> dict[str, list[str]]:
    """Scene names of the train and val splits: the devkit's official ones, else DATAROOT/splits.json."""
    if version in OFFICIAL_SPLITS:
        from nuscenes.utils.splits import create_splits_scenes

        official = create_splits_scenes()
        return {name: list(official[key]) for name, key in zip(("train", "val"), OFFICIAL_SPLITS[version])}
    if version == "v1.0-test":
        raise ValueError("v1.0-test has no lidarseg or Occ3D labels; prepare v1.0-trainval or v1.0-mini")
    path = dataroot / "splits.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"scene split {path} not found; version {version!r} is not an official nuScenes release, so its "
            'scenes must be listed there as {"train": [...], "val": [...]} (`renderocc synth` writes it)'
        )
    splits = json.loads(path.read_text())
    for name in ("train", "val"):
        if not isinstance(splits.get(name), list) or not all(isinstance(s, str) for s in splits[name]):
            raise ValueError(f"{path}: field {name!r} must be a list of scene names")
    return {"train": splits["train"], "val": splits["val"]}


def _check_layout(dataroot: Path, version: str, with_gts: bool) -> None:
    if not dataroot.is_dir():
        raise FileNotFoundError(f"dataroot {dataroot} not found; pass the folder holding {version}/")
    if not (dataroot / version).is_dir():
        found = sorted(p.name for p in dataroot.glob("v1.0-*") if p.is_dir())
        raise FileNotFoundError(
            f"nuScenes tables {dataroot / version} not found; "
            f"check --version (versions here: {found or 'none'})"
        )
    for path in (dataroot / version / "lidarseg.json", dataroot / "lidarseg" / version):
        if not path.exists():
            raise FileNotFoundError(
                f"nuScenes-lidarseg {path} not found; extract the nuScenes-lidarseg archive into {dataroot}"
            )
    if with_gts and not (dataroot / "gts").is_dir():
        raise FileNotFoundError(
            f"Occ3D ground truth folder {dataroot / 'gts'} not found; download Occ3D-nuScenes gts into it "
            "(`renderocc synth` writes it for synthetic data), or pass --no-gts to prepare without 3D labels"
        )


def _first_missing(paths: list[Path], what: str, fix: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{what} {missing[0]} not found ({len(missing)} missing in all); {fix}")


def build_index(dataroot: str | Path, version: str, out: str | Path, with_gts: bool = True) -> Index:
    """Read the nuScenes tables of `version` under `dataroot` with the devkit and index every keyframe of
    the train and val scenes. Every referenced file is checked to exist. Class counts are filled later."""
    dataroot = Path(dataroot).resolve()
    _check_layout(dataroot, version, with_gts)
    splits = scene_splits(dataroot, version)
    from nuscenes import NuScenes

    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    lut = np.zeros(max(nusc.lidarseg_idx2name_mapping) + 1, dtype=np.uint8)
    for idx, name in nusc.lidarseg_idx2name_mapping.items():
        lut[idx] = LIDARSEG_TO_OCC3D[lidarseg_index(name)]

    scene_by_name = {s["name"]: s for s in nusc.scene}
    split_of = {name: split for split, names in splits.items() for name in names}
    unknown = [n for n in split_of if n not in scene_by_name]
    if unknown:
        raise ValueError(
            f"scene {unknown[0]!r} of the {split_of[unknown[0]]} split is not in {dataroot / version}"
        )

    cols: dict[str, list] = {k: [] for k in ("token", "scene", "prev", "next", "images", "lidar", "lidarseg")}
    arrays: dict[str, list] = {k: [] for k in ARRAY_KEYS if k != "lidarseg_to_occ3d"}
    split_members: dict[str, list[int]] = {"train": [], "val": []}
    scenes = [s for s in nusc.scene if s["name"] in split_of]
    for scene in tqdm(scenes, desc="index scenes", unit="scene"):
        first = len(cols["token"])
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            split_members[split_of[scene["name"]]].append(len(cols["token"]))
            _add_sample(nusc, sample, scene["name"], cols, arrays)
            token = sample["next"]
        last = len(cols["token"]) - 1
        arrays["scene_first"] += [first] * (last - first + 1)
        arrays["scene_last"] += [last] * (last - first + 1)

    gts = [f"gts/{scene}/{token}/labels.npz" for scene, token in zip(cols["scene"], cols["token"])]
    regen = "the dataset is incomplete; re-extract it (or regenerate it with `renderocc synth`)"
    _first_missing([dataroot / p for paths in cols["images"] for p in paths], "image", regen)
    _first_missing([dataroot / p for p in cols["lidar"]], "LiDAR sweep", regen)
    _first_missing(
        [dataroot / p for p in cols["lidarseg"]],
        "nuScenes-lidarseg labels",
        f"extract nuScenes-lidarseg into {dataroot}",
    )
    if with_gts:
        _first_missing(
            [dataroot / p for p in gts], "Occ3D labels", "download the Occ3D-nuScenes gts (or pass --no-gts)"
        )
    stacked = {k: np.asarray(v) for k, v in arrays.items()}
    stacked["lidarseg_to_occ3d"] = lut
    return Index(
        root=Path(out).resolve(),
        dataroot=dataroot,
        version=version,
        cameras=CAMERAS,
        tokens=cols["token"],
        scenes=cols["scene"],
        prev_tokens=cols["prev"],
        next_tokens=cols["next"],
        images=cols["images"],
        lidar=cols["lidar"],
        lidarseg=cols["lidarseg"],
        gts=gts if with_gts else None,
        splits={k: np.asarray(v, dtype=np.int64) for k, v in split_members.items()},
        arrays=stacked,
    )


def _add_sample(nusc, sample: dict, scene: str, cols: dict[str, list], arrays: dict[str, list]) -> None:
    def record(channel: str) -> tuple[dict, dict, dict]:
        if channel not in sample["data"]:
            raise ValueError(f"sample {sample['token']} has no {channel} data in {nusc.table_root}")
        sd = nusc.get("sample_data", sample["data"][channel])
        return (
            sd,
            nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]),
            nusc.get("ego_pose", sd["ego_pose_token"]),
        )

    lidar_sd, lidar_cs, lidar_ep = record("LIDAR_TOP")
    try:
        lidarseg = nusc.get("lidarseg", lidar_sd["token"])["filename"]
    except KeyError:
        raise ValueError(
            f"no lidarseg record for LIDAR_TOP sample_data {lidar_sd['token']} "
            f"in {nusc.table_root}/lidarseg.json"
        ) from None
    cams = [record(cam) for cam in CAMERAS]
    cols["token"].append(sample["token"])
    cols["scene"].append(scene)
    cols["prev"].append(sample["prev"])
    cols["next"].append(sample["next"])
    cols["images"].append([sd["filename"] for sd, _, _ in cams])
    cols["lidar"].append(lidar_sd["filename"])
    cols["lidarseg"].append(lidarseg)
    arrays["timestamps"].append(sample["timestamp"])
    arrays["intrinsics"].append([cs["camera_intrinsic"] for _, cs, _ in cams])
    arrays["cam2camego"].append([make_pose(cs["rotation"], cs["translation"]) for _, cs, _ in cams])
    arrays["camego2global"].append([make_pose(ep["rotation"], ep["translation"]) for _, _, ep in cams])
    arrays["image_hw"].append([(sd["height"], sd["width"]) for sd, _, _ in cams])
    arrays["lidar2ego"].append(make_pose(lidar_cs["rotation"], lidar_cs["translation"]))
    arrays["ego2global"].append(make_pose(lidar_ep["rotation"], lidar_ep["translation"]))


def write_index(index: Index) -> Path:
    """Write index.json and index_arrays.npz atomically into index.root; index.json is written last, so
    its presence marks a complete index."""
    if index.class_counts is None:
        raise ValueError("write_index: class_counts missing; build the 2D labels first")
    index.root.mkdir(parents=True, exist_ok=True)
    atomic_write(index.root / ARRAYS_FILE, lambda f: np.savez(f, **index.arrays))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataroot": str(index.dataroot),
        "version": index.version,
        "cameras": list(index.cameras),
        "has_gts": index.has_gts,
        "class_counts": [int(c) for c in index.class_counts],
        "class_names": {str(k): v for k, v in index.class_names.items()} if index.class_names else None,
        "splits": {k: v.tolist() for k, v in index.splits.items()},
        "samples": [
            {
                "token": index.tokens[i],
                "scene": index.scenes[i],
                "prev": index.prev_tokens[i],
                "next": index.next_tokens[i],
                "images": index.images[i],
                "lidar": index.lidar[i],
                "lidarseg": index.lidarseg[i],
                "gts": index.gts[i] if index.gts is not None else None,
            }
            for i in range(len(index))
        ],
    }
    atomic_write(index.root / INDEX_FILE, lambda f: f.write(json.dumps(meta).encode()))
    return index.root


def load_index(
    index_dir: str | Path, dataroot: str | Path | None = None, version: str | None = None
) -> Index:
    """Load an index written by `renderocc prepare`. With `dataroot` / `version` given, an index built
    from another dataroot or nuScenes version is refused."""
    root = Path(index_dir).resolve()
    path = root / INDEX_FILE
    hint = prepare_hint(dataroot or "DATAROOT", version or "VERSION") + f" --out {root}"
    if not path.is_file():
        raise FileNotFoundError(f"dataset index {path} not found; {hint}")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is index format {meta.get('format')} v{meta.get('format_version')}, "
            f"this renderocc reads {FORMAT} v{FORMAT_VERSION}; {hint}"
        )
    if dataroot is not None and Path(dataroot).resolve() != Path(meta["dataroot"]):
        raise ValueError(
            f"index {path} was built for dataroot {meta['dataroot']}, not {Path(dataroot).resolve()}; {hint}"
        )
    if version is not None and version != meta["version"]:
        raise ValueError(f"index {path} was built for nuScenes {meta['version']}, not {version}; {hint}")
    with np.load(root / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ARRAY_KEYS}
    samples = meta["samples"]
    return Index(
        root=root,
        dataroot=Path(meta["dataroot"]),
        version=meta["version"],
        cameras=tuple(meta["cameras"]),
        tokens=[s["token"] for s in samples],
        scenes=[s["scene"] for s in samples],
        prev_tokens=[s["prev"] for s in samples],
        next_tokens=[s["next"] for s in samples],
        images=[s["images"] for s in samples],
        lidar=[s["lidar"] for s in samples],
        lidarseg=[s["lidarseg"] for s in samples],
        gts=[s["gts"] for s in samples] if meta["has_gts"] else None,
        splits={k: np.asarray(v, dtype=np.int64) for k, v in meta["splits"].items()},
        arrays=arrays,
        class_counts=np.asarray(meta["class_counts"], dtype=np.int64),
        class_names={int(k): v for k, v in meta["class_names"].items()} if meta.get("class_names") else None,
    )
