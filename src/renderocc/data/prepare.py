"""`prepare`: index a nuScenes-format or folder-format dataset and build its 2D labels, resumably."""

from __future__ import annotations

from pathlib import Path

from renderocc.data.index import Index, build_index, default_index_dir, write_index
from renderocc.data.labels import build_labels

FORMATS = ("auto", "nuscenes", "folder")


def detect_format(dataroot: str | Path, version: str | None) -> str:
    """ "folder" when DATAROOT holds dataset.json, else "nuscenes" (which needs a version)."""
    from renderocc.data.folder import DATASET_FILE, is_folder_dataset

    if is_folder_dataset(dataroot):
        return "folder"
    if version is None:
        raise ValueError(
            f"{Path(dataroot) / DATASET_FILE} not found, so {dataroot} is read as nuScenes, which needs "
            "--version (e.g. v1.0-trainval); for the folder format add dataset.json (docs/data_format.md)"
        )
    return "nuscenes"


def prepare(
    dataroot: str | Path,
    version: str | None = None,
    out: str | Path | None = None,
    workers: int = 0,
    with_gts: bool = True,
    format: str = "auto",
    image_labels: int | None = None,
) -> Index:
    """Build the index and the 2D labels of every keyframe into `out` (default DATAROOT/renderocc/VERSION,
    VERSION = "folder" for the folder format). nuScenes: label files already there are kept, so a rerun
    resumes; the index files are written last, so an interrupted run never looks complete. Folder format:
    see renderocc.data.folder.prepare_folder (`image_labels`: labelled pixels kept per label image)."""
    if format not in FORMATS:
        raise ValueError(f"--format {format!r} is unknown; use one of {', '.join(FORMATS)}")
    if format == "auto":
        format = detect_format(dataroot, version)
    if format == "folder":
        from renderocc.data.folder_prepare import IMAGE_LABELS, prepare_folder

        return prepare_folder(dataroot, out, workers, with_gts, image_labels or IMAGE_LABELS)
    if version is None:
        raise ValueError("--format nuscenes needs --version (e.g. v1.0-trainval, v1.0-mini)")
    out = Path(out) if out is not None else default_index_dir(dataroot, version)
    index = build_index(dataroot, version, out, with_gts=with_gts)
    index.class_counts = build_labels(index, workers=workers)
    write_index(index)
    return index
