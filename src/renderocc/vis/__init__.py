"""Seeing the occupancy: software-rendered PNG panels, videos, and a self-contained HTML 3D viewer."""

from renderocc.vis.panel import render_dataset_frames, render_frame
from renderocc.vis.view import build_viewer_html, write_viewer
from renderocc.vis.voxel_render import bev_image, cast_rays, chase_camera, look_at_camera, render_voxels

__all__ = [
    "bev_image",
    "build_viewer_html",
    "cast_rays",
    "chase_camera",
    "look_at_camera",
    "render_dataset_frames",
    "render_frame",
    "render_voxels",
    "write_viewer",
]
