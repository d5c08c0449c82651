"""The target-time pruner: in target mode, stop trials that can no longer be the fastest."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune.errors import check, check_int
from bstune.pruners._base import (
    ExplainingPruner,
    PruneReason,
    best_so_far,
    planned_end,
    points,
    trial_limit,
    trials,
)

__all__ = ["TargetTimePruner"]


def _best_time_to_target(study: optuna.Study, seen: dict[int, float | None] | None = None) -> tuple[float, int] | None:
    """The fastest time-to-target among completed trials that reached it, and that trial's number.

    ``seen`` caches each completed trial's time-to-target (``None``: it missed) by number: a
    finished trial does not change, and a study with a fast target has thousands of them.
    """
    if seen is None:
        seen = {}
    for t in trials(study, (TrialState.COMPLETE,)):
        if t.number in seen:
            continue
        reached = t.user_attrs.get("reached_target")
        if reached is None:  # not written by bstune's run: feasibility says whether it reached it
            reached = t.constraints.get("target_shortfall", math.inf) <= 0.0
        ok = reached and t.value is not None and math.isfinite(t.value)
        seen[t.number] = float(t.value) if ok else None  # type: ignore[arg-type]
    hits = [(v, n) for n, v in seen.items() if v is not None]
    return min(hits) if hits else None


class TargetTimePruner(ExplainingPruner):
    """In target mode (value = training seconds to reach the target), stop trials that cannot win.

    Two rules, on the intermediate values of ``bstune.Target`` (the *shortfall*, how far the
    metric still is from the target; 0 once reached):

    * Too slow already: a trial that has trained longer than ``(1 + margin)`` times the best
      time-to-target found so far, without reaching the target, can no longer have the best value.
      The margin leaves room for timing noise between repeated runs of a configuration.
    * Out of reach: after ``n_warmup_reports`` reports and ``min_progress`` of its planned schedule,
      a trial is stopped when even ``optimism`` times its fastest recent improvement (shortfall per
      second, over the later half of its curve) would not close the shortfall by its planned end.

    NaN policy: NaN shortfalls are skipped; a trial with no finite shortfall is left alone (the
    divergence pruner handles it). Only meaningful for a minimised, lower-is-better intermediate value,
    which is what bstune's target mode reports.

    Args:
        margin: Extra fraction of the best time-to-target a trial may use. At least 0.
        optimism: How many times its best recent rate of improvement a trial is credited with. At least 1.
        n_warmup_reports: Reports before the out-of-reach rule applies.
        min_progress: Fraction of its planned schedule a trial must have done before the
            out-of-reach rule applies, in [0, 1].

    Examples:
        >>> import optuna
        >>> study = optuna.create_study(pruner=TargetTimePruner(margin=0.1))
        >>> done = study.ask(); done.report(0.0, 4000); done.set_user_attr("reached_target", True)
        >>> _ = study.tell(done, 4.0)
        >>> trial = study.ask()
        >>> trial.report(0.05, 4500)   # 4.5 s > 1.1 x 4 s and still short of the target
        >>> trial.should_prune()
        True
    """

    def __init__(
        self,
        margin: float = 0.1,
        *,
        optimism: float = 3.0,
        n_warmup_reports: int = 3,
        min_progress: float = 0.25,
    ) -> None:
        super().__init__()
        owner = "TargetTimePruner"
        check(owner, "margin", margin, "a finite number of at least 0", lambda v: math.isfinite(v) and v >= 0)
        check(owner, "optimism", optimism, "a finite number of at least 1", lambda v: math.isfinite(v) and v >= 1)
        check_int(owner, "n_warmup_reports", n_warmup_reports, 2)
        check(owner, "min_progress", min_progress, "a number in the range [0, 1]", lambda v: 0 <= v <= 1)
        self._seen: dict[str, dict[int, float | None]] = {}
        self.margin = float(margin)
        self.optimism = float(optimism)
        self.n_warmup_reports = n_warmup_reports
        self.min_progress = float(min_progress)

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        pts = points(trial)
        if not pts:
            return None
        t = pts[-1][0]
        curve = best_so_far(pts, optuna.study.StudyDirection.MINIMIZE)
        if not curve:
            return None
        gap = curve[-1][1]
        if gap <= 0.0:
            return None  # reached: the run stops it with the reason "target"
        best = _best_time_to_target(study, self._seen.setdefault(study.study_name, {}))
        if best is not None and t > (1.0 + self.margin) * best[0]:
            return self._reason(
                f"{t:.2f} s of training without reaching the target, more than {1 + self.margin:g} x "
                f"the best time-to-target {best[0]:.2f} s (trial {best[1]})"
            )
        end = planned_end(trial, trial_limit(study))
        if (
            len(pts) < self.n_warmup_reports
            or end is None
            or t >= end
            or t < self.min_progress * end
        ):
            return None
        later = curve[len(curve) // 2 - 1 :] if len(curve) >= 2 else curve
        rates = [(a[1] - b[1]) / (b[0] - a[0]) for a, b in zip(later, later[1:], strict=False) if b[0] > a[0]]
        rate = max(rates, default=0.0)
        projected = gap - self.optimism * rate * (end - t)
        if projected > 0.0:
            return self._reason(
                f"at {t:.2f} s the shortfall is {gap:.4g}; even {self.optimism:g} x its best recent rate "
                f"({rate:.3g}/s) leaves {projected:.4g} at its planned end {end:.2f} s"
            )
        return None
