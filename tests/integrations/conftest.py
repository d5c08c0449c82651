"""Helpers for the framework integration tests: the extra must be there under CI, else they skip."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import optuna
import pytest

import bstune
from bstune.run import curve_from_attrs

#: The scripted runs of both integrations' tests: each training step advances the fake clock by
#: STEP_S, each evaluation by EVAL_S; N_TRAIN samples make 10 steps of 16 (0.7 s) per epoch.
STEP_S, EVAL_S, N_TRAIN = 0.07, 0.5, 160


def need(module: str, extra: str) -> ModuleType:
    """Import ``module``: skipped when absent, except under CI, where that fails."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is missing, and CI must install bstune[{extra}]")
        pytest.skip(f"{module} is not installed (pip install 'bstune[{extra}]')")


def one_trial_study(tmp_path, mode, *, batch: int, lr: float = 1e-2, epochs: int = 10, pruner=None, n: int = 1):
    """A bstune study in a real SQLite file with ``n`` trials of one configuration queued."""
    space = bstune.load_space("default")
    study = bstune.create_study(
        mode, space=space, storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", pruner=pruner
    )
    for _ in range(n):
        study.enqueue_trial({"log2_batch_size": batch.bit_length() - 1, "learning_rate": lr, "epochs": epochs})
    return study, space


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state.is_finished()]


def check_budget_stop_and_time_axis(t: optuna.trial.FrozenTrial) -> None:
    """What a framework trial of batch 16 on a 1 s budget must show, as the built-in trainer would:
    stopped within one step of the budget, an evaluation at the end of epoch 1 and one after the
    stop, evaluation time kept apart, intermediate values at training milliseconds."""
    a = t.user_attrs
    assert t.state == optuna.trial.TrialState.COMPLETE and a["stop_reason"] == "budget"
    assert 1.0 <= a["train_s"] < 1.0 + STEP_S + 1e-9  # within one step of the budget
    curve = curve_from_attrs(t)
    assert [round(p.train_s, 6) for p in curve] == [0.7, 1.05]
    assert a["eval_s"] == pytest.approx(2 * EVAL_S)
    assert [round(p.epoch, 6) for p in curve] == [1.0, 1.5]
    assert [p.samples_seen for p in curve] == [160, 240]
    assert sorted(t.intermediate_values) == [int(p.train_s * 1000) for p in curve]
    assert list(t.intermediate_values.values()) == pytest.approx([10 / 20, 15 / 20])
    for key in ("batch_size", "learning_rate", "planned_epochs", "samples_seen", "throughput", "wall_s", "device"):
        assert key in a
