"""Asynchronous successive halving on elapsed training time (ASHA), for studies that want ranking."""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bstune.errors import invalid
from bstune.pruners._base import (
    ExplainingPruner,
    PruneReason,
    best_so_far,
    better,
    finished_curve,
    others,
    points,
    trial_limit,
    trials,
)

__all__ = ["AsyncHalvingPruner"]


def _first_at(curve: list[tuple[float, float]], t: float) -> float | None:
    """A best-so-far curve's value at its first point at or after ``t`` (``None``: not there yet)."""
    for when, v in curve:
        if when >= t:
            return v
    return None


class AsyncHalvingPruner(ExplainingPruner):
    """Asynchronous successive halving (ASHA, Li et al. 2020) on elapsed training time.

    Rungs sit at ``max_t / reduction_factor**k`` seconds of training, ``k`` = 1 to ``n_rungs``.
    When a trial first reports at or past a rung, its best value so far is compared with the best
    values the other trials had when they passed the same rung (the first report of each at or
    after it); the trial is stopped when it is worse than the ``1 - 1 / reduction_factor``
    quantile of theirs, that is, when it is not in their top ``1 / reduction_factor``. This is
    the rule of Ray Tune's ``ASHAScheduler`` with ``time_attr="time_total_s"``; the values at a
    rung are read from the trials' curves in the study, so parallel workers and a resumed study
    share them.

    ``max_t`` is the most a trial trains: the study's time budget, or a target study's ``limit``
    (:class:`bstune.Target`). In a target study without a limit (a trial trains until it reaches the
    target or ends its schedule) it is the longest training time of the completed trials, what a
    whole trial that misses the target takes in this study, and nothing is stopped before a trial
    has completed. (Not the median: once fast trials reach the target, it shrinks the rungs toward
    the fastest time-to-target.)

    In :func:`bstune.default_pruner` of a time-budget study (after the start-up sweep) and of a
    target study with a limit, with one rung (at a quarter of the budget or the limit). Measured on
    recorded learning curves (``benchmarks/RESULTS_search.md``, 30 seeds): in target studies it
    found fast configurations sooner on two tasks (an LSTM on names and on sentence polarity) and
    changed nothing on the third (an MLP on digits); in time-budget studies the best configuration
    found was as good or better at every fraction of the tuning budget on all three (clearly better
    on digits). The second rung at a sixteenth stopped the fastest names configuration, a slow
    starter, in a quarter of the target runs, and left budget studies on polarity and digits stuck
    short of the best. With the longest completed trial as ``max_t`` instead, it missed the fastest
    digits configuration (its trials reach the target in a few hundredths of a second, and rungs
    that close to the start fall on early values that are noise). Choose it alone with
    ``--pruner async-halving`` (two rungs) or combine it, e.g.
    ``AnyPruner(*default_pruner(mode).pruners, AsyncHalvingPruner())``.

    NaN policy: NaN values are skipped; a trial with no finite value is left alone (the divergence
    pruner handles it). Works in both directions.

    Args:
        reduction_factor: Keep the top ``1 / reduction_factor`` at each rung. Greater than 1.
        n_rungs: How many rungs below ``max_t``. At least 1.
        n_min_trials: Values needed at a rung before it stops anything. At least 1.
        skip_sweep: Leave alone the trials of bstune's start-up sweep (the first trials of a study
            whose sampler is :class:`bstune.study.BatchSweep`): they are there to measure each batch
            size to its end. Their values at the rungs still count for the trials after them.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(direction="minimize", pruner=AsyncHalvingPruner())
        >>> done = study.ask()
        >>> for ms, v in [(1000, 0.20), (4000, 0.10), (16000, 0.0)]:
        ...     done.report(v, ms)
        >>> _ = study.tell(done, 16.0)     # max_t 16 s: rungs at 4 s and 1 s
        >>> trial = study.ask()
        >>> trial.report(0.35, 1100)       # at the 1 s rung: 0.35 against the 0.20 the other had
        >>> trial.should_prune()
        True
    """

    def __init__(
        self, reduction_factor: float = 4.0, *, n_rungs: int = 2, n_min_trials: int = 1, skip_sweep: bool = False
    ) -> None:
        super().__init__()
        owner = "AsyncHalvingPruner"
        rf = reduction_factor
        if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not (math.isfinite(rf) and rf > 1):
            raise invalid("reduction_factor", owner, "a finite number greater than 1", rf)
        for name, n in (("n_rungs", n_rungs), ("n_min_trials", n_min_trials)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise invalid(name, owner, "an int in the range [1, inf)", n)
        if not isinstance(skip_sweep, bool):
            raise invalid("skip_sweep", owner, "a bool", skip_sweep)
        self.reduction_factor = float(rf)
        self.n_rungs = n_rungs
        self.n_min_trials = n_min_trials
        self.skip_sweep = skip_sweep
        self._longest: dict[str, tuple[set[int], float]] = {}  # completed trials read, their longest time
        self._curves: dict[tuple[str, int], list[tuple[float, float]]] = {}  # finished trials do not change

    def max_t(self, study: optuna.Study) -> float | None:
        """The time the rungs are fractions of: the trial limit, else the longest completed trial's length."""
        limit = trial_limit(study)
        if limit is not None:
            return limit
        seen, longest = self._longest.get(study.study_name, (set(), 0.0))
        for t in trials(study, (TrialState.COMPLETE,)):
            if t.number not in seen and t.intermediate_values:
                seen.add(t.number)
                longest = max(longest, max(t.intermediate_values) / 1000.0)
        self._longest[study.study_name] = (seen, longest)
        return longest if seen else None

    def _decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        if self.skip_sweep and trial.number < getattr(study.sampler, "n_sweep", 0):
            return None  # placed by the start-up sweep (bstune.study.BatchSweep) to be measured whole
        pts = points(trial)
        if not pts:
            return None
        max_t = self.max_t(study)
        if max_t is None or max_t <= 0:
            return None
        t = pts[-1][0]
        prev = pts[-2][0] if len(pts) > 1 else -math.inf
        rungs = [max_t / self.reduction_factor**k for k in range(1, self.n_rungs + 1)]
        passed = [r for r in rungs if prev < r <= t]
        if not passed:
            return None
        rung = max(passed)
        direction = study.direction
        own = best_so_far(pts, direction)
        if not own:
            return None
        mine = own[-1][1]
        peers = []
        for other in others(study, trial):
            v = _first_at(finished_curve(self._curves, study, other, direction), rung)
            if v is not None:
                peers.append(v)
        if len(peers) < self.n_min_trials:
            return None
        q = 1.0 - 1.0 / self.reduction_factor
        if direction == StudyDirection.MINIMIZE:
            q = 1.0 - q
        cutoff = float(np.quantile(peers, q))
        if better(direction, cutoff, mine):
            keep = 100.0 / self.reduction_factor
            return self._reason(
                f"at {t:.2f} s (rung {rung:.2f} s of {max_t:.2f} s) its best {mine:.4g} is outside the top "
                f"{keep:.0f}% of the {len(peers)} trial{'' if len(peers) == 1 else 's'} that passed the rung "
                f"(cut-off {cutoff:.4g})"
            )
        return None
