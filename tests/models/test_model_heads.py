"""Per-voxel heads and the occupancy read-out."""

import pytest
import torch

from renderocc.core.classes import FREE
from renderocc.models.heads import VoxelHeads, occupancy_readout


def test_readout_thresholds_density_and_takes_argmax():
    density = torch.tensor([[[[8.4, 8.5, 8.6, 100.0]]]])  # [1, 1, 1, 4]
    semantics = torch.zeros(1, 1, 1, 4, 17)
    semantics[..., 0, 3] = 1.0
    semantics[..., 2, 11] = 5.0
    semantics[..., 3, 16] = 2.0
    labels = occupancy_readout(density, semantics)
    assert labels.dtype == torch.uint8
    assert labels.flatten().tolist() == [FREE, FREE, 11, 16]  # 8.5 itself is free: strictly greater
    assert occupancy_readout(density, semantics, threshold=0.0).flatten().tolist() == [3, 0, 11, 16]
    # one threshold per z layer (the last axis)
    per_layer = occupancy_readout(density, semantics, threshold=(8.0, 9.0, 8.0, 200.0))
    assert per_layer.flatten().tolist() == [3, FREE, 11, FREE]


def test_preset_readout_is_one_threshold_or_one_per_layer():
    from renderocc.config import get_preset

    preset = get_preset("demo")  # 4 z layers
    assert preset.readout_threshold() == 8.5
    layered = preset.with_readout([2.0, 9.0, 10.0, 12.0])
    assert layered.readout_threshold() == (2.0, 9.0, 10.0, 12.0)
    assert layered.with_readout([11.0]).readout_threshold() == 11.0  # one value replaces the layers
    with pytest.raises(ValueError, match="readout_thresholds has 3 values but the grid has 4 z layers"):
        preset.with_readout([2.0, 9.0, 10.0])


def test_heads_are_channel_last_and_density_nonnegative():
    heads = VoxelHeads(8, 16, 17)
    features = torch.randn(2, 8, 5, 4, 3) * 10
    density, semantics = heads(features)
    assert density.shape == (2, 5, 4, 3) and semantics.shape == (2, 5, 4, 3, 17)
    assert semantics.is_contiguous() and (density >= 0).all()
    # voxel (1, 2, 3, 1) depends only on its own feature vector
    single_density, single_semantics = heads(features[1:2, :, 2:3, 3:4, 1:2])
    torch.testing.assert_close(single_semantics[0, 0, 0, 0], semantics[1, 2, 3, 1])
    torch.testing.assert_close(single_density[0, 0, 0, 0], density[1, 2, 3, 1])


def test_density_init_sets_the_starting_density_and_rejects_nonpositive():
    torch.manual_seed(0)
    heads = VoxelHeads(8, 16, 17, density_init=10.0)
    with torch.no_grad():
        heads.density[2].weight.zero_()  # leave only the bias: the head's output is then the init exactly
        density, _ = heads(torch.randn(1, 8, 3, 3, 2))
    torch.testing.assert_close(density, torch.full_like(density, 10.0))
    with pytest.raises(ValueError, match="model.density_init must be > 0"):
        VoxelHeads(8, 16, 17, density_init=0.0)
