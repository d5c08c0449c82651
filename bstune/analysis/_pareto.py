"""Pareto fronts of (time, metric) and their 2-D hypervolume, on plain numbers.

Time is always minimised; the metric is maximised (accuracy) or minimised (a loss) as the study
says. One point dominates another when it is no slower and no worse, and strictly better in one of
the two. Identical points do not dominate each other, so duplicates on the front are all kept (as
Optuna does). Points whose time or metric is NaN or infinite are never on a front: they are not a
measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["hypervolume_2d", "pareto_indices"]


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def pareto_indices(times: Sequence[float], metrics: Sequence[float], *, maximize: bool = True) -> list[int]:
    """Indices of the non-dominated points, ordered by time (then input order).

    Args:
        times: Seconds, lower is better.
        metrics: The metric, higher is better when ``maximize``.
        maximize: Whether a higher metric is better.

    Examples:
        >>> pareto_indices([1.0, 2.0, 2.0, 3.0], [0.5, 0.7, 0.6, 0.7])
        [0, 1]
    """
    if len(times) != len(metrics):
        raise ValueError(f"times and metrics must have the same length; got {len(times)} and {len(metrics)}")
    sign = 1.0 if maximize else -1.0
    pts = [(float(t), sign * float(m), i) for i, (t, m) in enumerate(zip(times, metrics, strict=True)) if _finite(t) and _finite(m)]
    pts.sort(key=lambda p: (p[0], -p[1], p[2]))
    out: list[int] = []
    best_before = -math.inf  # the best metric among strictly faster points
    j = 0
    while j < len(pts):
        k = j
        while k < len(pts) and pts[k][0] == pts[j][0]:
            k += 1
        top = pts[j][1]  # the group is sorted best first
        if top > best_before:
            out.extend(p[2] for p in pts[j:k] if p[1] == top)
        best_before = max(best_before, top)
        j = k
    return out


def hypervolume_2d(
    times: Sequence[float],
    metrics: Sequence[float],
    reference: tuple[float, float],
    *,
    maximize: bool = True,
) -> float:
    """The area dominated by the points and bounded by ``reference = (time, metric)``.

    For maximisation it is the area of the union of the rectangles [t_i, t_ref] x [m_ref, m_i]. Points slower or worse than the reference add
    nothing. Units: seconds times metric units; larger is better.

    Examples:
        >>> hypervolume_2d([1.0, 2.0], [0.75, 1.0], reference=(3.0, 0.5))
        0.75
    """
    t_ref, m_ref = float(reference[0]), float(reference[1])
    if not (_finite(t_ref) and _finite(m_ref)):
        raise ValueError(f"reference must be finite; got {reference!r}")
    sign = 1.0 if maximize else -1.0
    idx = pareto_indices(times, metrics, maximize=maximize)
    area = 0.0
    covered = sign * m_ref  # the metric height already counted, in maximisation form
    for i in idx:  # by time, so each later front point is strictly better in metric
        t, m = float(times[i]), sign * float(metrics[i])
        if t >= t_ref or m <= covered:
            continue
        area += (t_ref - t) * (m - covered)
        covered = m
    return area
