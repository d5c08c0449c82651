"""Pruners by name, and the default for each mode (what ``bstune optimize --pruner`` offers)."""

from __future__ import annotations

import optuna

from bstune.errors import invalid
from bstune.objectives import Mode, Target
from bstune.pruners._any import AnyPruner
from bstune.pruners._divergence import DivergencePruner
from bstune.pruners._gain_bound import GainBoundPruner
from bstune.pruners._halving import AsyncHalvingPruner
from bstune.pruners._slow import SlowTrialPruner
from bstune.pruners._target import TargetTimePruner
from bstune.pruners._time_aligned import TimeAlignedPruner

__all__ = ["PRUNER_NAMES", "default_pruner", "make_pruner"]

#: The names ``make_pruner`` and ``bstune optimize --pruner`` accept.
PRUNER_NAMES = (
    "default",
    "none",
    "divergence",
    "gain-bound",
    "time-aligned",
    "async-halving",
    "target-time",
    "slow",
    "median",
    "successive-halving",
    "hyperband",
)


def default_pruner(mode: Mode) -> AnyPruner:
    """bstune's pruning for ``mode``: stop what cannot win, and rank once, at a quarter of the limit.

    * Time budget: :class:`DivergencePruner`, :class:`SlowTrialPruner`, :class:`GainBoundPruner`,
      :class:`AsyncHalvingPruner` with one rung, at a quarter of the budget, for the trials after
      the start-up sweep (``skip_sweep=True``: the sweep's trials measure each batch size whole).
    * Target: :class:`DivergencePruner`, :class:`TargetTimePruner`, :class:`GainBoundPruner`,
      and with a per-trial ``limit`` also :class:`AsyncHalvingPruner` with one rung, at a quarter
      of the limit (target studies have no sweep).

    Each rule is stated: a diverged trial, a pace that fits too few evaluations into the
    budget, a trial that has trained longer than the best time-to-target, a trial that even the
    largest gain a finished trial made from the same point of its schedule would leave behind, a
    trial outside the top quarter of what the trials before it had at a quarter of the limit (each
    trial is ranked there once). Ranking at several rungs stopped eventual winners on recorded
    learning curves (``benchmarks/RESULTS_search.md``). One rung at a quarter after the sweep, over
    30 seeds on three recorded tasks in time-budget studies, was as good as or better than the
    default without it at every fraction of the tuning budget (better beyond chance on digits at
    half and all of it), and left the best configuration found at half and all of the tuning
    budget as good as or better than every baseline's. Ranking the sweep's trials too cost at a
    tenth of the budget and left fewer batch sizes measured for the report. A rung judges a trial
    against the trials before it, so a good configuration that starts slowly and comes after faster
    ones can be stopped; the search found as good ones with the time it saved. A second rung at a
    sixteenth (Ray Tune's default) never found the fastest configuration of one task in a quarter
    of the target runs (it starts slowly); a target study without a limit has no quarter to rank at.

    Example:
        >>> from bstune import Target, TimeBudget
        >>> [type(p).__name__ for p in default_pruner(TimeBudget(30)).pruners]
        ['DivergencePruner', 'SlowTrialPruner', 'GainBoundPruner', 'AsyncHalvingPruner']
        >>> [type(p).__name__ for p in default_pruner(Target(0.9)).pruners][-1]
        'GainBoundPruner'
    """
    if isinstance(mode, Target):
        if mode.limit is not None:
            return AnyPruner(DivergencePruner(), TargetTimePruner(), GainBoundPruner(), AsyncHalvingPruner(n_rungs=1))
        return AnyPruner(DivergencePruner(), TargetTimePruner(), GainBoundPruner())
    return AnyPruner(
        DivergencePruner(), SlowTrialPruner(), GainBoundPruner(), AsyncHalvingPruner(n_rungs=1, skip_sweep=True)
    )


def make_pruner(name: str, mode: Mode) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (one of :data:`PRUNER_NAMES`) for a study in ``mode``.

    Optuna's ``median``, ``successive-halving`` and ``hyperband`` come with Optuna's defaults. They
    compare trials at identical steps, and bstune's steps are elapsed milliseconds: the median pruner
    then rarely finds another trial at the same step and seldom prunes; successive halving and
    Hyperband take each trial's value at its first report past a rung, which ignores crossing curves.

    Raises:
        InvalidParameterError: Unknown name.

    Example:
        >>> from bstune import Target
        >>> type(make_pruner("none", Target(0.9))).__name__
        'NopPruner'
    """
    if name == "default":
        return default_pruner(mode)
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "divergence":
        return DivergencePruner()
    if name == "gain-bound":
        return GainBoundPruner()
    if name == "time-aligned":
        return TimeAlignedPruner()
    if name == "async-halving":
        return AsyncHalvingPruner()
    if name == "target-time":
        return TargetTimePruner()
    if name == "slow":
        return SlowTrialPruner()
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise invalid("pruner", "make_pruner", "one of " + ", ".join(PRUNER_NAMES), name)
