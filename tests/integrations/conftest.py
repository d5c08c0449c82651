"""Helpers for the framework integration tests: the extra must be there under CI, else they skip."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import optuna
import pytest

import bstune


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
