"""What every bstune pruner shares: the reason it gives, and reading curves on the time axis.

Intermediate values are reported at step = elapsed training milliseconds (see ``bstune.run``), so
a trial's curve is a list of ``(seconds, value)`` points. Two trials never report at the same
millisecond; they are compared through their *best-so-far* curves, interpolated linearly between
report points, at the same elapsed time.

Each bstune pruner remembers why it pruned a trial, and ``ExplainingPruner.explain`` hands the
reason over once: ``bstune.Run`` asks for it and writes it into the trial's ``stop_detail``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bstune.curve import curve_column
from bstune.objectives import better, mode_from_attrs

__all__ = ["ExplainingPruner", "PruneReason"]

#: Reasons kept for trials nobody asked about; the oldest go first.
_MAX_REASONS = 4096

#: What one pruning decision read from the study (this thread's): every storage read is a query on
#: RDB storage, and a composite pruner's members would otherwise each repeat it.
_decision = threading.local()


class PruneReason(NamedTuple):
    """Why a trial was pruned: which pruner, in words, and the stop reason it means.

    ``outcome`` is the trial's ``stop_reason``: ``"pruned"``, or ``"diverged"`` for a trial that
    blew up.
    """

    pruner: str
    why: str
    outcome: str = "pruned"


class ExplainingPruner(BasePruner):
    """A pruner that records, for each trial it prunes, a ``PruneReason``: the extension point.

    A pruner of your own implements ``decide``. It composes with bstune's through
    ``AnyPruner``, and its reason lands in the pruned trial's ``stop_detail``.

    Examples:
        Stop a trial whose latest report is below 0.2 after two seconds of training:

        >>> import optuna
        >>> from bstune.pruners import AnyPruner, DivergencePruner, ExplainingPruner, PruneReason
        >>> class FloorPruner(ExplainingPruner):
        ...     def decide(self, study, trial):
        ...         if not trial.intermediate_values:
        ...             return None
        ...         step = max(trial.intermediate_values)  # steps are elapsed training milliseconds
        ...         if step >= 2000 and trial.intermediate_values[step] < 0.2:
        ...             return PruneReason("FloorPruner", f"{trial.intermediate_values[step]:.2f} < 0.2 after 2 s")
        ...         return None
        >>> study = optuna.create_study(direction="maximize", pruner=AnyPruner(DivergencePruner(), FloorPruner()))
        >>> trial = study.ask()
        >>> trial.report(0.1, 2500)
        >>> trial.should_prune()
        True
    """

    def __init__(self) -> None:
        self._reasons: dict[tuple[str, int], PruneReason] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_reasons"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        outer = getattr(_decision, "study", None) is None
        if outer:  # the study as read once for this decision, shared by the member pruners
            _decision.study, _decision.trials, _decision.attrs = study, None, None
        try:
            reason = self.decide(study, trial)
        finally:
            if outer:
                _decision.study = _decision.trials = _decision.attrs = None
        if reason is None:
            return False
        with self._lock:
            self._reasons[(study.study_name, trial.number)] = reason
            if len(self._reasons) > _MAX_REASONS:  # nobody asked (a plain Optuna objective)
                del self._reasons[next(iter(self._reasons))]
        return True

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        """Why ``trial`` should stop now, or ``None`` to let it go on.

        Called at each report of the trial (``trial.should_prune()``); ``trial`` holds its
        intermediate values so far, at step = elapsed training milliseconds. Read the study's
        trials with ``study.get_trials(deepcopy=False)``.
        """
        raise NotImplementedError

    def _reason(self, why: str, outcome: str = "pruned") -> PruneReason:
        return PruneReason(type(self).__name__, why, outcome)

    def explain(self, study: optuna.Study, trial_number: int) -> PruneReason | None:
        """The reason this pruner last pruned trial ``trial_number`` of ``study``, handed over once."""
        with self._lock:
            return self._reasons.pop((study.study_name, trial_number), None)


# ---------------------------------------------------------------------- curves on the time axis

Point = tuple[float, float]  # (seconds, value)


def points(trial: FrozenTrial) -> list[Point]:
    """A trial's intermediate values as ``(seconds, value)``, in time order."""
    return [(step / 1000.0, float(v)) for step, v in sorted(trial.intermediate_values.items())]


def best_so_far(pts: Sequence[Point], direction: StudyDirection) -> list[Point]:
    """The running best of a curve; NaN values are skipped (they improve nothing)."""
    out: list[Point] = []
    best = math.nan
    for t, v in pts:
        if not math.isnan(v) and (math.isnan(best) or better(v, best, maximize=direction == StudyDirection.MAXIMIZE)):
            best = v
        if not math.isnan(best):
            out.append((t, best))
    return out


def value_at(curve: Sequence[Point], t: float) -> float | None:
    """A best-so-far curve's value at ``t`` seconds, interpolated linearly between its points.

    ``None`` when the curve has not reached ``t`` yet, or starts after it (nothing is known there).
    """
    if not curve or t > curve[-1][0] or t < curve[0][0]:
        return None
    i = bisect.bisect_left([p[0] for p in curve], t)
    t1, v1 = curve[i]
    if t1 == t or i == 0:
        return v1
    t0, v0 = curve[i - 1]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def finished_curve(
    cache: dict[tuple[str, int], list[Point]], study: optuna.Study, trial: FrozenTrial, direction: StudyDirection
) -> list[Point]:
    """A trial's best-so-far curve, kept in ``cache`` once the trial has finished (its curve no
    longer changes; a study with a fast target has thousands of trials to read at every report)."""
    if trial.state == TrialState.RUNNING:
        return best_so_far(points(trial), direction)
    key = (study.study_name, trial.number)
    curve = cache.get(key)
    if curve is None:
        curve = cache[key] = best_so_far(points(trial), direction)
    return curve


def trials(study: optuna.Study, states: Sequence[TrialState]) -> list[FrozenTrial]:
    """``study.get_trials(deepcopy=False, states=states)``, read once per pruning decision."""
    if getattr(_decision, "study", None) is not study:  # outside a decision, or another study
        return study.get_trials(deepcopy=False, states=tuple(states))
    if _decision.trials is None:
        _decision.trials = study.get_trials(deepcopy=False)
    return [t for t in _decision.trials if t.state in states]


def study_attrs(study: optuna.Study) -> dict[str, Any]:
    """``study.user_attrs``, read once per pruning decision."""
    if getattr(_decision, "study", None) is not study:
        return study.user_attrs
    if _decision.attrs is None:
        _decision.attrs = study.user_attrs
    return _decision.attrs


def others(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    """The study's other trials that reported something (finished, pruned or still running)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return [t for t in trials(study, states) if t.number != trial.number and t.intermediate_values]


def n_complete(study: optuna.Study) -> int:
    return len(trials(study, (TrialState.COMPLETE,)))


def trial_limit(study: optuna.Study) -> float | None:
    """The most seconds a trial of a bstune study trains: the time budget, or a target study's
    ``limit``; ``None`` for a target study without one or a study bstune did not make."""
    try:
        mode = mode_from_attrs(study_attrs(study))
    except (KeyError, TypeError, ValueError):  # a study that only looks like bstune's
        return None
    return None if mode is None else mode.trial_limit


def planned_end(trial: FrozenTrial, budget: float | None) -> float | None:
    """Seconds at which the trial's schedule ends: its planned epochs at its measured pace, or the
    budget, whichever is sooner; ``None`` when the trial does not say how long it plans to train."""
    pts = trial.intermediate_values
    epochs = curve_column(trial, "epoch")
    planned = trial.user_attrs.get("planned_epochs")
    end: float | None = None
    if pts and epochs and isinstance(planned, (int, float)) and not isinstance(planned, bool):
        t_last = max(pts) / 1000.0
        e_last = epochs[-1]
        if math.isfinite(e_last) and e_last > 0 and t_last > 0:
            end = float(planned) * t_last / e_last
    if budget is not None:
        end = budget if end is None else min(end, budget)
    return end
