"""The coordinator: starts the workers, hands out one ticket per trial, fails and retries lost trials.

It runs in the ``bstune optimize`` process. Each worker asks for a ticket before a trial; the
coordinator answers "go" while the finished count plus the tickets out is short of ``n_trials``,
and "stop" once it cannot be, so the study gains exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import optuna

from bstune._workers._lost import death_reason, fail_lost, failures_message, get_trial, reclaim_orphans
from bstune._workers._plan import WorkerPlan
from bstune._workers._spec import WorkerSpec
from bstune._workers._worker import EXIT_INTERRUPTED
from bstune.storage import SharedOutage, set_outage_listener

__all__ = ["Interrupted", "WorkersResult", "run_workers"]


@dataclass
class WorkersResult:
    """How a run of several workers ended."""

    finished: int = 0
    lost: list[int] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None


@dataclass
class _Worker:
    plan: WorkerPlan
    proc: subprocess.Popen[bytes]
    send: IO[str]
    holds_ticket: bool = False
    trial: int | None = None
    ready: bool = False
    gone: bool = False
    error: str | None = None


class Interrupted(KeyboardInterrupt):
    """The second Ctrl-C: the workers were killed and the command exits at once."""


_Events = queue.Queue[tuple[int, "dict[str, Any] | None"]]


def run_workers(
    study: optuna.Study,
    spec: WorkerSpec,
    plans: Sequence[WorkerPlan],
    *,
    n_trials: int,
    timeout: float | None = None,
    max_consecutive_failures: int = 3,
    on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    on_lost: Callable[[int, str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WorkersResult:
    """Run ``n_trials`` trials of the study ``spec`` describes on one process per plan.

    Args:
        study: The study, already created; used to read finished trials and to fail lost ones.
        spec: What every worker needs to rebuild the objective (see
            ``bstune._workers._worker.worker_main``); it may hold a storage password and is sent
            on the workers' standard input only.
        plans: One ``WorkerPlan`` per worker.
        n_trials: Finished trials to add; a trial lost with its worker does not count and is
            retried.
        timeout: Seconds after which no new trial starts.
        max_consecutive_failures: Trials failing in the user's code in a row before stopping.
        on_trial_end: Called with each finished trial (progress lines).
        on_lost: Called with the number and the reason of each lost trial.
        clock: Monotonic seconds, for ``timeout``.

    Returns:
        How it ended; ``error`` is set (one line, password masked) when ``max_consecutive_failures``
        trials failed in a row or a worker could not start (bad task script, storage unreachable).

    Raises:
        KeyboardInterrupt: Ctrl-C; every running trial was recorded first.
        Interrupted: A second Ctrl-C; the workers were killed at once.
    """
    c = _Coordinator(study, spec, plans, n_trials, timeout, max_consecutive_failures, on_trial_end, on_lost, clock)
    set_outage_listener(lambda kind, line: c.outage("coordinator", kind, line))
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGINT, c.on_sigint) if in_main else None
    try:
        c.lost(reclaim_orphans(study))
        for plan in plans:
            c.start(plan)
        c.loop()
    except Interrupted:
        c.result.interrupted = True
        raise
    finally:
        set_outage_listener(None)
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        for w in c.workers.values():
            try:
                w.send.close()
            except OSError:
                pass
    c.result.interrupted = c.interrupts > 0
    if c.result.interrupted:
        raise KeyboardInterrupt()
    return c.result


class _Coordinator:
    """The state of one ``run_workers`` call and its answers to the workers' events."""

    def __init__(
        self,
        study: optuna.Study,
        spec: WorkerSpec,
        plans: Sequence[WorkerPlan],
        n_trials: int,
        timeout: float | None,
        max_consecutive_failures: int,
        on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None,
        on_lost: Callable[[int, str], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.study, self.spec, self.plans, self.n_trials = study, spec, plans, n_trials
        self.timeout, self.max_consecutive_failures, self.clock = timeout, max_consecutive_failures, clock
        self.on_trial_end, self.on_lost = on_trial_end, on_lost
        self.events: _Events = queue.Queue()
        self.workers: dict[int, _Worker] = {}
        self.result = WorkersResult()
        self.streak = 0
        self.last_failed: optuna.trial.FrozenTrial | None = None
        self.waiting: list[int] = []  # workers that asked for a ticket while others were outstanding
        self.stopping = False
        self.interrupts = 0
        self.t0 = clock()
        self.respawns = len(plans)  # replace dead workers, but never loop on a crash
        self.outage = SharedOutage()  # the storage lost and back, said once for all processes

    def start(self, plan: WorkerPlan) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **plan.env(), "BSTUNE_WORKER_FD": str(write_fd)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bstune._workers"],
            stdin=subprocess.PIPE,
            env=env,
            pass_fds=(write_fd,),
            # Its own session: a Ctrl-C at the terminal reaches the coordinator only, which then
            # asks each worker to stop exactly once.
            start_new_session=True,
        )
        os.close(write_fd)
        assert proc.stdin is not None
        send = open(proc.stdin.fileno(), "w", buffering=1, closefd=False)  # noqa: SIM115
        w = _Worker(plan, proc, send)
        self.workers[plan.index] = w
        mine = {**self.spec, "index": plan.index, "n_workers": len(self.plans), "plan": _plan_dict(plan)}
        w.send.write(json.dumps(mine) + "\n")
        reader = os.fdopen(read_fd, "r")
        threading.Thread(target=_pump, args=(plan.index, reader, self.events), daemon=True).start()

    def loop(self) -> None:
        while any(not w.gone for w in self.workers.values()):
            try:
                index, msg = self.events.get(timeout=0.1)
            except queue.Empty:
                self.settle()
                continue
            if msg is None:  # the worker's pipe closed: it exited or was killed
                self.on_exit(self.workers[index])
            else:
                self.on_event(self.workers[index], index, msg)
            self.settle()

    def lost(self, found: list[tuple[int, str]]) -> None:
        for number, reason in found:
            self.result.lost.append(number)
            if self.on_lost is not None:
                self.on_lost(number, reason)

    def reply(self, w: _Worker, go: bool) -> None:
        try:
            w.send.write("go\n" if go else "stop\n")
            w.holds_ticket = go
        except (BrokenPipeError, OSError):
            w.holds_ticket = False

    def outstanding(self) -> int:
        return sum(1 for w in self.workers.values() if w.holds_ticket and not w.gone)

    def settle(self) -> None:
        """Answer the workers that wait: a ticket while the count is short, "stop" once it cannot be."""
        while self.waiting:
            w = self.workers[self.waiting[0]]
            if w.gone:
                self.waiting.pop(0)
                continue
            timed_out = self.timeout is not None and self.clock() - self.t0 >= self.timeout
            if self.stopping or timed_out or self.result.finished >= self.n_trials:
                self.waiting.pop(0)
                self.reply(w, False)
            elif self.result.finished + self.outstanding() < self.n_trials:
                self.waiting.pop(0)
                self.reply(w, True)
            else:
                return  # a ticket may come back if a running trial is lost

    def on_exit(self, w: _Worker) -> None:
        """A worker's pipe closed: fail and retry its trial, keep its error, replace it after a crash."""
        w.gone = True
        self.outage(f"worker {w.plan.index}", "gone", "")
        rc = w.proc.wait()
        w.holds_ticket = False
        if w.trial is not None:
            reason = death_reason(w.plan.index, w.proc.pid, rc)
            fail_lost(self.study, w.trial, reason)
            self.lost([(w.trial, reason)])
            w.trial = None
        if rc != 0:  # it may have died after starting a trial but before saying so
            self.lost(reclaim_orphans(self.study))
        if w.error is not None and not w.ready and self.result.error is None:
            self.result.error = w.error
            self.stopping = True
        elif (
            rc not in (0, EXIT_INTERRUPTED) and w.ready and not self.stopping
            and self.respawns > 0 and self.result.finished < self.n_trials
        ):
            self.respawns -= 1
            self.start(w.plan)

    def on_event(self, w: _Worker, index: int, msg: dict[str, Any]) -> None:
        ev = msg.get("ev")
        if ev == "ready":
            w.ready = True
        elif ev == "ask":
            self.waiting.append(index)
        elif ev == "start":
            w.trial = int(msg["trial"])
        elif ev == "end":
            w.trial = None
            w.holds_ticket = False
            self.on_end(msg)
        elif ev == "storage":
            at = msg.get("at")
            self.outage(f"worker {index}", str(msg.get("kind")), str(msg.get("line", "")),
                        float(at) if isinstance(at, (int, float)) else None)
        elif ev == "error":
            w.error = str(msg.get("message", "the worker failed"))
            if w.ready and self.result.error is None:
                self.result.error = w.error
                self.stopping = True

    def on_end(self, msg: dict[str, Any]) -> None:
        """A trial ended: count it, or stop after an interrupt or too many failures in a row."""
        frozen = get_trial(self.study, int(msg["trial"]))
        if msg.get("interrupted"):
            self.stopping = True
        else:
            self.result.finished += 1
            if frozen is not None and frozen.state == optuna.trial.TrialState.FAIL:
                self.streak += 1
                self.last_failed = frozen
            else:
                self.streak = 0
            if self.streak >= self.max_consecutive_failures and not self.stopping:
                self.stopping = True
                self.result.error = failures_message(self.max_consecutive_failures, self.last_failed)
        if frozen is not None and self.on_trial_end is not None:
            self.on_trial_end(self.study, frozen)

    def on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        self.stopping = True
        if self.interrupts == 1:
            # A worker not yet ready may not have its handler yet; it gets "stop" when it asks.
            for w in self.workers.values():
                if w.ready and not w.gone:
                    _signal(w.proc, signal.SIGINT)
            return
        for w in self.workers.values():
            if not w.gone:
                _signal(w.proc, signal.SIGKILL)
        for w in self.workers.values():
            try:
                w.proc.wait(timeout=5)  # reap them: SIGKILL is immediate
            except subprocess.TimeoutExpired:
                pass
        raise Interrupted()


def _plan_dict(plan: WorkerPlan) -> dict[str, Any]:
    return {
        "device": plan.device,
        "gpu": plan.gpu,
        "cpu_cores": list(plan.cpu_cores),
        "threads": plan.threads,
    }


def _pump(index: int, stream: IO[str], events: _Events) -> None:
    with stream:
        for line in stream:
            try:
                events.put((index, json.loads(line)))
            except json.JSONDecodeError:
                continue
    events.put((index, None))


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass
