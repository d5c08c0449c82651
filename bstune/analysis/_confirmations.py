"""Confirmed configurations: a configuration trained with several seeds, as mean and spread, and
whether it is within noise of the best."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, NamedTuple

import optuna

__all__ = ["Confirmation", "confirmations", "pooled_variance"]


class Confirmation(NamedTuple):
    """A configuration trained with several seeds: its first trial and the runs that repeat it.

    ``values`` are each run's value (the best metric in budget mode; the seconds to the target in
    target mode, where runs that missed it are counted in ``missed``). ``std`` is the sample
    standard deviation. Against the best mean, another configuration is ``within_noise`` when the
    difference of means is at most two standard errors of it (variances pooled); the best has None.
    """

    trial: int
    batch_size: int | None
    learning_rate: float | None
    epochs: int | None
    runs: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    std: float
    missed: int
    within_noise: bool | None


def confirmations(
    trials: Sequence[optuna.trial.FrozenTrial], summaries: list[Any], *, maximize: bool, target_mode: bool
) -> list[Confirmation]:
    """Configurations with confirmation runs (user attribute ``confirms``), best mean first."""
    from bstune.confirmation import CONFIRMS_ATTR

    by_number = {t.number: t for t in trials}
    summary = {s.number: s for s in summaries}
    groups: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        first = t.user_attrs.get(CONFIRMS_ATTR)
        if isinstance(first, int) and first in by_number and t.state == optuna.trial.TrialState.COMPLETE:
            groups.setdefault(first, [by_number[first]]).append(t)
    raw = []
    for first, group in groups.items():
        values: list[float] = []
        missed = 0
        for t in group:
            if t.value is None or not math.isfinite(t.value):
                continue
            if target_mode and not t.user_attrs.get("reached_target", False):
                missed += 1
                continue
            values.append(float(t.value))
        if not values:
            continue
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        raw.append((first, tuple(t.number for t in group), tuple(values), mean, std, missed))
    if not raw:
        return []
    raw.sort(key=lambda r: -r[3] if maximize else r[3])
    pooled = pooled_variance([r[4] for r in raw])
    best_n, best_mean = len(raw[0][2]), raw[0][3]
    out = []
    for i, (first, numbers, vals, mean, std, missed) in enumerate(raw):
        within: bool | None = None
        if i > 0:
            se = math.sqrt(pooled * (1 / best_n + 1 / len(vals))) if math.isfinite(pooled) else math.nan
            within = bool(math.isfinite(se) and abs(mean - best_mean) <= 2 * se)
        s = summary[first]
        out.append(Confirmation(first, s.batch_size, s.learning_rate, s.epochs, numbers, vals, mean, std, missed, within))
    return out


def pooled_variance(stds: Sequence[float]) -> float:
    """The seed-to-seed variance pooled over configurations: the mean of their variances (NaN if none).

    >>> round(pooled_variance([0.02, 0.01, math.nan]), 8)
    0.00025
    """
    variances = [s**2 for s in stds if math.isfinite(s)]
    return statistics.fmean(variances) if variances else math.nan
