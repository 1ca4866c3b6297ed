"""Deployment: a trained model for one fixed camera rig, exported to ONNX or an AOTInductor package."""

from renderocc.deploy.fixed_rig import FixedRigNet, warp_to_key_trilinear
from renderocc.deploy.rig import Rig, read_rig

__all__ = ["FixedRigNet", "Rig", "read_rig", "warp_to_key_trilinear"]
