"""SlowTrialPruner (budget mode): a pace that fits too few evaluations, and the first-epoch rule."""

from __future__ import annotations

import optuna
import pytest
from _pruning import _run_study, _study

import bstune
from bstune.pruners import (
    SlowTrialPruner,
    default_pruner,
)
from bstune.testing import FakeClock


def test_slow_trial_pruner_stops_a_trial_that_fits_too_few_evaluations() -> None:
    clock = FakeClock()
    mode = bstune.TimeBudget(10.0)
    study = _run_study(mode, default_pruner(mode))
    trial = study.ask()
    with pytest.raises(
        optuna.TrialPruned,
        match=r"SlowTrialPruner at step 6000: one evaluation every 6.00 s: 1 of the 2",
    ):
        with bstune.Run(trial, mode, clock=clock) as run:
            with run.training():
                clock.advance(6.0)
            run.report(0.7)


def test_slow_trial_pruner_lets_a_schedule_that_ends_before_its_next_evaluation_finish() -> None:
    # One evaluation every 6 s fits once into 10 s, which the rule stops, unless the trial's own
    # schedule (planned epochs at its pace) ends before the next evaluation would come.
    for planned, pruned in ((2, False), (4, True)):  # ends at 2 x 6 / 1.5 = 8 s < 12 s; at 16 s > 12 s
        study = _study(SlowTrialPruner(budget=10.0))
        trial = study.ask()
        trial.set_user_attr("planned_epochs", planned)
        trial.set_user_attr("curve", {"epoch": [1.5]})
        trial.report(0.6, 6000)
        assert trial.should_prune() is pruned, planned


def test_slow_trial_pruner_first_epoch_rule_needs_a_faster_trial() -> None:
    study = _study(SlowTrialPruner(budget=10.0, first_epoch=True))
    slow = study.ask()
    slow.set_user_attr("curve", {"epoch": [0.1]})
    slow.report(0.5, 2000)  # an epoch would take 20 s
    short = study.ask()  # half an epoch in 1 s, then stopped: it never finished one
    short.set_user_attr("curve", {"epoch": [0.5]})
    short.report(0.6, 1000)
    study.tell(short, 0.6)
    assert not slow.should_prune()  # no trial finished an epoch within 10 s: maybe none can
    fast = study.ask()
    fast.set_user_attr("curve", {"epoch": [0.5, 1.0]})
    fast.report(0.6, 5000)
    fast.report(0.7, 10000)  # its first epoch ends exactly at the budget: within it
    study.tell(fast, 0.7)
    edge = study.ask()  # a quarter epoch in 2.5 s: its epoch would take exactly the 10 s budget
    edge.set_user_attr("curve", {"epoch": [0.25]})
    edge.report(0.5, 2500)
    assert not edge.should_prune()
    assert slow.should_prune()
    assert "first epoch would take 20.0 s" in study.pruner.explain(study, slow.number).why


def test_slow_trial_rule_at_its_boundaries() -> None:
    def judged(ms: int, epochs: list[float] | None = None, planned: int | None = None) -> bool:
        study = _study(SlowTrialPruner(budget=10.0))
        t = study.ask()
        if planned is not None:
            t.set_user_attr("planned_epochs", planned)
        if epochs is not None:
            t.set_user_attr("curve", {"epoch": epochs})
        t.report(0.5, ms)
        return t.should_prune()

    assert not judged(10000)  # the budget is spent: the run stops it with "budget"
    assert not judged(5000)  # one evaluation every 5 s: two fit, enough
    assert judged(5001)
    # Schedule ends at 4 x 6 / 2 = 12 s, exactly when the next evaluation would come: it counts.
    assert judged(6000, epochs=[2.0], planned=4)
