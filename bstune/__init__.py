"""bstune: search batch size jointly with learning rate and epochs, on Optuna.

Public names are loaded on first use, so ``import bstune`` stays fast and never imports torch,
plotly or optuna-dashboard; the search machinery (spaces, runs, studies, analysis) works without
torch.

Examples:
    >>> import bstune
    >>> space = bstune.load_space("default")
    >>> study = bstune.create_study(bstune.TimeBudget(5.0), space=space)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bstune._version import __version__

if TYPE_CHECKING:
    from bstune._workers import WorkerPlan, plan_workers
    from bstune.confirmation import confirm
    from bstune.errors import BstuneError, SpaceError, StorageError, TaskError
    from bstune.memory import BatchSearch, find_max_batch_size
    from bstune.noise import NoiseScale, measure_noise_scale
    from bstune.objective import make_objective
    from bstune.objectives import Target, TimeBudget
    from bstune.options import TuneOptions
    from bstune.probe import ProbeResult, run_probe
    from bstune.pruners import default_pruner
    from bstune.run import CurvePoint, Run
    from bstune.space import Hyperparams, SearchSpace, load_space, suggest
    from bstune.storage import retry_trial
    from bstune.study import create_study, optimize
    from bstune.task import Task, load_task
    from bstune.tuning import tune

__all__ = [
    "BatchSearch",
    "BstuneError",
    "CurvePoint",
    "Hyperparams",
    "NoiseScale",
    "ProbeResult",
    "Run",
    "SearchSpace",
    "SpaceError",
    "StorageError",
    "Target",
    "Task",
    "TaskError",
    "TimeBudget",
    "TuneOptions",
    "WorkerPlan",
    "__version__",
    "confirm",
    "create_study",
    "default_pruner",
    "find_max_batch_size",
    "load_space",
    "load_task",
    "make_objective",
    "measure_noise_scale",
    "optimize",
    "plan_workers",
    "retry_trial",
    "run_probe",
    "suggest",
    "tune",
]

_WHERE = {
    "BstuneError": "bstune.errors",
    "SpaceError": "bstune.errors",
    "StorageError": "bstune.errors",
    "TaskError": "bstune.errors",
    "BatchSearch": "bstune.memory",
    "find_max_batch_size": "bstune.memory",
    "NoiseScale": "bstune.noise",
    "measure_noise_scale": "bstune.noise",
    "ProbeResult": "bstune.probe",
    "run_probe": "bstune.probe",
    "Target": "bstune.objectives",
    "TimeBudget": "bstune.objectives",
    "CurvePoint": "bstune.run",
    "Run": "bstune.run",
    "Hyperparams": "bstune.space",
    "SearchSpace": "bstune.space",
    "load_space": "bstune.space",
    "suggest": "bstune.space",
    "create_study": "bstune.study",
    "confirm": "bstune.confirmation",
    "make_objective": "bstune.objective",
    "optimize": "bstune.study",
    "default_pruner": "bstune.pruners",
    "Task": "bstune.task",
    "load_task": "bstune.task",
    "WorkerPlan": "bstune._workers",
    "plan_workers": "bstune._workers",
    "retry_trial": "bstune.storage",
    "tune": "bstune.tuning",
    "TuneOptions": "bstune.options",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bstune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
