"""The torch Dataset of prepared nuScenes / synthetic keyframes, and its collate function.

Each item follows renderocc.data.batch without the batch dimension: augmented multi-frame images with
their calibration in the key ego frame, rays sampled from the 2D labels of the key and neighbouring
keyframes, the key frame's LiDAR depth map and, when the index has them, the Occ3D voxel labels.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from renderocc.config import DataConfig
from renderocc.core.transforms import invert_pose
from renderocc.data.augment import (
    PIXEL_SCALE,
    PIXEL_SHIFT,
    bev_flip_matrix,
    flip_voxels,
    image_aug_matrix,
    warp_image,
)
from renderocc.data.batch import OPTIONAL_KEYS, TENSOR_KEYS, Batch
from renderocc.data.images import read_image
from renderocc.data.index import Index
from renderocc.data.labels import FrameLabels, load_labels
from renderocc.data.rays import (
    camera_directions,
    grouped_matvec,
    labels_to_rays,
    ray_weights,
    weighted_sample,
)


class OccDataset(Dataset):
    """Keyframes of one split of a prepared index.

    train=True draws image, BEV and ray-sampling randomness per item; train=False turns augmentation off
    and makes ray sampling deterministic per sample. `with_gts` (default: when the index has them) adds
    voxel_semantics / mask_camera / mask_lidar; with_rays=False leaves out the rays and the depth map (the
    2D training targets), which inference and scoring do not read. Items in `history_left_out` carry the
    key frame's images alone (imgs [1, N, 3, H, W]): a streaming Predictor has their history frame's
    features (see train_utils.data.eval_loader). uint8_images: imgs are the warped pixels rounded to uint8,
    normalised by their consumer (infer.Predictor): a quarter of the bytes to pass from a loader worker.
    """

    def __init__(
        self,
        index: Index,
        cfg: DataConfig,
        split: str,
        train: bool,
        with_gts: bool | None = None,
        with_rays: bool = True,
        history_left_out: Collection[int] = frozenset(),
        uint8_images: bool = False,
    ):
        if split not in index.splits:
            raise KeyError(f"unknown split {split!r} of index {index.root}; valid: {', '.join(index.splits)}")
        _check_config(cfg)
        self.index, self.cfg, self.split, self.train = index, cfg, split, train
        self.samples = index.splits[split]
        self.with_gts = index.has_gts if with_gts is None else with_gts
        self.with_rays, self.history_left_out = with_rays, frozenset(history_left_out)
        self.uint8_images = uint8_images
        if self.with_gts and not index.has_gts:
            index.gts_path(0)  # raises with the fix

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int) -> dict:
        sample = int(self.samples[item])
        # Training draws from torch's RNG, which DataLoader seeds differently in every worker.
        seed = int(torch.randint(0, 2**62, ())) if self.train else sample
        rng = np.random.default_rng(seed) if self.train else None
        generator = torch.Generator().manual_seed(seed)

        flips = (rng.random() < 0.5, rng.random() < 0.5) if rng is not None and self.cfg.bev_flip else (0, 0)
        bev_aug = bev_flip_matrix(*flips)
        frames = self._temporal_frames(sample)
        img_aug = self._image_augs(sample, rng)  # per camera, shared by all frames so stereo stays rectified
        out = {
            "imgs": self._images(frames[:1] if item in self.history_left_out else frames, img_aug),
            **self._poses(frames, bev_aug),
            "img_aug": torch.from_numpy(
                np.broadcast_to(img_aug, (len(frames), *img_aug.shape)).astype(np.float32)
            ),
            "bev_aug": torch.from_numpy(bev_aug.astype(np.float32)),
            "sample_token": self.index.tokens[sample],
            "scene_name": self.index.scenes[sample],
        }
        if len(frames) > 1:
            out["history_token"] = self.index.tokens[frames[1]]
        if self.with_rays:
            key_labels, rays = self._rays(sample, bev_aug, generator)
            out["depth_map"] = self._depth_map(key_labels, img_aug)
            out.update(rays)
        if self.with_gts:
            out.update(self._voxels(sample, bev_aug))
        return out

    def _temporal_frames(self, sample: int) -> list[int]:
        """Key frame then `prev_frames` previous keyframes, repeating the scene's first at its start."""
        frames = [sample]
        for _ in range(self.cfg.prev_frames):
            prev = self.index.neighbour(frames[-1], -1)
            frames.append(frames[-1] if prev is None else prev)
        return frames

    def _image_augs(self, sample: int, rng: np.random.Generator | None) -> np.ndarray:
        hw = self.index.arrays["image_hw"][sample]
        return np.stack(
            [image_aug_matrix(tuple(hw[n]), self.cfg.image_size, self.cfg, rng)[0] for n in range(len(hw))]
        )

    def _images(self, frames: list[int], img_aug: np.ndarray) -> torch.Tensor:
        """imgs float32 [T, N, 3, H, W], ImageNet-normalised (uint8_images: uint8 0..255)."""
        hw = self.index.arrays["image_hw"]
        dtype = torch.uint8 if self.uint8_images else torch.float32
        imgs = torch.empty(len(frames), len(img_aug), 3, *self.cfg.image_size, dtype=dtype)
        for t, frame in enumerate(frames):
            if t > 0 and frame == frames[t - 1]:  # the scene's first frame, repeated as its own history
                imgs[t] = imgs[t - 1]
                continue
            for n, aug in enumerate(img_aug):
                scale = math.hypot(aug[0, 0], aug[0, 1])  # the resize factor, also when rotated
                h0, w0 = hw[frame, n]
                img, decode_scale = read_image(
                    self.index.image_path(frame, n), (math.ceil(h0 * scale), math.ceil(w0 * scale))
                )
                pixels = warp_image(img, aug, decode_scale, self.cfg.image_size)
                if self.uint8_images:  # bilinear weights are >= 0 and sum to at most 1: no clamping needed
                    imgs[t, n] = pixels.round_()
                else:
                    imgs[t, n] = pixels.mul_(PIXEL_SCALE).add_(PIXEL_SHIFT)
        return imgs

    def _poses(self, frames: list[int], bev_aug: np.ndarray) -> dict[str, torch.Tensor]:
        a = self.index.arrays
        key_global2ego = invert_pose(a["ego2global"][frames[0]])
        # Every frame's ego frame is mirrored like the key one:
        # cam -> key ego = B E_t C_t = (B E_t B^-1)(B C_t), with B the BEV flip and B^-1 = B.
        cam2ego = np.stack([bev_aug @ self.index.cam2ego(f) for f in frames])
        ego2keyego = np.stack([bev_aug @ key_global2ego @ a["ego2global"][f] @ bev_aug for f in frames])
        return {
            "intrinsics": torch.from_numpy(a["intrinsics"][frames].astype(np.float32)),
            "cam2ego": torch.from_numpy(cam2ego.astype(np.float32)),
            "ego2keyego": torch.from_numpy(ego2keyego.astype(np.float32)),
        }

    def _rays(
        self, sample: int, bev_aug: np.ndarray, generator: torch.Generator
    ) -> tuple[FrameLabels, dict[str, torch.Tensor]]:
        """Rays of the key and neighbour keyframes' labels, weighted-sampled and padded to max_rays.
        Also returns the key frame's labels (for the depth map)."""
        cfg, index, a = self.cfg, self.index, self.index.arrays
        frames = [(o, j) for o in cfg.ray_frame_offsets if (j := index.neighbour(sample, o)) is not None]
        labels = [load_labels(index, j) for _, j in frames]
        key_labels = labels[[o for o, _ in frames].index(0)] if 0 in cfg.ray_frame_offsets else None
        key_labels = key_labels or load_labels(index, sample)
        out = {
            "rays_o": torch.zeros(cfg.max_rays, 3),
            "rays_d": torch.zeros(cfg.max_rays, 3),
            "ray_depth": torch.zeros(cfg.max_rays),
            "ray_class": torch.zeros(cfg.max_rays, dtype=torch.int64),
            "ray_frame": torch.zeros(cfg.max_rays, dtype=torch.int64),
            "ray_valid": torch.zeros(cfg.max_rays, dtype=torch.bool),
        }
        if not frames:
            return key_labels, out

        key_global2ego = bev_aug @ invert_pose(a["ego2global"][sample])
        cam2keyego = np.concatenate(
            [key_global2ego @ a["camego2global"][j] @ a["cam2camego"][j] for _, j in frames]
        )
        intrinsics = np.concatenate([a["intrinsics"][j] for _, j in frames])
        n_cam = len(index.cameras)
        group = torch.from_numpy(
            np.concatenate([slot * n_cam + lab.camera_ids() for slot, lab in enumerate(labels)])
        )
        frame = torch.from_numpy(np.repeat([o for o, _ in frames], [len(lab.u) for lab in labels]))
        z = torch.from_numpy(np.concatenate([lab.depth for lab in labels]).astype(np.float32))
        cls = torch.from_numpy(np.concatenate([lab.cls for lab in labels]).astype(np.int64))
        uv = np.stack(
            [np.concatenate([lab.u for lab in labels]), np.concatenate([lab.v for lab in labels])], -1
        )
        dirs = camera_directions(
            torch.from_numpy(uv.astype(np.float32) + 0.5), group, torch.from_numpy(intrinsics).float()
        )

        # index_select rather than indexing: on the CPU several times faster on these ~100k labels
        candidate = torch.nonzero(z * dirs.norm(dim=-1) <= cfg.max_depth).squeeze(1)
        dirs, z, group, cls, frame = (t.index_select(0, candidate) for t in (dirs, z, group, cls, frame))
        rays_o, rays_d, ray_depth = labels_to_rays(dirs, z, group, torch.from_numpy(cam2keyego).float())
        points = rays_o + ray_depth[:, None] * rays_d
        weights = ray_weights(cls, frame == 0, points, cfg)
        chosen = weighted_sample(weights, cfg.max_rays, generator)
        n = len(chosen)
        for key, values in (
            ("rays_o", rays_o), ("rays_d", rays_d), ("ray_depth", ray_depth), ("ray_class", cls),
            ("ray_frame", frame),
        ):  # fmt: skip
            out[key][:n] = values.index_select(0, chosen)
        out["ray_valid"][:n] = True
        return key_labels, out

    def _depth_map(self, labels: FrameLabels, img_aug: np.ndarray) -> torch.Tensor:
        """Key-frame LiDAR z-depth at augmented pixels, [N, H, W]; nearest point per pixel, 0 = none."""
        (h, w), n_cam = self.cfg.image_size, len(img_aug)
        cam = torch.from_numpy(labels.camera_ids())
        uv1 = torch.stack(
            [
                torch.from_numpy(labels.u).double() + 0.5,
                torch.from_numpy(labels.v).double() + 0.5,
                torch.ones(len(cam)),
            ],
            -1,
        )
        xy = grouped_matvec(torch.from_numpy(img_aug), cam, uv1)[:, :2].floor().long()
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        flat = (cam * h + xy[:, 1]) * w + xy[:, 0]
        depth_map = torch.full((n_cam * h * w,), torch.inf)
        depth_map.scatter_reduce_(
            0, flat[inside], torch.from_numpy(labels.depth.astype(np.float32))[inside], "amin"
        )
        return depth_map.nan_to_num_(posinf=0.0).view(n_cam, h, w)

    def _voxels(self, sample: int, bev_aug: np.ndarray) -> dict[str, torch.Tensor]:
        path = self.index.gts_path(sample)
        try:
            with np.load(path, allow_pickle=False) as npz:
                volumes = {k: npz[k] for k in ("semantics", "mask_camera", "mask_lidar")}
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Occ3D labels {path} not found; "
                f"download the Occ3D-nuScenes gts into {self.index.dataroot / 'gts'}"
            ) from None
        except KeyError as err:
            raise ValueError(
                f"Occ3D labels {path} lack {err}; expected semantics, mask_camera, mask_lidar"
            ) from None
        volumes = {k: flip_voxels(v, bev_aug) for k, v in volumes.items()}
        return {
            "voxel_semantics": torch.from_numpy(volumes["semantics"].astype(np.uint8)),
            "mask_camera": torch.from_numpy(volumes["mask_camera"].astype(bool)),
            "mask_lidar": torch.from_numpy(volumes["mask_lidar"].astype(bool)),
        }


def _check_config(cfg: DataConfig) -> None:
    h, w = cfg.image_size
    problems = {
        "image_size": h <= 0 or w <= 0,
        "prev_frames": cfg.prev_frames < 0,
        "max_rays": cfg.max_rays <= 0,
        "neighbour_ray_weight": cfg.neighbour_ray_weight < 0,
        "class_balance_temperature": cfg.class_balance_temperature < 0,
        "class_balance_power": cfg.class_balance_power < 0,
        "ray_balance_cell": cfg.ray_balance_cell is not None and cfg.ray_balance_cell <= 0,
        "max_depth": cfg.max_depth <= 0,
    }
    bad = [name for name, wrong in problems.items() if wrong]
    if bad:
        raise ValueError(
            f"DataConfig.{bad[0]}={getattr(cfg, bad[0])} is invalid; "
            "use a value > 0 (>= 0 for prev_frames, neighbour_ray_weight and the class balance; None also "
            "for ray_balance_cell)"
        )


def collate(items: list[dict]) -> Batch:
    """Stack items into a batch (renderocc.data.batch); rays, voxel labels and history tokens only when
    every item has them.

    default_collate stacks straight into shared memory inside a DataLoader worker, which saves a copy
    of the (large) image tensor on its way to the main process.
    """
    keys = [k for k in (*TENSOR_KEYS, *OPTIONAL_KEYS) if all(k in it for it in items)]
    batch: Batch = {k: default_collate([it[k] for it in items]) for k in keys}
    for key in ("sample_token", "scene_name", "history_token"):
        if all(key in it for it in items):
            batch[key] = [it[key] for it in items]
    return batch
