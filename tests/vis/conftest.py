"""Fixtures of the vis tests: a street scene grid and a tiny nuScenes-layout dataroot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vis_scenes import street_scene, write_dataroot


@pytest.fixture
def scene() -> np.ndarray:
    return street_scene()


@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    return write_dataroot(tmp_path / "data")
