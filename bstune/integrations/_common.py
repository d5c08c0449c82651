"""What the framework callbacks share: a Run's regions driven from hooks, the micro-batch plan, the loss sum."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any

from bstune.memory import accumulation_plan
from bstune.run import Run


class Regions:
    """Opens and closes a ``Run``'s regions from callback hooks, which cannot use ``with``.

    At most one region is open; entering another closes it first. The regions are the run's own
    context managers, so clock and synchronisation rules are the ones of a hand-written loop.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.open: str | None = None
        self._cm: AbstractContextManager[None] | None = None

    def enter(self, name: str) -> None:
        """Open ``"training"``, ``"evaluating"`` or ``"overhead"`` (nothing happens if it is open)."""
        if self.open == name:
            return
        self.leave()
        cm = getattr(self.run, name)()
        cm.__enter__()
        self.open, self._cm = name, cm

    def leave(self) -> None:
        """Close the open region, if any."""
        if self._cm is not None:
            cm, self._cm, self.open = self._cm, None, None
            cm.__exit__(None, None, None)


def accumulation(batch_size: int, micro_batch_size: int | None) -> tuple[int, int]:
    """The batch per forward pass and the passes per optimizer step for an effective ``batch_size``.

    Frameworks accumulate a whole number of equal batches, so the batch is split into
    ``ceil(batch_size / micro_batch_size)`` equal parts (exact for powers of two).

    >>> accumulation(256, 64), accumulation(96, 64), accumulation(32, None)
    ((64, 4), (48, 2), (32, 1))
    """
    _, steps = accumulation_plan(batch_size, micro_batch_size)
    return math.ceil(batch_size / steps), steps


class LossSum:
    """The training loss since the last report, summed on the device: no synchronisation per step."""

    def __init__(self) -> None:
        self._sum: Any = None
        self._n = 0

    def add(self, loss: Any) -> None:
        import torch

        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.detach().float()
            self._sum = loss if self._sum is None else self._sum + loss
            self._n += 1

    def mean(self) -> float | None:
        """The mean since the last call (one synchronisation), or None when no loss was seen."""
        if self._n == 0:
            return None
        out = float(self._sum) / self._n
        self._sum, self._n = None, 0
        return out
