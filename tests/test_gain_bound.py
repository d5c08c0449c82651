"""GainBoundPruner: what even the largest finished gain, tripled, cannot lift to the best."""

from __future__ import annotations

import optuna
import pytest
from _pruning import _budget_study, _finished, _judged, _planned, _study
from optuna.trial import TrialState

import bstune
from bstune.pruners import (
    GainBoundPruner,
)


def test_gain_bound_prunes_only_what_the_largest_finished_gain_cannot_lift() -> None:
    study = _study(GainBoundPruner(optimism=1.0, n_min_trials=2))
    _finished(study, [(1000, 0.50), (5000, 0.70), (10000, 0.80)])  # gains 0.10 from its halfway point
    _finished(study, [(1000, 0.60), (5000, 0.82), (10000, 0.85)])  # gains 0.03 from there; the best
    close = study.ask()
    _planned(close, [0.5])
    close.report(0.76, 5000)  # 0.76 + 0.10 > 0.85: might still win
    assert not close.should_prune()
    far = study.ask()
    _planned(far, [0.5])
    far.report(0.74, 5000)  # 0.74 + 0.10 < 0.85: cannot win
    assert far.should_prune()
    why = study.pruner.explain(study, far.number).why
    assert "50% of its schedule" in why and "short of the best 0.85" in why and "trial 0" in why
    # More optimism credits more: 1.5 x 0.10 lifts it past 0.85.
    lenient = _study(GainBoundPruner(optimism=1.5, n_min_trials=2))
    for t in study.trials[:2]:
        lenient.add_trial(t)
    again = lenient.ask()
    _planned(again, [0.5])
    again.report(0.74, 5000)
    assert not again.should_prune()


def test_gain_bound_reads_each_finished_trial_at_the_same_fraction_of_its_own_schedule() -> None:
    """A short finished trial (its schedule ended at 4 s) is read at half of 4 s, not at the judged
    trial's 5 s, so its late annealing gain counts for the judged trial too."""
    study = _study(GainBoundPruner(optimism=1.0, n_min_trials=1))
    _finished(study, [(1000, 0.5), (2000, 0.6), (4000, 0.9)])  # +0.3 from its halfway point
    trial = study.ask()
    _planned(trial, [0.5])
    trial.report(0.65, 5000)  # halfway through 10 s: 0.65 + 0.3 > 0.9
    assert not trial.should_prune()
    late = study.ask()
    _planned(late, [0.5])
    late.report(0.55, 5000)  # 0.55 + 0.3 < 0.9
    assert late.should_prune()


def test_gain_bound_waits_for_finished_trials_and_for_a_known_schedule() -> None:
    study = _study(GainBoundPruner(optimism=1.0, n_min_trials=2))
    _finished(study, [(1000, 0.8), (2000, 0.9)])
    hopeless = study.ask()
    _planned(hopeless, [0.5])
    hopeless.report(0.1, 1000)
    assert not hopeless.should_prune()  # one finished trial of the two it needs
    _finished(study, [(1000, 0.8), (2000, 0.9)])
    assert hopeless.should_prune()
    unknown = study.ask()  # no planned_epochs, no budget: where it is in its schedule is unknown
    unknown.report(0.1, 1000)
    assert not unknown.should_prune()
    early = study.ask()  # 10% into its schedule: too early to judge
    _planned(early, [0.1])
    early.report(0.1, 100)
    assert not early.should_prune()
    # Judged that early anyway, the finished trials count with their gain from their first report.
    eager = _study(GainBoundPruner(optimism=1.0, n_min_trials=1, min_progress=0.0))
    eager.add_trial(study.trials[0])
    t = eager.ask()
    _planned(t, [0.1])
    t.report(0.1, 100)  # 0.1 + (0.9 - 0.8) < 0.9
    assert t.should_prune()
    assert "trial 0" in eager.pruner.explain(eager, t.number).why


@pytest.mark.parametrize(
    ("kind", "finished", "near", "far", "why"),
    [
        # Target mode: the shortfall (0 once reached) was closed by 0.1 from halfway.
        ("target", [(1000, 0.3), (2000, 0.1), (4000, 0.0)], 0.08, 0.2, "would not reach the target"),
        # A minimised metric: the loss fell by 0.1 from halfway.
        ("minimize", [(1000, 0.5), (2000, 0.3), (4000, 0.2)], 0.28, 0.35, "short of the best 0.2"),
    ],
)
def test_gain_bound_judges_lower_is_better_values(
    kind: str, finished: list[tuple[int, float]], near: float, far: float, why: str
) -> None:
    pruner = GainBoundPruner(optimism=1.0, n_min_trials=1)
    if kind == "target":
        study = bstune.create_study(bstune.Target(0.9), pruner=pruner)
    else:
        study = _study(pruner, "minimize")
    _finished(study, finished)
    for value, expected in ((near, False), (far, True)):
        t = study.ask()
        _planned(t, [0.5])
        t.report(value, 2000)
        assert t.should_prune() is expected
    assert why in study.pruner.explain(study, t.number).why


def test_gain_bound_by_hand_in_a_time_budget_study() -> None:
    # Finished trials (values exact in binary): #0 climbs 0.5 -> 0.625 -> 0.75 (from half its
    # schedule, 5 s, it gains 0.125); #1 gains 0.0625 from half of its 8 s; #2 first reports at 7 s,
    # after half of its 9 s, so its gain counts from its first report: 0.25, the largest.
    # Judged at 5 s of a 10 s budget (half), with optimism 1: its best + 0.25 against the best 0.75.
    def study_with(pruner: optuna.pruners.BasePruner) -> optuna.Study:
        study = _budget_study(pruner)
        _finished(study, [(2000, 0.5), (5000, 0.625), (10000, 0.75)])
        _finished(study, [(4000, 0.625), (8000, 0.6875)])
        _finished(study, [(7000, 0.25), (9000, 0.5)])
        return study

    study = study_with(GainBoundPruner(1.0, n_min_trials=3))
    assert not _judged(study, 5.0, 0.5)  # 0.5 + 0.25 = 0.75: it could still tie the best
    assert _judged(study, 5.0, 0.375)  # 0.625 < 0.75
    assert study.pruner.explain(study, study.trials[-1].number).why == (
        "at 5.00 s (50% of its schedule) its best is 0.375; even 1 x the largest gain a finished trial made "
        "from there (0.25, trial 2) reaches 0.625, short of the best 0.75"
    )
    assert _judged(study, 2.5, 0.0)  # exactly min_progress (25%): judged
    assert not _judged(study, 10.0, 0.0)  # its schedule is over: the run stops it, not the pruner
    # min_delta widens the credit: 0.375 + 0.25 + 0.125 = 0.75 ties the best.
    assert not _judged(study_with(GainBoundPruner(1.0, min_delta=0.125, n_min_trials=3)), 5.0, 0.375)
    # Only completed trials that reported count toward n_min_trials.
    few = _budget_study(GainBoundPruner(1.0, n_min_trials=3))
    _finished(few, [(2000, 0.5), (5000, 0.625), (10000, 0.75)])
    _finished(few, [(4000, 0.625), (8000, 0.6875)])
    silent = few.ask()
    few.tell(silent, 0.1)
    assert not _judged(few, 5.0, 0.0)


def test_gain_bound_by_hand_in_a_target_study() -> None:
    # Shortfalls (lower is better, 0 = reached). The finished trial went 0.5 -> 0.25 -> 0 over 8 s:
    # from half its schedule (4 s) it closed 0.25. The judged trial plans 2 epochs and did 1 in 4 s
    # (half of 8 s): with optimism 1 a shortfall above 0.25 cannot reach the target.
    study = _study(GainBoundPruner(1.0, n_min_trials=1), "minimize")
    study.set_user_attr("mode", "target")
    done = study.ask()
    for ms, gap in ((2000, 0.5), (4000, 0.25), (8000, 0.0)):
        done.report(gap, ms)
    study.tell(done, 8.0)

    def judged(gap: float) -> bool:
        t = study.ask()
        t.set_user_attr("planned_epochs", 2)
        t.set_user_attr("curve", {"epoch": [1.0]})
        t.report(gap, 4000)
        pruned = t.should_prune()
        study.tell(t, state=TrialState.FAIL)
        return pruned

    assert not judged(0.25)  # 0.25 - 0.25 = 0: it may just reach it
    assert not judged(0.125)
    assert judged(0.5)
    assert study.pruner.explain(study, study.trials[-1].number).why == (
        "at 4.00 s (50% of its schedule) the shortfall is 0.5; 1 x the largest gain a finished trial made "
        "from there (0.25, trial 0) would not reach the target by its end"
    )
