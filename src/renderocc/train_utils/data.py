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
    with_gts: load the Occ3D labels (default: when the index has them); 2D-only training needs none.
    Images come as uint8 pixels, which the model normalises on its device (see eval_loader's uint8_images)."""
    dataset = OccDataset(index, cfg, "train", train=True, with_gts=with_gts, uint8_images=True)
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
    with_rays: bool = True,
    stream: bool = False,
    uint8_images: bool = False,
) -> DataLoader:
    """Loader over this process's share of a split's first `max_samples` frames, without augmentation.

    The frames are cut into the batches one process would take, and process `rank` takes every
    world_size-th of those batches: each frame is scored once (no padding, whatever the count) and in the
    same batch as on one process, so the metrics summed over processes equal one process's exactly.

    with_rays=False leaves out the rays and depth maps (only training and `calibrate` read them). stream
    (batch 1): a frame whose history frame is the frame before it in this loader's order, or itself at a
    scene's first keyframe, comes without the history frame's images, which a streaming infer.Predictor
    fed this loader's batches in order does not need; decided per frame, so any number of workers agree.
    uint8_images: imgs uint8 0..255 (rounded), which infer.Predictor normalises on its device: a quarter of
    the float32 bytes, whose passing from the workers through shared memory cost more than their decoding.
    """
    if stream and batch_size != 1:
        raise ValueError(
            f"a streaming loader runs batch 1 (a frame's history is the batch before), got {batch_size}"
        )
    count = len(index.splits[split]) if split in index.splits else 0
    count = count if max_samples is None else min(max_samples, count)
    batches = [list(range(i, min(i + batch_size, count))) for i in range(0, count, batch_size)]
    batches = batches[rank::world_size]
    left_out = history_in_order(index, cfg, split, [i for b in batches for i in b]) if stream else ()
    dataset = OccDataset(index, cfg, split, False, with_gts, with_rays, left_out, uint8_images)
    if count == 0:
        raise ValueError(f"split {split!r} of index {index.root} has no samples; check the dataset's splits")
    return DataLoader(
        torch.utils.data.Subset(dataset, range(count)),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate,
    )


def history_in_order(index: Index, cfg: DataConfig, split: str, order: list[int]) -> frozenset[int]:
    """Items of `split` (positions in it) whose history frame is the item before them in `order`, with the
    same image sizes (so the same image augmentation), or is themselves (a scene's first keyframe)."""
    if cfg.prev_frames != 1:  # streaming keeps one history frame
        return frozenset()
    samples, hw = index.splits[split], index.arrays["image_hw"]
    out, before = set(), None
    for item in order:
        sample = int(samples[item])
        prev = index.neighbour(sample, -1)
        follows = before is not None and prev == before and (hw[prev] == hw[sample]).all()
        if prev is None or follows:
            out.add(item)
        before = sample
    return frozenset(out)
