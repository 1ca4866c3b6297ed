"""Opening a prepared dataset for training / evaluation: index lookup with helpful errors, and loaders."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from renderocc.config import DataConfig
from renderocc.data.dataset import OccDataset, collate
from renderocc.data.index import INDEX_FILE, Index, load_index
from renderocc.train_utils.sampling import SeededDataset, StepSampler


def prepared_versions(dataroot: Path) -> list[str]:
    """nuScenes versions of `dataroot` that `renderocc prepare` has indexed (DATAROOT/renderocc/VERSION)."""
    root = dataroot / "renderocc"
    return sorted(p.name for p in root.iterdir() if (p / INDEX_FILE).is_file()) if root.is_dir() else []


def open_index(
    dataroot: str | Path, version: str | None = None, index_dir: str | Path | None = None
) -> Index:
    """The prepared index of a dataset; `version` may be left out when only one version is prepared."""
    dataroot = Path(dataroot)
    if not dataroot.is_dir():
        raise FileNotFoundError(
            f"--dataroot {dataroot} does not exist; pass a nuScenes-format folder (make one with "
            f"`renderocc synth --out {dataroot}` or let `renderocc demo` build the demo set)"
        )
    if index_dir is not None:
        return load_index(index_dir)
    versions = prepared_versions(dataroot)
    if version is None:
        if len(versions) != 1:
            found = f"choose one with --version: {', '.join(versions)}" if versions else "none is prepared"
            raise FileNotFoundError(
                f"no single prepared dataset index under {dataroot / 'renderocc'} ({found}); "
                f"run `renderocc prepare --dataroot {dataroot} --version VERSION` first"
            )
        version = versions[0]
    elif version not in versions:
        valid = ", ".join(versions) or "none"
        raise FileNotFoundError(
            f"--version {version} is not prepared under {dataroot / 'renderocc'} (prepared: {valid}); "
            f"run `renderocc prepare --dataroot {dataroot} --version {version}`"
        )
    return load_index(dataroot / "renderocc" / version)


def train_loader(
    index: Index,
    cfg: DataConfig,
    batch_size: int,
    num_workers: int,
    seed: int,
    start_sample: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    with_gts: bool | None = None,
) -> DataLoader:
    """Endless loader of augmented training batches, from position `start_sample` of the data stream
    (the samples that earlier steps took; see `sampling`): a batch depends only on (seed, step).
    with_gts: load the Occ3D labels (default: when the index has them); 2D-only training needs none."""
    dataset = OccDataset(index, cfg, "train", train=True, with_gts=with_gts)
    sampler = StepSampler(len(dataset), batch_size, seed, start_sample, rank, world_size)
    return DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # worker seeds must not draw from the global RNG
    )


def eval_loader(
    index: Index,
    cfg: DataConfig,
    split: str,
    batch_size: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    max_samples: int | None = None,
    with_gts: bool | None = None,
) -> DataLoader:
    """Loader over this process's share of a split's first `max_samples` frames, without augmentation.

    The frames are cut into the batches one process would take, and process `rank` takes every
    world_size-th of those batches: each frame is scored once (no padding, whatever the count) and in the
    same batch as on one process, so the metrics summed over processes equal one process's exactly.
    """
    dataset = OccDataset(index, cfg, split, train=False, with_gts=with_gts)
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if count == 0:
        raise ValueError(f"split {split!r} of index {index.root} has no samples; check the dataset's splits")
    batches = [list(range(i, min(i + batch_size, count))) for i in range(0, count, batch_size)]
    return DataLoader(
        torch.utils.data.Subset(dataset, range(count)),
        batch_sampler=batches[rank::world_size],
        num_workers=num_workers,
        collate_fn=collate,
    )
