"""A preset small enough to train a few steps on the CPU in seconds."""

from __future__ import annotations

from renderocc.config import Preset, get_preset
from renderocc.core.grid import VoxelGrid


def tiny_preset(iters: int = 4) -> Preset:
    """The demo preset shrunk (1.6 m voxels, 32x64 images, 256 rays, one frame, narrow layers), with every 2D
    loss on."""
    return get_preset("demo").replace(
        grid=VoxelGrid(voxel_size=1.6),
        data=dict(image_size=(32, 64), max_rays=256, prev_frames=0, ray_frame_offsets=(0,)),
        model=dict(
            neck_channels=16,
            depth_net_channels=16,
            voxel_channels=8,
            encoder_channels=(8, 8, 8),
            head_hidden=8,
            depth_bins=(1.0, 45.0, 4.0),
        ),
        render=dict(step_size=1.6),
        loss=dict(free_space=0.1, line_of_sight=0.1, surface=0.1),  # every 2D term runs
        train=dict(
            max_iters=iters, warmup_iters=2, checkpoint_every=2, val_every=iters, num_workers=0, batch_size=1
        ),
    )
