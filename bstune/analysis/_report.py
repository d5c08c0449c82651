"""The report of a study as plain data: its rows, fronts, answers and the ``Report`` itself.

``bstune.analysis.analyze`` (in ``_analyze.py``) fills it; ``bstune.analysis._format``,
``bstune.analysis._plotly`` and ``bstune.analysis._matplotlib`` only format or draw it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bstune.analysis._confirmations import Confirmation
from bstune.analysis._design import DesignReport
from bstune.analysis._disturbed import Disturbance
from bstune.analysis._equal import EqualFooting
from bstune.analysis._scaling import ScalingFit

__all__ = ["Answer", "BatchSizeRow", "FrontPoint", "Recommendation", "Report", "ScalingFit", "TrialSummary"]


class Answer(NamedTuple):
    """One question, its answer in words, and the table or figure it rests on."""

    question: str
    answer: str
    evidence: str


class TrialSummary(NamedTuple):
    """One trial as the analysis sees it (any state)."""

    number: int
    state: str
    stop_reason: str
    batch_size: int | None
    learning_rate: float | None
    epochs: int | None
    epochs_done: float | None
    time_s: float
    metric: float
    throughput: float | None
    feasible: bool
    curve_time_s: tuple[float, ...]
    curve_metric: tuple[float, ...]
    curve_samples: tuple[float, ...] = ()


class FrontPoint(NamedTuple):
    """A point of a front: which trial, when, how good, and its configuration."""

    trial: int
    time_s: float
    metric: float
    batch_size: int | None
    learning_rate: float | None
    epochs: int | None
    epochs_done: float | None
    state: str


class Recommendation(NamedTuple):
    """What to train with for a budget.

    ``basis`` says where the pick comes from: ``"finished"``, the best finished trial that took at
    most ``budget_s`` (its whole schedule fits the budget); ``"anytime"``, when no finished trial
    fits, the trial whose curve was best by ``budget_s`` (a run stopped early, so ``time_s`` is
    that curve point's time and ``epochs_done`` is unknown); ``"none"``, nothing measured by then.
    ``anytime_metric`` is the best metric any curve showed by ``budget_s`` (``anytime_trial``'s).
    """

    budget_s: float
    basis: str
    trial: int | None
    time_s: float
    metric: float
    batch_size: int | None
    learning_rate: float | None
    epochs: int | None
    epochs_done: float | None
    anytime_metric: float
    anytime_trial: int | None


class BatchSizeRow(NamedTuple):
    """The effects of one batch size across the study's trials."""

    batch_size: int
    n_trials: int
    n_finished: int
    best_metric: float
    best_trial: int | None
    best_learning_rate: float | None
    time_to_target_s: float
    time_to_target_trial: int | None
    throughput: float | None


@dataclass
class Report:
    """Everything ``analyze`` found; plain data for formats and figures."""

    study_name: str
    mode: str | None
    metric_name: str
    metric_direction: str
    clock: str
    budget_s: float | None
    target: float | None
    time_to_target_target: float | None
    n_trials: int
    states: dict[str, int]
    stop_reasons: dict[str, int]
    trials: list[TrialSummary]
    front: list[FrontPoint]
    anytime_front: list[FrontPoint]
    reference: tuple[float, float] | None
    hypervolume: float | None
    anytime_hypervolume: float | None
    recommendations: list[Recommendation]
    batch_sizes: list[BatchSizeRow]
    lr_scaling: ScalingFit | None
    importance: dict[str, float]
    messages: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    equal_footing: EqualFooting | None = None
    confirmations: list[Confirmation] = field(default_factory=list)
    design: DesignReport | None = None
    disturbed: list[Disturbance] = field(default_factory=list)

    @property
    def maximize(self) -> bool:
        return self.metric_direction == "maximize"

    @property
    def time_label(self) -> str:
        return "wall time (s)" if self.clock == "wall" else "training time (s)"

    @property
    def metric_label(self) -> str:
        return f"validation {self.metric_name}"

    @property
    def front_trials(self) -> set[int]:
        return {p.trial for p in self.front}

    def to_dict(self, *, curves: bool = False) -> dict[str, Any]:
        """JSON-ready data (NaN and infinities become ``None``); curves only when asked."""
        out: dict[str, Any] = {
            "study_name": self.study_name,
            "mode": self.mode,
            "metric_name": self.metric_name,
            "metric_direction": self.metric_direction,
            "clock": self.clock,
            "budget_s": self.budget_s,
            "target": self.target,
            "n_trials": self.n_trials,
            "states": self.states,
            "stop_reasons": self.stop_reasons,
            "front": [p._asdict() for p in self.front],
            "anytime_front": [p._asdict() for p in self.anytime_front],
            "reference": list(self.reference) if self.reference else None,
            "hypervolume": self.hypervolume,
            "anytime_hypervolume": self.anytime_hypervolume,
            "recommendations": [r._asdict() for r in self.recommendations],
            "batch_sizes": [b._asdict() for b in self.batch_sizes],
            "time_to_target_target": self.time_to_target_target,
            "lr_scaling": None,
            "importance": self.importance,
            "trials": [_trial_dict(t, curves) for t in self.trials],
            "messages": self.messages,
            "answers": [a._asdict() for a in self.answers],
            "equal_footing": None,
            "confirmations": [c._asdict() for c in self.confirmations],
            "design": self.design.to_dict() if self.design is not None else None,
            "disturbed": [d._asdict() for d in self.disturbed],
        }
        if self.equal_footing is not None:
            eq = self.equal_footing._asdict()
            eq["rows"] = [r._asdict() for r in self.equal_footing.rows]
            out["equal_footing"] = eq
        if self.lr_scaling is not None:
            fit = self.lr_scaling._asdict()
            fit["batch_sizes"] = list(fit["batch_sizes"])
            fit["learning_rates"] = list(fit["learning_rates"])
            out["lr_scaling"] = fit
        return _json_safe(out)


def _trial_dict(t: TrialSummary, curves: bool) -> dict[str, Any]:
    d = t._asdict()
    if curves:
        d["curve_time_s"] = list(t.curve_time_s)
        d["curve_metric"] = list(t.curve_metric)
        d["curve_samples"] = list(t.curve_samples)
    else:
        del d["curve_time_s"], d["curve_metric"], d["curve_samples"]
    return d


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x
