"""The divergence pruner: NaN or infinite values, and losses that explode."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial

from bstune.curve import curve_column
from bstune.errors import check, check_int
from bstune.pruners._base import ExplainingPruner, PruneReason

__all__ = ["DivergencePruner"]


class DivergencePruner(ExplainingPruner):
    """Stop a trial at once when it diverges.

    A trial diverges when its latest intermediate value is NaN or infinite, or when, after
    ``n_warmup_reports`` reports, the latest loss in its ``curve`` user attribute (written by
    ``bstune.Run`` at every report) is more than ``loss_factor`` times its first finite loss.
    (``bstune.Run`` itself stops a trial whose reported loss or metric is NaN or infinite.) A healthy run's training loss falls from its first report on; three times the
    starting loss means the optimizer is throwing the model away, and nothing later will recover it
    within the same schedule.

    NaN policy: a NaN or infinite intermediate value is pruned (reason ``diverged``). It needs no
    other trial, no startup trials and no warm-up: a broken trial is stopped at its first report.

    Args:
        loss_factor: How many times its first finite loss the latest loss may reach. Greater than 1.
        n_warmup_reports: Reports before the loss-growth rule applies (the NaN rule always does).

    Examples:
        >>> import optuna
        >>> study = optuna.create_study(pruner=DivergencePruner())
        >>> trial = study.ask()
        >>> trial.report(float("nan"), 120)
        >>> trial.should_prune()
        True
    """

    def __init__(self, loss_factor: float = 3.0, n_warmup_reports: int = 1) -> None:
        super().__init__()
        owner = "DivergencePruner"
        check(owner, "loss_factor", loss_factor, "a finite number greater than 1", lambda v: math.isfinite(v) and v > 1)
        check_int(owner, "n_warmup_reports", n_warmup_reports, 0)
        self.loss_factor = float(loss_factor)
        self.n_warmup_reports = n_warmup_reports

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> PruneReason | None:
        step = trial.last_step
        if step is None:
            return None
        value = trial.intermediate_values[step]
        if not math.isfinite(value):
            return self._reason(f"intermediate value {value} at {step / 1000:.2f} s", "diverged")
        losses = curve_column(trial, "loss")
        if not losses:
            return None
        last = losses[-1]
        if not math.isfinite(last):
            # The curve stores a missing loss and a non-finite one alike (JSON has no NaN), and the
            # run itself stops a trial whose reported loss is not finite; here it means "no loss".
            return None
        if len(losses) <= self.n_warmup_reports:
            return None
        first = next((x for x in losses if math.isfinite(x)), math.nan)
        if first > 0 and last > self.loss_factor * first:
            return self._reason(
                f"loss {last:.4g} grew past {self.loss_factor:g} x its first value {first:.4g}",
                "diverged",
            )
        return None
