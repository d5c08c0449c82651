"""Batch sizes on equal footing: the best finished trial of each at the same examples seen, optimizer
steps and training time, read off the learning curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["EqualFooting", "EqualFootingRow", "equal_footing", "interpolate"]


class EqualFootingRow(NamedTuple):
    """One batch size's best finished trial, read off its curve at the common amounts of training."""

    batch_size: int
    trial: int
    at_examples: float
    at_steps: float
    at_time: float


class EqualFooting(NamedTuple):
    """Batch sizes compared at the same training examples seen, optimizer steps and training time.

    Each amount is the most that every compared curve reached (the smallest of their ends), and the
    metric is interpolated linearly between the evaluations around it. Steps are examples seen /
    batch size: at equal steps a larger batch has seen more examples, at equal examples fewer steps.
    """

    examples: float | None
    steps: float | None
    time_s: float | None
    rows: list[EqualFootingRow]


def interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """``ys`` at ``x``, linear between the points around it (``xs`` ascending); NaN outside them.

    >>> interpolate([1.0, 3.0], [0.5, 0.7], 2.0), interpolate([1.0, 3.0], [0.5, 0.7], 4.0)
    (0.6, nan)
    """
    pts = [(a, b) for a, b in zip(xs, ys, strict=True) if math.isfinite(a) and math.isfinite(b)]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else round(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 12)
    if pts and (pts[-1][0] == x or (len(pts) == 1 and pts[0][0] == x)):
        return pts[-1][1]
    return math.nan


def equal_footing(summaries: list[Any], rows: list[Any]) -> EqualFooting | None:
    """The best finished trial of each batch size at equal examples, steps and time (two or more sizes)."""
    by_number = {s.number: s for s in summaries}
    best = [by_number[r.best_trial] for r in rows if r.best_trial is not None]
    best = [s for s in best if s.batch_size and s.curve_samples and any(x > 0 for x in s.curve_samples)]
    if len(best) < 2:
        return None
    steps = {s.number: [x / s.batch_size for x in s.curve_samples] for s in best}  # type: ignore[operator]
    examples_at = min(max(s.curve_samples) for s in best)
    steps_at = min(max(steps[s.number]) for s in best)
    time_at = min(max(t for t in s.curve_time_s if math.isfinite(t)) for s in best)
    out = [
        EqualFootingRow(
            batch_size=s.batch_size,  # type: ignore[arg-type]
            trial=s.number,
            at_examples=interpolate(s.curve_samples, s.curve_metric, examples_at),
            at_steps=interpolate(steps[s.number], s.curve_metric, steps_at),
            at_time=interpolate(s.curve_time_s, s.curve_metric, time_at),
        )
        for s in best
    ]
    return EqualFooting(examples=examples_at, steps=steps_at, time_s=time_at, rows=out)
