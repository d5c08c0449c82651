from __future__ import annotations

import math

import optuna
import pytest

from bstune import Run, Target, TimeBudget
from bstune.run import curve_from_attrs
from bstune.space import Hyperparams
from bstune.testing import FakeClock

HP = Hyperparams(batch_size=64, learning_rate=0.01, epochs=3, base_learning_rate=0.01)


def _trial(direction="maximize", pruner=None):
    study = optuna.create_study(direction=direction, pruner=pruner)
    return study, study.ask()


def test_budget_stops_training_and_value_is_best_metric():
    clock = FakeClock()
    study, trial = _trial()
    metrics = iter([0.5, 0.7, 0.65, 0.9])
    with Run(trial, TimeBudget(10), HP, clock=clock) as run:
        while not run.should_stop:
            with run.training():
                clock.advance(3.0)
                run.count(64)
            with run.evaluating():
                clock.advance(1.0)  # evaluation time is not training time
            run.report(next(metrics))
    assert run.stop_reason == "budget"
    assert [p.train_s for p in run.curve] == [3.0, 6.0, 9.0, 12.0]
    assert run.value == 0.9
    assert run.eval_seconds == 4.0 and run.wall_seconds == 16.0
    study.tell(trial, run.value)
    frozen = study.trials[0]
    assert sorted(frozen.intermediate_values) == [3000, 6000, 9000, 12000]  # steps are training ms
    ua = frozen.user_attrs
    assert ua["stop_reason"] == "budget"
    assert ua["train_s"] == 12.0 and ua["eval_s"] == 4.0 and ua["wall_s"] == 16.0
    assert ua["samples_seen"] == 256 and ua["throughput"] == pytest.approx(256 / 12, abs=1e-3)
    assert ua["batch_size"] == 64 and ua["micro_batch_size"] == 64 and ua["device"] == "cpu"
    assert [p.metric for p in curve_from_attrs(frozen)] == [0.5, 0.7, 0.65, 0.9]


def test_wall_clock_budget_counts_evaluation():
    clock = FakeClock()
    _, trial = _trial()
    with Run(trial, TimeBudget(10, clock="wall"), HP, clock=clock) as run:
        while not run.should_stop:
            with run.training():
                clock.advance(2.0)
            with run.evaluating():
                clock.advance(2.0)
            run.report(0.5)
    assert len(run.curve) == 3  # 4 s of wall time per round
    assert run.train_seconds == 6.0


def test_target_stops_at_first_reach_and_value_is_seconds():
    clock = FakeClock()
    study, trial = _trial("minimize")
    mode = Target(0.8)
    with Run(trial, mode, HP, clock=clock) as run:
        for acc in (0.5, 0.75, 0.82, 0.95):
            with run.training():
                clock.advance(2.5)
            run.report(acc)
            if run.should_stop:
                break
    assert run.stop_reason == "target" and run.value == 7.5 and len(run.curve) == 3
    assert run.stop_detail == "reached 0.82 at 7.50 s"
    study.tell(trial, run.value)
    frozen = study.trials[0]
    # Intermediate values are shortfalls: lower is better, like the study's direction.
    assert list(frozen.intermediate_values.values()) == pytest.approx([0.3, 0.05, 0.0])
    assert frozen.constraints == {"out_of_memory": 0.0, "target_shortfall": 0.0}
    assert frozen.user_attrs["reached_target"] is True


def test_missed_target_is_penalised_and_infeasible():
    clock = FakeClock()
    study = optuna.create_study(direction="minimize")
    hit = study.ask()
    with Run(hit, Target(0.8), HP, clock=clock) as run:
        with run.training():
            clock.advance(20.0)
        run.report(0.9)
    study.tell(hit, run.value)
    miss = study.ask()
    with Run(miss, Target(0.8), HP, clock=clock) as run:
        with run.training():
            clock.advance(1.0)
        run.report(0.6)
    assert run.stop_reason == "epochs"
    # Worse than the slowest hit before it, although it trained for only one second:
    # 2 x max(1 s, 20 s) x (1 + 0.2 short of the target).
    assert run.value == pytest.approx(2.0 * 20.0 * 1.2)
    study.tell(miss, run.value)
    assert study.trials[1].constraints["target_shortfall"] == pytest.approx(0.2)
    assert study.best_trial.number == 0
    # Only hits count as the slowest earlier time: the 48 s of the miss above does not.
    again = study.ask()
    with Run(again, Target(0.8), HP, clock=clock) as run:
        with run.training():
            clock.advance(2.0)
        run.report(0.7)
    assert run.value == pytest.approx(2.0 * 20.0 * 1.1)


def test_sync_happens_only_at_report_points_and_covers_queued_work():
    clock = FakeClock()
    syncs = []

    def sync():
        syncs.append(clock())
        clock.advance(0.5)  # the device finishes queued work

    _, trial = _trial()
    with Run(trial, TimeBudget(100), HP, clock=clock, sync=sync) as run:
        for _ in range(10):  # ten steps, each in its own training block
            with run.training():
                clock.advance(0.1)
        assert syncs == []  # never per step
        with run.evaluating():
            clock.advance(1.0)
        run.report(0.5)
    assert len(syncs) == 1
    assert run.curve[0].train_s == pytest.approx(1.5)  # 10 x 0.1 s, plus 0.5 s of queued work
    assert run.eval_seconds == pytest.approx(1.0)


def test_nan_loss_is_diverged_at_first_report():
    clock = FakeClock()
    study, trial = _trial()
    with pytest.raises(optuna.TrialPruned, match=r"loss not finite at 1\.00 s"):
        with Run(trial, TimeBudget(10), HP, clock=clock) as run:
            with run.training():
                clock.advance(1.0)
            run.report(0.5, loss=math.nan)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].user_attrs["stop_reason"] == "diverged"


def test_pruner_stops_with_reason():
    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    clock = FakeClock()
    study, trial = _trial(pruner=Always())
    with pytest.raises(optuna.TrialPruned), Run(trial, TimeBudget(10), HP, clock=clock) as run:
        with run.training():
            clock.advance(1.0)
        run.report(0.5)
    attrs = study._storage.get_trial_user_attrs(trial._trial_id)
    assert attrs["stop_reason"] == "pruned" and "Always" in attrs["stop_detail"]


def test_user_code_error_is_recorded_with_traceback():
    _, trial = _trial()
    with pytest.raises(ZeroDivisionError), Run(trial, TimeBudget(10), HP, clock=FakeClock()):
        1 / 0  # noqa: B018
    attrs = trial.study._storage.get_trial_user_attrs(trial._trial_id)
    assert attrs["stop_reason"] == "failed"
    assert "ZeroDivisionError" in attrs["stop_detail"] and "1 / 0" in attrs["traceback"]


def test_value_without_report_says_what_to_do():
    _, trial = _trial()
    with Run(trial, TimeBudget(10), clock=FakeClock()) as run:
        pass
    with pytest.raises(RuntimeError, match=r"call run.report\(metric\) at least once"):
        _ = run.value


def test_progress_is_budget_aware():
    clock = FakeClock()
    _, trial = _trial()
    run = Run(trial, TimeBudget(10), HP, clock=clock)
    with run.training():
        clock.advance(5.0)
    run.count(100)
    assert run.progress(planned_samples=1000) == 0.5  # the budget ends first
    run.count(700)
    assert run.progress(planned_samples=1000) == 0.8  # now the epochs do
    run.count(700)
    assert run.progress(planned_samples=1000) == 1.0  # past the planned samples: the end, not beyond
    _, other = _trial("minimize")
    target_run = Run(other, Target(0.9), HP, clock=clock)
    assert target_run.progress() == 0.0  # no budget, no plan: nothing to measure progress against
    assert target_run.progress(planned_samples=400) == 0.0


def test_steps_stay_increasing_when_reports_share_a_millisecond():
    clock = FakeClock()
    study, trial = _trial()
    with Run(trial, TimeBudget(10), HP, clock=clock) as run:
        run.report(0.1)
        run.report(0.2)
    study.tell(trial, run.value)
    assert sorted(study.trials[0].intermediate_values) == [0, 1]


def test_nesting_training_is_refused():
    _, trial = _trial()
    run = Run(trial, TimeBudget(10), clock=FakeClock())
    with pytest.raises(RuntimeError, match="already active"), run.training(), run.training():
        pass


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: TimeBudget(0),
            r"The 'budget' parameter of TimeBudget must be a finite number of seconds greater than 0. Got 0 instead.",
        ),
        (lambda: TimeBudget(math.inf), r"'budget' parameter of TimeBudget .* Got inf instead"),
        (lambda: Target(math.nan), r"The 'target' parameter of Target must be a finite number. Got nan instead."),
        (lambda: TimeBudget(5, metric_direction="up"), r"'metric_direction' parameter of TimeBudget"),
        (lambda: Target(0.5, clock="cpu"), r"'clock' parameter of Target must be 'train' or 'wall'"),
        (lambda: Target(0.5, limit=0), r"'limit' parameter of Target must be None or a finite number of seconds"),
        (lambda: Target(0.5, limit=math.inf), r"'limit' parameter of Target .* Got inf instead"),
        (lambda: Target(0.5, limit=True), r"'limit' parameter of Target .* Got True instead"),
    ],
)
def test_modes_validate_at_the_door(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("metric", "loss", "detail"),
    [
        (math.nan, None, "metric not finite at 1.00 s"),
        (math.inf, math.nan, "metric and loss not finite at 1.00 s"),
        (0.5, math.inf, "loss not finite at 1.00 s"),
    ],
)
def test_divergence_names_what_was_not_finite_and_the_report_still_reaches_its_listener(metric, loss, detail):
    clock = FakeClock()
    study, trial = _trial()
    heard = []
    with pytest.raises(optuna.TrialPruned, match=detail):
        with Run(trial, TimeBudget(10), HP, clock=clock, on_report=heard.append) as run:
            with run.training():
                clock.advance(1.0)
            run.report(metric, loss=loss)
    assert run.stop_detail == detail
    assert len(heard) == 1 and heard[0].train_s == 1.0 and heard[0] is run.curve[0]
    reported = trial.study.trials[0].intermediate_values[1000]  # reported, not dropped
    assert (math.isnan(reported) and math.isnan(metric)) or reported == metric


def test_attrs_are_the_facts_of_the_run_exactly():
    clock = FakeClock()
    study, trial = _trial()
    with Run(trial, TimeBudget(10), HP, clock=clock) as run:
        with run.overhead():
            clock.advance(0.25)
        with run.training():
            clock.advance(1.2345678)
        run.count(64)
        with run.evaluating():
            clock.advance(0.5)
        run.report(0.75, loss=0.5)
    expected = {
        "train_s": 1.234568, "eval_s": 0.5, "overhead_s": 0.25, "wall_s": 1.984568, "epochs_done": 0.0,
        "samples_seen": 64, "throughput": 51.84, "device": "cpu", "stop_reason": "epochs", "batch_size": 64,
        "learning_rate": 0.01, "planned_epochs": 3, "micro_batch_size": 64,
    }
    assert run.attrs() == expected
    assert {k: trial.study.trials[0].user_attrs[k] for k in expected} == expected  # recorded on the trial


@pytest.mark.parametrize(
    ("raised", "reason", "detail"),
    [
        (optuna.TrialPruned("stopped by my rule"), "pruned", "stopped by my rule"),
        (KeyboardInterrupt(), "interrupted", ""),
        (MemoryError(), "oom", "out of memory"),
        (MemoryError("first line " + "x" * 300 + "\nsecond line"), "oom", ("first line " + "x" * 300)[:200]),
        (ZeroDivisionError("division by zero"), "failed", "ZeroDivisionError: division by zero"),
    ],
)
def test_how_a_run_ends_is_recorded_with_its_detail(raised, reason, detail):
    study, trial = _trial()
    with pytest.raises(type(raised)):
        with Run(trial, TimeBudget(10), HP, clock=FakeClock()) as run:
            raise raised
    assert (run.stop_reason, run.stop_detail) == (reason, detail)
    attrs = trial.study.trials[0].user_attrs
    assert attrs["stop_reason"] == reason
    assert ("traceback" in attrs) is (reason == "failed")
    if reason == "failed":
        assert "    raise raised\n" in attrs["traceback"]  # the line that raised, from the last frames
        assert attrs["traceback"].endswith("ZeroDivisionError: division by zero\n")


def test_time_left_counts_down_to_zero_and_is_endless_toward_a_target():
    clock = FakeClock()
    _, trial = _trial()
    run = Run(trial, TimeBudget(10), HP, clock=clock)
    assert run.time_left() == 10.0
    with run.training():
        clock.advance(4.0)
    assert run.time_left() == 6.0
    with run.training():
        clock.advance(7.0)
    assert run.time_left() == 0.0  # spent, not negative
    _, other = _trial("minimize")
    assert Run(other, Target(0.9), HP, clock=clock).time_left() == math.inf
    _, limited = _trial("minimize")
    assert Run(limited, Target(0.9, limit=5), HP, clock=clock).time_left() == 5.0


def test_a_target_with_a_limit_stops_a_trial_there_as_a_miss_and_ends_its_schedule_there():
    clock = FakeClock()
    study = optuna.create_study(direction="minimize")
    mode = Target(0.8, limit=5)
    hit = study.ask()
    with Run(hit, mode, HP, clock=clock) as run:
        for acc in (0.5, 0.85):
            with run.training():
                clock.advance(2.0)
            run.report(acc)
    assert run.stop_reason == "target" and run.value == 4.0
    study.tell(hit, run.value)
    miss = study.ask()
    with Run(miss, mode, HP, clock=clock) as run:
        seen = []
        for _ in range(10):  # bounded: a limit that stops nothing fails below instead of hanging
            if run.should_stop:
                break
            with run.training():
                clock.advance(2.0)
                run.count(64)
            seen.append(run.progress(planned_samples=64 * 100))  # epochs far away: the limit decides
            run.report(0.7)
    assert seen == [0.4, 0.8, 1.0]
    assert run.stop_reason == "budget" and [p.train_s for p in run.curve] == [2.0, 4.0, 6.0]
    assert not run.reached_target
    assert run.value == pytest.approx(2.0 * 6.0 * 1.1)  # a miss: 2 x max(6 s, 4 s) x (1 + 0.1 short)
    study.tell(miss, run.value)
    assert study.trials[1].constraints["target_shortfall"] == pytest.approx(0.1)
    assert study.best_trial.number == 0
    assert Target(0.8).trial_limit is None and TimeBudget(3).trial_limit == 3
