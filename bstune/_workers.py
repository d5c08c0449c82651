"""Several worker processes on one study: planning, the coordinator, the worker, lost trials.

``bstune optimize --workers N`` starts N worker processes (``python -m bstune._workers``) that
share one study through its storage. The command itself is the coordinator: it hands out one
ticket per trial, so the study gains exactly ``--n-trials`` finished trials (complete, pruned or
failed in the user's code), however the workers interleave.

* Devices. With GPUs, worker i sees only GPU i (``CUDA_VISIBLE_DEVICES``), so no two trials ever
  share an accelerator; asking for more workers than GPUs is an error. On CPU, worker i is pinned
  to its own share of the cores and torch uses that many threads. Every trial records ``worker``,
  ``workers``, ``cpu_threads`` and ``gpu`` in its user attributes.
* Lost trials. A worker that dies mid-trial (killed, out of host memory) leaves a RUNNING trial;
  the coordinator sees the process end, marks that trial FAIL (``stop_reason`` ``lost``) and
  enqueues a retry with the same parameters (:func:`retry_trial`), and the ticket goes back to the
  pool, so the count is still reached. With RDB storage, heartbeats do the same for a worker on a
  machine whose coordinator died too; on a journal file, running the command again reclaims the
  trials of this machine's dead workers (:func:`reclaim_orphans`).
* Ctrl-C. The first one asks every worker to stop: a running trial is recorded as FAIL with
  ``stop_reason`` ``interrupted`` and nothing is left RUNNING. A second one kills the workers and
  exits at once.
* Secrets. The storage URL reaches a worker on its standard input, never on its command line or
  in its environment, and everything printed goes through :func:`~bstune.study.mask_url`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import optuna

from bstune.errors import BstuneError
from bstune.study import retry_trial  # re-exported: workers retry their lost trials with it

__all__ = [
    "Interrupted",
    "WorkerPlan",
    "WorkersResult",
    "plan_workers",
    "reclaim_orphans",
    "retry_trial",
    "run_workers",
    "visible_gpus",
]

#: The exit status of a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker process gets: its device, its GPU or its CPU cores, its torch threads."""

    index: int
    device: str
    gpu: str | None
    cpu_cores: tuple[int, ...]
    threads: int

    def env(self) -> dict[str, str]:
        """Environment variables the worker starts with (threads are fixed before torch loads)."""
        out = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpu is not None:
            out["CUDA_VISIBLE_DEVICES"] = self.gpu
        return out


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (empty without CUDA)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    n = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:n] if listed else [str(i) for i in range(n)]


def plan_workers(
    n_workers: int,
    device: str = "auto",
    *,
    cpu_cores: Sequence[int] | None = None,
    gpus: Sequence[str] | None = None,
) -> list[WorkerPlan]:
    """One plan per worker: one GPU each, or an equal share of the CPU cores.

    Args:
        n_workers: Worker processes to start.
        device: ``auto`` (GPUs if any, else CPU), ``cpu`` or ``cuda``. A single GPU
            (``cuda:N``) cannot host several workers.
        cpu_cores: The cores this process may run on (default: its affinity).
        gpus: The visible GPUs (default: :func:`visible_gpus`, asked only when needed).

    Raises:
        BstuneError: More workers than GPUs, or one GPU named for several workers.

    Example:
        >>> [p.cpu_cores for p in plan_workers(2, "cpu", cpu_cores=[0, 1, 2, 3])]
        [(0, 1), (2, 3)]
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise BstuneError(f"--workers must be an integer of at least 1; got {n_workers!r}")
    if device.startswith("cuda:") and n_workers > 1:
        raise BstuneError(
            f"--device {device} names one GPU, and two trials never share one; "
            f"use --device cuda to give each of the {n_workers} workers its own GPU"
        )
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise BstuneError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}")
    cores = sorted(cpu_cores if cpu_cores is not None else _affinity())
    if device == "cpu":
        gpu_list: list[str] = []
    else:
        gpu_list = list(gpus) if gpus is not None else visible_gpus()
        if device == "cuda" and not gpu_list:
            raise BstuneError("--device cuda: no GPU is visible to this process")
    if gpu_list and n_workers > len(gpu_list):
        raise BstuneError(
            f"--workers {n_workers} needs {n_workers} GPUs "
            "(one trial per GPU, so timings stay honest), "
            f"but {len(gpu_list)} {'is' if len(gpu_list) == 1 else 'are'} visible; "
            f"use --workers {len(gpu_list)}, or --device cpu"
        )
    share = max(len(cores) // n_workers, 1)
    plans = []
    for i in range(n_workers):
        # With fewer cores than workers, nobody is pinned: the scheduler shares them.
        mine = tuple(cores[i * share : (i + 1) * share]) if len(cores) >= n_workers else ()
        if gpu_list:
            plans.append(WorkerPlan(i, "cuda", gpu_list[i], mine, share))
        else:
            plans.append(WorkerPlan(i, "cpu", None, mine, share))
    return plans


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


# --------------------------------------------------------------------------- the coordinator


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


def run_workers(
    study: optuna.Study,
    spec: dict[str, Any],
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
        spec: What every worker needs to rebuild the objective (see :func:`_worker_main`); it
            may hold a storage password and is sent on the workers' standard input only.
        plans: One :class:`WorkerPlan` per worker.
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
    events: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
    workers: dict[int, _Worker] = {}
    result = WorkersResult()
    streak = 0
    last_failed: optuna.trial.FrozenTrial | None = None
    waiting: list[int] = []  # workers that asked for a ticket while others were outstanding
    stopping = False
    interrupts = 0
    t0 = clock()
    respawns = len(plans)  # replace dead workers, but never loop on a crash

    def start(plan: WorkerPlan) -> None:
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
        workers[plan.index] = w
        mine = {**spec, "index": plan.index, "n_workers": len(plans), "plan": _plan_dict(plan)}
        w.send.write(json.dumps(mine) + "\n")
        reader = os.fdopen(read_fd, "r")
        threading.Thread(target=_pump, args=(plan.index, reader, events), daemon=True).start()

    def reply(w: _Worker, go: bool) -> None:
        try:
            w.send.write("go\n" if go else "stop\n")
            w.holds_ticket = go
        except (BrokenPipeError, OSError):
            w.holds_ticket = False

    def outstanding() -> int:
        return sum(1 for w in workers.values() if w.holds_ticket and not w.gone)

    def settle() -> None:
        # Answer the workers that wait: a ticket while the count is short, "stop" once it cannot be.
        while waiting:
            w = workers[waiting[0]]
            if w.gone:
                waiting.pop(0)
                continue
            timed_out = timeout is not None and clock() - t0 >= timeout
            if stopping or timed_out or result.finished >= n_trials:
                waiting.pop(0)
                reply(w, False)
            elif result.finished + outstanding() < n_trials:
                waiting.pop(0)
                reply(w, True)
            else:
                return  # a ticket may come back if a running trial is lost

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal interrupts, stopping
        interrupts += 1
        stopping = True
        if interrupts == 1:
            # A worker not yet ready may not have its handler yet; it gets "stop" when it asks.
            for w in workers.values():
                if w.ready and not w.gone:
                    _signal(w.proc, signal.SIGINT)
            return
        for w in workers.values():
            if not w.gone:
                _signal(w.proc, signal.SIGKILL)
        for w in workers.values():
            try:
                w.proc.wait(timeout=5)  # reap them: SIGKILL is immediate
            except subprocess.TimeoutExpired:
                pass
        raise Interrupted()

    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        for number, reason in reclaim_orphans(study):
            result.lost.append(number)
            if on_lost is not None:
                on_lost(number, reason)
        for plan in plans:
            start(plan)
        while any(not w.gone for w in workers.values()):
            try:
                index, msg = events.get(timeout=0.1)
            except queue.Empty:
                settle()
                continue
            w = workers[index]
            if msg is None:  # the worker's pipe closed: it exited or was killed
                w.gone = True
                rc = w.proc.wait()
                w.holds_ticket = False
                if w.trial is not None:
                    reason = _death(index, w.proc.pid, rc)
                    _fail_lost(study, w.trial, reason)
                    result.lost.append(w.trial)
                    if on_lost is not None:
                        on_lost(w.trial, reason)
                    w.trial = None
                if rc != 0:  # it may have died after starting a trial but before saying so
                    for number, reason in reclaim_orphans(study):
                        result.lost.append(number)
                        if on_lost is not None:
                            on_lost(number, reason)
                if w.error is not None and not w.ready and result.error is None:
                    result.error = w.error
                    stopping = True
                elif (
                    rc not in (0, EXIT_INTERRUPTED) and w.ready and not stopping
                    and respawns > 0 and result.finished < n_trials
                ):
                    respawns -= 1
                    start(w.plan)
                settle()
                continue
            ev = msg.get("ev")
            if ev == "ready":
                w.ready = True
            elif ev == "ask":
                waiting.append(index)
            elif ev == "start":
                w.trial = int(msg["trial"])
            elif ev == "end":
                w.trial = None
                w.holds_ticket = False
                frozen = _get_trial(study, int(msg["trial"]))
                if msg.get("interrupted"):
                    stopping = True
                else:
                    result.finished += 1
                    if frozen is not None and frozen.state == optuna.trial.TrialState.FAIL:
                        streak += 1
                        last_failed = frozen
                    else:
                        streak = 0
                    if streak >= max_consecutive_failures and not stopping:
                        stopping = True
                        result.error = _failures_message(max_consecutive_failures, last_failed)
                if frozen is not None and on_trial_end is not None:
                    on_trial_end(study, frozen)
            elif ev == "error":
                w.error = str(msg.get("message", "the worker failed"))
                if w.ready and result.error is None:
                    result.error = w.error
                    stopping = True
            settle()
    except Interrupted:
        result.interrupted = True
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        for w in workers.values():
            try:
                w.send.close()
            except OSError:
                pass
    result.interrupted = interrupts > 0
    if result.interrupted:
        raise KeyboardInterrupt()
    return result


def _plan_dict(plan: WorkerPlan) -> dict[str, Any]:
    return {
        "device": plan.device,
        "gpu": plan.gpu,
        "cpu_cores": list(plan.cpu_cores),
        "threads": plan.threads,
    }


_Events = queue.Queue[tuple[int, "dict[str, Any] | None"]]


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


def _death(index: int, pid: int, rc: int) -> str:
    how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}"
    return f"worker {index} (pid {pid}) {how} during the trial; retried as a new trial"


def _get_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    trials = study.get_trials(deepcopy=False)
    if number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)


def _fail_lost(study: optuna.Study, number: int, reason: str) -> bool:
    """Mark a lost worker's trial FAIL and enqueue its retry, unless a heartbeat already did."""
    frozen = _get_trial(study, number)
    if frozen is None or frozen.state != optuna.trial.TrialState.RUNNING:
        return False
    trial = optuna.trial.Trial(study, frozen._trial_id)
    try:
        trial.set_user_attr("stop_reason", "lost")
        trial.set_user_attr("stop_detail", reason)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # another process finished it first (a heartbeat check); it retried it too
    retry_trial(study, _get_trial(study, number) or frozen)
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
        if _fail_lost(study, t.number, reason):
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


def _failures_message(n: int, last: optuna.trial.FrozenTrial | None) -> str:
    if last is None:
        return f"stopped after {n} failed trials in a row"
    detail = last.user_attrs.get("stop_detail") or "see the trial's user attributes"
    return (
        f"stopped after {n} failed trials in a row; the last one (#{last.number}) raised: {detail}"
    )


# --------------------------------------------------------------------------- the worker


class _Flags:
    in_objective = False
    stop = False  # start no new trial
    interrupted = False  # a Ctrl-C came: stop the trial under way too


def _on_worker_sigint(signum: int, frame: Any) -> None:
    # Inside the user's code, stop the trial (the run records "interrupted" and Optuna marks it
    # FAIL); anywhere else, finish the storage write under way and stop before the next trial.
    _Flags.stop = True
    _Flags.interrupted = True
    if _Flags.in_objective:
        raise KeyboardInterrupt()


def _worker_main() -> int:
    """A worker: read the spec on stdin, then run one trial per ticket until told to stop."""
    from bstune.study import mask_url

    signal.signal(signal.SIGINT, _on_worker_sigint)
    out = os.fdopen(int(os.environ["BSTUNE_WORKER_FD"]), "w", buffering=1)

    def emit(**msg: Any) -> None:
        try:
            out.write(json.dumps(msg) + "\n")
        except OSError:  # the coordinator is gone: finish what is recorded, start nothing new
            _Flags.stop = True

    line = sys.stdin.readline()
    if not line:
        return 1
    spec = json.loads(line)
    storage_url = spec["storage"]
    try:
        study, objective = _build(spec)
    except Exception as e:  # shown by the coordinator as one line
        if spec.get("debug"):
            import traceback

            traceback.print_exc()
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        prefix = "" if isinstance(e, BstuneError) else f"{type(e).__name__}: "
        shown = mask_url(prefix + text).replace(storage_url, mask_url(storage_url))
        emit(ev="error", message=shown)
        return 1
    emit(ev="ready")

    current: list[int] = []

    def wrapped(trial: optuna.Trial) -> float:
        # First of all, in one write: which process runs it (to reclaim it if it dies unseen).
        trial.set_user_attr("process", {"host": socket.gethostname(), "pid": os.getpid()})
        current.append(trial.number)
        emit(ev="start", trial=trial.number)
        for k, v in _concurrency_attrs(spec).items():
            trial.set_user_attr(k, v)
        _Flags.in_objective = True
        try:
            if _Flags.interrupted:  # a Ctrl-C that came before the flag above was up
                raise KeyboardInterrupt()
            # A vanished coordinator (a failed write above) only stops new trials: this one runs.
            return objective(trial)
        finally:
            _Flags.in_objective = False

    def ended(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        emit(ev="end", trial=trial.number, state=trial.state.name)

    while not _Flags.stop:
        emit(ev="ask")
        answer = sys.stdin.readline().strip()
        if answer != "go" or _Flags.stop:
            break
        current.clear()
        try:
            study.optimize(
                wrapped, n_trials=1, catch=(Exception,), callbacks=[ended], gc_after_trial=False
            )
        except KeyboardInterrupt:
            if current:
                emit(ev="end", trial=current[-1], state="FAIL", interrupted=True)
            return EXIT_INTERRUPTED
        except Exception as e:  # the storage failed under us: say so, the coordinator retries
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            emit(ev="error", message=mask_url(f"{type(e).__name__}: {text}"))
            return 1
    return EXIT_INTERRUPTED if _Flags.stop else 0


def _concurrency_attrs(spec: dict[str, Any]) -> dict[str, Any]:
    plan = spec["plan"]
    return {
        "worker": spec["index"],
        "workers": spec["n_workers"],
        "cpu_threads": plan["threads"],
        "gpu": plan["gpu"],
    }


def _build(spec: dict[str, Any]) -> tuple[optuna.Study, Callable[[optuna.Trial], float]]:
    """Rebuild, inside a worker, the objective the coordinator described."""
    from bstune.objectives import mode_from_attrs
    from bstune.space import load_space
    from bstune.study import create_study, default_sampler, make_objective, resolve_storage
    from bstune.task import load_task

    verbosity = optuna.logging.WARNING if spec.get("debug") else optuna.logging.ERROR
    optuna.logging.set_verbosity(verbosity)
    plan = spec["plan"]
    if plan["cpu_cores"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, plan["cpu_cores"])
    task = load_task(spec["script"], spec.get("task_options") or {})
    space = load_space(spec["space"])
    mode = mode_from_attrs(spec["mode"])
    if mode is None:
        raise BstuneError("the worker got no mode")
    storage = resolve_storage(spec["storage"], heartbeat_interval=spec.get("heartbeat_interval"))
    # Each worker samples with its own seed, or their first random trials would coincide.
    sampler = default_sampler(seed=int(spec["seed"]) + int(spec["index"]), space=space, mode=mode)
    from bstune.pruners import make_pruner

    study = create_study(
        mode,
        space=space,
        storage=storage,
        study_name=spec["study_name"],
        sampler=sampler,
        pruner=make_pruner(spec.get("pruner", "default"), mode),
    )
    trainer = None
    if not task.owns_loop:
        from bstune.train import Trainer

        trainer = Trainer(
            task,
            device=plan["device"],
            seed=int(spec["seed"]),
            micro_batch_size=spec.get("micro_batch_size"),
            compile=bool(spec.get("compile", False)),
        )
        trainer.data()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(plan["threads"]))
    return study, make_objective(task, space, mode, trainer=trainer, micro_batch_size=spec.get("micro_batch_size"))


if __name__ == "__main__":
    sys.exit(_worker_main())
