"""Data: the nuScenes / Occ3D sample index, 2D labels, augmentation, rays and the torch Dataset."""

from renderocc.data.batch import OPTIONAL_KEYS, TENSOR_KEYS, Batch, batch_to
from renderocc.data.dataset import OccDataset, collate
from renderocc.data.index import CAMERAS, Index, default_index_dir, load_index
from renderocc.data.prepare import prepare

__all__ = [
    "CAMERAS",
    "OPTIONAL_KEYS",
    "TENSOR_KEYS",
    "Batch",
    "Index",
    "OccDataset",
    "batch_to",
    "collate",
    "default_index_dir",
    "load_index",
    "prepare",
]
