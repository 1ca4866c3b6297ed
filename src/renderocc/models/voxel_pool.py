"""Lifting to voxels: ego-frame frustum points, the voxel each of them lands in, and the pool."""

from __future__ import annotations

import torch

from renderocc.core.grid import VoxelGrid


def depth_bin_centers(depth_bins: tuple[float, float, float], device=None) -> torch.Tensor:
    """Depth hypotheses start, start + step, ... < stop (metres), [D]; (1, 45, 0.5) gives 88 bins."""
    start, stop, step = depth_bins
    count = round((stop - start) / step)
    if count < 1 or step <= 0:
        raise ValueError(
            f"model.depth_bins: (start, stop, step) = {depth_bins} gives no bins; need stop > start"
        )
    return start + step * torch.arange(count, device=device, dtype=torch.float32)


def feature_pixel_rays(
    intrinsics: torch.Tensor,
    img_aug: torch.Tensor,
    image_size: tuple[int, int],
    feature_size: tuple[int, int],
) -> torch.Tensor:
    """Camera-frame rays with unit z through the centres of feature cells.

    Feature cell (i, j) covers augmented pixels [j*s, (j+1)*s) x [i*s, (i+1)*s) (continuous pixel
    coordinates), so its centre is ((j + 0.5) * s, (i + 0.5) * s). The inverse image augmentation maps it
    back to the original image, whose intrinsics unproject it: ray = (A K)^-1 [u, v, 1].
    intrinsics, img_aug [..., 3, 3] -> rays [..., h, w, 3] (z = 1, so `depth * ray` is at z-depth `depth`).
    """
    (H, W), (h, w) = image_size, feature_size
    device = intrinsics.device
    v = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (H / h)
    u = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (W / w)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    uv1 = torch.stack([uu, vv, torch.ones_like(uu)], -1)  # [h, w, 3]
    # inv_ex: camera matrices are invertible, and inv's check of that would make the host wait for the GPU
    pixel2cam = torch.linalg.inv_ex((img_aug @ intrinsics).float()).inverse  # [..., 3, 3]
    rays = torch.einsum("...ij,hwj->...hwi", pixel2cam, uv1)
    return rays / rays[..., 2:3]


def frustum_points(
    intrinsics: torch.Tensor,
    img_aug: torch.Tensor,
    cam2ego: torch.Tensor,
    depths: torch.Tensor,
    image_size: tuple[int, int],
    feature_size: tuple[int, int],
) -> torch.Tensor:
    """Ego-frame points of every (depth bin, feature cell) of every camera.

    intrinsics, img_aug [..., 3, 3], cam2ego [..., 4, 4], depths [D] -> points [..., D, h, w, 3].
    """
    rays = feature_pixel_rays(intrinsics, img_aug, image_size, feature_size)  # [..., h, w, 3]
    rays_ego = torch.einsum("...ij,...hwj->...hwi", cam2ego[..., :3, :3].float(), rays)
    points = depths.view(-1, 1, 1, 1) * rays_ego.unsqueeze(-4)  # [..., D, h, w, 3]
    return points + cam2ego[..., None, None, None, :3, 3].float()


@torch.no_grad()
def pool_index(points: torch.Tensor, grid: VoxelGrid) -> torch.Tensor:
    """Row of every frustum point in the pooled voxels: points [S, N, D, h, w, 3] -> long [S, N, D, h, w].

    Sample s's voxel (i, j, k) is row s * X*Y*Z + (i * Y + j) * Z + k; points outside the grid go to the
    extra last row S * X*Y*Z, which `voxel_pool` drops. Every point keeps its slot, so the index has a fixed
    size for fixed shapes: no compaction, no host wait, and a fixed rig's index can be computed once.
    """
    S = points.shape[0]
    X, Y, Z = grid.shape
    voxel = grid.flat_index(grid.points_to_index(points))  # any number outside the grid: replaced below
    voxel = voxel + torch.arange(S, device=points.device).view(S, 1, 1, 1, 1) * (X * Y * Z)
    return torch.where(grid.contains(points), voxel, S * X * Y * Z)


def voxel_pool(
    depth_probs: torch.Tensor, context: torch.Tensor, index: torch.Tensor, grid_shape: tuple[int, int, int]
) -> torch.Tensor:
    """Lift: every frustum point adds depth_prob * context to its voxel (LSS splatting), z kept.

    depth_probs [S, N, D, h, w], context [S, N, C, h, w], index [S, N, D, h, w] from `pool_index` ->
    fp32 voxel features [S, C, X, Y, Z], laid out channels-last (NDHWC strides), as the 3D encoder runs.
    Plain differentiable ops: the backward is a gather of the voxel gradients, without atomics.
    """
    S, N, C, h, w = context.shape
    X, Y, Z = grid_shape
    if index.shape != depth_probs.shape:
        raise ValueError(
            f"voxel_pool: index {list(index.shape)} does not match depth {list(depth_probs.shape)}"
        )
    # [S, N, D, h, w, C]: one row per frustum point, accumulated in fp32 (or fp64) whatever the autocast
    dtype = torch.promote_types(torch.promote_types(depth_probs.dtype, context.dtype), torch.float32)
    features = depth_probs.to(dtype).unsqueeze(-1) * context.to(dtype).permute(0, 1, 3, 4, 2).unsqueeze(2)
    rows = features.new_zeros(S * X * Y * Z + 1, C).index_add(0, index.reshape(-1), features.reshape(-1, C))
    return rows[:-1].view(S, X, Y, Z, C).permute(0, 4, 1, 2, 3)
