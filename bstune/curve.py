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

__all__ = ["CurvePoint", "curve_from_attrs", "curve_to_attrs"]


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


def curve_from_attrs(trial: optuna.trial.FrozenTrial) -> list[CurvePoint]:
    """The learning curve recorded on a trial (empty if it has none)."""
    raw = trial.user_attrs.get("curve")
    if not isinstance(raw, dict):
        return []
    cols = [[math.nan if v is None else v for v in raw.get(f, [])] for f in _CURVE_FIELDS]
    return [
        CurvePoint(float(a), float(b), float(c), int(d), float(e), float(f))
        for a, b, c, d, e, f in zip(*cols, strict=False)
    ]
