"""A prepared copy of the shared tiny dataset (tests/conftest.py), once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prepared(tiny_dataset, tmp_path_factory):
    from renderocc.data import prepare

    return prepare(tiny_dataset, "v1.0-synthetic", out=tmp_path_factory.mktemp("train_index"), workers=0)


@pytest.fixture(scope="session")
def tiny_run(prepared, tmp_path_factory):
    """Checkpoint of the tiny preset after 2 CPU steps."""
    from train_fixtures import tiny_preset

    from renderocc.train import TrainOptions, train

    out = tmp_path_factory.mktemp("tiny_run")
    opts = TrainOptions(prepared.dataroot, out, index_dir=prepared.root, progress=False, device="cpu")
    return train(tiny_preset(iters=2), opts)
