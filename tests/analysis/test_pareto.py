"""Fronts and hypervolume against brute force, on random points with ties, NaN and duplicates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bstune.analysis import hypervolume_2d, pareto_indices

# Few distinct values, so ties and exact duplicates are common; NaN and infinities mixed in.
_times = st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 3.5, 10.0, math.nan, math.inf])
_metrics = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 0.5, 0.75, 1.0, math.nan, -math.inf, math.inf])
_points = st.lists(st.tuples(_times, _metrics), max_size=40)
_finite = st.lists(
    st.tuples(st.floats(0, 100, allow_nan=False), st.floats(-10, 10, allow_nan=False)), max_size=25
)


def _brute_front(points: list[tuple[float, float]], maximize: bool) -> set[int]:
    s = 1.0 if maximize else -1.0
    ok = [i for i, (t, m) in enumerate(points) if math.isfinite(t) and math.isfinite(m)]
    front = set()
    for i in ok:
        ti, mi = points[i][0], s * points[i][1]
        dominated = any(
            points[j][0] <= ti and s * points[j][1] >= mi and (points[j][0] < ti or s * points[j][1] > mi)
            for j in ok
        )
        if not dominated:
            front.add(i)
    return front


@given(_points, st.booleans())
@settings(max_examples=300, deadline=None)
def test_front_matches_brute_force(points: list[tuple[float, float]], maximize: bool) -> None:
    got = pareto_indices([p[0] for p in points], [p[1] for p in points], maximize=maximize)
    assert set(got) == _brute_front(points, maximize)
    assert len(got) == len(set(got))
    times = [points[i][0] for i in got]
    assert times == sorted(times)


def test_duplicates_are_all_kept_and_ties_resolved() -> None:
    # Two identical best points, a slower point with the same metric, a same-time worse one.
    times = [1.0, 1.0, 2.0, 1.0, 0.5]
    metrics = [0.9, 0.9, 0.9, 0.8, math.nan]
    assert pareto_indices(times, metrics) == [0, 1]
    assert pareto_indices(times, metrics, maximize=False) == [3]


def test_front_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        pareto_indices([1.0], [])


def _brute_area(points: list[tuple[float, float]], ref: tuple[float, float], maximize: bool) -> float:
    """Union of the rectangles [t, t_ref] x [m_ref, m], cell by cell on the compressed grid."""
    s = 1.0 if maximize else -1.0
    rects = [(t, s * m) for t, m in points if t < ref[0] and s * m > s * ref[1]]
    xs = sorted({t for t, _ in rects} | {ref[0]})
    ys = sorted({m for _, m in rects} | {s * ref[1]})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:], strict=False):
        for y0, y1 in zip(ys, ys[1:], strict=False):
            if any(t <= x0 and m >= y1 for t, m in rects):
                area += (x1 - x0) * (y1 - y0)
    return area


@given(_finite, st.floats(0, 120), st.floats(-12, 12), st.booleans())
@settings(max_examples=200, deadline=None)
def test_hypervolume_matches_brute_force(points, t_ref, m_ref, maximize) -> None:
    got = hypervolume_2d([p[0] for p in points], [p[1] for p in points], (t_ref, m_ref), maximize=maximize)
    assert got == pytest.approx(_brute_area(points, (t_ref, m_ref), maximize), rel=1e-9, abs=1e-9)
    assert got >= 0.0


def test_hypervolume_ignores_nan_and_points_past_the_reference() -> None:
    hv = hypervolume_2d([1.0, math.nan, 5.0, 2.0], [0.75, 1.0, 1.0, 0.25], reference=(3.0, 0.5))
    assert hv == pytest.approx(2.0 * 0.25)
    with pytest.raises(ValueError, match="reference must be finite"):
        hypervolume_2d([1.0], [1.0], reference=(math.nan, 0.0))
