"""An exponential moving average (EMA) of a model's weights, the model a run evaluates and saves with ``--ema``.

After each optimiser step every parameter and floating-point buffer (BatchNorm
statistics included) of the average moves towards the trained model's:
``avg ← d·avg + (1 − d)·w``, with ``d = min(decay, (1 + t) / (10 + t))`` at
update ``t`` (1-based), so early updates, when the weights change fast, are
not averaged over a horizon the run has not yet trained through. Integer
buffers (BatchNorm's batch counter) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay used at update ``updates`` (1-based): ``min(decay, (1 + t) / (10 + t))``."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """The EMA of ``model``'s weights, kept in ``self.model`` (a copy in eval mode, no gradients).

    ``updates`` is the number of updates so far: a resumed run passes its global step.
    """

    def __init__(self, model: nn.Module, decay: float, updates: int = 0):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, updates
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = list(zip([*self.model.parameters(), *self.model.buffers()], [*model.parameters(), *model.buffers()],
                         strict=True))
        self._floats = [pair for pair in pairs if pair[0].is_floating_point()]
        self._others = [pair for pair in pairs if not pair[0].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the trained model's current weights."""
        self.updates += 1
        weight = 1 - ema_decay(self.decay, self.updates)
        for average, source in self._floats:
            average.lerp_(source, weight)
        for average, source in self._others:
            average.copy_(source)
