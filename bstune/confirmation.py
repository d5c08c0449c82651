"""Seed noise, measured: the best configurations of a study trained again with other seeds.

Confirmation runs are ordinary trials of the same study with the user attribute ``confirms`` (the
number of the trial they repeat); they are never pruned. ``bstune.analysis`` reads them as a
mean and a spread per configuration.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from bstune.errors import check_int
from bstune.objectives import is_feasible
from bstune.study import optimize

__all__ = ["CONFIRMS_ATTR", "confirm", "enqueue_confirmations", "without_pruning"]


#: The user attribute of a trial that trains an earlier trial's configuration again with another
#: seed: the earlier trial's number.
CONFIRMS_ATTR = "confirms"


def enqueue_confirmations(study: optuna.Study, seeds: int, top: int = 3) -> list[int]:
    """Queue trials that train the ``top`` best configurations again, ``seeds`` times each in all.

    The best configurations are the feasible finished trials with the best values, one per set of
    parameters, confirmation runs left out. Runs queued or done before count, so calling it again
    adds only what is missing. Each queued trial carries ``CONFIRMS_ATTR`` = the number of the
    trial it repeats; it trains under another seed because the built-in trainer seeds each trial
    with ``seed + trial number`` (a ``train(hp, run)`` script does so if it uses
    ``run.trial.number`` in its seed).

    Returns:
        The numbers of the repeated trials, once per queued trial.
    """
    check_int("enqueue_confirmations", "seeds", seeds, 1)
    check_int("enqueue_confirmations", "top", top, 1)
    trials = study.get_trials(deepcopy=False)
    states = (optuna.trial.TrialState.COMPLETE,)
    done = [
        t for t in trials
        if t.state in states and t.value is not None and math.isfinite(t.value) and is_feasible(t)
        and t.user_attrs.get(CONFIRMS_ATTR) is None
    ]
    done.sort(key=lambda t: (-t.value if study.direction == optuna.study.StudyDirection.MAXIMIZE else t.value, t.number))  # type: ignore[operator]
    picked: list[optuna.trial.FrozenTrial] = []
    seen: set[tuple[tuple[str, Any], ...]] = set()
    for t in done:
        key = tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            picked.append(t)
        if len(picked) == top:
            break
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
            optuna.trial.TrialState.WAITING)
    have = Counter(t.user_attrs.get(CONFIRMS_ATTR) for t in trials if t.state in live)
    queued: list[int] = []
    for t in picked:
        for _ in range(seeds - have[t.number]):
            study.enqueue_trial(t.params, user_attrs={CONFIRMS_ATTR: t.number})
            queued.append(t.number)
    return queued


def confirm(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    seeds: int = 2,
    top: int = 3,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> list[int]:
    """Train the ``top`` best configurations of ``study`` again with ``seeds`` other seeds each.

    The runs are stored in the study (``enqueue_confirmations``) and are never pruned: a
    confirmation measures the spread between seeds, so every run goes to its end. The report then
    shows each configuration as a mean and a spread and says which are within noise of the best.

    Returns:
        The numbers of the repeated trials, once per run.
    """
    queued = enqueue_confirmations(study, seeds, top)
    if queued:
        optimize(without_pruning(study), objective, n_trials=len(queued), callbacks=callbacks)
    return queued


def recorded_settings(study: optuna.Study) -> tuple[int, set[Any], set[Any]]:
    """Over the study's completed trials: how many, and the set of the ``compiled`` and of the
    ``amp`` values the built-in trainer recorded on them (``None`` for a trial without a record: a
    script that owns its loop)."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return len(done), {t.user_attrs.get("compiled") for t in done}, {t.user_attrs.get("amp") for t in done}


def trained_as(study: optuna.Study) -> dict[str, bool | None]:
    """How the built-in trainer trained the study's completed trials, for confirmation runs to do
    the same: ``compile`` when every one recorded ``compiled``, ``amp`` ``False`` when every one
    recorded ``amp`` off (float32), else ``None`` (the trainer's default). A study with no completed
    trial, or one whose script owns its loop (no such records), gives ``None`` for both.

    Examples:
        >>> study = optuna.create_study()
        >>> study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"compiled": True, "amp": "off"}))
        >>> trained_as(study)
        {'compile': True, 'amp': False}
    """
    _n, compiled, amps = recorded_settings(study)
    return {"compile": True if compiled == {True} else None, "amp": False if amps == {"off"} else None}


def without_pruning(study: optuna.Study) -> optuna.Study:
    """The same study (same storage and sampler) with pruning off, for runs that must go to their end."""
    return optuna.load_study(
        study_name=study.study_name, storage=study._storage, sampler=study.sampler, pruner=optuna.pruners.NopPruner()
    )
