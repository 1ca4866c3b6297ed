"""Augmentation as matrices: image resize/crop/flip/rotate as 3x3 pixel maps, BEV flips as 4x4 ego maps.

Pixel coordinates are continuous, with pixel (i, j) covering [i, i + 1) x [j, j + 1); projecting through
`img_aug @ intrinsics` gives coordinates in the augmented image under the same convention.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from renderocc.config import DataConfig

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# ImageNet normalisation of 0..255 pixels as one multiply-add: (x / 255 - mean) / std, [3, 1, 1].
PIXEL_SCALE = torch.from_numpy(1 / (255 * IMAGENET_STD)).view(3, 1, 1)
PIXEL_SHIFT = torch.from_numpy(-IMAGENET_MEAN / IMAGENET_STD).view(3, 1, 1)


def image_aug_matrix(
    src_hw: tuple[int, int], out_hw: tuple[int, int], cfg: DataConfig, rng: np.random.Generator | None
) -> tuple[np.ndarray, float]:
    """3x3 pixel map original image -> network input, and its resize factor.

    The image is scaled to cover the output (plus jitter), cropped keeping its bottom (where the road is)
    and centred horizontally, then optionally flipped and rotated about the output centre. With
    `rng=None` (evaluation) only the deterministic resize and crop are applied.
    """
    (h0, w0), (fh, fw) = src_hw, out_hw
    scale = max(fh / h0, fw / w0)
    if rng is not None:
        scale += rng.uniform(*cfg.resize_jitter)
    new_h, new_w = h0 * scale, w0 * scale
    crop_x = rng.uniform(0.0, max(0.0, new_w - fw)) if rng is not None else max(0.0, new_w - fw) / 2
    crop_y = new_h - fh
    aug = np.array([[scale, 0.0, -crop_x], [0.0, scale, -crop_y], [0.0, 0.0, 1.0]])
    if rng is not None and cfg.image_flip and rng.random() < 0.5:
        aug = np.array([[-1.0, 0.0, fw], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ aug
    if rng is not None and cfg.rotate_deg > 0:
        angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
        c, s = math.cos(angle), math.sin(angle)
        cx, cy = fw / 2, fh / 2
        rot = np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy], [0.0, 0.0, 1.0]])
        aug = rot @ aug
    return aug, scale


def _pixel_to_grid(h: int, w: int) -> np.ndarray:
    """3x3 map from pixel coordinates to grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return np.array([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]])


def warp_image(
    img: np.ndarray, aug: np.ndarray, decode_scale: tuple[float, float], out_hw: tuple[int, int]
) -> torch.Tensor:
    """Resample a decoded image uint8 [h, w, 3] into the network input, float32 [3, H, W] in 0..255.

    `aug` maps original pixels to output pixels and `decode_scale` (sx, sy) original to decoded pixels, so
    output -> decoded pixels is diag(sx, sy) @ aug^-1. Bilinear; pixels from outside the source are black.
    """
    (h, w), (out_h, out_w) = img.shape[:2], out_hw
    sx, sy = decode_scale
    out_to_src = np.diag([sx, sy, 1.0]) @ invert_affine(aug)
    theta = _pixel_to_grid(h, w) @ out_to_src @ invert_affine(_pixel_to_grid(out_h, out_w))
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    grid = affine_grid(theta[:2], out_h, out_w)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def affine_grid(theta: np.ndarray, h: int, w: int) -> torch.Tensor:
    """F.affine_grid(theta [2, 3], [1, C, h, w], align_corners=False) -> grid float32 [1, h, w, 2], equal to
    within float rounding. An affine map of a pixel grid is an outer sum of a row and a column term: on the
    CPU this is a tenth of affine_grid's time, which multiplies every pixel's coordinates by theta."""
    x = torch.arange(w, dtype=torch.float32).mul_(2 / w).add_(1 / w - 1)  # pixel centres in [-1, 1]
    y = torch.arange(h, dtype=torch.float32).mul_(2 / h).add_(1 / h - 1)
    (a, b, c), (d, e, f) = theta.astype(np.float32).tolist()
    grid = torch.empty(1, h, w, 2)
    torch.add((x * a)[None, :], (y * b + c)[:, None], out=grid[0, :, :, 0])
    torch.add((x * d)[None, :], (y * e + f)[:, None], out=grid[0, :, :, 1])
    return grid


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 affine pixel map (last row 0, 0, 1), in closed form: np.linalg.inv of tiny
    matrices costs more than the whole formula through BLAS dispatch."""
    a, b, c, d, e, f = m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2]
    det = a * e - b * d
    return np.array(
        [
            [e / det, -b / det, (b * f - c * e) / det],
            [-d / det, a / det, (c * d - a * f) / det],
            [0.0, 0.0, 1.0],
        ]
    )


def bev_flip_matrix(flip_x: bool, flip_y: bool) -> np.ndarray:
    """4x4 BEV augmentation of the key ego frame: mirror x (forward) and/or y (left)."""
    return np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0])


def flip_voxels(volume: np.ndarray, bev_aug: np.ndarray) -> np.ndarray:
    """Apply a BEV flip to a voxel volume [X, Y, Z, ...] indexed in the ego frame.

    Mirroring x -> -x is reversing the x index because the Occ3D box is symmetric about the ego in x and y
    ([-40, 40) m); z is never flipped.
    """
    axes = tuple(axis for axis in (0, 1) if bev_aug[axis, axis] < 0)
    return np.ascontiguousarray(np.flip(volume, axes)) if axes else volume
