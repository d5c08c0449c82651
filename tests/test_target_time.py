"""TargetTimePruner (target mode): too slow against the best time-to-target, and a target out of reach."""

from __future__ import annotations

import math

from _pruning import _reached, _study, _target_trial
from optuna.trial import TrialState

import bstune
from bstune.pruners import (
    AnyPruner,
    DivergencePruner,
    TargetTimePruner,
)
from bstune.study import create_study, make_objective
from bstune.testing import FakeClock, SyntheticTask


def test_target_time_pruner_too_slow_rule_at_its_boundary() -> None:
    study = _study(TargetTimePruner(margin=0.25), "minimize")
    _reached(study, 2.0)  # trial 0: the best time-to-target
    _reached(study, 1.0, reached=False)  # trial 1: faster, but it missed the target
    _reached(study, 3.0)  # trial 2
    _reached(study, math.inf)  # trial 3: no usable time
    trial = study.ask()
    for seconds, pruned in ((2.1, False), (2.5, False), (2.6, True)):  # 1.25 x 2.0 = 2.5 exactly
        trial.report(0.05, int(seconds * 1000))
        assert trial.should_prune() is pruned, seconds
    assert study.pruner.explain(study, trial.number).why == (
        "2.60 s of training without reaching the target, more than 1.25 x the best time-to-target 2.00 s (trial 0)"
    )
    late = study.ask()
    late.report(0.0, 9000)  # reached the target, late: the run stops it, not the pruner
    assert not late.should_prune()


def test_target_time_pruner_out_of_reach_rule_by_hand() -> None:
    # Planned end: 4 epochs at 0.5 epochs/s = 8 s. At 3 s the shortfall is 0.27 and the best rate
    # over the later half is (0.30 - 0.28) / 1 s = 0.02/s, so with optimism 2 it leaves
    # 0.27 - 2 x 0.02 x 5 = 0.07 > 0 (stopped), and with optimism 3 it leaves -0.03 (kept).
    study = _study(TargetTimePruner(optimism=2.0), "minimize")
    t = _target_trial(study, [0.30, 0.28, 0.27])
    assert t.should_prune()
    assert study.pruner.explain(study, t.number).why == (
        "at 3.00 s the shortfall is 0.27; even 2 x its best recent rate (0.02/s) leaves 0.07 at its planned end 8.00 s"
    )
    study3 = _study(TargetTimePruner(optimism=3.0), "minimize")
    assert not _target_trial(study3, [0.30, 0.28, 0.27]).should_prune()
    # The shortfall counts at its best so far: a worse report (0.35) does not widen it, and the
    # rate runs from the best so far (0.30 to 0.27 in 1 s: 0.03/s, leaving -0.03 with optimism 2).
    assert not _target_trial(study, [0.30, 0.35, 0.27]).should_prune()
    # Before the warm-up reports, past the planned end, or before min_progress: no verdict.
    assert not _target_trial(study, [0.30, 0.28]).should_prune()
    assert not _target_trial(study, [0.30, 0.29, 0.285, 0.284], planned=2).should_prune()
    study_late = _study(TargetTimePruner(optimism=2.0, min_progress=0.5), "minimize")
    assert not _target_trial(study_late, [0.30, 0.28, 0.27]).should_prune()  # 3 s < 0.5 x 8 s
    # Exactly at min_progress (2 s of 8 s, two reports enough): judged, 0.28 - 2 x 0.02 x 6 > 0.
    study_two = _study(TargetTimePruner(optimism=2.0, n_warmup_reports=2), "minimize")
    assert _target_trial(study_two, [0.30, 0.28]).should_prune()
    # The rate is the best over the later half only: the early plunge (0.6 to 0.3) is left out, so
    # 0.28 - 2 x 0.01 x (12 - 6) = 0.16 is left at the planned end (6 epochs at 0.5 a second).
    assert _target_trial(study, [0.60, 0.40, 0.30, 0.29, 0.285, 0.28], planned=6).should_prune()
    # Exactly closing the shortfall by the planned end (0.25 - 1 x 0.125 x 2 = 0) keeps it.
    study_one = _study(TargetTimePruner(optimism=1.0), "minimize")
    assert not _target_trial(study_one, [0.5, 0.375, 0.25], planned=2.5).should_prune()


def test_target_time_pruner_stops_trials_slower_than_the_best_time_to_target() -> None:
    mode = bstune.Target(0.8)
    task = SyntheticTask(seed=0, clock=FakeClock())
    space = bstune.load_space("default")
    study = create_study(
        mode,
        space=space,
        pruner=AnyPruner(DivergencePruner(), TargetTimePruner(margin=0.1)),
        seed=0,
    )
    study.enqueue_trial(
        {"log2_batch_size": 8, "learning_rate": 6e-3, "epochs": 10}
    )  # reaches 0.8 fast
    study.enqueue_trial({"log2_batch_size": 4, "learning_rate": 1.5e-3, "epochs": 10})  # slow
    study.enqueue_trial(
        {"log2_batch_size": 7, "learning_rate": 1.5e-4, "epochs": 10}
    )  # plateaus far below
    study.optimize(make_objective(task, space, mode, clock=task.clock), n_trials=3)
    fast, slow, flat = study.trials
    assert fast.state == TrialState.COMPLETE and fast.user_attrs["reached_target"]
    assert slow.state == TrialState.PRUNED
    assert (
        "without reaching the target, more than 1.1 x the best time-to-target"
        in slow.user_attrs["stop_detail"]
    )
    assert slow.user_attrs["train_s"] <= 1.1 * fast.value + 2.0
    assert flat.state == TrialState.PRUNED
    assert flat.user_attrs["stop_detail"].startswith("pruned by TargetTimePruner")


def test_target_time_pruner_sees_a_target_out_of_reach_before_any_trial_reached_it() -> None:
    study = _study(TargetTimePruner(optimism=2.0), "minimize")
    t = study.ask()
    t.set_user_attr("planned_epochs", 4)
    shortfalls = [0.30, 0.29, 0.285, 0.283]
    for k, s in enumerate(shortfalls, start=1):
        t.set_user_attr("curve", {"epoch": [0.5 * i for i in range(1, k + 1)]})
        t.report(s, 1000 * k)
    # 4 s in, 2 of 4 epochs done, improving 0.005/s at best: 2 x 0.005 x 4 s left is far from 0.283.
    assert t.should_prune()
    assert "leaves" in study.pruner.explain(study, t.number).why
