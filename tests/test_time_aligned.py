"""TimeAlignedPruner: rungs on the time axis, sparse and uneven reports, the percentile style, crossing curves."""

from __future__ import annotations

import optuna
import pytest
from _pruning import _crossing_study, _finished, _ramp, _study
from optuna.trial import TrialState

import bstune
from bstune.pruners import (
    TimeAlignedPruner,
    default_pruner,
)
from bstune.study import create_study, make_objective
from bstune.testing import FakeClock, SyntheticTask


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_time_aligned_prunes_the_worst_at_a_rung_in_both_directions(direction: str) -> None:
    sign = 1.0 if direction == "maximize" else -1.0
    study = _study(
        TimeAlignedPruner(min_seconds=1.0, n_startup_trials=2, n_min_trials=3), direction
    )
    for final in (0.9, 0.8, 0.7, 0.6):
        _finished(study, [(s, sign * v) for s, v in _ramp(final, [400, 1300, 2500, 4000])])
    good, bad = study.ask(), study.ask()
    for t, final in ((good, 0.95), (bad, 0.3)):
        t.report(sign * final * 0.7 / 4, 700)
        assert not t.should_prune()  # before the first rung
        t.report(sign * final * 1.2 / 4, 1200)  # first report past the 1 s rung
    assert not good.should_prune()
    assert bad.should_prune()
    reason = study.pruner.explain(study, bad.number)
    assert reason.pruner == "TimeAlignedPruner" and "ranks 6 of 6" in reason.why
    assert study.pruner.explain(study, bad.number) is None  # handed over once


def test_time_aligned_compares_sparse_and_uneven_reports_at_equal_time() -> None:
    # Other trials reported at times that never coincide with this trial's, some very sparsely.
    study = _study(TimeAlignedPruner(min_seconds=2.0, n_startup_trials=0, n_min_trials=3))
    _finished(study, [(150, 0.1), (9000, 0.9)])
    _finished(study, [(1999, 0.4), (2001, 0.45), (7777, 0.6)])
    _finished(study, [(333, 0.2), (5000, 0.8)])
    t = study.ask()
    t.report(0.30, 2500)
    # At 2.5 s the others stand at about 0.31, 0.46 and 0.48 (interpolated): 0.30 is last.
    assert t.should_prune()
    ok = study.ask()
    ok.report(0.50, 2600)  # best of four at 2.6 s
    assert not ok.should_prune()


def test_time_aligned_percentile_style_judges_every_report_between_rungs() -> None:
    def study_with(percentile: float | None) -> optuna.Study:
        pruner = TimeAlignedPruner(min_seconds=1.0, n_startup_trials=0, n_min_trials=3, percentile=percentile)
        study = _study(pruner)
        for final in (0.9, 0.8, 0.7, 0.6):
            _finished(study, _ramp(final, [500, 1000, 2000, 3000, 4000]))
        return study

    # Optuna's rule: percentile=50 prunes below the median, percentile=90 only below the 10th.
    for percentile, expected in ((None, False), (50.0, True), (90.0, False)):
        study = study_with(percentile)
        t = study.ask()
        t.report(0.25, 1100)  # the 1 s rung: second of five, kept
        assert not t.should_prune()
        t.report(0.36, 1800)  # not a rung; at 1.8 s the others stand at 0.27 to 0.405, median 0.34
        assert not t.should_prune()
        t.report(0.37, 2000)  # at 2 s: 0.30 to 0.45, median 0.375, 10th percentile 0.315
        assert t.should_prune() is expected, percentile


def test_time_aligned_waits_for_enough_trials_to_reach_that_time() -> None:
    study = _study(TimeAlignedPruner(min_seconds=1.0, n_startup_trials=0, n_min_trials=3))
    _finished(study, _ramp(0.9, [500, 4000]))
    _finished(study, _ramp(0.9, [500, 4000]))
    _finished(study, _ramp(0.9, [500, 1000]), TrialState.PRUNED)  # never reached 3 s
    t = study.ask()
    t.report(0.01, 3000)
    assert not t.should_prune()  # only two trials reached 3 s
    t2 = study.ask()
    t2.report(0.01, 1000)
    assert t2.should_prune()  # three reached 1 s


def test_crossing_curves_do_not_lose_the_best_configuration() -> None:
    study, idx = _crossing_study(default_pruner(bstune.TimeBudget(30.0)))
    winner = study.trials[idx["winner"]]
    assert winner.state == TrialState.COMPLETE
    assert study.best_trial.number == winner.number
    # The same comparison at plain equal time (what successive halving on time does) loses it.
    naive, _ = _crossing_study(TimeAlignedPruner(peer_progress=1.0))
    lost = naive.trials[idx["winner"]]
    assert lost.state == TrialState.PRUNED
    assert "TimeAlignedPruner" in lost.user_attrs["stop_detail"]
    assert naive.best_value < study.best_value - 0.03


def test_time_aligned_prunes_hopeless_trials_on_the_synthetic_task_and_says_why() -> None:
    task = SyntheticTask(seed=1, clock=FakeClock())
    mode = bstune.TimeBudget(30.0)
    space = bstune.load_space("default")
    pruned = create_study(mode, space=space, pruner=default_pruner(mode), seed=3)
    pruned.optimize(make_objective(task, space, mode, clock=task.clock), n_trials=24)
    task2 = SyntheticTask(seed=1, clock=FakeClock())
    plain = create_study(mode, space=space, seed=3)
    plain.optimize(make_objective(task2, space, mode, clock=task2.clock), n_trials=24)
    stopped = [t for t in pruned.trials if t.state == TrialState.PRUNED]
    assert len(stopped) >= 4
    for t in stopped:
        assert t.user_attrs["stop_reason"] in ("pruned", "diverged")
        assert t.user_attrs["stop_detail"].startswith("pruned by ")

    def spent(s: optuna.Study) -> float:
        return sum(t.user_attrs["train_s"] for t in s.trials)

    assert spent(pruned) < 0.9 * spent(plain)


def test_time_aligned_rungs_by_hand() -> None:
    # A bstune time-budget study of 8 s: rungs at 0.25 x 8 = 2 s, then x 2.5 (5 s, 12.5 s); no
    # verdict in the last 5% (from 7.6 s). Five finished trials climb straight lines: at time t
    # they have 0.10t, 0.09t, 0.08t, 0.07t, 0.06t. With six trials compared, the top
    # floor(6 / 2.5) = 2 continue.
    study = _study(TimeAlignedPruner(n_startup_trials=0, n_min_trials=4))
    study.set_user_attr("mode", "time_budget")
    study.set_user_attr("budget", 8.0)
    for slope in (0.10, 0.09, 0.08, 0.07, 0.06):
        _finished(study, [(500 * k, slope * 0.5 * k) for k in range(1, 17)])

    def verdict(reports: list[tuple[float, float]]) -> bool:
        t = study.ask()
        for seconds, value in reports:
            t.report(value, int(round(seconds * 1000)))
        pruned = t.should_prune()
        study.tell(t, state=TrialState.FAIL)  # out of the way of the next check
        return pruned

    assert not verdict([(1.5, 0.0)])  # before the first rung
    assert verdict([(1.5, 0.0), (2.5, 0.21)])  # crossing 2 s: third of six (0.25, 0.225 ahead)
    assert study.pruner.explain(study, study.trials[-1].number).why == (
        "at 2.50 s (rung 2.00 s) its best 0.21 ranks 3 of 6 trials compared at that time; the top 2 continue"
    )
    assert not verdict([(1.5, 0.0), (2.5, 0.23)])  # second of six: it continues
    assert not verdict([(2.5, 0.3), (3.0, 0.0)])  # between rungs: no verdict, however low
    assert verdict([(4.5, 0.3), (5.0, 0.36)])  # crossing 5 s exactly: 0.5, 0.45, 0.4 ahead
    assert not verdict([(4.5, 0.3), (5.0, 0.46)])
    assert not verdict([(4.0, 0.5), (7.6, 0.0)])  # the last 5% of its schedule: no verdict
