"""Geometry and taxonomy shared by every stage: the voxel grid, classes, rigid transforms, cameras."""

from renderocc.core.camera import CAMERAS, pixel_rays, project, unproject
from renderocc.core.classes import (
    DYNAMIC_CLASSES,
    FREE,
    LIDARSEG_CLASSES,
    LIDARSEG_TO_OCC3D,
    NUM_SEMANTIC,
    OCC3D_CLASSES,
    OCC3D_COLORS,
)
from renderocc.core.grid import VoxelGrid
from renderocc.core.transforms import (
    invert_pose,
    make_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
    transform_points,
)

__all__ = [
    "CAMERAS",
    "DYNAMIC_CLASSES",
    "FREE",
    "LIDARSEG_CLASSES",
    "LIDARSEG_TO_OCC3D",
    "NUM_SEMANTIC",
    "OCC3D_CLASSES",
    "OCC3D_COLORS",
    "VoxelGrid",
    "invert_pose",
    "make_pose",
    "matrix_to_quaternion",
    "pixel_rays",
    "project",
    "quaternion_to_matrix",
    "transform_points",
    "unproject",
]
