"""Studies for the analysis tests, made the way bstune makes them (fake clock, no sleeping)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from bstune.objectives import Mode, TimeBudget
from bstune.space import load_space
from bstune.study import create_study, make_objective, optimize
from bstune.testing import SyntheticTask

ROOT = Path(__file__).resolve().parents[2]

optuna.logging.set_verbosity(optuna.logging.ERROR)


def make_synthetic_study(
    *,
    n_trials: int = 20,
    mode: Mode | None = None,
    storage: Any = None,
    study_name: str | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    task: SyntheticTask | None = None,
    space: Any = None,
    seed: int = 0,
) -> optuna.Study:
    """A study made the way bstune makes them: create_study, make_objective, optimize."""
    task = task or SyntheticTask(n_train=4_000, steps_min=60, evals_per_epoch=3)
    space = load_space(space or "default")
    mode = mode or TimeBudget(4.0)
    study = create_study(mode, space=space, storage=storage, study_name=study_name, pruner=pruner,
                         sampler=sampler, seed=seed)
    optimize(study, make_objective(task, space, mode, clock=task.clock), n_trials=n_trials)
    return study
