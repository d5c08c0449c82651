"""The time-aligned pruner: successive halving on elapsed training time, aware of crossing curves."""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from bstune.errors import check, check_int
from bstune.objectives import better
from bstune.pruners._base import (
    ExplainingPruner,
    PruneReason,
    best_so_far,
    n_complete,
    others,
    planned_end,
    points,
    trial_limit,
    value_at,
)

__all__ = ["TimeAlignedPruner"]


class TimeAlignedPruner(ExplainingPruner):
    """Compare a trial with the others at the same elapsed training time, and stop the hopeless.

    Trials report at step = elapsed training milliseconds, which never coincide, so each other
    trial's *best-so-far* curve is interpolated linearly between its reports to the elapsed time of
    this trial's latest report. Two checks use that comparison:

    * At geometric rungs of elapsed time (``first rung x reduction_factor**k``, successive-halving
      style) the trial continues only if it ranks in the top ``1 / reduction_factor`` of the trials
      compared with it (always at least the best one continues).
    * With ``percentile`` set, at every report after the first rung, it is stopped when its best
      value is worse than that percentile of the others' (Optuna's ``PercentilePruner`` rule, on the
      time axis).

    Learning curves cross: a trial whose schedule is longer (more planned epochs, a smaller batch)
    looks worse early and wins late, because its learning rate decays later. So each other trial is
    read where its schedule gives it no head start: a trial with a longer or equal planned schedule
    at the same elapsed time (it is behind in its schedule, which only favours the trial being
    judged); a trial with a shorter schedule at the same elapsed time too, but never further into its
    own schedule than ``max(peer_progress, p)``, where ``p`` is how far the judged trial is into its
    own (the read is then earlier, with less training time, so it can only favour the judged trial
    more). Most of a schedule's decay gain comes late, so the default 0.5 keeps the last half of a
    short trial's schedule out of the comparison. ``peer_progress=0`` reads shorter trials at the
    judged trial's own fraction of schedule; ``peer_progress=1`` reads every trial at equal time,
    as plain successive halving on time does (and loses crossing winners).

    A trial's planned end is its planned epochs at its measured pace (the user attribute
    ``planned_epochs`` and the ``epoch`` column of the ``curve`` attribute ``bstune.Run``
    writes), capped by the study's time budget; trials that do not say are read at equal time. The
    first rung sits at ``first_rung_fraction`` of the trial's own planned end, so no trial is judged
    before it is that far into its schedule, and no rung is placed at or after its end (a finished
    trial is never turned into a pruned one).

    Nothing is pruned before ``n_startup_trials`` trials have completed, nor at an elapsed time that
    fewer than ``n_min_trials`` peers have reached. NaN policy: a NaN or infinite latest value is
    pruned (it can only be a diverged trial); NaN values elsewhere in a curve are skipped. Works in
    both directions.

    Args:
        first_rung_fraction: The first rung, as a fraction of the trial's planned end, in (0, 1).
        min_seconds: The first rung in seconds, for curves without a planned length (plain Optuna
            objectives); overrides ``first_rung_fraction``.
        reduction_factor: Rung spacing and the share kept at each rung (top ``1/reduction_factor``).
        n_startup_trials: Completed trials needed before anything is pruned.
        n_min_trials: Peers that must have reached the elapsed time before comparing there.
        peer_progress: How far into its own schedule a shorter-schedule trial may be read, in [0, 1].
        percentile: Also prune at every report below this percentile (``None``: rungs only).

    Examples:
        >>> import optuna
        >>> study = optuna.create_study(direction="maximize", pruner=TimeAlignedPruner(min_seconds=1.0))
        >>> for acc in (0.9, 0.8, 0.7, 0.6):
        ...     t = study.ask()
        ...     for ms in (500, 1500, 3000):
        ...         t.report(acc * ms / 3000, ms)
        ...     _ = study.tell(t, acc)
        >>> t = study.ask()
        >>> t.report(0.2, 700)
        >>> t.report(0.25, 1100)   # first rung (1 s): worst of five at 1.1 s
        >>> t.should_prune()
        True
    """

    def __init__(
        self,
        first_rung_fraction: float = 0.25,
        *,
        min_seconds: float | None = None,
        reduction_factor: float = 2.5,
        n_startup_trials: int = 4,
        n_min_trials: int = 4,
        peer_progress: float = 0.5,
        percentile: float | None = None,
    ) -> None:
        super().__init__()
        owner = "TimeAlignedPruner"
        check(owner, "first_rung_fraction", first_rung_fraction, "a number in the range (0, 1)", lambda v: 0 < v < 1)
        check(owner, "min_seconds", min_seconds, "a finite number greater than 0 or None",
              lambda v: math.isfinite(v) and v > 0, none=True)
        check(owner, "reduction_factor", reduction_factor, "a finite number greater than 1",
              lambda v: math.isfinite(v) and v > 1)
        check_int(owner, "n_startup_trials", n_startup_trials, 0)
        check_int(owner, "n_min_trials", n_min_trials, 1)
        check(owner, "peer_progress", peer_progress, "a number in the range [0, 1]", lambda v: 0 <= v <= 1)
        check(owner, "percentile", percentile, "a number in the range [0, 100] or None", lambda v: 0 <= v <= 100,
              none=True)
        self.first_rung_fraction = float(first_rung_fraction)
        self.min_seconds = None if min_seconds is None else float(min_seconds)
        self.reduction_factor = float(reduction_factor)
        self.n_startup_trials = n_startup_trials
        self.n_min_trials = n_min_trials
        self.peer_progress = float(peer_progress)
        self.percentile = None if percentile is None else float(percentile)

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        pts = points(trial)
        if not pts:
            return None
        t, latest = pts[-1]
        if not math.isfinite(latest):
            return self._reason(f"latest value {latest} at {t:.2f} s", "diverged")
        if n_complete(study) < self.n_startup_trials:
            return None
        budget = trial_limit(study)
        own_end = planned_end(trial, budget)
        first = self.min_seconds
        if first is None:
            if own_end is None:
                return None
            first = self.first_rung_fraction * own_end
        if t < first or (own_end is not None and t >= 0.95 * own_end):
            return None
        k = math.floor(math.log(t / first) / math.log(self.reduction_factor) + 1e-9)
        rung = first * self.reduction_factor**k
        prev_t = pts[-2][0] if len(pts) > 1 else 0.0
        at_rung = prev_t < rung
        if not at_rung and self.percentile is None:
            return None

        direction = study.direction
        own = best_so_far(pts, direction)
        if not own:
            return None
        mine = own[-1][1]
        peers: list[float] = []
        for other in others(study, trial):
            when = t
            if own_end is not None:
                end = planned_end(other, budget)
                if end is not None and end < own_end:
                    # A shorter schedule is further along at time t (its learning rate has decayed
                    # more): read it no later in its schedule than this trial is in its own, or than
                    # peer_progress, so its decay gain does not count against this trial.
                    when = min(t, end * max(t / own_end, self.peer_progress))
            v = value_at(best_so_far(points(other), direction), when)
            if v is not None:
                peers.append(v)
        if len(peers) < self.n_min_trials:
            return None

        if at_rung:
            n_better = sum(better(v, mine, maximize=direction == StudyDirection.MAXIMIZE) for v in peers)
            n_keep = max(1, math.floor((len(peers) + 1) / self.reduction_factor))
            if n_better >= n_keep:
                return self._reason(
                    f"at {t:.2f} s (rung {rung:.2f} s) its best {mine:.4g} ranks {n_better + 1} of "
                    f"{len(peers) + 1} trials compared at that time; the top {n_keep} continue"
                )
        if self.percentile is not None:
            q = 100.0 - self.percentile if direction == StudyDirection.MAXIMIZE else self.percentile
            threshold = float(np.percentile(peers, q))
            if better(threshold, mine, maximize=direction == StudyDirection.MAXIMIZE):
                return self._reason(
                    f"at {t:.2f} s its best {mine:.4g} is worse than the {self.percentile:g}th percentile "
                    f"{threshold:.4g} of {len(peers)} trials at that time"
                )
        return None
