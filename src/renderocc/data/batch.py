"""The batch layout that flows from the data loader to the model, the renderer and the losses.

Frames of reference. "ego" is the key frame's ego frame (x forward, y left, z up) after BEV augmentation
(flips), i.e. the frame the voxel grid lives in. Every quantity below that says "ego" is expressed in it;
the same BEV flips are applied to cameras, rays and voxel labels so they stay consistent.

Image tensors are already augmented (resize / crop / rotate / flip). `img_aug` is the 3x3 pixel-space
matrix applied to the original image, so the effective intrinsics are `img_aug @ intrinsics`. Pixel
coordinates are continuous: pixel (i, j) covers [i, i + 1) x [j, j + 1), its centre is (i + 0.5, j + 0.5).

Each frame's ego frame is its LiDAR-time ego pose (as Occ3D uses); cam2ego includes the ego motion
between the LiDAR and the camera timestamps. Previous frames repeat the scene's first keyframe at the
scene start. Rays come from the pixel labels (nearest LiDAR point per pixel) of the key frame and the
keyframes at DataConfig.ray_frame_offsets that exist in the scene, through original-image pixel centres;
rays longer than DataConfig.max_depth are never drawn, neighbour-frame rays of dynamic classes neither.

Keys (B samples, T = 1 + number of previous frames, index 0 = key frame, N = 6 cameras, R = max_rays):
  imgs          uint8 [B, T, N, 3, H, W]     0..255 pixels, which the model normalises on its device (float32
                                             ImageNet-normalised from a loader without uint8_images); [B, 1,
                                             ...] (the key frame alone) from a streaming loader, whose
                                             Predictor has the history frame's features
  intrinsics    float32 [B, T, N, 3, 3]      original camera intrinsics
  img_aug       float32 [B, T, N, 3, 3]      pixel-space image augmentation
  cam2ego       float32 [B, T, N, 4, 4]      camera -> ego frame of that same frame t (BEV-augmented)
  ego2keyego    float32 [B, T, 4, 4]         ego frame of frame t -> key ego frame (identity at t = 0)
  bev_aug       float32 [B, 4, 4]            BEV augmentation applied to the key ego frame (for reference)
  depth_map     float32 [B, N, H, W]         key-frame LiDAR z-depth at augmented pixels (nearest), 0 = none
                                             (depth_map and the rays: not from a with_rays=False loader)
  rays_o        float32 [B, R, 3]            ray origins in the key ego frame
  rays_d        float32 [B, R, 3]            unit ray directions in the key ego frame
  ray_depth     float32 [B, R]               metric distance along the unit ray to the LiDAR point
  ray_class     int64   [B, R]               Occ3D class 0..16 of the LiDAR point
  ray_frame     int64   [B, R]               keyframe offset the ray comes from (0 = key frame)
  ray_valid     bool    [B, R]               False for padding when a sample has fewer than R rays
                                             (rays in the order drawn: any first n are a weighted draw of n)
  voxel_semantics uint8 [B, X, Y, Z]         Occ3D labels 0..17 (only when the dataset has gts)
  mask_camera   bool    [B, X, Y, Z]
  mask_lidar    bool    [B, X, Y, Z]
  sample_token  list[str] (length B)
  scene_name    list[str] (length B)
  history_token list[str] (length B)         the token of frame 1, the history frame (its own at a scene's
                                             first keyframe); only when T > 1
"""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor | list[str]]

RAY_KEYS = ("rays_o", "rays_d", "ray_depth", "ray_class", "ray_frame", "ray_valid")  # [B, R, ...]
TENSOR_KEYS = ("imgs", "intrinsics", "img_aug", "cam2ego", "ego2keyego", "bev_aug", "depth_map", *RAY_KEYS)
OPTIONAL_KEYS = ("voxel_semantics", "mask_camera", "mask_lidar")


def batch_to(batch: Batch, device: torch.device | str, non_blocking: bool = True) -> Batch:
    """Move every tensor of a batch to `device` (pinned host memory copies asynchronously)."""
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}
