"""A procedural driving world whose sensors write real nuScenes v1.0 + nuScenes-lidarseg + Occ3D formats."""

from renderocc.synth.dataset import default_workers, generate
from renderocc.synth.rig import Camera, lidar_sensor2ego, nuscenes_rig

__all__ = ["Camera", "default_workers", "generate", "lidar_sensor2ego", "nuscenes_rig"]
