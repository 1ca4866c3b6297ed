"""timm backbones: stride-16/32 stages in NCHW, and clear errors for bad names and files."""

import pytest
import torch

from renderocc.models.backbone import create_backbone
from renderocc.models.neck import FPNNeck


@pytest.mark.parametrize(
    ("name", "channels"),
    [("resnet18", (256, 512)), ("convnext_atto", (160, 320))],
)
def test_backbone_returns_stride_16_and_32_nchw(name, channels):
    # Swin (NHWC stages, img_size) is covered by the swinb preset in test_model_occnet.py.
    backbone = create_backbone(name, img_size=(64, 176))
    c4, c5 = backbone(torch.randn(1, 3, 64, 176))
    assert backbone.channels == channels
    assert c4.shape == (1, channels[0], 4, 11) and c5.shape[:3] == (1, channels[1], 2)
    assert c5.shape[3] in (5, 6)  # 176 / 32 = 5.5: ResNet pads up, ConvNeXt's patchify rounds down
    assert FPNNeck(channels, 16)(c4, c5).shape == (1, 16, 4, 11)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_backbone("resnet18", checkpoint_path=tmp_path / "nope.safetensors")


def test_local_checkpoint_is_loaded(tmp_path):
    source = create_backbone("resnet18")
    path = tmp_path / "resnet18.pth"
    full = {k.replace("model.", "", 1): v for k, v in source.state_dict().items()}
    torch.save(full, path)
    loaded = create_backbone("resnet18", checkpoint_path=path)
    torch.testing.assert_close(loaded.model.conv1.weight, source.model.conv1.weight)


def test_unknown_or_flat_models_are_rejected():
    with pytest.raises(ValueError, match="unknown timm model"):
        create_backbone("resnet_does_not_exist")
    with pytest.raises(ValueError, match="no stage at stride"):
        create_backbone("vit_tiny_patch16_224", img_size=(64, 176))
