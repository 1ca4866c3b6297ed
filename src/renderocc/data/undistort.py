"""Lens distortion: OpenCV's pinhole and fisheye models; undistortion to a pinhole camera by inverse mapping.

Pinhole ("opencv"): coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6]]), the rational radial model with
tangential terms. Fisheye ("fisheye"): (k1, k2, k3, k4), theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8).
Each output pixel centre is a ray of the pinhole camera K_out; the forward model sends it to the source
image, where it is sampled (bilinear for images, nearest for label images). The forward model is closed
form, so no iterative solve is needed. Pixel (i, j) covers [i, i + 1) x [j, j + 1) as everywhere in
renderocc; output pixels whose ray the model cannot map (past the fold of a strong radial polynomial,
behind a fisheye) or that land outside the source are left empty (black, unknown).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MODELS = {"opencv": (4, 5, 8), "fisheye": (4,)}  # accepted coefficient counts


def check_distortion(model: str, coeffs: list[float], where: str) -> np.ndarray:
    """Coefficients as float64 [8] (opencv) or [4] (fisheye); errors name `where`."""
    if model not in MODELS:
        raise ValueError(f"{where}: distortion model {model!r} is unknown; use one of {', '.join(MODELS)}")
    values = np.asarray(coeffs, dtype=np.float64).reshape(-1)
    if len(values) not in MODELS[model] or not np.isfinite(values).all():
        counts = " or ".join(map(str, MODELS[model]))
        raise ValueError(f"{where}: {model} distortion takes {counts} finite coefficients, got {len(values)}")
    return np.pad(values, (0, 8 - len(values))) if model == "opencv" else values


def distort(
    x: np.ndarray, y: np.ndarray, model: str, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised pinhole coordinates (x, y) [...] -> distorted ones (xd, yd) and a validity mask [...]."""
    r2 = x * x + y * y
    if model == "fisheye":
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return x * scale, y * scale, np.isfinite(scale)
    k1, k2, p1, p2, k3, k4, k5, k6 = c
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd, r2 <= _fold_radius2(c)


def _fold_radius2(c: np.ndarray, r_max: float = 10.0) -> float:
    """Squared radius up to which the radial map r -> r * radial(r) still grows (beyond, rays fold back)."""
    r = np.linspace(0.0, r_max, 20_001)
    r2 = r * r
    k1, k2, _, _, k3, k4, k5, k6 = c
    rd = r * (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    falling = np.nonzero(np.diff(rd) <= 0)[0]
    return float(r2[falling[0]]) if len(falling) else np.inf


def undistort_map(
    model: str, coeffs: np.ndarray, K_src: np.ndarray, K_out: np.ndarray, out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel [H, W], its continuous source-image position float32 [H, W, 2] (x, y) and
    whether the model maps it, bool [H, W]."""
    h, w = out_hw
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K_out).T
    xd, yd, ok = distort(rays[..., 0], rays[..., 1], model, coeffs)
    src = np.stack([K_src[0, 0] * xd + K_src[0, 1] * yd + K_src[0, 2], K_src[1, 1] * yd + K_src[1, 2]], -1)
    return src.astype(np.float32), ok & np.isfinite(src).all(-1)


def remap_image(image: np.ndarray, src: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Bilinear resampling of an RGB image uint8 [h, w, 3] at source positions src [H, W, 2] -> [H, W, 3]."""
    h, w = image.shape[:2]
    grid = torch.from_numpy(src / np.array([w, h], np.float32) * 2 - 1)[None]
    pixels = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()  # may be read-only
    out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    out = out.permute(1, 2, 0).numpy() * ok[..., None]
    return out.round().clip(0, 255).astype(np.uint8)


def remap_labels(labels: np.ndarray, src: np.ndarray, ok: np.ndarray, empty: int) -> np.ndarray:
    """Nearest resampling of a label image [h, w] (any dtype) at src [H, W, 2]; `empty` where nothing maps."""
    h, w = labels.shape
    x, y = np.floor(src[..., 0]).astype(np.int64), np.floor(src[..., 1]).astype(np.int64)
    inside = ok & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = np.full(src.shape[:2], empty, dtype=labels.dtype)
    out[inside] = labels[y[inside], x[inside]]
    return out
