"""Two gloo processes on the CPU under torchrun: evaluation equal to one process's, and runs resumed on
another process count."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from train_fixtures import tiny_preset

import renderocc.train as train_module
from renderocc.checkpoint import latest_checkpoint, load_model, load_train_state
from renderocc.cli import main
from renderocc.config import preset_to_json
from renderocc.train import TrainOptions, train
from renderocc.train_utils.data import eval_loader
from renderocc.train_utils.resume import GlobalBatchError
from renderocc.train_utils.sampling import StepSampler


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 ARGS` (gloo on the CPU); ARGS a script, or `renderocc` arguments."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [] if args[0].endswith(".py") else ["-m", "renderocc.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600)


def options(prepared, out, **kwargs) -> TrainOptions:
    return TrainOptions(
        prepared.dataroot, out, index_dir=prepared.root, progress=False, device="cpu", **kwargs
    )


def data_args(prepared) -> list[str]:
    return ["--dataroot", str(prepared.dataroot), "--index", str(prepared.root), "--device", "cpu"]


BUFFERS_AFTER_A_DDP_STEP = """
import sys, torch
from renderocc.train_utils import distributed
dist = distributed.setup("cpu")
torch.manual_seed(0)
raw = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
model = torch.nn.parallel.DistributedDataParallel(raw)
model(torch.randn(8, 3, generator=torch.Generator().manual_seed(dist.rank))).sum().backward()
before = [b.clone() for b in raw.buffers()]
distributed.broadcast_buffers(raw)
torch.save({"before": before, "after": list(raw.buffers())}, f"{sys.argv[1]}-{dist.rank}.pt")
# as train() does: the DDP wrapper (its reducer holds the process group and gradient buckets) goes before
# the interpreter's teardown; freed during it, gloo's threads can take the GIL there and abort the process
del model
distributed.cleanup()
"""


def test_buffers_differ_after_a_ddp_step_until_broadcast(tmp_path):
    """Why validation broadcasts rank 0's (EMA) buffers first: each process's BatchNorm statistics follow
    its own batch, so without it the processes would score their frames with different models."""
    script, out = tmp_path / "buffers.py", tmp_path / "buffers"
    script.write_text(BUFFERS_AFTER_A_DDP_STEP)
    done = torchrun(str(script), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(f"{out}-{r}.pt") for r in range(2))
    assert not torch.equal(r0["before"][0], r1["before"][0])  # running means of different batches
    for a, b, own in zip(r0["after"], r1["after"], r0["before"]):
        assert torch.equal(a, b) and torch.equal(a, own)


def eval_both_ways(args: list[str], tmp_path) -> tuple[dict, dict, str]:
    """Metrics of `renderocc eval ARGS` on one process and on two, and the two-process run's stdout."""
    assert main([*args, "--json", str(tmp_path / "one.json")]) == 0
    done = torchrun(*args, "--json", str(tmp_path / "two.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    return one, two, done.stdout


@pytest.mark.slow
def test_eval_on_two_processes_scores_every_frame_once(prepared, tiny_run, tmp_path):
    frames = len(prepared.splits["val"])
    assert frames % 2 == 1  # an odd count: a padding sampler would score a frame twice
    # read out at the median density, so that about half the voxels are occupied and the IoUs depend on
    # every frame (the 2-step model's densities lie below the preset's threshold everywhere)
    model, preset = load_model(tiny_run)
    with torch.no_grad():
        density = model(next(iter(eval_loader(prepared, preset.data, "val", 1, 0))))["density"]
    args = ["eval", "--checkpoint", str(tiny_run), *data_args(prepared), "--num-workers", "0"]
    args += ["--threshold", f"{float(density.median()):.6g}"]
    # batches of 2 frames: the two processes take whole batches, as one process batches them
    one, two, stdout = eval_both_ways([*args, "--batch-size", "2"], tmp_path)
    assert one["frames"] == frames and one["miou"] > 0
    assert two == one  # mIoU, RayIoU, per class and per threshold: the same integer counts summed
    assert stdout.count("RayIoU") == 1  # rank 0 alone reports


def test_eval_of_predictions_on_two_processes(prepared, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for sample in prepared.splits["val"]:
        with np.load(prepared.gts_path(int(sample))) as gt:  # the truth moved 2 voxels along x
            np.savez(pred / f"{prepared.tokens[sample]}.npz", semantics=np.roll(gt["semantics"], 2, axis=0))
    args = ["eval", "--pred", str(pred), *data_args(prepared)]
    one, two, _ = eval_both_ways(args, tmp_path)
    assert one["frames"] == len(prepared.splits["val"]) and 0 < one["miou"] < 100
    assert two == one


def tokens_trained(monkeypatch) -> list[list[str]]:
    """Records the sample tokens of every training step that runs in this process."""
    seen, original = [], train_module.training_losses

    def recording(model, raw_model, batch, *args, **kwargs):
        seen.append(list(batch["sample_token"]))
        return original(model, raw_model, batch, *args, **kwargs)

    monkeypatch.setattr(train_module, "training_losses", recording)
    return seen


def stream_tokens(prepared, start: int, stop: int) -> list[str]:
    """Tokens at positions start..stop of the seed-0 training stream."""
    sampler = iter(StepSampler(len(prepared.splits["train"]), 1, seed=0))
    positions = [next(sampler)[0] for _ in range(stop)][start:]
    return [prepared.tokens[prepared.splits["train"][i]] for i in positions]


@pytest.mark.slow
def test_a_two_process_run_resumes_on_one(prepared, tmp_path, monkeypatch, capsys):
    preset = tiny_preset(iters=4)  # batch 1 per process
    preset_file = tmp_path / "tiny.json"
    preset_file.write_text(preset_to_json(preset))
    run = tmp_path / "run"
    common = ["--preset", str(preset_file), *data_args(prepared), "--out", str(run), "--no-progress"]
    done = torchrun("train", *common, "--max-iters", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_train_state(latest_checkpoint(run))
    assert (state["step"], state["world_size"], state["batch_size"], state["samples_seen"]) == (2, 2, 1, 4)

    # its validation on two processes scores every frame once, as one process's evaluation of its weights
    frames = len(prepared.splits["val"])
    assert re.search(rf"step 2: val mIoU [\d.]+ \(EMA weights, {frames} frames\)", done.stdout)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/miou"] for r in logged if "val/miou" in r]
    args = ["eval", "--checkpoint", str(run), *data_args(prepared), "--no-rayiou", "--num-workers", "0"]
    assert main([*args, "--json", str(tmp_path / "val.json")]) == 0
    assert val == [json.loads((tmp_path / "val.json").read_text())["miou"]]

    opts = options(prepared, run, resume=True)
    with pytest.raises(GlobalBatchError, match="--keep-global-batch to train with batch 2 per process"):
        train(preset, opts)
    changed = tmp_path / "changed"
    shutil.copytree(run, changed)

    seen = tokens_trained(monkeypatch)
    assert train(preset, dataclasses.replace(opts, keep_global_batch=True)).name == "step-00000004"
    assert seen == [stream_tokens(prepared, 4, 6), stream_tokens(prepared, 6, 8)]  # 2 + 2 as 1 x 2
    state = load_train_state(latest_checkpoint(run))
    assert (state["world_size"], state["batch_size"], state["samples_seen"]) == (1, 2, 8)

    seen.clear()
    capsys.readouterr()
    opts_changed = dataclasses.replace(opts, out=changed, change_global_batch=True)
    assert train(preset, opts_changed).name == "step-00000004"
    note = capsys.readouterr().out
    assert "global batch 1 (1 x 1) from step 2 on, 2 before" in note and "--max-iters 6" in note
    assert seen == [stream_tokens(prepared, 4, 5), stream_tokens(prepared, 5, 6)]  # the stream goes on
    state = load_train_state(latest_checkpoint(changed))
    assert (state["batch_size"], state["samples_seen"], state["schedule_batch"]) == (1, 6, 2)


@pytest.mark.slow
def test_a_one_process_run_resumes_on_two(prepared, tmp_path):
    preset = tiny_preset(iters=4).replace(train={"batch_size": 2})
    run = tmp_path / "run"
    train(preset, options(prepared, run, max_iters=2))
    preset_file = tmp_path / "tiny.json"
    preset_file.write_text(preset_to_json(preset))
    common = ["--preset", str(preset_file), *data_args(prepared), "--out", str(run), "--no-progress"]
    common.append("--resume")

    refused = torchrun("train", *common)
    assert refused.returncode != 0
    assert "--keep-global-batch to train with batch 1 per process" in refused.stderr
    assert latest_checkpoint(run).name == "step-00000002"  # nothing written

    done = torchrun("train", *common, "--keep-global-batch")
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_train_state(latest_checkpoint(run))
    assert (state["step"], state["world_size"], state["batch_size"], state["samples_seen"]) == (4, 2, 1, 8)
    assert len(state["rng"]) == 2
