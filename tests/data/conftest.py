"""An index prepared from the shared synthetic `tiny_dataset` (tests/conftest.py), once per session."""

from __future__ import annotations

import pytest

from renderocc.data import Index, prepare


@pytest.fixture(scope="session")
def prepared(tiny_dataset, tmp_path_factory) -> Index:
    return prepare(tiny_dataset, "v1.0-synthetic", out=tmp_path_factory.mktemp("index"), workers=0)
