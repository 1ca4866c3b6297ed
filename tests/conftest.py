"""Shared fixtures: one tiny synthetic nuScenes + Occ3D dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"scenes": 2, "frames": 3, "image_size": (90, 160), "seed": 0, "val_scenes": 1}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a 2-scene x 3-keyframe dataset at 90x160 (scene-0000 train, scene-0001 val), version
    v1.0-synthetic. Read-only: tests that modify data must copy it."""
    from renderocc.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "tiny", progress=False, **TINY)
