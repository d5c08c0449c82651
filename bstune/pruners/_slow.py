"""The slow-trial pruner: stop a trial whose pace cannot fit the budget before it burns it."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial

from bstune.curve import curve_column
from bstune.errors import check, check_choice, check_int
from bstune.pruners._base import (
    ExplainingPruner,
    PruneReason,
    others,
    planned_end,
    points,
    trial_limit,
)

__all__ = ["SlowTrialPruner"]


class SlowTrialPruner(ExplainingPruner):
    """In a time budget, stop a trial whose measured pace cannot fit the budget.

    Judged from the trial's own reports (its pace is measured, not guessed):

    * Too few evaluations: at its mean time between reports, fewer than ``min_evaluations``
      evaluations fit into the budget, so its value would rest on one noisy point late in the budget.
    * First epoch (``first_epoch=True``, off by default): at its measured pace (the ``epoch`` column
      of the ``curve`` attribute ``bstune.Run`` writes) it cannot finish one epoch within the
      budget, while some other trial of the study did. When no trial can finish an epoch (a huge
      data set), nobody is stopped for it. Off by default because under a short budget the best
      trial often sees less than one epoch (on ``examples/mlp_blobs.py`` with a 1 s budget the best
      trial, batch 64, saw 0.21 epochs), and a pace measured over the first, warm-up-laden interval
      is noisy.

    A trial whose own planned schedule ends before its next evaluation is left alone. NaN values
    play no part (only report times are used). Direction does not matter.

    Args:
        budget: Seconds of training; ``None`` reads the budget of a bstune time-budget study (and
            prunes nothing in a study without one).
        min_evaluations: Evaluations that must fit into the budget. At least 1.
        first_epoch: Also stop trials that cannot finish their first epoch within the budget.

    Examples:
        >>> import optuna
        >>> study = optuna.create_study(direction="maximize", pruner=SlowTrialPruner(budget=10.0))
        >>> trial = study.ask()
        >>> trial.report(0.6, 6000)   # one evaluation every 6 s: only one fits into 10 s
        >>> trial.should_prune()
        True
    """

    def __init__(
        self, budget: float | None = None, *, min_evaluations: int = 2, first_epoch: bool = False
    ) -> None:
        super().__init__()
        owner = "SlowTrialPruner"
        check(owner, "budget", budget, "a finite number of seconds greater than 0 or None",
              lambda v: math.isfinite(v) and v > 0, none=True)
        check_int(owner, "min_evaluations", min_evaluations, 1)
        check_choice(owner, "first_epoch", first_epoch, (True, False))
        self.budget = None if budget is None else float(budget)
        self.min_evaluations = min_evaluations
        self.first_epoch = first_epoch

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        budget = self.budget if self.budget is not None else trial_limit(study)
        pts = points(trial)
        if budget is None or not pts:
            return None
        t = pts[-1][0]
        if t >= budget:
            return None  # spent: the run stops it with the reason "budget"
        end = planned_end(trial, None)
        interval = t / len(pts)
        if end is not None and t + interval > end:
            return None  # its schedule ends before another evaluation: let it finish
        fit = math.floor(budget / interval) if interval > 0 else math.inf
        if fit < self.min_evaluations:
            return self._reason(
                f"one evaluation every {interval:.2f} s: {fit} of the {self.min_evaluations} needed fit into "
                f"the {budget:g} s budget"
            )
        if self.first_epoch:
            epochs = curve_column(trial, "epoch")
            e = epochs[-1] if epochs else math.nan
            if math.isfinite(e) and 0 < e < 1 and t / e > budget:
                fast = _epoch_within(study, trial, budget)
                if fast is not None:
                    return self._reason(
                        f"its first epoch would take {t / e:.1f} s, past the {budget:g} s budget "
                        f"(trial {fast} finished an epoch within it)"
                    )
        return None


def _epoch_within(study: optuna.Study, trial: FrozenTrial, budget: float) -> int | None:
    """A trial that finished its first epoch within the budget, if any."""
    for other in others(study, trial):
        times = [step / 1000.0 for step in sorted(other.intermediate_values)]
        for s, e in zip(times, curve_column(other, "epoch"), strict=False):
            if e >= 1 and s <= budget:
                return other.number
    return None
