"""The 3D encoder: its FPN and the whole-factor trilinear upsampling."""

import pytest
import torch
import torch.nn.functional as F

from renderocc.models.encoder3d import Encoder3d, upsample_trilinear


@pytest.mark.parametrize("size", [(12, 8, 4), (24, 16, 8), (12, 12, 4), (18, 8, 3)])
def test_upsample_matches_pytorch_trilinear_and_its_gradient(size):
    x = torch.randn(2, 3, 6, 4, 2, dtype=torch.float64, requires_grad=True)  # fresh draw each run
    ours = upsample_trilinear(x, size)
    reference = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    grad = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_ref,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)


def test_fpn_projects_each_stage_as_the_concatenation_would():
    encoder = Encoder3d(8, (4, 6, 8), (1, 2, 1), 5).double().eval()
    x = torch.randn(2, 8, 16, 12, 8, dtype=torch.float64)
    features, h = [], x
    for stage in encoder.stages:
        h = stage(h)
        features.append(h)
    size = features[0].shape[-3:]
    pyramid = [features[0]] + [
        F.interpolate(f, size=size, mode="trilinear", align_corners=False) for f in features[1:]
    ]
    expected = encoder.out(encoder.fpn(torch.cat(pyramid, 1)))
    out = encoder(x)
    assert out.shape == (2, 5, 16, 12, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
