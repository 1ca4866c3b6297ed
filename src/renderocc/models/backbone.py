"""Image backbones from timm, returning the stride-16 and stride-32 feature maps (NCHW)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class Backbone(nn.Module):
    """A timm `features_only` model reduced to its stride-16 and stride-32 stages.

    forward: images [B, 3, H, W] -> (c4 [B, C4, H/16, W/16], c5 [B, C5, H/32, W/32]), NCHW-shaped (their
    strides may be channels-last: the neck's convolutions take either).
    """

    def __init__(
        self, model: nn.Module, stages: tuple[int, int], channels: tuple[int, int], channels_last_output: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.stages = stages
        self.channels = channels
        self.channels_last_output = channels_last_output

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model(images)
        c4, c5 = features[self.stages[0]], features[self.stages[1]]
        if self.channels_last_output:  # Swin-style stages emit NHWC: a view, no copy
            c4, c5 = c4.permute(0, 3, 1, 2), c5.permute(0, 3, 1, 2)
        return c4, c5


def create_backbone(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | Path | None = None,
    img_size: tuple[int, int] | None = None,
) -> Backbone:
    """Build a timm backbone by name, picking the stages with reductions 16 and 32 from `feature_info`.

    pretrained: load timm's weights from the hub cache (offline: the cache must be warm).
    checkpoint_path: a local timm weight file (implies pretrained); a missing file raises FileNotFoundError.
    img_size: (H, W) of the input, passed to models whose constructor needs it (Swin, ViT).
    """
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"model.backbone: unknown timm model {name!r}; see timm.list_models()")
    kwargs: dict = {}
    if checkpoint_path is not None:
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            raise FileNotFoundError(
                f"backbone checkpoint {checkpoint_path} not found; pass an existing timm weight file"
            )
        pretrained = True
        kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint_path))

    def create(**extra) -> nn.Module:
        # Every stage up to stride 32 runs anyway, so build with all stages and select afterwards.
        return timm.create_model(name, features_only=True, pretrained=pretrained, **kwargs, **extra)

    try:
        if img_size is None:
            model = create()
        else:
            # Transformers (Swin, ViT) build attention masks / position tables for the input size;
            # convolutional nets take no img_size argument.
            try:
                model = create(img_size=tuple(img_size))
            except TypeError:
                model = create()
    except OSError as err:  # offline with a cold hub cache, or an unreadable file
        raise FileNotFoundError(
            f"model.backbone: pretrained weights for {name!r} are not available offline ({err}); "
            "pass a local checkpoint file or set model.pretrained=False"
        ) from err
    reductions = model.feature_info.reduction()
    missing = [r for r in (16, 32) if r not in reductions]
    if missing:
        raise ValueError(
            f"model.backbone: {name!r} has feature reductions {reductions}, no stage at stride {missing}; "
            "choose a hierarchical backbone (ResNet, ConvNeXt, Swin, ...)"
        )
    stages = (reductions.index(16), reductions.index(32))
    channels = tuple(model.feature_info.channels()[i] for i in stages)
    channels_last = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
    return Backbone(model, stages, channels, channels_last)
