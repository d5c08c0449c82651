"""DivergencePruner: a NaN metric at the first report, a loss that explodes."""

from __future__ import annotations

import math

import optuna
import pytest
from _pruning import _run_study, _study
from optuna.trial import TrialState

import bstune
from bstune.pruners import (
    AnyPruner,
    DivergencePruner,
    default_pruner,
)
from bstune.study import make_objective
from bstune.testing import FakeClock


def test_a_nan_trial_is_stopped_at_its_first_report() -> None:
    clock = FakeClock()
    mode = bstune.TimeBudget(10.0)
    study = _run_study(mode, default_pruner(mode))
    calls: list[int] = []

    def train(hp: bstune.Hyperparams, run: bstune.Run) -> None:
        while not run.should_stop:
            with run.training():
                clock.advance(0.5)
            calls.append(1)
            run.report(0.5 if hp.learning_rate < 1e-2 else math.nan, loss=0.7)

    study.enqueue_trial({"log2_batch_size": 5, "learning_rate": 2e-2, "epochs": 3})
    optuna_objective = make_objective(train, bstune.load_space("default"), mode, clock=clock)
    study.optimize(optuna_objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED and len(calls) == 1
    assert t.user_attrs["stop_reason"] == "diverged" and len(t.user_attrs["curve"]["metric"]) == 1


def test_a_loss_that_explodes_is_stopped_as_diverged_by_the_divergence_pruner() -> None:
    clock = FakeClock()
    study = optuna.create_study(
        direction="maximize", pruner=AnyPruner(DivergencePruner(loss_factor=3.0))
    )
    trial = study.ask()
    with pytest.raises(
        optuna.TrialPruned, match="pruned by DivergencePruner at step 3000: loss 3.5 grew past 3 x"
    ):
        with bstune.Run(trial, bstune.TimeBudget(60.0), clock=clock) as run:
            for loss in (1.0, 1.4, 3.5, 1.0):
                with run.training():
                    clock.advance(1.0)
                run.report(0.6, loss=loss)
    assert run.stop_reason == "diverged" and len(run.curve) == 3
    frozen = study.trials[0]
    assert frozen.user_attrs["stop_detail"].startswith("pruned by DivergencePruner at step 3000")


def test_divergence_rules_by_hand() -> None:
    def judged(losses: list[float], pruner: DivergencePruner | None = None, value: float = 0.5) -> str | None:
        study = _study(pruner or DivergencePruner())  # loss factor 3, one warm-up report
        t = study.ask()
        t.set_user_attr("curve", {"loss": losses})
        t.report(value, 1500)
        reason = study.pruner.explain(study, t.number) if t.should_prune() else None
        return reason.why if reason else None

    assert judged([1.0], value=math.nan) == "intermediate value nan at 1.50 s"
    assert judged([1.0, 3.0]) is None  # exactly 3 x the first: not past it
    assert judged([1.0, 3.5]) == "loss 3.5 grew past 3 x its first value 1"
    assert judged([4.0]) is None  # the warm-up report
    assert judged([1.0, 4.0], DivergencePruner(n_warmup_reports=2)) is None
    assert judged([1.0, 2.0, 4.0], DivergencePruner(n_warmup_reports=2)) is not None
    assert judged([0.0, 5.0]) is None  # a first loss of 0 gives no scale to grow from
