"""Out of memory remembered: a batch that did not fit is not tried blindly again.

When a trial runs out of memory, ``bstune.Run`` records ``stop_reason="oom"``, its batch and
micro-batch sizes, and the violated constraint ``out_of_memory``. ``known_out_of_memory`` looks
those records up before a new trial trains: the same model with a micro-batch at least as large will
not fit either (activation memory grows with the batch), so that trial is recorded as out of memory
without training.

"The same model" means the same values of the search space's integer and categorical extra
parameters (widths, layers, choices of architecture), which shape the model's memory; float extras
(dropout, weight decay), the learning rate and the epochs do not change what fits.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from bstune.space import RESERVED_PARAMS

__all__ = ["known_out_of_memory"]

#: Parameters bstune's search space owns; none of them changes the model's size.
_CORE = RESERVED_PARAMS


def _model_key(params: dict[str, Any], distributions: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in params.items()
        if k not in _CORE and not isinstance(distributions.get(k), FloatDistribution)
    }


def known_out_of_memory(
    trial: optuna.Trial,
    batch_size: int,
    micro_batch_size: int | None = None,
) -> str | None:
    """Why ``trial`` would run out of memory, if an earlier trial of its study proved it; else ``None``.

    Args:
        trial: The trial about to train (its parameters already suggested).
        batch_size: Its effective batch size.
        micro_batch_size: The batch that goes through the model at once (gradient accumulation);
            defaults to ``batch_size``.

    Examples:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> t = study.ask(); t.set_user_attr("stop_reason", "oom"); t.set_user_attr("batch_size", 256)
        >>> _ = study.tell(t, state=optuna.trial.TrialState.PRUNED)
        >>> known_out_of_memory(study.ask(), 512)
        'batch 512 (micro-batch 512) >= 256, which ran out of memory in trial 0'
    """
    micro = micro_batch_size or batch_size
    study = trial.study
    key = _model_key(trial.params, trial.distributions)
    for old in study.get_trials(
        deepcopy=False, states=(TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL)
    ):
        ua = old.user_attrs
        if ua.get("stop_reason") != "oom" or old.number == trial.number:
            continue
        old_micro = ua.get("micro_batch_size") or ua.get("batch_size")
        if not isinstance(old_micro, int) or micro < old_micro:
            continue
        if _model_key(old.params, old.distributions) != key:
            continue
        return f"batch {batch_size} (micro-batch {micro}) >= {old_micro}, which ran out of memory in trial {old.number}"
    return None
