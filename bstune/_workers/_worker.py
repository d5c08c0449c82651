"""The worker process: reads its spec on stdin, then runs one trial per ticket until told to stop.

Started by the coordinator as ``python -m bstune._workers``; it talks back through the pipe named
by ``BSTUNE_WORKER_FD``, one JSON event per line (ready, ask, start, end, error).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna

from bstune._workers._spec import WorkerSpec
from bstune.errors import BstuneError

__all__ = ["EXIT_INTERRUPTED", "worker_main"]

#: The exit status of a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


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


def worker_main() -> int:
    """A worker: read the spec on stdin, then run one trial per ticket until told to stop."""
    from bstune.storage import mask_url

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
    spec: WorkerSpec = json.loads(line)
    debug, storage_url = bool(spec["options"]["debug"]), str(spec["options"]["storage"])
    from bstune.storage import set_outage_listener

    set_outage_listener(lambda kind, text: emit(ev="storage", kind=kind, line=text, at=time.time()))
    try:
        study, objective = _build(spec)
    except Exception as e:  # shown by the coordinator as one line
        if debug:
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
        current.append(trial.number)  # its "process" attribute came with it (_build)
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


def _concurrency_attrs(spec: WorkerSpec) -> dict[str, Any]:
    plan = spec["plan"]
    return {
        "worker": spec["index"],
        "workers": spec["n_workers"],
        "cpu_threads": plan["threads"],
        "gpu": plan["gpu"],
    }


def _build(spec: WorkerSpec) -> tuple[optuna.Study, Callable[[optuna.Trial], float]]:
    """Rebuild, inside a worker, the objective the coordinator described."""
    from bstune.objective import make_objective
    from bstune.objectives import mode_from_attrs
    from bstune.options import TuneOptions
    from bstune.sampler import default_sampler
    from bstune.space import load_space
    from bstune.storage import RetryingStorage, mask_url, resolve_storage
    from bstune.study import create_study
    from bstune.task import load_task

    opts = TuneOptions.from_dict(spec["options"])
    optuna.logging.set_verbosity(optuna.logging.WARNING if opts.debug else optuna.logging.ERROR)
    plan = spec["plan"]
    if plan["cpu_cores"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, plan["cpu_cores"])
    task = load_task(spec["script"], dict(opts.task_options or {}))
    space = load_space(spec["space"])
    mode = mode_from_attrs(spec["mode"])
    if mode is None or opts.storage is None or opts.study_name is None:
        raise BstuneError("the worker got no mode, storage or study name")
    storage = resolve_storage(opts.storage, heartbeat_interval=opts.heartbeat_interval, retry=opts.storage_retry or None)
    if not isinstance(storage, RetryingStorage):
        assert storage is not None  # a URL was given
        storage = RetryingStorage(storage, name=mask_url(opts.storage), retry=0)  # errors as they come
    # Which process runs a trial is written with the trial itself, so that one killed at any moment
    # (even while its parameters are drawn) is found and retried (_lost.reclaim_orphans).
    storage.trial_attrs["process"] = {"host": socket.gethostname(), "pid": os.getpid()}
    # Each worker samples with its own seed, or their first random trials would coincide.
    sampler = default_sampler(seed=opts.seed + int(spec["index"]), space=space, mode=mode)
    from bstune.pruners import make_pruner

    study = create_study(
        mode,
        space=space,
        storage=storage,
        study_name=opts.study_name,
        sampler=sampler,
        pruner=make_pruner(opts.pruner, mode),
    )
    trainer = None
    if not task.owns_loop:
        from bstune.train import Trainer

        trainer = Trainer(
            task,
            device=plan["device"],
            seed=opts.seed,
            micro_batch_size=opts.micro_batch_size,
            compile=opts.compile,
            amp=opts.amp,
        )
        trainer.data()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(plan["threads"]))
    return study, make_objective(task, space, mode, trainer=trainer, micro_batch_size=opts.micro_batch_size,
                                 retry_disturbed=opts.retry_disturbed)
