import numpy as np
import pytest
import torch

from renderocc.core import (
    invert_pose,
    make_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
    transform_points,
)


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.sign(q[:, :1])


def test_quaternion_matrix_round_trip_and_orthonormal():
    rng = np.random.default_rng()
    q = random_quaternions(64, rng)
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quaternion(R), q, atol=1e-10)


def test_quaternion_known_rotation():
    # 90 degrees about z, nuScenes (w, x, y, z) order: x axis goes to y axis.
    q = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]
    np.testing.assert_allclose(quaternion_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_matrix_to_quaternion_near_180_degrees():
    R = quaternion_to_matrix([1e-9, 0, 1, 0])  # trace ~ -1 takes the non-trace branch
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-9)


def test_zero_quaternion_refused():
    with pytest.raises(ValueError, match="zero-length"):
        quaternion_to_matrix([0, 0, 0, 0])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_pose_inverse_and_transform(backend):
    rng = np.random.default_rng()
    pose = make_pose(random_quaternions(1, rng)[0], rng.normal(size=3) * 10)
    points = rng.normal(size=(5, 3)) * 20
    if backend == "torch":
        pose, points = torch.from_numpy(pose), torch.from_numpy(points)
    back = transform_points(invert_pose(pose), transform_points(pose, points))
    np.testing.assert_allclose(np.asarray(back), np.asarray(points), atol=1e-9)
    np.testing.assert_allclose(np.asarray(invert_pose(pose)), np.linalg.inv(np.asarray(pose)), atol=1e-12)
