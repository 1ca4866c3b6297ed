"""Lifting to voxels: ego-frame frustum points, a sorted pooling plan per camera geometry, and the pool."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class VoxelPoolPlan:
    """Which frustum point lands in which voxel, for one camera geometry; points sorted by voxel.

    point_index [P]: flat index of the point in depth probabilities [S, N, D, h, w];
    pixel_index [P]: flat index of its feature cell in context features [S, N, h, w];
    voxel_index [P]: flat index of its voxel in [S, X, Y, Z] (non-decreasing);
    num_samples S, grid shape (X, Y, Z).
    """

    point_index: torch.Tensor
    pixel_index: torch.Tensor
    voxel_index: torch.Tensor
    num_samples: int
    grid_shape: tuple[int, int, int]


@torch.no_grad()
def plan_voxel_pool(points: torch.Tensor, grid: VoxelGrid) -> VoxelPoolPlan:
    """Voxel indices of frustum points [S, N, D, h, w, 3], out-of-grid points dropped, sorted by voxel."""
    S, N, D, h, w, _ = points.shape
    X, Y, Z = grid.shape
    index = grid.points_to_index(points)  # [S, N, D, h, w, 3]
    inside = grid.contains(points)
    voxel = ((index[..., 0] * Y + index[..., 1]) * Z + index[..., 2]).clamp_(0, X * Y * Z - 1)
    voxel = voxel + torch.arange(S, device=points.device).view(S, 1, 1, 1, 1) * (X * Y * Z)
    point_index = torch.nonzero(inside.flatten(), as_tuple=True)[0]
    voxel_index, order = torch.sort(voxel.flatten()[point_index])
    point_index = point_index[order]
    # point (s, n, d, i, j) -> pixel (s, n, i, j): drop the depth digit of the flat index.
    pixels = h * w
    pixel_index = (point_index // (D * pixels)) * pixels + point_index % pixels
    return VoxelPoolPlan(point_index, pixel_index, voxel_index, S, (X, Y, Z))


class _VoxelPoolFunction(torch.autograd.Function):
    """Segment sums of depth-weighted context features into voxels, without storing the [P, C] products."""

    @staticmethod
    def forward(ctx, depth, context, point_index, pixel_index, voxel_index, num_voxels):
        # depth [M], context [K, C] -> voxels [num_voxels, C]; fp32 accumulation whatever the autocast.
        features = depth[point_index].unsqueeze(1) * context[pixel_index]
        out = context.new_zeros(num_voxels, context.shape[1]).index_add_(0, voxel_index, features)
        ctx.save_for_backward(depth, context, point_index, pixel_index, voxel_index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        depth, context, point_index, pixel_index, voxel_index = ctx.saved_tensors
        grad_points = grad_out[voxel_index]  # [P, C]
        grad_depth = grad_context = None
        if ctx.needs_input_grad[0]:
            grad_depth = torch.zeros_like(depth)
            grad_depth[point_index] = (grad_points * context[pixel_index]).sum(1)
        if ctx.needs_input_grad[1]:
            weighted = grad_points * depth[point_index].unsqueeze(1)
            grad_context = torch.zeros_like(context).index_add_(0, pixel_index, weighted)
        return grad_depth, grad_context, None, None, None, None


@torch.compiler.disable  # data-dependent point count; gathers and scatters gain nothing from fusion
def voxel_pool(depth_probs: torch.Tensor, context: torch.Tensor, plan: VoxelPoolPlan) -> torch.Tensor:
    """Lift: every frustum point adds depth_prob * context to its voxel (LSS splatting), z kept.

    depth_probs [S, N, D, h, w], context [S, N, C, h, w] -> fp32 voxel features [S, C, X, Y, Z].
    """
    S, N, C, h, w = context.shape
    X, Y, Z = plan.grid_shape
    if S != plan.num_samples:
        raise ValueError(f"voxel_pool: {S} samples but the plan was built for {plan.num_samples}")
    depth_flat = depth_probs.float().reshape(-1)
    context_flat = context.float().permute(0, 1, 3, 4, 2).reshape(-1, C)  # one row per feature cell
    pooled = _VoxelPoolFunction.apply(
        depth_flat, context_flat, plan.point_index, plan.pixel_index, plan.voxel_index, S * X * Y * Z
    )
    # [S*X*Y*Z, C] -> [S, C, X, Y, Z]; the copy makes it NCDHW-contiguous for Conv3d.
    return pooled.view(S, X, Y, Z, C).permute(0, 4, 1, 2, 3).contiguous()


class VoxelPoolPlanner:
    """Builds plans and reuses the last one while the camera geometry (and sizes) stay the same."""

    def __init__(self, grid: VoxelGrid) -> None:
        self.grid = grid
        self._key: tuple | None = None
        self._geometry: tuple[torch.Tensor, ...] | None = None
        self._plan: VoxelPoolPlan | None = None

    def reset(self) -> None:
        """Forget the cached plan (e.g. to time the training case, where augmentation changes geometry)."""
        self._key = self._geometry = self._plan = None

    @torch.compiler.disable
    @torch.no_grad()
    def __call__(
        self,
        intrinsics: torch.Tensor,
        img_aug: torch.Tensor,
        cam2ego: torch.Tensor,
        depths: torch.Tensor,
        image_size: tuple[int, int],
        feature_size: tuple[int, int],
    ) -> VoxelPoolPlan:
        """Plan for cameras intrinsics, img_aug [S, N, 3, 3], cam2ego [S, N, 4, 4] and depth bins [D]."""
        key = (
            tuple(intrinsics.shape),
            len(depths),
            tuple(image_size),
            tuple(feature_size),
            intrinsics.device,
        )
        geometry = (intrinsics, img_aug, cam2ego, depths)
        if (
            self._plan is not None
            and key == self._key
            and all(torch.equal(a, b) for a, b in zip(geometry, self._geometry))
        ):
            return self._plan
        points = frustum_points(intrinsics, img_aug, cam2ego, depths, image_size, feature_size)
        self._plan = plan_voxel_pool(points, self.grid)
        self._key, self._geometry = key, tuple(g.clone() for g in geometry)
        return self._plan
