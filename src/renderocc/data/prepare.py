"""`prepare`: index a nuScenes-format dataset and build its 2D labels, resumably."""

from __future__ import annotations

from pathlib import Path

from renderocc.data.index import Index, build_index, default_index_dir, write_index
from renderocc.data.labels import build_labels


def prepare(
    dataroot: str | Path,
    version: str,
    out: str | Path | None = None,
    workers: int = 0,
    with_gts: bool = True,
) -> Index:
    """Build the index of `version` under `dataroot` and the 2D labels of every keyframe into `out`
    (default DATAROOT/renderocc/VERSION). Label files already there are kept, so a rerun resumes; the
    index files are written last, so an interrupted run never looks complete."""
    out = Path(out) if out is not None else default_index_dir(dataroot, version)
    index = build_index(dataroot, version, out, with_gts=with_gts)
    index.class_counts = build_labels(index, workers=workers)
    write_index(index)
    return index
