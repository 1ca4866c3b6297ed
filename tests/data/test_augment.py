"""Image augmentation matrices agree with the warped pixels; BEV flips agree between points and voxels."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from renderocc.config import DataConfig
from renderocc.core.grid import VoxelGrid
from renderocc.data.augment import affine_grid, bev_flip_matrix, flip_voxels, image_aug_matrix, warp_image


def _blob_centroid(img: np.ndarray) -> np.ndarray:
    weight = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum() + 0.5  # pixel centres


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decode_factor", [1, 2])
def test_warp_moves_content_where_the_matrix_says(seed: int, decode_factor: int) -> None:
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(120, 200), rng.uniform(110, 150)
    ys, xs = np.mgrid[:180, :320] + 0.5  # pixel centres
    blob = 255 * np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 5.0**2))  # smooth: no aliasing when resized
    src = np.repeat(blob[..., None], 3, -1).round().astype(np.uint8)
    aug, _ = image_aug_matrix((180, 320), (64, 176), DataConfig(rotate_deg=20.0), rng)
    f = decode_factor  # a DCT-downscaled decode, as read_image may return, averages f x f blocks
    decoded = src.reshape(180 // f, f, 320 // f, f, 3).mean((1, 3)).round().astype(np.uint8)
    out = warp_image(decoded, aug, (1 / decode_factor, 1 / decode_factor), (64, 176)).permute(1, 2, 0).numpy()
    expected = (aug @ np.array([x0, y0, 1.0]))[:2]
    assert out[..., 0].max() > 100, "the blob must stay inside the output for this check"
    np.testing.assert_allclose(_blob_centroid(out), expected, atol=0.15)


def _to_grid(h: int, w: int) -> np.ndarray:
    """Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False)."""
    return np.array([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])


@pytest.mark.parametrize("seed", range(3))
def test_affine_grid_and_warp_match_torch_affine_grid(seed: int) -> None:
    """The outer-sum grid is F.affine_grid's to within float rounding, so warped pixels are as before."""
    rng = np.random.default_rng(seed)
    aug, _ = image_aug_matrix((450, 800), (256, 704), DataConfig(rotate_deg=20.0), rng)
    theta = np.concatenate([rng.normal(size=(2, 2)), rng.uniform(-1, 1, (2, 1))], 1)
    expected = F.affine_grid(torch.from_numpy(theta[None].astype(np.float32)), [1, 3, 64, 176], False)
    torch.testing.assert_close(affine_grid(theta, 64, 176), expected, rtol=0, atol=1e-6)

    img = rng.integers(0, 256, (450, 800, 3), dtype=np.uint8)
    out = warp_image(img, aug, (1.0, 1.0), (256, 704))
    inv = np.linalg.inv(aug)  # the warp before the outer-sum grid: F.affine_grid of the same theta
    theta = (_to_grid(450, 800) @ inv @ np.linalg.inv(_to_grid(256, 704)))[None, :2].astype(np.float32)
    grid = F.affine_grid(torch.from_numpy(theta), [1, 3, 256, 704], align_corners=False)
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    reference = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    torch.testing.assert_close(out, reference, rtol=0, atol=0.05)  # of 0..255


def test_eval_resize_keeps_the_bottom_centre() -> None:
    aug, scale = image_aug_matrix((900, 1600), (256, 704), DataConfig(), rng=None)
    assert scale == pytest.approx(0.44)
    np.testing.assert_allclose(aug @ [800.0, 900.0, 1.0], [352.0, 256.0, 1.0])
    np.testing.assert_allclose(aug @ [0.0, 900.0 - 256 / 0.44, 1.0], [0.0, 0.0, 1.0], atol=1e-9)


@pytest.mark.parametrize("flips", [(True, False), (False, True), (True, True)])
def test_bev_flip_maps_voxel_labels_like_points(flips: tuple[bool, bool]) -> None:
    grid = VoxelGrid(voxel_size=3.2)
    volume = np.random.default_rng(0).integers(0, 18, grid.shape).astype(np.uint8)
    bev = bev_flip_matrix(*flips)
    flipped = flip_voxels(volume, bev)
    centres = grid.voxel_centers().reshape(-1, 3)
    moved = centres @ torch.from_numpy(bev[:3, :3]).float().T
    idx = grid.points_to_index(moved)
    src = grid.points_to_index(centres)
    np.testing.assert_array_equal(flipped[tuple(idx.T)], volume[tuple(src.T)])
