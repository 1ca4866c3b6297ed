"""An OccupancyNet for one fixed rig: calibration and voxel-pooling plan baked in, plain exportable ops.

Inputs (batch 1; T = 1 + the preset's previous frames, key frame first; N = the rig's cameras, in its order):
  imgs        float32 [1, T, N, 3, H, W]  each camera's image resized and cropped with the rig's img_aug to
                                          the preset's image size, ImageNet-normalised (as the data loader)
  ego2keyego  float32 [1, T, 4, 4]        frame t's ego pose in the key ego frame (identity at t = 0); only
                                          when T > 1: the ego motion that the stereo and the temporal
                                          alignment need
Outputs:
  labels      uint8 [1, X, Y, Z]          Occ3D classes on the preset's grid, 17 = free (read-out included)
  density     float32 [1, X, Y, Z]        (with_logits only) the density before the read-out
  semantics   float32 [1, X, Y, Z, K]     (with_logits only) the semantic logits

The same network as OccupancyNet.forward, composed from its submodules, with three changes of form (not of
function) that make it exportable and faster: the camera parameters, frustum and the pooled voxel of every
frustum point are computed once from the rig; points outside the grid are dropped at export time instead of
at every frame; and the history volume is warped by eight gathers with trilinear weights instead of a 5D
grid_sample (which TensorRT lacks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import invert_pose
from renderocc.models.heads import occupancy_readout
from renderocc.models.occnet import OccupancyNet
from renderocc.models.stereo import plane_sweep_grid
from renderocc.models.view_transformer import camera_parameters
from renderocc.models.voxel_pool import feature_pixel_rays, frustum_points, pool_index


def warp_to_key_trilinear(
    volume: torch.Tensor, ego2keyego: torch.Tensor, grid: VoxelGrid, centres: torch.Tensor | None = None
) -> torch.Tensor:
    """`models.temporal.warp_to_key` (trilinear, zero outside) as gathers and weights: no 5D grid_sample.

    volume [1, C, X, Y, Z] in frame t's ego grid, ego2keyego [1, 4, 4] -> [1, C, X, Y, Z] in the key grid;
    centres: the key grid's voxel centres [X*Y*Z, 3] (computed when None). With align_corners=False a key
    voxel centre p lands at continuous voxel index (p - lower) / voxel - 0.5 of frame t's grid; each of its
    8 neighbours adds its value times its trilinear weight, neighbours outside the grid add zero (a zero
    row appended to the table).
    """
    _, C, X, Y, Z = volume.shape
    if centres is None:
        centres = grid.voxel_centers(volume.device).view(-1, 3)
    pose = ego2keyego[0].float()
    points = (centres - pose[:3, 3]) @ pose[:3, :3]  # key ego -> frame t ego: R^T (p - t), as row vectors
    axes = []  # per axis: (index, weight, inside) of the lower and the upper neighbour
    for a, n in enumerate((X, Y, Z)):
        position = (points[:, a] - grid.lower[a]) / grid.voxel_size - 0.5  # Python scalars: no constants
        lower = torch.floor(position)
        frac = position - lower
        lower = lower.long()
        upper = lower + 1
        axes.append(
            ((lower, 1 - frac, (lower >= 0) & (lower < n)), (upper, frac, (upper >= 0) & (upper < n)))
        )
    table = torch.cat([volume[0].permute(1, 2, 3, 0).reshape(-1, C), volume.new_zeros(1, C)])
    out = None
    for ix, wx, vx in axes[0]:
        for iy, wy, vy in axes[1]:
            for iz, wz, vz in axes[2]:
                row = torch.where(vx & vy & vz, (ix * Y + iy) * Z + iz, X * Y * Z)
                term = table[row] * (wx * wy * wz).to(volume.dtype)[:, None]
                out = term if out is None else out + term
    return out.view(1, X, Y, Z, C).permute(0, 4, 1, 2, 3)


class FixedRigNet(nn.Module):
    """OccupancyNet + one rig's calibration + the read-out: images (+ ego motion) -> Occ3D labels.

    intrinsics [N, 3, 3], img_aug [N, 3, 3] (inference resize / crop), cam2ego [N, 4, 4]: the rig, the same
    for every frame. threshold: the read-out (one number or one per z layer). amp_dtype: run the network
    under autocast to this dtype (as `renderocc infer` does on CUDA), None for float32.
    """

    def __init__(
        self,
        model: OccupancyNet,
        intrinsics: torch.Tensor,
        img_aug: torch.Tensor,
        cam2ego: torch.Tensor,
        threshold: float | Sequence[float],
        with_logits: bool = False,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.encoder, self.heads = (
            model.backbone,
            model.neck,
            model.encoder,
            model.heads,
        )
        vt = model.view_transformer
        self.depth_net, self.stereo = vt.depth_net, vt.stereo
        self.grid, self.num_frames, self.image_size = model.grid, model.num_frames, model.image_size
        self.with_logits, self.amp_dtype = with_logits, amp_dtype
        self.num_cameras = len(intrinsics)
        device = vt.depths.device
        K, A, E = (m.to(device=device, dtype=torch.float32) for m in (intrinsics, img_aug, cam2ego))
        H, W = self.image_size
        self.feature_size = (H // 16, W // 16)
        self.register_buffer("camera", camera_parameters(K, A, E))  # [N, 22]

        # The pooling plan: frustum point p (flat over [N, D, h, w]) adds depth_prob[p] * context[n, :, i, j]
        # to voxel pool_voxels. Points outside the grid are left out here, once; the rest are sorted by voxel
        # so that the scatter's atomics on the GPU hit neighbouring rows.
        points = frustum_points(K, A, E, vt.depths, self.image_size, self.feature_size)  # [N, D, h, w, 3]
        index = pool_index(points.unsqueeze(0), self.grid).flatten()
        X, Y, Z = self.grid.shape
        kept = torch.nonzero(index < X * Y * Z).squeeze(1)  # row X*Y*Z: outside the grid
        kept = kept[torch.sort(index[kept], stable=True).indices]
        D, (h, w) = len(vt.depths), self.feature_size
        self.register_buffer("pool_points", kept)
        self.register_buffer("pool_voxels", index[kept])
        self.register_buffer("pool_context", (kept // (D * h * w)) * (h * w) + kept % (h * w))

        if self.stereo is not None and self.num_frames > 1:
            self.register_buffer("depths", vt.depths.clone())
            self.register_buffer("rays", feature_pixel_rays(K, A, self.image_size, self.feature_size))
            self.register_buffer("pixel_proj", A @ K)
            self.register_buffer("cam2ego", E)
            self.register_buffer("ego2cam", invert_pose(E))
        self.register_buffer("centres", self.grid.voxel_centers(device).view(-1, 3))
        if isinstance(threshold, int | float):
            self.threshold: float | torch.Tensor = float(threshold)
        else:
            self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32, device=device))

    def pool(self, depth_probs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """LSS splatting with the rig's plan: depth_probs [N, D, h, w], context [N, C, h, w] -> fp32
        [1, C, X, Y, Z] (the same sums as `voxel_pool`, in another order)."""
        C = context.shape[1]
        X, Y, Z = self.grid.shape
        probs = depth_probs.float().reshape(-1)[self.pool_points]  # [P]
        rows = context.float().permute(0, 2, 3, 1).reshape(-1, C)[self.pool_context]  # [P, C]
        voxels = rows.new_zeros(X * Y * Z, C).index_add(0, self.pool_voxels, rows * probs[:, None])
        return voxels.view(1, X, Y, Z, C).permute(0, 4, 1, 2, 3)

    def sweep_grid(self, ego2keyego: torch.Tensor, t: int) -> torch.Tensor:
        """Frame t's depth hypotheses in frame t + 1's images, as grid_sample coordinates [N, D, h, w, 2]."""
        # camera t -> ego t -> key ego -> ego t+1 -> camera t+1, the rig's cameras in both frames
        motion = invert_pose(ego2keyego[0, t + 1]) @ ego2keyego[0, t]
        cam2prevcam = self.ego2cam @ motion @ self.cam2ego
        return plane_sweep_grid(self.rays, self.depths, cam2prevcam, self.pixel_proj, self.image_size)

    def forward(self, imgs: torch.Tensor, ego2keyego: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """imgs [1, T, N, 3, H, W], ego2keyego [1, T, 4, 4] (T > 1) -> labels (, density, semantics)."""
        T, N = self.num_frames, self.num_cameras
        if tuple(imgs.shape) != (1, T, N, 3, *self.image_size):
            raise ValueError(
                f"imgs: got shape {list(imgs.shape)}, this model takes [1, {T}, {N}, 3, "
                f"{self.image_size[0]}, {self.image_size[1]}] (batch 1, key frame first)"
            )
        if T > 1 and (ego2keyego is None or tuple(ego2keyego.shape) != (1, T, 4, 4)):
            raise ValueError(f"ego2keyego: this model takes [1, {T}, 4, 4] (frame t's ego -> key ego)")
        amp = (
            torch.autocast(imgs.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with amp:
            features = self.neck(*self.backbone(imgs.flatten(0, 2)))  # all frames in one pass
            features = features.view(T, N, *features.shape[1:])
            volumes = []
            for t in range(T):
                logits, context = self.depth_net(features[t], self.camera)
                if self.stereo is not None and t + 1 < T:
                    grid = self.sweep_grid(ego2keyego.float(), t)
                    logits = self.stereo(logits, features[t], features[t + 1], grid)
                volume = self.pool(logits.float().softmax(1), context)
                if t > 0:
                    volume = warp_to_key_trilinear(volume, ego2keyego[:, t], self.grid, self.centres)
                volumes.append(volume.contiguous(memory_format=torch.channels_last_3d))
            density, semantics = self.heads(self.encoder(torch.cat(volumes, 1)))
        density, semantics = density.float(), semantics.float()
        labels = occupancy_readout(density, semantics, self.threshold)
        return (labels, density, semantics) if self.with_logits else (labels,)
