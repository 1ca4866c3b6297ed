"""Exponential moving average of a model's weights, evaluated and saved next to the raw weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EMA:
    """Shadow copy of a model's state dict; floating tensors follow `decay`, others are copied.

    The effective decay ramps as min(decay, (1 + n) / (10 + n)) over the first updates so that the
    average is not dominated by the random initialisation in short runs.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        self.others = [k for k, v in self.shadow.items() if not v.is_floating_point()]  # BN batch counts

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        lerp = [self.shadow[k] for k in self.floats], [state[k].detach() for k in self.floats]
        torch._foreach_lerp_(*lerp, 1 - decay)
        if self.others:  # one launch for the hundred batch-norm counters, not one each
            torch._foreach_copy_([self.shadow[k] for k in self.others], [state[k] for k in self.others])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        for key, value in state.items():
            self.shadow[key].copy_(value)
        self.updates = updates

    @contextlib.contextmanager
    def applied_to(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Temporarily load the EMA weights into `model` (e.g. for validation), restoring them after."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(backup)
