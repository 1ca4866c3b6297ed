"""Training helpers: the lr schedule, the EMA and the step-deterministic data order."""

import pytest
import torch
from train_fixtures import tiny_preset

from renderocc.train_utils.data import eval_loader
from renderocc.train_utils.ema import EMA
from renderocc.train_utils.sampling import SeededDataset, StepSampler
from renderocc.train_utils.schedule import lr_factor


def test_warmup_then_cosine_and_step():
    factors = [lr_factor(s, 10, 110) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # monotone decay after warm-up
    assert lr_factor(110, 10, 110) == pytest.approx(0.01)
    assert lr_factor(80, 10, 100, "step") == pytest.approx(0.1)
    assert lr_factor(95, 10, 100, "step") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="cosine, step, constant"):
        lr_factor(0, 1, 2, "linear")


def items(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_step_sampler_resumes_mid_epoch_and_shards_ranks():
    full = items(StepSampler(10, batch_size=3, seed=1), 3 * 8)
    resumed = items(StepSampler(10, batch_size=3, seed=1, start_sample=15), 3 * 3)
    assert resumed == full[15:24]
    epoch0 = sorted(i for i, _ in full[:10])
    assert epoch0 == list(range(10))  # every sample once per epoch
    # two processes together see what one process with the doubled global batch would see
    r0 = items(StepSampler(10, 3, seed=1, rank=0, world_size=2), 6)
    r1 = items(StepSampler(10, 3, seed=1, rank=1, world_size=2), 6)
    assert r0[:3] + r1[:3] + r0[3:] + r1[3:] == full[:12]


def test_step_sampler_continues_the_stream_on_another_split_of_the_global_batch():
    """A run of 2 processes x 2 samples resumed after 3 steps on 1 process x 4 (the global batch kept) or
    on 3 processes x 1 (changed): each step takes the stream's next global batch, augmented alike."""
    stream = items(StepSampler(7, batch_size=1, seed=3), 30)  # one process, batch 1: the stream itself
    two = [items(StepSampler(7, 2, seed=3, rank=r, world_size=2), 6) for r in range(2)]
    steps = [two[0][2 * s : 2 * s + 2] + two[1][2 * s : 2 * s + 2] for s in range(3)]
    assert sum(steps, []) == stream[:12]
    one = items(StepSampler(7, 4, seed=3, start_sample=12), 8)
    assert one == stream[12:20]
    three = [items(StepSampler(7, 1, seed=3, start_sample=12, rank=r, world_size=3), 2) for r in range(3)]
    assert [three[r][s] for s in range(2) for r in range(3)] == stream[12:18]


def test_eval_loader_gives_each_process_whole_batches_of_one_process(prepared):
    def batches(rank: int, world_size: int, batch_size: int = 2, max_samples: int | None = None):
        loader = eval_loader(
            prepared, tiny_preset().data, "val", batch_size, 0, rank, world_size, max_samples
        )
        return list(loader.batch_sampler)

    frames = len(prepared.splits["val"])
    one = batches(0, 1)
    assert sum(one, []) == list(range(frames)) and len(one) > 1
    assert [batches(0, 2), batches(1, 2)] == [one[0::2], one[1::2]]  # no frame padded in or left out
    assert batches(2, 3, batch_size=1, max_samples=2) == []  # more processes than batches
    assert sum((batches(r, 2, batch_size=1) for r in range(2)), []) == [[0], [2], [1]]


class RandomDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index, float(torch.rand(()))


def test_seeded_dataset_is_repeatable_and_leaves_caller_rng_alone():
    ds = SeededDataset(RandomDataset())
    torch.manual_seed(0)
    a = ds[(2, 123)]
    after = torch.rand(())
    torch.manual_seed(0)
    assert ds[(2, 123)] == a and ds[(2, 124)] != a
    assert torch.rand(()) == after


def test_ema_tracks_weights_and_swaps_in_and_out():
    model = torch.nn.Linear(2, 1)
    start = model.weight.detach().clone()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    decay = 2 / 11  # the ramp min(decay, (1 + n) / (10 + n)) at n = 1
    assert torch.allclose(ema.shadow["weight"], decay * start + (1 - decay) * 1.0)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.ones(1, 2), atol=1e-6)
    raw = model.weight.detach().clone()
    with ema.applied_to(model):
        assert torch.equal(model.weight, ema.shadow["weight"])
    assert torch.equal(model.weight, raw)
