"""Disturbed trials: a trial that trained far slower than its batch size's other trials (a busy
machine) is marked when it ends, said on its live line, left out of the batch-size answers with
the reason, and with retry_disturbed trained again once. The busy machine is a fake clock that
runs one trial's steps thirty times slower."""

from __future__ import annotations

import io

import optuna
import pytest
from rich.console import Console

import bstune
from bstune import _progress
from bstune.analysis import analyze, format_report
from bstune.analysis._disturbed import DISTURBED_ATTR, RETRY_ATTR, SLOW_RATIO
from bstune.space import load_space
from bstune.study import make_objective, optimize
from bstune.testing import FakeClock, SyntheticTask

SPACE = {"batch_size": {"low": 16, "high": 256}, "learning_rate": {"low": 1e-4, "high": 1e-1},
         "epochs": {"low": 1, "high": 4}}
SAME = {"log2_batch_size": 6, "learning_rate": 3e-3, "epochs": 4}  # batch 64


def _study(busy: set[int], *, n: int = 5, queued: int | None = None, retry: bool = False) -> tuple[optuna.Study, str]:
    clock = FakeClock()
    task = SyntheticTask(n_train=4000, steps_min=60, evals_per_epoch=3, clock=clock)
    normal = (task.step_overhead_s, task.per_sample_s)

    def train(hp, run):  # the trials in `busy` share the machine with another job: 30 times slower steps
        slow = 30.0 if run.trial.number in busy else 1.0
        task.step_overhead_s, task.per_sample_s = normal[0] * slow, normal[1] * slow
        task(hp, run)

    space = load_space(SPACE)
    mode = bstune.TimeBudget(2)
    study = bstune.create_study(mode, space=space, seed=0)
    for _ in range(n if queued is None else queued):
        study.enqueue_trial(SAME)
    out = io.StringIO()
    progress = _progress.Progress(Console(file=out, width=250, highlight=False), mode, n)
    objective = make_objective(train, space, mode, clock=clock, retry_disturbed=retry)
    optimize(study, objective, n_trials=n, callbacks=[progress.on_trial_end])
    return study, out.getvalue()


def test_a_trial_thirty_times_slower_than_its_batch_sizes_others_is_marked_and_said():
    study, lines = _study({3})
    marks = {t.number: t.user_attrs.get(DISTURBED_ATTR) for t in study.trials}
    assert [n for n, m in marks.items() if m] == [3]
    assert marks[3]["ratio"] == pytest.approx(1 / 30, rel=0.15) and marks[3]["others"] == 3
    line = next(x for x in lines.splitlines() if x.startswith("[4/5] #3 "))
    assert "(disturbed: 0.03 of the" in line and "its batch size's other trials reached)" in line
    assert all("disturbed" not in x for x in lines.splitlines() if not x.startswith("[4/5]"))


def test_the_report_leaves_a_disturbed_trial_out_of_the_batch_size_answers_and_says_why():
    study, _ = _study({1})
    report = analyze(study, importance=False)
    assert [d.trial for d in report.disturbed] == [1]
    (row,) = report.batch_sizes
    assert row.batch_size == 64 and row.n_trials == 4  # the disturbed trial is not a measurement of batch 64
    slow = study.trials[1].user_attrs["throughput"]
    assert slow < SLOW_RATIO * row.throughput
    note = next(m for m in report.messages if m.startswith("trial #1 (batch 64)"))
    assert "it was disturbed (the machine was busy), so the batch-size answers leave it out" in note
    assert note in format_report(report, "markdown")
    assert format_report(report, "json").count('"trial": 1,') >= 1


def test_the_first_trials_of_a_batch_size_have_nothing_to_compare_with_and_are_not_marked():
    study, _ = _study({0}, n=2)
    assert not any(t.user_attrs.get(DISTURBED_ATTR) for t in study.trials)


def test_retry_disturbed_trains_the_configuration_again_once():
    # Four trials queued; #3 is disturbed, its retry becomes #4 and is disturbed too: not retried again.
    study, lines = _study({3, 4}, n=5, queued=4, retry=True)
    trials = study.trials
    assert len(trials) == 5
    assert trials[3].user_attrs.get(DISTURBED_ATTR) and trials[4].user_attrs.get(DISTURBED_ATTR)
    assert trials[4].user_attrs.get(RETRY_ATTR) == 3 and trials[4].params == trials[3].params
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)  # nothing more queued


def test_without_retry_disturbed_nothing_is_queued():
    study, _ = _study({3}, n=4)
    assert len(study.trials) == 4 and not any(t.user_attrs.get(RETRY_ATTR) is not None for t in study.trials)
