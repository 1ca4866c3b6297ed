"""The occupancy network: multi-camera, multi-frame images -> per-voxel density and semantic logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from renderocc.config import ModelConfig, Preset, get_preset
from renderocc.core.grid import VoxelGrid
from renderocc.data.augment import PIXEL_SCALE, PIXEL_SHIFT
from renderocc.models.backbone import create_backbone
from renderocc.models.encoder3d import Encoder3d
from renderocc.models.heads import VoxelHeads
from renderocc.models.neck import FPNNeck
from renderocc.models.temporal import TemporalFusion
from renderocc.models.view_transformer import ViewTransformer


class OccupancyNet(nn.Module):
    """BEVStereo4D-style occupancy network.

    images -> timm backbone (strides 16, 32) -> FPN neck -> camera-aware depth + context (+ stereo with the
    previous frame) -> LSS voxel pooling per frame -> temporal alignment + concatenation -> 3D ResNet/FPN
    -> per-voxel density and semantics.

    Built from a Preset (grid, image size and frame count taken from it) or from a ModelConfig plus those.
    """

    def __init__(
        self,
        config: Preset | ModelConfig,
        grid: VoxelGrid | None = None,
        image_size: tuple[int, int] | None = None,
        num_frames: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, Preset):
            cfg = config.model
            grid = grid or config.grid
            image_size = image_size or config.data.image_size
            num_frames = num_frames or 1 + config.data.prev_frames
        else:
            cfg = config
            if grid is None or image_size is None:
                raise ValueError(
                    "OccupancyNet: with a ModelConfig, pass grid and image_size too (or a Preset)"
                )
            num_frames = num_frames or 1
        if image_size[0] % 16 or image_size[1] % 16:
            raise ValueError(
                f"data.image_size {tuple(image_size)} must be multiples of 16 (the feature stride)"
            )
        self.cfg, self.grid, self.image_size, self.num_frames = cfg, grid, tuple(image_size), num_frames

        self.backbone = create_backbone(
            cfg.backbone, cfg.pretrained, cfg.backbone_checkpoint, self.image_size
        )
        if cfg.grad_checkpointing:
            self.backbone.model.set_grad_checkpointing(True)
        self.neck = FPNNeck(self.backbone.channels, cfg.neck_channels)
        self.view_transformer = ViewTransformer(
            cfg.neck_channels,
            cfg.depth_net_channels,
            cfg.voxel_channels,
            cfg.depth_bins,
            grid,
            self.image_size,
            stereo=cfg.stereo and num_frames > 1,
            stereo_channels=cfg.stereo_channels,
            prev_frame_grad=cfg.prev_frame_grad,
        )
        self.temporal = TemporalFusion(grid)
        self.encoder = Encoder3d(
            cfg.voxel_channels * num_frames, cfg.encoder_channels, cfg.encoder_layers, cfg.voxel_channels
        )
        self.heads = VoxelHeads(cfg.voxel_channels, cfg.head_hidden, cfg.num_classes, cfg.density_init)
        # uint8 images (the loaders' default) are normalised here, on the device: a quarter of the bytes to
        # pass from the loader's workers and to copy to the GPU
        self.register_buffer("pixel_scale", PIXEL_SCALE.float(), persistent=False)
        self.register_buffer("pixel_shift", PIXEL_SHIFT.float(), persistent=False)
        if cfg.channels_last:  # weights too: a convolution converts mismatched weights on every call
            for module in (self.backbone, self.neck, self.view_transformer):
                module.to(memory_format=torch.channels_last)
            self.encoder.to(memory_format=torch.channels_last_3d)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [S, 3, H, W] (ImageNet-normalised float, or uint8 0..255) -> neck features
        [S, neck_channels, H/16, W/16]."""
        if images.dtype == torch.uint8:
            images = images.float() * self.pixel_scale + self.pixel_shift
        return self.neck(*self.backbone(self._conv_layout(images)))

    def forward(
        self, batch: dict, history: dict[str, torch.Tensor] | None = None, return_history: bool = False
    ) -> dict[str, torch.Tensor]:
        """batch (see renderocc.data.batch) -> dict:

        density [B, X, Y, Z] fp32 >= 0, semantics [B, X, Y, Z, K] fp32 channel-last,
        depth_logits [B, N, D, h, w] (key frame, for `depth_loss`).

        Streaming over a scene's frames in order (see infer.Predictor): `history` is the previous frame's
        `history` output, whose key frame is this batch's history frame. Only the key frame's images are run
        then (batch['imgs'] may hold them alone), and the result is the same as from the history frame's
        images. return_history adds `history` for the next frame (view_transformer.HISTORY, [B, N, ...]).
        """
        if history is not None and self.num_frames != 2:
            raise ValueError(
                f"a history frame's cached features need a model with one history frame (data.prev_frames "
                f"= 1); this one takes {self.num_frames - 1}"
            )
        features = self.frame_features(batch["imgs"], 1 if history is not None else self.num_frames)
        volumes, depth_logits, key_history = self.view_transformer(features, batch, history)
        density, semantics = self.decode(volumes, batch["ego2keyego"])
        out = {"density": density.float(), "semantics": semantics.float(), "depth_logits": depth_logits}
        return out | {"history": key_history} if return_history else out

    def frame_features(self, imgs: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """imgs [B, T', N, 3, H, W] -> neck features [B, T, N, C, h, w] of the first T = `frames` (default:
        num_frames) frames."""
        B, T, N, _, H, W = imgs.shape
        frames = frames or self.num_frames
        if (H, W) != self.image_size or T < frames:
            raise ValueError(
                f"batch['imgs']: got {T} frames of {H}x{W}, the model needs {frames} frames of "
                f"{self.image_size[0]}x{self.image_size[1]} (the preset's data.image_size / data.prev_frames)"
            )
        T = frames
        key = self.image_features(imgs[:, 0].flatten(0, 1))
        features = [key.view(B, 1, N, *key.shape[1:])]
        if T > 1:  # history frames: no gradients unless asked (saves most of the backbone's memory)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.prev_frame_grad):
                history = self.image_features(imgs[:, 1:T].flatten(0, 2))
            features.append(history.view(B, T - 1, N, *history.shape[1:]))
        return torch.cat(features, 1)

    def decode(
        self, volumes: Sequence[torch.Tensor], ego2keyego: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame voxel volumes (T of [B, C, X, Y, Z]) -> temporal fusion -> 3D encoder -> heads: density
        [B, X, Y, Z], semantics [B, X, Y, Z, K] (in the compute dtype).

        ego2keyego [B, T', 4, 4] (T' >= num_frames) aligns the history volumes to the key frame.
        """
        fused = self.temporal(volumes, ego2keyego[:, : self.num_frames])
        return self.heads(self.encoder(self._conv_layout(fused)))

    def _conv_layout(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, ...] (4D or 5D) in the layout the convolutions after it run on (model.channels_last); the
        first convolution's output keeps it, so the layers after it need no conversion."""
        if self.cfg.channels_last:
            return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
        return x.contiguous()

    def depth_loss(self, outputs: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        """Unweighted LiDAR depth loss of the key frame's depth distribution (scale by loss.lidar_depth)."""
        return self.view_transformer.depth_loss(outputs["depth_logits"], batch["depth_map"])


def build_model(preset: Preset | str) -> OccupancyNet:
    """The network of a preset (by name or object)."""
    return OccupancyNet(get_preset(preset) if isinstance(preset, str) else preset)
