"""Pruners by name, and the default for each mode (what ``bstune optimize --pruner`` offers)."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from bstune.errors import check_choice
from bstune.objectives import Mode, Target
from bstune.pruners._any import AnyPruner
from bstune.pruners._divergence import DivergencePruner
from bstune.pruners._gain_bound import GainBoundPruner
from bstune.pruners._halving import AsyncHalvingPruner
from bstune.pruners._slow import SlowTrialPruner
from bstune.pruners._target import TargetTimePruner
from bstune.pruners._time_aligned import TimeAlignedPruner

__all__ = ["PRUNERS", "PRUNER_NAMES", "default_pruner", "make_pruner"]

def default_pruner(mode: Mode) -> AnyPruner:
    """bstune's pruning for ``mode``: stop what cannot win, by a bound you can state; rank nothing.

    * Time budget: ``DivergencePruner``, ``SlowTrialPruner``, ``GainBoundPruner``.
    * Target (with or without a per-trial ``limit``): ``DivergencePruner``,
      ``TargetTimePruner``, ``GainBoundPruner``.

    Each stop is stated: a diverged trial, a pace that fits too few evaluations into the budget, a
    trial that has trained longer than the best time-to-target so far (it can no longer be the
    fastest), a trial that even three times the largest gain a finished trial made from the same
    point of its schedule would leave behind. Nothing is stopped for merely ranking low early,
    because learning curves cross (small batches, schedules that decay late, one evaluation an
    epoch) and a ranking rung then stops eventual winners (measured in
    ``benchmarks/RESULTS_search.md``). Add ranking yourself where you know it is safe, e.g.
    ``AnyPruner(*default_pruner(mode).pruners, AsyncHalvingPruner(n_rungs=1, min_rank_correlation=0.8))``.

    Examples:
        >>> from bstune import Target, TimeBudget
        >>> [type(p).__name__ for p in default_pruner(TimeBudget(30)).pruners]
        ['DivergencePruner', 'SlowTrialPruner', 'GainBoundPruner']
        >>> [type(p).__name__ for p in default_pruner(Target(0.9, limit=60)).pruners]
        ['DivergencePruner', 'TargetTimePruner', 'GainBoundPruner']
    """
    if isinstance(mode, Target):
        return AnyPruner(DivergencePruner(), TargetTimePruner(), GainBoundPruner())
    return AnyPruner(DivergencePruner(), SlowTrialPruner(), GainBoundPruner())


#: What each name of ``bstune optimize --pruner`` (and ``make_pruner``) builds for a study in a mode.
PRUNERS: dict[str, Callable[[Mode], optuna.pruners.BasePruner]] = {
    "default": default_pruner,
    "none": lambda mode: optuna.pruners.NopPruner(),
    "divergence": lambda mode: DivergencePruner(),
    "gain-bound": lambda mode: GainBoundPruner(),
    "time-aligned": lambda mode: TimeAlignedPruner(),
    "async-halving": lambda mode: AsyncHalvingPruner(),
    "target-time": lambda mode: TargetTimePruner(),
    "slow": lambda mode: SlowTrialPruner(),
    "median": lambda mode: optuna.pruners.MedianPruner(),
    "successive-halving": lambda mode: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda mode: optuna.pruners.HyperbandPruner(),
}
#: The names ``make_pruner`` and ``bstune optimize --pruner`` accept.
PRUNER_NAMES = tuple(PRUNERS)


def make_pruner(name: str, mode: Mode) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (one of ``PRUNER_NAMES``) for a study in ``mode``.

    Optuna's ``median``, ``successive-halving`` and ``hyperband`` come with Optuna's defaults. They
    compare trials at identical steps, and bstune's steps are elapsed milliseconds: the median pruner
    then rarely finds another trial at the same step and seldom prunes; successive halving and
    Hyperband take each trial's value at its first report past a rung, which ignores crossing curves.

    Raises:
        InvalidParameterError: Unknown name.

    Examples:
        >>> from bstune import Target
        >>> type(make_pruner("none", Target(0.9))).__name__
        'NopPruner'
    """
    check_choice("make_pruner", "pruner", name, PRUNER_NAMES)
    return PRUNERS[name](mode)
