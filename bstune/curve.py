"""A learning curve point and how a curve is stored on a trial (user attribute ``curve``).

Shared by the run that records curves, the modes that turn them into values and the analysis that
reads them back; it imports nothing of bstune.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

__all__ = ["CurvePoint", "curve_column", "curve_from_attrs", "curve_to_attrs"]


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation: when (training and wall seconds, epochs, samples) and how good."""

    train_s: float
    wall_s: float
    epoch: float
    samples_seen: int
    metric: float
    loss: float


_CURVE_FIELDS = ("train_s", "wall_s", "epoch", "samples_seen", "metric", "loss")


def _json_float(x: float) -> float | None:
    # Optuna stores user attributes as JSON, and browsers reject NaN in JSON.
    return x if math.isfinite(x) else None


def curve_to_attrs(curve: Sequence[CurvePoint]) -> dict[str, list[Any]]:
    return {f: [_json_float(float(getattr(p, f))) for p in curve] for f in _CURVE_FIELDS}


def curve_column(trial: optuna.trial.FrozenTrial, name: str) -> list[float]:
    """One column (``train_s``, ``epoch``, ``loss``, ...) of the curve recorded on a trial: NaN for
    a missing value, empty when the trial has no curve or no such column."""
    raw = trial.user_attrs.get("curve")
    col = raw.get(name) if isinstance(raw, dict) else None
    if not isinstance(col, list):
        return []
    return [math.nan if v is None else float(v) for v in col]


def curve_from_attrs(trial: optuna.trial.FrozenTrial) -> list[CurvePoint]:
    """The learning curve recorded on a trial (empty if it has none)."""
    cols = [curve_column(trial, f) for f in _CURVE_FIELDS]
    return [
        CurvePoint(a, b, c, int(d), e, f)
        for a, b, c, d, e, f in zip(*cols, strict=False)
    ]
