"""Training helpers: the lr schedule, the EMA and the step-deterministic data order."""

import pytest
import torch

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
    resumed = items(StepSampler(10, batch_size=3, seed=1, start_step=5), 3 * 3)
    assert resumed == full[15:24]
    epoch0 = sorted(i for i, _ in full[:10])
    assert epoch0 == list(range(10))  # every sample once per epoch
    # two processes together see what one process with the doubled global batch would see
    r0 = items(StepSampler(10, 3, seed=1, rank=0, world_size=2), 6)
    r1 = items(StepSampler(10, 3, seed=1, rank=1, world_size=2), 6)
    assert r0[:3] + r1[:3] + r0[3:] + r1[3:] == full[:12]


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
