"""Task scripts: loading the file the user names and checking it describes a task.

A task script is a Python file that defines either

* ``data()`` and ``model(hp)`` (and optionally ``loss()``, ``metric(outputs, targets)``,
  ``optimizer(parameters, hp)``): bstune's built-in trainer owns the loop; or
* ``train(hp, run)``: the script owns the loop and reports through the ``Run``.

It may also define ``DEFAULTS``, a dict of defaults for ``bstune optimize`` (``space``,
``time_budget``, ``target``, ``n_trials``, ``metric_name``, ``metric_direction``, and ``amp``:
``False`` trains in float32 on CUDA too, for models that bf16 autocast slows down), so that the bare
command does something sensible for that task. Options given with ``--task-option KEY=VALUE`` are
passed to ``data(**options)`` (or ``train``'s script through ``Task.options``).

Scripts are only ever loaded from a path the user names.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bstune.errors import TaskError

__all__ = ["Task", "load_task"]

_DEFAULT_KEYS = {"space", "time_budget", "target", "n_trials", "metric_name", "metric_direction", "amp"}


@dataclass
class Task:
    """What a task script provides."""

    path: Path
    module: ModuleType
    options: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Callable[..., Any] | None:
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None

    @property
    def owns_loop(self) -> bool:
        return self.get("train") is not None

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(getattr(self.module, "DEFAULTS", {}) or {})

    @property
    def name(self) -> str:
        return self.path.stem


def load_task(path: str | Path, options: dict[str, str] | None = None) -> Task:
    """Import the script at ``path`` and check that it defines a task.

    Raises:
        TaskError: The file is missing, fails to import, or defines neither ``data`` and
            ``model`` nor ``train``; the message names the file and what is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise TaskError(f"task script {str(path)!r}: no such file")
    if p.suffix != ".py":
        raise TaskError(f"task script {str(path)!r}: must be a Python file ending in .py")
    mod_name = f"bstune_task_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise TaskError(f"task script {str(path)!r}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise TaskError(f"task script {str(path)!r}: importing it raised {type(e).__name__}: {e}") from e

    task = Task(p, module, dict(options or {}))
    has_train = task.get("train") is not None
    has_data, has_model = task.get("data") is not None, task.get("model") is not None
    if not has_train and not (has_data and has_model):
        if has_data or has_model:
            missing = "model(hp)" if has_data else "data()"
            raise TaskError(f"task script {str(path)!r}: defines {'data()' if has_data else 'model(hp)'} but not {missing}")
        raise TaskError(f"task script {str(path)!r}: defines neither data() and model(hp) nor train(hp, run)")
    unknown = set(task.defaults) - _DEFAULT_KEYS
    if unknown:
        raise TaskError(
            f"task script {str(path)!r}: DEFAULTS has unknown keys {sorted(unknown)} (known: {sorted(_DEFAULT_KEYS)})"
        )
    if not isinstance(task.defaults.get("amp", False), bool):
        raise TaskError(f"task script {str(path)!r}: DEFAULTS['amp'] must be True or False; got {task.defaults['amp']!r}")
    if options and has_data and not has_train:
        params = inspect.signature(task.get("data")).parameters  # type: ignore[arg-type]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key in options:
            if key not in params and not takes_any:
                raise TaskError(
                    f"task script {str(path)!r}: data() takes no option {key!r} (it takes: {', '.join(params) or 'none'})"
                )
    return task
