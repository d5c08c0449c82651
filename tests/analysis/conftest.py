"""Studies for the analysis tests: synthetic ones made through bstune's own objective (fake clock,
no sleeping), and one real `bstune optimize` run on examples/mlp_blobs.py shared by the session."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

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


@pytest.fixture
def synthetic_study() -> Callable[..., optuna.Study]:
    return make_synthetic_study


@pytest.fixture(scope="session")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real, small `bstune optimize` run (torch training on the blobs MLP) with an artifact dir."""
    pytest.importorskip("torch")
    from bstune.cli import main

    folder = tmp_path_factory.mktemp("optimized")
    storage = f"sqlite:///{folder / 'bstune.db'}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([
            "optimize", str(ROOT / "examples" / "mlp_blobs.py"), "--time-budget", "0.4", "--n-trials", "4",
            "--task-option", "n_samples=3000", "--storage", storage, "--study-name", "blobs",
            "--artifact-dir", str(folder / "artifacts"), "--device", "cpu",
        ])
    return {"storage": storage, "study_name": "blobs", "folder": folder, "output": out.getvalue()}
