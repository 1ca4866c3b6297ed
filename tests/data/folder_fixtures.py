"""Helpers that copy a folder-format dataset and edit its JSON, for the folder-format tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path


def copy_dataset(src: Path, dst: Path) -> Path:
    """A writable copy of a folder-format dataset, without its prepared index."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("renderocc"))
    return dst


def frame_dirs(root: Path) -> list[Path]:
    """Frame folders of every scene, in scene order then time order."""
    out = []
    for scene in sorted((root / "scenes").iterdir()):
        frames = [
            json.loads((d / "frame.json").read_text()) | {"_dir": d} for d in scene.iterdir() if d.is_dir()
        ]
        out += [f["_dir"] for f in sorted(frames, key=lambda f: f["timestamp"])]
    return out


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
