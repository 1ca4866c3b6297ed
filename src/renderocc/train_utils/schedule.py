"""Learning-rate schedule: linear warm-up, then cosine decay or a step drop, as a factor of the base lr."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "step", "constant")


def lr_factor(
    step: int, warmup_iters: int, total_iters: int, kind: str = "cosine", min_factor: float = 0.01
) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based).

    Warm-up ramps linearly from 1 / warmup_iters to 1. After it, "cosine" decays to `min_factor` at
    `total_iters`, "step" multiplies by 0.1 at 75 % and again at 90 % of the run, "constant" stays at 1.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
    if step < warmup_iters:
        return (step + 1) / warmup_iters
    if kind == "constant":
        return 1.0
    if kind == "step":
        return 0.1 ** ((step >= 0.75 * total_iters) + (step >= 0.9 * total_iters))
    progress = min(1.0, (step - warmup_iters) / max(1, total_iters - warmup_iters))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
