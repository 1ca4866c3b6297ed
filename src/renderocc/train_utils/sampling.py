"""A data order that depends only on (seed, step): resumable mid-epoch and identical on any worker count.

The data is one endless stream of shuffled epochs (a fresh permutation per epoch, drawn from seed + epoch).
`StepSampler` gives step s of a run, process `rank` and slot j of its batch the stream's position
p = start_sample + (s * world_size + rank) * batch_size + j: each step takes the next global batch
(batch_size x world_size) of the stream, and the processes split it in rank order. Each item also
carries its own seed, drawn from (seed, p), and `SeededDataset` seeds the global generators with it
around `dataset[index]`, so random augmentation and ray sampling of a sample do not depend on which
worker loads it or on what ran before a resume.

Hence a step's global batch (which samples, augmented how) depends on (seed, start_sample, global batch)
and not on how the global batch is split: 2 processes x 2 samples take the same samples as 1 process x 4.
A resume starts at the number of samples taken so far, so even a changed global batch continues the
stream where it stopped, without repeating or skipping a sample.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def _item_seed(seed: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


class StepSampler(Sampler[tuple[int, int]]):
    """Endless (index, item_seed) pairs for this process, from position `start_sample` of the stream (the
    number of samples that earlier steps took)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        start_sample: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("StepSampler: the training split has no samples; check the dataset's splits")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.start_sample, self.rank, self.world_size = seed, start_sample, rank, world_size
        self.shuffle = shuffle

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first, epoch, perm = self.start_sample + self.rank * self.batch_size, -1, None
        while True:
            for position in range(first, first + self.batch_size):
                if position // self.num_samples != epoch:
                    epoch = position // self.num_samples
                    perm = self._permutation(epoch)
                yield int(perm[position % self.num_samples]), _item_seed(self.seed, position)
            first += self.batch_size * self.world_size


class SeededDataset(Dataset):
    """Wraps a dataset so that item (index, seed) is loaded with the global generators seeded by `seed`.

    The caller's generator states are restored afterwards, so loading in the main process
    (num_workers=0) leaves the training step's random stream untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002 (the legacy global generator is the state we manage)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is the state we manage)
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])  # noqa: NPY002 (the legacy global generator is the state we manage)
            torch.set_rng_state(saved[2])
