"""Rigid transforms: nuScenes quaternions (w, x, y, z) to matrices, 4x4 poses, applying them to points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def quaternion_to_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrix of unit quaternions in nuScenes order (w, x, y, z). q [..., 4] -> [..., 3, 3]."""
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-9):
        raise ValueError("quaternion_to_matrix: zero-length quaternion")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of rotation matrices. R [..., 3, 3] -> [..., 4]."""
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    out = np.empty((len(m), 4))
    for i, r in enumerate(m):  # Shepperd's method; per-matrix branches, only used on metadata-sized inputs
        tr = np.trace(r)
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            out[i] = (0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
        else:
            k = int(np.argmax(np.diag(r)))
            a, b = (k + 1) % 3, (k + 2) % 3
            s = 2.0 * np.sqrt(1.0 + r[k, k] - r[a, a] - r[b, b])
            v = np.empty(3)
            v[k] = 0.25 * s
            v[a] = (r[a, k] + r[k, a]) / s
            v[b] = (r[b, k] + r[k, b]) / s
            out[i] = ((r[b, a] - r[a, b]) / s, *v)
        if out[i, 0] < 0:
            out[i] = -out[i]
    return out.reshape(R.shape[:-2] + (4,))


def make_pose(
    rotation: Sequence[float] | np.ndarray, translation: Sequence[float] | np.ndarray
) -> np.ndarray:
    """4x4 pose from a nuScenes record: quaternion (w, x, y, z) or 3x3 matrix, and a translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    pose[:3, 3] = np.asarray(translation, dtype=np.float64)
    return pose


def invert_pose(pose: Array) -> Array:
    """Inverse of rigid 4x4 poses [..., 4, 4] (numpy or torch), using R^T rather than a general inverse."""
    R, t = pose[..., :3, :3], pose[..., :3, 3:]
    if isinstance(pose, torch.Tensor):  # concatenated, not written in place: ONNX and torch.export take it
        Rt = R.transpose(-1, -2)
        return torch.cat([torch.cat([Rt, -Rt @ t], -1), pose[..., 3:, :]], -2)
    Rt = np.swapaxes(R, -1, -2)
    out = pose.copy()
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    return out


def transform_points(pose: Array, points: Array) -> Array:
    """Apply 4x4 poses [..., 4, 4] to points [..., N, 3] (numpy or torch) -> [..., N, 3]."""
    R, t = pose[..., :3, :3], pose[..., :3, 3]
    return points @ R.swapaxes(-1, -2) + t[..., None, :]
