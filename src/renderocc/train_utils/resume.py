"""Resuming on another process count: the per-process batch, the data stream's position, the schedule's batch.

A step's global batch is batch_size x world_size samples of one data stream fixed by the seed (`sampling`).
A checkpoint records the per-process batch, the process count, the seed, how many samples of the stream its
steps took, and the global batch that an epoch-based schedule counts its steps in. On resume the global
batch is kept (`keep_global_batch`: the per-process batch becomes the saved global batch / world_size) or
changed on request (`change_global_batch`); a change that nobody asked for is refused with what to pass,
and so is another seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


class GlobalBatchError(ValueError):
    """A resume would train with another global batch than the checkpoint's and no flag says so."""


@dataclass(frozen=True)
class BatchPlan:
    """How this run's steps take samples."""

    batch_size: int  # per process
    world_size: int
    seed: int  # of the data stream
    samples_seen: int  # samples of the stream that the steps before this run took
    schedule_batch: int  # the global batch an epoch-based schedule counts steps in
    saved_global_batch: int | None = None  # the checkpoint's global batch (None: a fresh run)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def checkpoint_fields(self, steps_done: int) -> dict:
        """What a checkpoint after `steps_done` steps of this run records for the next resume."""
        return {
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "samples_seen": self.samples_seen + steps_done * self.global_batch,
            "schedule_batch": self.schedule_batch,
        }

    def change_note(self, start_step: int, total_iters: int) -> str | None:
        """One line on an accepted change of the global batch (None when it is unchanged)."""
        saved = self.saved_global_batch
        if saved is None or saved == self.global_batch:
            return None
        same_samples = start_step + math.ceil((total_iters - start_step) * saved / self.global_batch)
        return (
            f"global batch {self.global_batch} ({self.world_size} x {self.batch_size}) from step "
            f"{start_step} on, {saved} before; the data continues at sample {self.samples_seen} of the "
            f"stream, the lr schedule keeps its {total_iters} steps and its learning rate (not rescaled); "
            f"for as many samples as planned pass --max-iters {same_samples}"
        )


def plan_batch(
    state: dict | None,
    checkpoint: Path | None,
    preset_batch: int,
    world_size: int,
    seed: int = 0,
    batch_size: int | None = None,
    keep_global_batch: bool = False,
    change_global_batch: bool = False,
) -> BatchPlan:
    """The batch plan of a fresh run (`state` None) or of a resume from `checkpoint`'s training state.

    The per-process batch is `batch_size` (--batch-size) or else `preset_batch`; under `keep_global_batch`
    it is the saved global batch / world_size instead.
    """
    if keep_global_batch and change_global_batch:
        raise ValueError("--keep-global-batch and --change-global-batch exclude each other; pass one")
    if keep_global_batch and batch_size:
        raise ValueError("--keep-global-batch sets the batch per process: drop --batch-size")
    if state is None:
        if keep_global_batch or change_global_batch:
            raise ValueError("--keep-global-batch / --change-global-batch are for --resume; add it")
        batch_size = batch_size or preset_batch
        return BatchPlan(batch_size, world_size, seed, 0, batch_size * world_size)
    if state.get("seed", seed) != seed:  # checkpoints written before the seed was recorded are not checked
        raise ValueError(
            f"checkpoint {checkpoint} was trained with --seed {state['seed']}, which fixes its data order "
            f"and augmentation; pass --seed {state['seed']} to resume it"
        )
    batch_size = batch_size or preset_batch
    saved_world = int(state.get("world_size", 1))
    saved_batch = state.get("batch_size")
    if saved_batch is None:  # written before the batch was recorded: the checkpoint's preset has it
        from renderocc.checkpoint import checkpoint_preset

        saved_batch = checkpoint_preset(checkpoint).train.batch_size
    saved_global = saved_world * int(saved_batch)
    samples_seen = int(state.get("samples_seen", int(state["step"]) * saved_global))
    schedule_batch = int(state.get("schedule_batch", saved_global))
    was = f"checkpoint {checkpoint} was trained with {saved_world} process(es) x batch {saved_batch}"
    if keep_global_batch:
        if saved_global % world_size:
            raise GlobalBatchError(
                f"--keep-global-batch: {was} = global batch {saved_global}, which {world_size} processes "
                f"cannot share evenly; use a process count that divides {saved_global}, or pass "
                "--change-global-batch (with --batch-size B for B samples per process)"
            )
        batch_size = saved_global // world_size
    elif batch_size * world_size != saved_global and not change_global_batch:
        keep = (
            f"--keep-global-batch to train with batch {saved_global // world_size} per process (the same "
            "batches and lr schedule)"
            if saved_global % world_size == 0
            else f"a process count that divides {saved_global} with --keep-global-batch"
        )
        raise GlobalBatchError(
            f"{was} = global batch {saved_global}; this run would take {world_size} x {batch_size} = "
            f"{world_size * batch_size} samples per step, changing every batch and the learning rate per "
            f"sample. Pass {keep}, or --change-global-batch to continue with global batch "
            f"{world_size * batch_size} (the schedule keeps its steps)"
        )
    return BatchPlan(batch_size, world_size, seed, samples_seen, schedule_batch, saved_global)
