"""The occupancy network (images -> voxel density and semantics) and its parts."""

from renderocc.models.backbone import create_backbone
from renderocc.models.heads import occupancy_readout
from renderocc.models.occnet import OccupancyNet, build_model

__all__ = ["OccupancyNet", "build_model", "create_backbone", "occupancy_readout"]
