"""Trials whose worker died: failed with the reason, and retried with the same parameters."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import optuna

from bstune.storage import retry_trial

__all__ = ["death_reason", "fail_lost", "failures_message", "get_trial", "reclaim_orphans"]


def death_reason(index: int, pid: int, rc: int) -> str:
    how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}"
    return f"worker {index} (pid {pid}) {how} during the trial; retried as a new trial"


def get_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    trials = study.get_trials(deepcopy=False)
    if number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)


def fail_lost(study: optuna.Study, number: int, reason: str) -> bool:
    """Mark a lost worker's trial FAIL and enqueue its retry, unless a heartbeat already did."""
    frozen = get_trial(study, number)
    if frozen is None or frozen.state != optuna.trial.TrialState.RUNNING:
        return False
    trial = optuna.trial.Trial(study, frozen._trial_id)
    try:
        trial.set_user_attr("stop_reason", "lost")
        trial.set_user_attr("stop_detail", reason)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # another process finished it first (a heartbeat check); it retried it too
    retry_trial(study, get_trial(study, number) or frozen)
    return True


def reclaim_orphans(study: optuna.Study) -> list[tuple[int, str]]:
    """Fail and retry the RUNNING trials of workers on this machine whose process is gone.

    A journal file has no heartbeats, so after the whole command was killed (``kill -9``, a
    reboot) its running trials would stay RUNNING forever; running the command again finds them
    by the ``process`` (host and pid) each worker records first on its trials. Returns (number,
    reason) pairs.
    """
    host = socket.gethostname()
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        process = t.user_attrs.get("process")
        if not isinstance(process, dict) or process.get("host") != host:
            continue
        pid = process.get("pid")
        if not isinstance(pid, int) or _is_worker(pid):
            continue
        reason = f"its worker (pid {pid}) is gone; retried as a new trial"
        if fail_lost(study, t.number, reason):
            out.append((t.number, reason))
    return out


def _is_worker(pid: int) -> bool:
    try:
        return b"bstune._workers" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): a live process of that pid is taken for the worker
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def failures_message(n: int, last: optuna.trial.FrozenTrial | None) -> str:
    if last is None:
        return f"stopped after {n} failed trials in a row"
    detail = last.user_attrs.get("stop_detail") or "see the trial's user attributes"
    return (
        f"stopped after {n} failed trials in a row; the last one (#{last.number}) raised: {detail}"
    )
