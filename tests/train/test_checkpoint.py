"""Checkpoints: atomic writes, keep-last-K, round trips of weights and state, refusal of foreign weights."""

import os

import pytest
import torch

from renderocc.checkpoint import (
    check_compatible,
    checkpoint_preset,
    latest_checkpoint,
    load_train_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from renderocc.config import get_preset
from renderocc.train_utils.rng import rng_state, set_rng_state

PRESET = get_preset("demo")


def tiny_state(seed: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), seed), "bn.num_batches_tracked": torch.tensor(int(seed))}


def save(run, step, keep=2):
    optimizer_state = {
        "state": {0: {"exp_avg": torch.ones(3)}},
        "param_groups": [{"lr": 1e-3, "params": [0]}],
    }
    train_state = {"optimizer": optimizer_state, "rng": [rng_state()], "ema_updates": step}
    return save_checkpoint(
        run, step, tiny_state(step), tiny_state(step + 0.5), train_state, PRESET, keep=keep
    )


def test_round_trip_and_keep_last_k(tmp_path):
    for step in (10, 20, 30):
        save(tmp_path, step)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000020", "step-00000030"]  # oldest deleted, no temporary left behind
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step-00000030" and resolve_checkpoint(tmp_path) == latest
    assert resolve_checkpoint(latest / "weights.safetensors") == latest
    assert torch.equal(load_weights(latest, "model")["w"], torch.full((2, 3), 30.0))
    assert torch.equal(load_weights(latest, "ema")["w"], torch.full((2, 3), 30.5))
    state = load_train_state(latest)  # weights_only=True inside
    assert state["step"] == 30 and state["ema_updates"] == 30
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.ones(3))
    assert checkpoint_preset(latest) == PRESET


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    torch.manual_seed(3)
    path = save(tmp_path, 1)
    expected = torch.rand(4)
    torch.manual_seed(99)
    set_rng_state(load_train_state(path)["rng"][0])
    assert torch.equal(torch.rand(4), expected)


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    save(tmp_path, 10)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)  # dies after the weights file, before the rename
    with pytest.raises(OSError):
        save(tmp_path, 20)
    assert latest_checkpoint(tmp_path).name == "step-00000010"
    assert torch.equal(load_weights(tmp_path, "model")["w"], torch.full((2, 3), 10.0))
    leftovers = [p for p in os.listdir(tmp_path / "checkpoints") if p.startswith(".")]
    assert all("tmp" in p for p in leftovers)  # never a directory named like a finished checkpoint


def test_same_step_rewritten_in_place(tmp_path):
    save(tmp_path, 10)
    save(tmp_path, 10)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000010"]


def test_foreign_weights_are_refused_with_keys_named():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = model.state_dict()
    state["0.weight"] = torch.zeros(5, 3)
    del state["1.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"1 missing \(1.bias\).*1 unexpected \(extra.weight\).*0.weight"):
        check_compatible(model, state, "checkpoint X")
    check_compatible(model, model.state_dict(), "checkpoint X")


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        resolve_checkpoint(tmp_path)
