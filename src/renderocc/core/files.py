"""Files: atomic writes (a temporary file beside the target, renamed over it only once complete), whole-folder
replacement, and JSON reading with errors that name the file and the fix."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temporary file in path's folder, then rename it to `path`.

    An interrupted or failing write leaves no file at `path` (an older one stays whole) and no temporary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Rename the finished folder `tmp` to `final`; an older `final` is removed only once the new one is in
    place, so `final` is always either the old folder or the new one, whole."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def read_json(path: str | Path, what: str, fix: str) -> object:
    """The JSON in `path`; a missing file or invalid JSON raises a one-line error naming `what` the file is,
    the path, and `fix` (what to do about a missing file)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} not found; {fix}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); fix the file") from None
