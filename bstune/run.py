"""One trial's session: its clocks, learning curve, reports, stop decisions and user attributes.

A ``Run`` wraps an Optuna trial while a model trains. The training loop marks its regions
(``with run.training():``, ``with run.evaluating():``) and calls ``Run.report`` after each
evaluation; the run keeps the clocks apart, records the learning curve, reports intermediate values
with step = elapsed training milliseconds, and says when to stop (budget spent, target reached,
epochs done, diverged, pruned).

Clocks. Training time is read with a monotonic clock. With a ``sync`` function (on CUDA,
``torch.cuda.synchronize``) a training interval runs from entering ``training()`` to the next
synchronisation, which happens only at report points and when evaluation starts, never per step, so
queued device work is counted as training and not as evaluation. Between report points
``Run.train_seconds`` is an unsynchronised estimate, good enough for budget checks. The clock is
injectable (``bstune.testing.FakeClock``), so tests never sleep.

This module does not import torch.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import optuna

from bstune.curve import CurvePoint, curve_from_attrs, curve_to_attrs
from bstune.memory import is_oom
from bstune.objectives import Mode, Target

if TYPE_CHECKING:
    from bstune.space import Hyperparams

__all__ = ["STOP_REASONS", "CurvePoint", "Run", "curve_from_attrs"]

#: Why a trial stopped, as recorded in its ``stop_reason`` user attribute.
STOP_REASONS = ("budget", "target", "epochs", "pruned", "diverged", "oom", "failed", "interrupted")


class Run:
    """The session of one trial: clocks, curve, reports and stop decisions.

    Args:
        trial: The Optuna trial this run reports to.
        mode: ``TimeBudget`` or ``Target``.
        hp: The configuration being trained, recorded on the trial.
        clock: A monotonic clock in seconds; injectable for tests.
        sync: Called at report points before reading the clock (``torch.cuda.synchronize``).
        device: A name for the device, recorded on the trial.
        micro_batch_size: The batch that goes through the model at once, if it differs from the
            effective batch (gradient accumulation).
        on_report: Called with each new ``CurvePoint`` (progress display).

    Examples:
        >>> import optuna, bstune
        >>> from bstune.testing import FakeClock
        >>> clock = FakeClock()
        >>> study = optuna.create_study(direction="maximize")
        >>> trial = study.ask()
        >>> with bstune.Run(trial, bstune.TimeBudget(10), clock=clock) as run:
        ...     while not run.should_stop:
        ...         with run.training():
        ...             clock.advance(4.0)
        ...         run.report(0.5 + run.train_seconds / 100, samples=100)
        >>> run.stop_reason, run.value, [p.train_s for p in run.curve]
        ('budget', 0.62, [4.0, 8.0, 12.0])
    """

    def __init__(
        self,
        trial: optuna.Trial,
        mode: Mode,
        hp: Hyperparams | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[], None] | None = None,
        device: str = "cpu",
        micro_batch_size: int | None = None,
        on_report: Callable[[CurvePoint], None] | None = None,
    ) -> None:
        self.trial = trial
        self.mode = mode
        self.hp = hp
        self.device = device
        self.micro_batch_size = micro_batch_size or (hp.batch_size if hp else None)
        self.on_report = on_report
        self._clock = clock
        self._sync = sync
        self._t0 = clock()
        self._train_s = 0.0
        self._eval_s = 0.0
        self._overhead_s = 0.0
        self._open_since: float | None = None  # start of an interval not yet closed
        self._in_training = False
        self._last_step = -1
        self.curve: list[CurvePoint] = []
        self.samples_seen = 0
        self.epoch = 0.0
        self.stop_reason: str | None = None
        self.stop_detail: str = ""
        self.peak_memory_bytes: int | None = None
        self.extra_attrs: dict[str, Any] = {}
        self._recorded = False

    # ------------------------------------------------------------------ clocks

    @property
    def wall_seconds(self) -> float:
        return self._clock() - self._t0

    @property
    def train_seconds(self) -> float:
        """Training seconds so far; unsynchronised between report points."""
        if self._open_since is None:
            return self._train_s
        return self._train_s + (self._clock() - self._open_since)

    @property
    def eval_seconds(self) -> float:
        return self._eval_s

    @property
    def overhead_seconds(self) -> float:
        return self._overhead_s

    @property
    def elapsed(self) -> float:
        """Seconds on the mode's clock: training time, or wall time with ``clock="wall"``."""
        return self.wall_seconds if self.mode.clock == "wall" else self.train_seconds

    def _close_training(self) -> None:
        """A sync point: wait for queued device work and close the open training interval."""
        if self._open_since is None:
            return
        if self._sync is not None:
            self._sync()  # sync point
        self._train_s += self._clock() - self._open_since
        self._open_since = None

    @contextmanager
    def training(self) -> Iterator[None]:
        """Time spent inside counts as training time. Cheap: wrap every step if you like."""
        if self._in_training:
            raise RuntimeError("run.training() is already active; do not nest it")
        self._in_training = True
        if self._open_since is None:
            self._open_since = self._clock()
        try:
            yield
        finally:
            self._in_training = False
            if self._sync is None:
                self._close_training()
            # With a sync function the interval stays open until the next sync point.

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time spent inside counts as evaluation time; entering it is a sync point."""
        self._close_training()
        t = self._clock()
        try:
            yield
        finally:
            self._eval_s += self._clock() - t

    @contextmanager
    def overhead(self) -> Iterator[None]:
        """One-off costs kept apart from training (building the model, moving data, compiling)."""
        self._close_training()
        t = self._clock()
        try:
            yield
        finally:
            self._overhead_s += self._clock() - t

    # ------------------------------------------------------------------ decisions

    @property
    def budget_spent(self) -> bool:
        """The mode's per-trial limit is used up (a time budget, or a target study's ``limit``)."""
        limit = self.mode.trial_limit
        return limit is not None and self.elapsed >= limit

    @property
    def should_stop(self) -> bool:
        """True once the budget is spent, the target reached, or the run was stopped."""
        if self.stop_reason is None and self.budget_spent:
            self.stop_reason = "budget"
        return self.stop_reason is not None

    def time_left(self) -> float:
        """Seconds left in the budget on the mode's clock (infinite in target mode without a limit)."""
        limit = self.mode.trial_limit
        return math.inf if limit is None else max(limit - self.elapsed, 0.0)

    def progress(self, planned_samples: int | None = None) -> float:
        """How far along the trial's schedule is, in [0, 1]: budget-aware.

        The larger of the fraction of the time budget spent and the fraction of the planned
        samples seen, so a learning-rate schedule driven by it ends when the budget or the epochs
        end, whichever is sooner (Li et al. 2020, "Budgeted Training").
        """
        p = 0.0
        if planned_samples:
            p = self.samples_seen / planned_samples
        limit = self.mode.trial_limit
        if limit is not None:
            p = max(p, self.elapsed / limit)
        return min(max(p, 0.0), 1.0)

    def stop(self, reason: str, detail: str = "") -> None:
        """Stop the run for ``reason`` (one of ``STOP_REASONS``); the first reason wins."""
        if reason not in STOP_REASONS:
            raise ValueError(f"stop reason must be one of {', '.join(STOP_REASONS)}; got {reason!r}")
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_detail = detail

    def count(self, samples: int) -> None:
        """Add ``samples`` training samples to the count (the built-in trainer calls this)."""
        self.samples_seen += samples

    # ------------------------------------------------------------------ reports

    def report(
        self,
        metric: float,
        *,
        loss: float | None = None,
        epoch: float | None = None,
        samples: int | None = None,
    ) -> None:
        """Record one evaluation and report it to Optuna at step = elapsed training milliseconds.

        Args:
            metric: The validation metric (accuracy, by default higher is better).
            loss: The training loss since the last report, for divergence checks.
            epoch: Epochs done so far (fractions allowed).
            samples: Training samples seen so far; if omitted, what ``count`` added up.

        Raises:
            optuna.TrialPruned: The trial diverged (NaN or infinite metric or loss) or a pruner
                stopped it. Its attributes are recorded before the exception leaves.
        """
        self._close_training()  # sync point
        metric = float(metric)
        loss_f = math.nan if loss is None else float(loss)
        if samples is not None:
            self.samples_seen = int(samples)
        if epoch is not None:
            self.epoch = float(epoch)
        point = CurvePoint(self._train_s, self.wall_seconds, self.epoch, self.samples_seen, metric, loss_f)
        self.curve.append(point)

        step = max(int(self.elapsed * 1000), self._last_step + 1)
        self._last_step = step
        value = self.mode.intermediate(metric)
        self.trial.report(value, step)
        self.trial.set_user_attr("curve", curve_to_attrs(self.curve))
        if self.on_report is not None:
            self.on_report(point)

        bad = [] if math.isfinite(metric) else ["metric"]
        if loss is not None and not math.isfinite(loss_f):
            bad.append("loss")
        if bad:
            self.stop("diverged", f"{' and '.join(bad)} not finite at {self._train_s:.2f} s")
            self._record()
            raise optuna.TrialPruned(self.stop_detail)
        if self.mode.reached(metric):
            self.stop("target", f"reached {metric:.4g} at {self._train_s:.2f} s")
        elif self.budget_spent:
            self.stop("budget")
        if self.stop_reason is None and self.trial.should_prune():
            pruner, why, outcome = _prune_reason(self.trial)
            self.stop(outcome, f"pruned by {pruner} at step {step}" + (f": {why}" if why else ""))
            self._record()
            raise optuna.TrialPruned(self.stop_detail)

    # ------------------------------------------------------------------ results

    @property
    def reached_target(self) -> bool:
        return isinstance(self.mode, Target) and self.mode.time_to_target(self.curve) is not None

    @property
    def value(self) -> float:
        """The objective value for Optuna (see ``bstune.objectives``).

        Raises:
            RuntimeError: Nothing was reported.
        """
        if not self.curve:
            raise RuntimeError("the run reported no validation metric: call run.report(metric) at least once")
        if isinstance(self.mode, Target):
            hit = self.mode.time_to_target(self.curve)
            if hit is not None:
                return hit
            return self.mode.miss_value(self.curve, _slowest_hit(self.trial))
        v = self.mode.value(self.curve)
        if math.isnan(v):
            raise RuntimeError("every reported metric was NaN")
        return v

    def constraints(self) -> dict[str, float]:
        """Optuna constraints (feasible when all <= 0): out of memory, and a missed target's shortfall."""
        out = {"out_of_memory": 1.0 if self.stop_reason == "oom" else 0.0}
        if isinstance(self.mode, Target):
            gaps = [self.mode.shortfall(p.metric) for p in self.curve if math.isfinite(p.metric)]
            out["target_shortfall"] = 0.0 if self.reached_target else (min(gaps) if gaps else 1.0)
        return out

    def attrs(self) -> dict[str, Any]:
        """The facts a person needs to trust the trial's number, as stored on the trial."""
        train_s = self._train_s
        out: dict[str, Any] = {
            "train_s": round(train_s, 6),
            "eval_s": round(self._eval_s, 6),
            "overhead_s": round(self._overhead_s, 6),
            "wall_s": round(self.wall_seconds, 6),
            "epochs_done": round(self.epoch, 4),
            "samples_seen": self.samples_seen,
            "throughput": round(self.samples_seen / train_s, 3) if train_s > 0 else None,
            "device": self.device,
            "stop_reason": self.stop_reason or "epochs",
        }
        if self.stop_detail:
            out["stop_detail"] = self.stop_detail
        if self.hp is not None:
            out["batch_size"] = self.hp.batch_size
            out["learning_rate"] = self.hp.learning_rate
            out["planned_epochs"] = self.hp.epochs
        if self.micro_batch_size is not None:
            out["micro_batch_size"] = self.micro_batch_size
        if self.peak_memory_bytes is not None:
            out["peak_memory_bytes"] = int(self.peak_memory_bytes)
        if isinstance(self.mode, Target):
            out["reached_target"] = self.reached_target
        out.update(self.extra_attrs)
        return out

    def _record(self) -> None:
        self._close_training()
        for k, v in self.attrs().items():
            self.trial.set_user_attr(k, v)
        set_constraint = getattr(self.trial, "set_constraint", None)  # a FixedTrial has none
        if set_constraint is not None:
            for k, v in self.constraints().items():
                set_constraint(k, v)
        self._recorded = True

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.stop("epochs")
        elif issubclass(exc_type, optuna.TrialPruned):
            self.stop("pruned", str(exc))
        elif issubclass(exc_type, KeyboardInterrupt):
            self.stop("interrupted")
        elif is_oom(exc):
            self.stop("oom", str(exc).splitlines()[0][:200] if str(exc) else "out of memory")
        else:
            self.stop("failed", "".join(traceback.format_exception_only(exc_type, exc)).strip()[-500:])
            self.extra_attrs["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb)[-3:])[-2000:]
        if not self._recorded or exc_type is None:
            self._record()


def _prune_reason(trial: optuna.Trial) -> tuple[str, str, str]:
    """Which pruner stopped the trial, why, and the stop reason: bstune's pruners explain themselves."""
    pruner = trial.study.pruner
    explain = getattr(pruner, "explain", None)
    reason = explain(trial.study, trial.number) if callable(explain) else None
    if reason is None or reason.outcome not in STOP_REASONS:
        return type(pruner).__name__, "", "pruned"
    return reason.pruner, reason.why, reason.outcome


def _slowest_hit(trial: optuna.Trial) -> float | None:
    """The largest time-to-target among the study's finished trials that reached the target."""
    try:
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    except AttributeError:  # a FixedTrial has no study
        return None
    hits = [t.value for t in done if t.user_attrs.get("reached_target") and t.value is not None]
    return max(hits) if hits else None
