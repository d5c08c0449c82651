"""The objective: suggest a configuration, train it inside a ``Run``, record what happened.

Out of memory is an outcome, not a failure; a trial that waited for its storage records how long;
a trial that trained far slower than its batch size's others is marked disturbed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import optuna

from bstune.memory import accumulation_plan, free_memory, is_oom
from bstune.objectives import Mode
from bstune.pruners import known_out_of_memory
from bstune.run import CurvePoint, Run
from bstune.space import SearchSpace
from bstune.storage import outage_seconds
from bstune.task import Task

__all__ = ["make_objective"]


def make_objective(
    task: Task | Callable[..., None],
    space: SearchSpace,
    mode: Mode,
    *,
    trainer: Any | None = None,
    clock: Callable[[], float] | None = None,
    on_report: Callable[[optuna.Trial, CurvePoint], None] | None = None,
    micro_batch_size: int | None = None,
    retry_disturbed: bool = False,
) -> Callable[[optuna.Trial], float]:
    """The Optuna objective for a task: suggest, train inside a ``Run``, return its value.

    ``task`` is a loaded ``Task`` or a plain ``train(hp, run)`` function. A task
    with ``data`` and ``model`` trains with ``trainer`` (the built-in one by default). A task with
    its own loop finds the batch to put through the model at once in ``run.micro_batch_size``: the
    effective batch, or ``micro_batch_size`` (else the space's) when that is smaller.

    Out of memory is an outcome: the trial is recorded with its batch size, marked infeasible
    (constraint violated) and pruned; memory is freed and the study goes on. A later trial of the
    same model whose micro-batch is at least as large is recorded the same way without training
    (``bstune.pruners.known_out_of_memory``).

    A trial that trained far slower than its batch size's other trials is marked disturbed when it
    ends (``bstune.analysis._disturbed``); with ``retry_disturbed`` its configuration is queued
    again, once.
    """
    if isinstance(task, Task):
        train_fn = task.get("train")
        if train_fn is None:
            if trainer is None:
                from bstune.train import Trainer

                trainer = Trainer(task, micro_batch_size=space.micro_batch_size)
            train_fn = trainer
    else:
        train_fn = task
    device = getattr(trainer, "device_name", None) or _guess_device()
    sync = getattr(trainer, "sync", None) or _guess_sync()

    def objective(trial: optuna.Trial) -> float:
        waited_before = outage_seconds()
        hp = space.suggest(trial)
        # The built-in trainer splits a batch itself; a train() function (a Lightning or Hugging Face
        # script among them) reads the micro-batch from run.micro_batch_size.
        default_micro = lambda b: accumulation_plan(b, micro_batch_size or space.micro_batch_size)[0]  # noqa: E731
        micro = getattr(trainer, "micro_batch_for", default_micro)(hp.batch_size)
        report_cb = (lambda p: on_report(trial, p)) if on_report is not None else None
        run = Run(
            trial,
            mode,
            hp,
            clock=clock or _perf_counter,
            sync=sync,
            device=device,
            micro_batch_size=micro,
            on_report=report_cb,
        )
        try:
            with run:
                known = known_out_of_memory(trial, hp.batch_size, micro)
                if known is not None:  # not trained blindly again: recorded as out of memory
                    run.stop("oom", f"not trained: {known}")
                    raise optuna.TrialPruned(run.stop_detail)
                train_fn(hp, run)
                if not run.curve:
                    raise RuntimeError("train() returned without calling run.report(metric)")
        except Exception as e:
            if not is_oom(e):
                _note_storage_wait(trial, waited_before)
                _check_disturbed(trial, retry_disturbed)
                raise
            free_memory()
            raise optuna.TrialPruned(f"out of memory at batch size {hp.batch_size}") from None
        _note_storage_wait(trial, waited_before)
        _check_disturbed(trial, retry_disturbed)
        return run.value

    return objective


def _note_storage_wait(trial: optuna.Trial, before: float) -> None:
    """Record the seconds the trial waited for its storage (``storage_wait_s``): its reports were
    held until the storage came back. Training time does not include them; wall time does."""
    waited = outage_seconds() - before
    if waited > 0 and isinstance(trial, optuna.Trial):
        trial.set_user_attr("storage_wait_s", round(waited, 2))


def _check_disturbed(trial: optuna.Trial, retry: bool) -> None:
    """Mark ``trial`` disturbed when it trained far slower than its batch size's other trials, and
    with ``retry`` queue its configuration again (once: a retry is not retried)."""
    from bstune.analysis._disturbed import DISTURBED_ATTR, RETRY_ATTR, SLOW_RATIO, disturbance

    if not isinstance(trial, optuna.Trial):
        return  # a FixedTrial or a bare trial: no study to compare with
    study = trial.study
    others = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    me = study._storage.get_trial(trial._trial_id)
    d = disturbance(me, others)
    if d is None or d.ratio >= SLOW_RATIO:
        return
    trial.set_user_attr(DISTURBED_ATTR, {"throughput": round(d.throughput, 3), "reference": round(d.reference, 3),
                                         "ratio": round(d.ratio, 4), "others": d.others})
    if retry and me.user_attrs.get(RETRY_ATTR) is None:
        study.enqueue_trial(dict(me.params), user_attrs={RETRY_ATTR: trial.number})


def _perf_counter() -> float:
    import time

    return time.perf_counter()


def _guess_device() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def _guess_sync() -> Callable[[], None] | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.synchronize
    return None
