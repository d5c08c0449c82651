"""The best configurations of a study, one plain row each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from bstune.objectives import is_feasible
from bstune.space import RESERVED_PARAMS

__all__ = ["ConfigRow", "best_configurations"]


@dataclass(frozen=True)
class ConfigRow:
    """One finished trial, as a person reads it."""

    number: int
    value: float
    batch_size: int | None
    micro_batch_size: int | None
    learning_rate: float | None
    epochs: int | None
    epochs_done: float | None
    train_s: float | None
    throughput: float | None
    stop_reason: str
    feasible: bool
    params: dict[str, object]


def _row(t: optuna.trial.FrozenTrial) -> ConfigRow:
    ua = t.user_attrs
    return ConfigRow(
        number=t.number,
        value=float(t.value) if t.value is not None else math.nan,
        batch_size=ua.get("batch_size"),
        micro_batch_size=ua.get("micro_batch_size"),
        learning_rate=ua.get("learning_rate"),
        epochs=ua.get("planned_epochs", t.params.get("epochs")),
        epochs_done=ua.get("epochs_done"),
        train_s=ua.get("train_s"),
        throughput=ua.get("throughput"),
        stop_reason=str(ua.get("stop_reason", t.state.name.lower())),
        feasible=is_feasible(t),
        params={k: v for k, v in t.params.items() if k not in RESERVED_PARAMS},
    )


def best_configurations(study: optuna.Study, k: int = 5) -> list[ConfigRow]:
    """The ``k`` best completed, feasible trials in the study's direction (best first)."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    rows = [_row(t) for t in done if t.value is not None and math.isfinite(t.value)]
    rows = [r for r in rows if r.feasible]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows.sort(key=lambda r: r.value, reverse=maximize)
    return rows[:k]


