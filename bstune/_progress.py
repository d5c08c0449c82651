"""Live progress of ``bstune optimize``: a status line while a trial trains, a line when it ends."""

from __future__ import annotations

import math
from typing import Any

import optuna
from rich.console import Console
from rich.status import Status
from rich.table import Table

from bstune.analysis import ConfigRow
from bstune.objectives import Mode, Target
from bstune.run import CurvePoint

__all__ = ["Progress", "best_table"]


def _fmt_value(mode: Mode, v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.2f} s" if isinstance(mode, Target) else f"{v:.4f}"


class Progress:
    """Prints to ``console``; the live status line shows only on a terminal."""

    def __init__(self, console: Console, mode: Mode, n_trials: int | None) -> None:
        self.console = console
        self.mode = mode
        self.n_trials = n_trials
        self.done = 0
        self._status: Status | None = None

    def on_report(self, trial: optuna.Trial, point: CurvePoint) -> None:
        if not self.console.is_terminal:
            return
        limit = f"/{self.mode.trial_limit:g}" if self.mode.trial_limit is not None else ""
        text = (
            f"trial #{trial.number}: {point.train_s:.1f}{limit} s trained, epoch {point.epoch:.2f}, "
            f"{self.mode.metric_name} {point.metric:.4f}"
        )
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def on_trial_end(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        self.done += 1
        ua = trial.user_attrs
        count = f"{self.done}/{self.n_trials}" if self.n_trials else str(self.done)
        batch = ua.get("batch_size", "?")
        micro = ua.get("micro_batch_size")
        batch_s = f"{batch}" + (f" (micro {micro})" if micro and micro != batch else "")
        lr = ua.get("learning_rate")
        lr_s = f"{lr:.2e}" if isinstance(lr, float) else "?"
        epochs = f"{ua.get('epochs_done', 0):.2f}/{ua.get('planned_epochs', '?')}"
        state = trial.state.name.lower()
        reason = ua.get("stop_reason", state)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            shown = _fmt_value(self.mode, trial.value)
            if isinstance(self.mode, Target) and not ua.get("reached_target"):
                shown = "missed target"
        elif trial.state == optuna.trial.TrialState.FAIL:
            shown = "failed: " + str(ua.get("stop_detail", "see the trial's user attributes")).splitlines()[-1][:120]
        else:
            shown = state
        thr = ua.get("throughput")
        thr_s = f"{thr:,.0f} samples/s" if isinstance(thr, (int, float)) else ""
        best = _best(study)
        best_s = f"best {_fmt_value(self.mode, best.value)} (#{best.number})" if best is not None else "best -"
        disturbed = ua.get("disturbed")
        if isinstance(disturbed, dict):  # bstune.analysis._disturbed marked it when it ended
            thr_s += (f" (disturbed: {disturbed.get('ratio', 0):.2f} of the {disturbed.get('reference', 0):,.0f} its batch "
                      "size's other trials reached)")
        self.console.print(
            f"[{count}] #{trial.number:<3} batch {batch_s:<6} lr {lr_s}  epochs {epochs}  "
            f"-> {shown}  [{reason}]  {ua.get('train_s', 0):.1f} s  {thr_s}  | {best_s}",
            highlight=False,
            markup=False,
        )


def _best(study: optuna.Study) -> Any:
    try:
        return study.best_trial
    except ValueError:
        return None


def best_table(rows: list[ConfigRow], mode: Mode) -> Table:
    """The best configurations as a terminal table."""
    table = Table(title=f"Best configurations ({mode.value_name})", title_justify="left")
    for col in ("rank", "trial", mode.metric_name if not isinstance(mode, Target) else "seconds",
                "batch", "micro", "learning rate", "epochs", "train s", "samples/s", "stopped by", "other params"):
        table.add_column(col, justify="right" if col not in ("stopped by", "other params") else "left")
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i),
            f"#{r.number}",
            _fmt_value(mode, r.value),
            str(r.batch_size),
            str(r.micro_batch_size),
            f"{r.learning_rate:.2e}" if r.learning_rate is not None else "-",
            f"{r.epochs_done:.2f}/{r.epochs}" if r.epochs_done is not None else str(r.epochs),
            f"{r.train_s:.1f}" if r.train_s is not None else "-",
            f"{r.throughput:,.0f}" if r.throughput else "-",
            r.stop_reason,
            ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items()),
        )
    return table
