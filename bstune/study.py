"""Studies: creating or resuming one, and the optimize loop.

bstune writes ordinary Optuna studies. ``create_study`` records what the study means (mode,
budget or target, clock, search space, bstune version) in its user attributes, and refuses to resume
a study that was made for something else, so nothing is overwritten by mistake.

What a study is made of lives beside it: storages in ``bstune.storage``, the start-up sampler in
``bstune.sampler``, the objective in ``bstune.objective``. Their public names are importable from
here too, as they always were.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from bstune._version import __version__
from bstune.errors import BstuneError, check, check_int
from bstune.objective import make_objective
from bstune.objectives import Mode, Target, is_feasible, mode_from_attrs
from bstune.sampler import BatchSweep, batch_sweep, default_sampler, spread_quantiles
from bstune.space import SearchSpace
from bstune.storage import DEFAULT_STORAGE, mask_url, resolve_storage, retry_trial

__all__ = [
    "DEFAULT_STORAGE",
    "BatchSweep",
    "batch_sweep",
    "create_study",
    "default_sampler",
    "is_feasible",
    "make_objective",
    "mask_url",
    "optimize",
    "resolve_storage",
    "retry_trial",
    "spread_quantiles",
]


def create_study(
    mode: Mode,
    *,
    space: SearchSpace | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    load_if_exists: bool = True,
    seed: int | None = None,
) -> optuna.Study:
    """Create a study for ``mode``, or resume the one of that name if it was made for the same thing.

    Args:
        mode: ``TimeBudget`` or ``Target``; sets the direction.
        space: The search space, recorded on the study.
        storage: A storage URL or object; ``None`` keeps the study in memory.
        study_name: The study's name; resumed if it exists and ``load_if_exists``.
        sampler: Defaults to ``default_sampler`` for the mode: TPE, in budget mode after a
            sweep of batch sizes and learning rates.
        pruner: Defaults to no pruning (``bstune optimize`` uses ``bstune.default_pruner``).
        load_if_exists: Resume an existing study of that name instead of failing.
        seed: The default sampler's seed.

    Raises:
        BstuneError: The named study exists but was made for another mode, budget, target or
            search space (it is left untouched), or the target lies outside the range of accuracy.

    Examples:
        >>> import bstune
        >>> study = bstune.create_study(bstune.TimeBudget(5))
        >>> study.direction.name, study.user_attrs["mode"]
        ('MAXIMIZE', 'time_budget')
    """
    if isinstance(mode, Target):
        mode.check_range()
    storage_obj = resolve_storage(storage)
    attrs: dict[str, Any] = {**mode.to_attrs(), "bstune_version": __version__}
    if space is not None:
        attrs["space"] = space.to_dict()
    try:
        study = optuna.create_study(
            storage=storage_obj,
            study_name=study_name,
            sampler=sampler or default_sampler(seed, space=space, mode=mode),
            pruner=pruner or optuna.pruners.NopPruner(),
            direction=mode.study_direction,
            load_if_exists=load_if_exists,
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise BstuneError(f"study {study_name!r} already exists; choose another --study-name") from None
    except ValueError as e:  # direction mismatch on resume
        raise BstuneError(f"study {study_name!r}: {e}") from None
    existing = study.user_attrs
    if existing.get("mode"):
        _check_same(study.study_name, existing, attrs)
    else:
        if study.trials:
            raise BstuneError(
                f"study {study.study_name!r} already has trials and was not made by bstune; choose another --study-name"
            )
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        study.set_user_attr("intermediate_name", mode.intermediate_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([mode.value_name])
    return study


def _check_same(name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    old_mode, new_mode = mode_from_attrs(old), mode_from_attrs(new)
    if old_mode != new_mode:
        raise BstuneError(
            f"study {name!r} was made for {_describe(old)}, not {_describe(new)}; "
            "choose another --study-name to keep both"
        )
    if "space" in new and "space" in old and old["space"] != new["space"]:
        raise BstuneError(
            f"study {name!r} was made with search space {old['space'].get('name')!r} and different bounds; "
            "choose another --study-name to keep both"
        )


def _describe(attrs: dict[str, Any]) -> str:
    if attrs.get("mode") == "time_budget":
        return f"a time budget of {attrs['budget']:g} s"
    within = f" within {attrs['limit']:g} s per trial" if attrs.get("limit") is not None else ""
    return f"the target {attrs.get('metric_name', 'metric')} {attrs.get('target'):g}{within}"


class _StopAfterFailures:
    """Stop the study after ``n`` consecutive failed trials instead of burning the budget."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.streak = 0
        self.tripped = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.streak = self.streak + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        if self.streak >= self.n:
            self.tripped = True
            study.stop()


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    max_consecutive_failures: int = 3,
) -> None:
    """Run ``objective`` on ``study`` for ``n_trials`` more trials or ``timeout`` seconds.

    A trial whose code raises is recorded as failed (with the end of its traceback in its user
    attributes) and the study goes on; after ``max_consecutive_failures`` failures in a row it stops
    with a ``BstuneError`` naming the last error.
    """
    check_int("optimize", "n_trials", n_trials, 1, none=True)
    check("optimize", "timeout", timeout, "a number of seconds greater than 0", lambda v: math.isfinite(v) and v > 0,
          none=True)
    check_int("optimize", "max_consecutive_failures", max_consecutive_failures, 1)
    guard = _StopAfterFailures(max_consecutive_failures)
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout,
        callbacks=[*callbacks, guard],
        catch=(Exception,),
        gc_after_trial=False,
    )
    if guard.tripped:
        last = study.trials[-1]
        detail = last.user_attrs.get("stop_detail") or "see the trial's user attributes"
        raise BstuneError(
            f"stopped after {guard.n} failed trials in a row; the last one (#{last.number}) raised: {detail}"
        )
