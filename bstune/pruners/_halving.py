"""Asynchronous successive halving on elapsed training time (ASHA), for studies that want ranking."""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bstune.errors import check, check_choice, check_int
from bstune.objectives import better
from bstune.pruners._base import (
    ExplainingPruner,
    PruneReason,
    best_so_far,
    finished_curve,
    others,
    points,
    trial_limit,
    trials,
)

__all__ = ["AsyncHalvingPruner"]


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (tied values share their mean rank); NaN when
    either has a single distinct value.

    Examples:
        >>> round(rank_correlation([1, 2, 3, 4], [10, 30, 20, 40]), 6), rank_correlation([1, 1], [2, 3])
        (0.8, nan)
    """

    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        order = np.argsort(a, kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for value in np.unique(a):  # ties: their mean rank
            tied = a == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


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
    (``bstune.Target``). In a target study without a limit (a trial trains until it reaches the
    target or ends its schedule) it is the longest training time of the completed trials, what a
    whole trial that misses the target takes in this study, and nothing is stopped before a trial
    has completed. (Not the median: once fast trials reach the target, it shrinks the rungs toward
    the fastest time-to-target.)

    Not in ``bstune.default_pruner``: on recorded learning curves a rung at a quarter of the
    limit, ranking always, stopped eventual winners on tasks it was not tuned on
    (``benchmarks/RESULTS_search.md``). Choose it alone with ``--pruner async-halving`` (two
    rungs) or add it to the default, e.g.
    ``AnyPruner(*default_pruner(mode).pruners, AsyncHalvingPruner(n_rungs=1, min_rank_correlation=0.8))``.

    With ``min_rank_correlation``, a rung ranks only where this study's own trials show that a
    value there ranks trials as their final values do: the completed trials that reported at or
    past the rung (at least ``n_min_ranked`` of them), their values there against their final best,
    have a rank correlation (Spearman) of at least ``min_rank_correlation``. Where learning curves
    cross (small batches that start slowly, schedules that decay late, one evaluation an epoch) the
    rung then stays quiet instead of stopping the eventual winners.

    A trial is ranked at a rung by its first report at or past it, against the other trials' first
    reports at or past the same rung: a trial not yet evaluated when the rung's time came (one
    evaluation an epoch, a small batch) is judged on its first value, never as if it had none.

    NaN policy: NaN values are skipped; a trial with no finite value is left alone (the divergence
    pruner handles it). Works in both directions.

    Args:
        reduction_factor: Keep the top ``1 / reduction_factor`` at each rung. Greater than 1.
        n_rungs: How many rungs below ``max_t``. At least 1.
        n_min_trials: Values needed at a rung before it stops anything. At least 1.
        skip_sweep: Leave alone the trials of bstune's start-up sweep (the first trials of a study
            whose sampler is ``bstune.sampler.BatchSweep``): they are there to measure each batch
            size to its end. Their values at the rungs still count for the trials after them.
        min_rank_correlation: Rank at a rung only where the completed trials' values there rank
            them as their final values do, with at least this Spearman correlation (in [-1, 1]);
            ``None`` ranks always.
        n_min_ranked: Completed trials that passed the rung needed to measure that. At least 3.

    Examples:
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
        self,
        reduction_factor: float = 4.0,
        *,
        n_rungs: int = 2,
        n_min_trials: int = 1,
        skip_sweep: bool = False,
        min_rank_correlation: float | None = None,
        n_min_ranked: int = 5,
    ) -> None:
        super().__init__()
        owner = "AsyncHalvingPruner"
        rf, rho = reduction_factor, min_rank_correlation
        check(owner, "reduction_factor", rf, "a finite number greater than 1", lambda v: math.isfinite(v) and v > 1)
        check_int(owner, "n_rungs", n_rungs, 1)
        check_int(owner, "n_min_trials", n_min_trials, 1)
        check_choice(owner, "skip_sweep", skip_sweep, (True, False), "a bool")
        check(owner, "min_rank_correlation", rho, "a number in the range [-1, 1] or None", lambda v: -1 <= v <= 1, none=True)
        check_int(owner, "n_min_ranked", n_min_ranked, 3)
        self.min_rank_correlation = None if rho is None else float(rho)
        self.n_min_ranked = n_min_ranked
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

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        if self.skip_sweep and trial.number < getattr(study.sampler, "n_sweep", 0):
            return None  # placed by the start-up sweep (bstune.sampler.BatchSweep) to be measured whole
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
        rho, n_ranked = self.rank_agreement(study, rung)
        if self.min_rank_correlation is not None and not (
            n_ranked >= self.n_min_ranked and rho >= self.min_rank_correlation
        ):
            return None  # this study has not shown that a value at the rung ranks final ones
        q = 1.0 - 1.0 / self.reduction_factor
        if direction == StudyDirection.MINIMIZE:
            q = 1.0 - q
        cutoff = float(np.quantile(peers, q))
        if better(cutoff, mine, maximize=direction == StudyDirection.MAXIMIZE):
            keep = 100.0 / self.reduction_factor
            return self._reason(
                f"at {t:.2f} s (rung {rung:.2f} s of {max_t:.2f} s) its best {mine:.4g} is outside the top "
                f"{keep:.0f}% of the {len(peers)} trial{'' if len(peers) == 1 else 's'} that passed the rung "
                f"(cut-off {cutoff:.4g})"
                + (
                    f"; values there rank this study's {n_ranked} completed trials as their final ones do "
                    f"(Spearman {rho:.2f})"
                    if self.min_rank_correlation is not None
                    else ""
                )
            )
        return None

    def rank_agreement(self, study: optuna.Study, rung: float) -> tuple[float, int]:
        """How well a value at ``rung`` seconds ranks this study's completed trials by their final
        best: Spearman's correlation over those that reported at or past the rung, and their number.
        Computed only when ``min_rank_correlation`` is set (else ``(nan, 0)``)."""
        if self.min_rank_correlation is None:
            return math.nan, 0
        direction = study.direction
        early, final = [], []
        for t in trials(study, (TrialState.COMPLETE,)):
            curve = finished_curve(self._curves, study, t, direction)
            v = _first_at(curve, rung)
            if v is not None:
                early.append(v)
                final.append(curve[-1][1])
        return (rank_correlation(early, final) if len(early) >= 2 else math.nan), len(early)
