"""The two modes of a study, and how a learning curve becomes the value Optuna sees.

* ``TimeBudget`` (budget T): a trial trains until T seconds of training time or the end of its
  epochs; its value is the best validation metric it reached; the study maximises it (or minimises,
  for a lower-is-better metric).
* ``Target`` (target A): a trial stops when the validation metric first reaches A; its value is
  the training seconds it took; the study minimises it. With a ``limit`` L, a trial that has not
  reached A after L seconds of training stops there (a miss), and its schedule ends at L.

Samplers learn from the intermediate values too (Optuna's TPE ranks pruned trials by their last
one), so intermediate values always point the way of the study: in budget mode the metric itself,
in target mode the *shortfall*, how far the metric still is from the target (0 once reached), which
is lower-is-better like time. A trial that never reaches the target gets a penalised value worse than
every hit recorded before it, and a violated constraint (the shortfall), so the sampler moves away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

from bstune.errors import BstuneError, check, check_choice

if TYPE_CHECKING:
    import optuna

    from bstune.curve import CurvePoint

__all__ = ["Mode", "Target", "TimeBudget", "better", "is_feasible", "mode_from_attrs"]

Direction = Literal["maximize", "minimize"]


def _check_direction(owner: str, direction: str) -> None:
    check_choice(owner, "metric_direction", direction, ("maximize", "minimize"))



def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial met its constraints (a missed target or out of memory does not)."""
    return all(v <= 0.0 for v in trial.constraints.values())


def better(a: float, b: float, *, maximize: bool) -> bool:
    """Whether ``a`` is strictly better than ``b``; NaN never beats anything, and anything beats NaN.

    Examples:
        >>> better(0.9, 0.8, maximize=True), better(0.9, 0.8, maximize=False), better(0.5, 0.5, maximize=True)
        (True, False, False)
        >>> better(math.nan, 0.1, maximize=True), better(0.1, math.nan, maximize=False)
        (False, True)
    """
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if maximize else a < b

@dataclass(frozen=True)
class TimeBudget:
    """Each trial trains for at most ``budget`` seconds; the value is the best metric reached.

    Args:
        budget: Seconds of training time (evaluation excluded, unless ``clock="wall"``).
        metric_direction: Whether a higher validation metric is better.
        metric_name: What the metric is called in reports and on the dashboard.
        clock: ``"train"`` counts time inside training steps; ``"wall"`` counts everything.

    Examples:
        >>> TimeBudget(30).study_direction
        'maximize'
    """

    budget: float
    metric_direction: Direction = "maximize"
    metric_name: str = "accuracy"
    clock: Literal["train", "wall"] = "train"

    kind = "time_budget"

    def __post_init__(self) -> None:
        check("TimeBudget", "budget", self.budget, "a finite number of seconds greater than 0",
              lambda v: math.isfinite(v) and v > 0)
        _check_direction("TimeBudget", self.metric_direction)
        check_choice("TimeBudget", "clock", self.clock, ("train", "wall"))

    @property
    def study_direction(self) -> Direction:
        return self.metric_direction

    @property
    def value_name(self) -> str:
        return f"best validation {self.metric_name} within {self.budget:g} s"

    @property
    def intermediate_name(self) -> str:
        return f"validation {self.metric_name}"

    def intermediate(self, metric: float) -> float:
        return metric

    def reached(self, metric: float) -> bool:
        return False

    def value(self, curve: Sequence[CurvePoint]) -> float:
        vals = [p.metric for p in curve if math.isfinite(p.metric)]
        if not vals:
            return math.nan
        return max(vals) if self.metric_direction == "maximize" else min(vals)

    @property
    def trial_limit(self) -> float:
        """The most seconds a trial trains: the budget."""
        return self.budget

    def to_attrs(self) -> dict[str, Any]:
        return {
            "mode": self.kind,
            "budget": self.budget,
            "metric_name": self.metric_name,
            "metric_direction": self.metric_direction,
            "clock": self.clock,
        }


@dataclass(frozen=True)
class Target:
    """Each trial stops when the metric reaches ``target``; the value is the seconds it took.

    Args:
        target: The validation metric to reach (``>=`` for a higher-is-better metric).
        limit: The most seconds of training a trial may take to reach it (``None``: no limit; a
            trial trains until its planned epochs end). A trial still short of the target at the
            limit stops there as a miss, and its learning-rate schedule ends at the limit, as in a
            time-budget study; ``bstune.pruners.AsyncHalvingPruner`` ranks at fractions of it.
        metric_direction: Whether a higher validation metric is better.
        metric_name: What the metric is called in reports and on the dashboard.
        clock: ``"train"`` counts time inside training steps; ``"wall"`` counts everything.

    Examples:
        >>> Target(0.8).shortfall(0.75)
        0.05...
        >>> Target(0.8, limit=60).trial_limit
        60.0
    """

    target: float
    metric_direction: Direction = "maximize"
    metric_name: str = "accuracy"
    clock: Literal["train", "wall"] = "train"
    limit: float | None = None

    kind = "target"
    #: A miss is worth at least this many times the slowest hit seen before it.
    miss_factor = 2.0

    def __post_init__(self) -> None:
        check("Target", "target", self.target, "a finite number", math.isfinite)
        _check_direction("Target", self.metric_direction)
        check_choice("Target", "clock", self.clock, ("train", "wall"))
        check("Target", "limit", self.limit, "None or a finite number of seconds greater than 0",
              lambda v: math.isfinite(v) and v > 0, none=True)
        if self.limit is not None:
            object.__setattr__(self, "limit", float(self.limit))

    @property
    def trial_limit(self) -> float | None:
        """The most seconds a trial trains (``None``: until the target or the end of its epochs)."""
        return self.limit

    def check_range(self, what: str = "target") -> None:
        """Refuse a target the default accuracy metric can never reach (it lies in [0, 1]).

        Raises:
            BstuneError: The metric is accuracy (higher is better) and the target is not in (0, 1].
        """
        if self.metric_name == "accuracy" and self.metric_direction == "maximize" and not 0 < self.target <= 1:
            hint = f"; for {self.target:g}% give {self.target / 100:g}" if 1 < self.target <= 100 else ""
            raise BstuneError(f"{what} {self.target:g} is outside the range of accuracy, 0 to 1{hint}")

    @property
    def study_direction(self) -> Direction:
        return "minimize"

    @property
    def value_name(self) -> str:
        op = ">=" if self.metric_direction == "maximize" else "<="
        return f"training seconds to validation {self.metric_name} {op} {self.target:g}"

    @property
    def intermediate_name(self) -> str:
        return f"shortfall to {self.metric_name} {self.target:g}"

    def shortfall(self, metric: float) -> float:
        """How far ``metric`` is from the target: 0 once reached, larger is worse, NaN stays NaN."""
        gap = self.target - metric if self.metric_direction == "maximize" else metric - self.target
        return max(gap, 0.0) if not math.isnan(gap) else math.nan

    def intermediate(self, metric: float) -> float:
        return self.shortfall(metric)

    def reached(self, metric: float) -> bool:
        return self.shortfall(metric) == 0.0

    def time_to_target(self, curve: Sequence[CurvePoint]) -> float | None:
        for p in curve:
            if self.reached(p.metric):
                return p.wall_s if self.clock == "wall" else p.train_s
        return None

    def value(self, curve: Sequence[CurvePoint]) -> float:
        t = self.time_to_target(curve)
        return math.nan if t is None else t

    def miss_value(self, curve: Sequence[CurvePoint], slowest_hit: float | None) -> float:
        """The penalised value of a trial that never reached the target.

        It is ``miss_factor * max(time spent, slowest earlier hit) * (1 + best shortfall)``: worse
        than every hit recorded before it, and worse the further the trial stayed from the target.
        """
        spent = 0.0
        if curve:
            spent = curve[-1].wall_s if self.clock == "wall" else curve[-1].train_s
        gaps = [self.shortfall(p.metric) for p in curve if math.isfinite(p.metric)]
        best_gap = min(gaps) if gaps else 1.0
        return self.miss_factor * max(spent, slowest_hit or 0.0, 1e-3) * (1.0 + best_gap)

    def to_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "mode": self.kind,
            "target": self.target,
            "metric_name": self.metric_name,
            "metric_direction": self.metric_direction,
            "clock": self.clock,
        }
        if self.limit is not None:
            attrs["limit"] = self.limit
        return attrs


Mode = Union[TimeBudget, Target]


def mode_from_attrs(attrs: dict[str, Any]) -> Mode | None:
    """Rebuild the mode recorded on a study, or ``None`` for a study bstune did not make."""
    common = {
        "metric_name": attrs.get("metric_name", "accuracy"),
        "metric_direction": attrs.get("metric_direction", "maximize"),
        "clock": attrs.get("clock", "train"),
    }
    if attrs.get("mode") == TimeBudget.kind:
        return TimeBudget(float(attrs["budget"]), **common)
    if attrs.get("mode") == Target.kind:
        return Target(float(attrs["target"]), **common, limit=attrs.get("limit"))
    return None
