"""The gain-bound pruner: stop a trial only when it cannot win, by what finished trials gained."""

from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bstune.errors import check, check_int
from bstune.pruners._base import (
    ExplainingPruner,
    PruneReason,
    best_so_far,
    finished_curve,
    planned_end,
    points,
    study_attrs,
    trial_limit,
    trials,
    value_at,
)

__all__ = ["GainBoundPruner"]


class GainBoundPruner(ExplainingPruner):
    """Stop a trial when even the largest gain a finished trial made from the same point of its
    schedule to its end would leave it short of the best value so far.

    Ranking trials early loses the eventual winners: learning curves cross, and a trial with a
    longer schedule (a smaller batch, more epochs, a lower rate) looks worse early and wins late. So
    this pruner does not rank. It asks a question with a stated answer: at fraction ``p`` of its
    planned schedule a trial's best value is ``v``; each completed trial of the study improved by
    some amount from fraction ``p`` of its own schedule to its end; if ``v`` plus ``optimism`` times
    the largest of those gains (plus ``min_delta``) is still worse than the best completed value, the
    trial cannot win, and it is stopped. Everything else trains to its end.

    A completed trial's schedule ends at its last report (it finished); the judged trial's at its
    planned epochs at its measured pace, or the budget, whichever is sooner
    (``planned_end``). A completed trial whose first report comes after
    fraction ``p`` of its schedule counts with its gain from its first report (all that is known of
    it). Nothing is judged before ``min_progress`` of the trial's schedule: early curves say little
    (a trial at a high rate can sit at chance level for a while and then take off).

    For a study whose intermediate values are the validation metric (time-budget mode), in the
    study's direction. In target mode the intermediate value is a shortfall whose best is 0 and the
    value is time: there this pruner stops a trial that cannot reach the target by its planned end
    (shortfall minus the bound still above 0).

    NaN policy: NaN values are skipped in both the judged and the completed curves; a trial with no
    finite value is left alone (the divergence pruner handles it).

    Args:
        optimism: How many times the largest completed gain the judged trial is credited with. At
            least 1; larger prunes less.
        min_delta: Added to the credited gain, in units of the metric: room for evaluation noise.
            At least 0.
        n_min_trials: Completed trials needed before anything is pruned. At least 1.
        min_progress: The fraction of its schedule a trial must have done before it is judged, in
            [0, 1).

    Examples:
        >>> import optuna
        >>> study = optuna.create_study(direction="maximize", pruner=GainBoundPruner(n_min_trials=1))
        >>> done = study.ask()
        >>> for ms, v in [(1000, 0.70), (5000, 0.80), (10000, 0.85)]:
        ...     done.report(v, ms)
        >>> _ = study.tell(done, 0.85)
        >>> trial = study.ask(); trial.set_user_attr("planned_epochs", 1)
        >>> trial.set_user_attr("curve", {"epoch": [0.5]})   # halfway through its one epoch
        >>> trial.report(0.60, 5000)   # done gained 0.05 from its halfway point; 0.60 + 0.05 < 0.85
        >>> trial.should_prune()
        True
    """

    def __init__(
        self, optimism: float = 3.0, *, min_delta: float = 0.0, n_min_trials: int = 3, min_progress: float = 0.25
    ) -> None:
        super().__init__()
        owner = "GainBoundPruner"
        check(owner, "optimism", optimism, "a finite number of at least 1", lambda v: math.isfinite(v) and v >= 1)
        check(owner, "min_delta", min_delta, "a finite number of at least 0", lambda v: math.isfinite(v) and v >= 0)
        check_int(owner, "n_min_trials", n_min_trials, 1)
        check(owner, "min_progress", min_progress, "a number in the range [0, 1)", lambda v: 0 <= v < 1)
        self.min_progress = float(min_progress)
        self.optimism = float(optimism)
        self._curves: dict[tuple[str, int], list[tuple[float, float]]] = {}  # finished trials do not change
        self.min_delta = float(min_delta)
        self.n_min_trials = n_min_trials

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        pts = points(trial)
        if not pts:
            return None
        direction = study.direction
        target_mode = study_attrs(study).get("mode") == "target"
        if target_mode:
            direction = StudyDirection.MINIMIZE  # shortfalls, lower is better
        curve = best_so_far(pts, direction)
        if not curve:
            return None
        done = [
            t
            for t in trials(study, (TrialState.COMPLETE,))
            if t.number != trial.number and t.intermediate_values
        ]
        if len(done) < self.n_min_trials:
            return None
        t_now, v = curve[-1]
        end = planned_end(trial, trial_limit(study))
        if end is None or end <= 0 or t_now >= end:
            return None
        p = t_now / end
        if p < self.min_progress:
            return None
        gains = []
        for other in done:
            theirs = finished_curve(self._curves, study, other, direction)
            if not theirs:
                continue
            at = value_at(theirs, p * theirs[-1][0])
            if at is None:  # p comes before its first report: its gain from there is all we know
                at = theirs[0][1]
            gains.append((abs(theirs[-1][1] - at), other.number))
        if not gains:
            return None
        gain, who = max(gains)
        credit = self.optimism * gain + self.min_delta
        if target_mode:
            if v - credit > 0.0:
                return self._reason(
                    f"at {t_now:.2f} s ({100 * p:.0f}% of its schedule) the shortfall is {v:.4g}; "
                    f"{self.optimism:g} x the largest gain a finished trial made from there "
                    f"({gain:.4g}, trial {who}) would not reach the target by its end"
                )
            return None
        incumbent = study.best_value
        bound = v + credit if direction == StudyDirection.MAXIMIZE else v - credit
        beaten = bound < incumbent if direction == StudyDirection.MAXIMIZE else bound > incumbent
        if beaten:
            return self._reason(
                f"at {t_now:.2f} s ({100 * p:.0f}% of its schedule) its best is {v:.4g}; even "
                f"{self.optimism:g} x the largest gain a finished trial made from there ({gain:.4g}, trial {who}) "
                f"reaches {bound:.4g}, short of the best {incumbent:.4g}"
            )
        return None
