"""A composite pruner: prune when any of its members does."""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from bstune.errors import invalid
from bstune.pruners._base import ExplainingPruner, PruneReason

__all__ = ["AnyPruner"]


class AnyPruner(ExplainingPruner):
    """Prune a trial when any member pruner says so; members are asked in order.

    Members may be bstune's pruners or Optuna's (``MedianPruner``, ``SuccessiveHalvingPruner``,
    ...). The first member that prunes gives the reason: its own explanation for bstune's pruners,
    its class name for the others. Later members are not asked once one has pruned.

    Args:
        *pruners: At least one ``optuna.pruners.BasePruner``.

    Examples:
        >>> import optuna
        >>> from bstune.pruners import DivergencePruner, TimeAlignedPruner
        >>> pruner = AnyPruner(DivergencePruner(), TimeAlignedPruner(), optuna.pruners.MedianPruner())
        >>> [type(p).__name__ for p in pruner.pruners]
        ['DivergencePruner', 'TimeAlignedPruner', 'MedianPruner']
    """

    def __init__(self, *pruners: BasePruner) -> None:
        super().__init__()
        if not pruners:
            raise invalid("pruners", "AnyPruner", "at least one optuna.pruners.BasePruner", pruners)
        for p in pruners:
            if not isinstance(p, BasePruner):
                raise invalid("pruners", "AnyPruner", "optuna.pruners.BasePruner instances", p)
        self.pruners: tuple[BasePruner, ...] = tuple(pruners)

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        for p in self.pruners:
            if p.prune(study, trial):
                explain = getattr(p, "explain", None)
                reason = explain(study, trial.number) if callable(explain) else None
                return reason or PruneReason(type(p).__name__, "")
        return None
