"""Chaos: a study on 4 workers while workers are killed, the database crashes and the command dies.

Real processes and a real server: ``bstune optimize --workers 4`` on a private PostgreSQL server
(and on a journal file), a worker killed with SIGKILL every few seconds, the server stopped with
``pg_ctl stop -m immediate`` for 10 s and started again, then the whole command killed and run
again. What must hold: the first command rode out the outage, nothing is left RUNNING, every lost
trial was retried with its parameters, the rerun added exactly the trials asked for, every
completed trial's curve is whole, and the password never shows. Run alone with ``-m chaos``.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import _postgres
import optuna
import pytest
from _processes import running, workers_in

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "tests" / "data" / "synthetic_task.py"
STUDY = "synthetic_task-budget-10s"
State = optuna.trial.TrialState
N_TRIALS = 30
REPORTS = 6  # per trial, 0.25 s apart: a trial spans a few seconds, so outages fall inside trials

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BSTUNE_")}
    return {**env, "PYTHONPATH": path, "COLUMNS": "200", "BSTUNE_TEST_REPORTS": str(REPORTS),
            "BSTUNE_TEST_STEP_S": "0.25"}


def _command(cwd: Path, storage: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bstune", "optimize", str(TASK), "--device", "cpu", "--workers", "4",
           "--n-trials", str(N_TRIALS), "--pruner", "none", "--heartbeat-interval", "2", "--storage", storage]
    with open(log, "wb") as out:  # a file, not a pipe: nobody must read it for the command to go on
        return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _study(storage: str) -> optuna.Study:
    from bstune.storage import resolve_storage

    return optuna.load_study(study_name=STUDY, storage=resolve_storage(storage))  # type: ignore[arg-type]


def _complete(storage: str) -> int:
    try:
        return sum(t.state == State.COMPLETE for t in _study(storage).trials)
    except KeyError:  # the study is not there yet
        return 0


def _wait(what: str, ok, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # polling for the situation, not timing anything


def _wait_for(what: str, get, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (found := get()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling for the situation, not timing anything
    return found


def _early_trial(storage: str) -> int | None:
    """A running trial at its first report or before: the rest of its reports (over a second of
    them) will fall inside an outage that starts now."""
    running_now = [t for t in _study(storage).trials if t.state == State.RUNNING and len(t.intermediate_values) <= 1]
    return running_now[0].number if running_now else None


def _kill_workers(folder: Path, n: int, rng: random.Random) -> list[int]:
    """SIGKILL ``n`` workers of the command in ``folder``, one every 2 to 3 seconds, each mid-trial."""
    killed = []
    for _ in range(n):
        pids = sorted(workers_in(folder))
        assert pids, "no worker to kill"
        pid = rng.choice(pids)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        time.sleep(rng.uniform(2.0, 3.0))
    return killed


def _kill_whole(proc: subprocess.Popen[bytes], folder: Path) -> None:
    """SIGKILL the command and its workers (they run in sessions of their own), as a reboot would."""
    workers = workers_in(folder)
    for pid in (proc.pid, *workers):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    _wait("the killed workers to go", lambda: not any(running(p) for p in workers), 30)


def _check_study(storage: str, complete_before: int) -> optuna.Study:
    study = _study(storage)
    trials = study.trials
    states = collections.Counter(t.state for t in trials)
    assert not states[State.RUNNING] and not states[State.WAITING], states
    assert not states[State.PRUNED], states  # --pruner none: a finished trial is a completed one
    # The rerun added exactly what it was asked for.
    assert states[State.COMPLETE] == complete_before + N_TRIALS, (states, complete_before)
    # Every lost trial was retried with the same parameters (and the retry finished).
    by_number = {t.number: t for t in trials}
    for t in trials:
        if t.state != State.FAIL:
            continue
        retries = [r for r in trials if r.system_attrs.get("failed_trial") == t.system_attrs.get("failed_trial", t.number)
                   and t.number in r.system_attrs.get("retry_history", [])]
        assert retries, f"lost trial #{t.number} was not retried"
        # The same parameters: all the lost trial had drawn (one killed while drawing has fewer).
        assert all(r.params.items() >= t.params.items() for r in retries), (t.params, [r.params for r in retries])
        assert by_number[retries[0].number].state in (State.COMPLETE, State.FAIL)
    # Every completed trial's curve is whole: every report is there, from the first to the last.
    for t in trials:
        if t.state == State.COMPLETE:
            assert len(t.intermediate_values) == REPORTS, (t.number, t.intermediate_values)
            assert len(t.user_attrs["curve"]["metric"]) == REPORTS, t.number
    return study


def test_a_study_rides_out_killed_workers_a_database_crash_and_a_killed_command(postgres, tmp_path: Path) -> None:
    url = postgres.create_database(f"c{uuid.uuid4().hex[:16]}")
    rng = random.Random(0)
    first = _command(tmp_path, url, tmp_path / "first.log")
    try:
        _wait("two trials", lambda: _complete(url) >= 2)
        killed = _kill_workers(tmp_path, 3, rng)
        caught = _wait_for("a trial at its first report", lambda: _early_trial(url))
        postgres.halt()
        down_at = time.monotonic()
        time.sleep(10)  # the database is down for 10 s: what the command must ride out
        postgres.resume()
        up_at = time.monotonic()
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        after = _complete(url)
        _wait("two trials after the restart", lambda: _complete(url) >= after + 2)
        _wait("the trial under way at the crash to finish", lambda: _study(url).trials[caught].state.is_finished())
        assert first.poll() is None, (tmp_path / "first.log").read_text()  # it survived the outage
        _kill_whole(first, tmp_path)
    finally:
        if first.poll() is None:
            first.kill()
    out1 = (tmp_path / "first.log").read_text()
    assert "connection lost" in out1 and "back after" in out1, out1
    assert out1.count("connection lost") == 1, out1  # said once for the coordinator and its 4 workers
    assert "Traceback" not in out1, out1
    held = _study(url).trials[caught]  # it held its reports through the outage and finished
    assert held.state == State.COMPLETE and held.user_attrs["storage_wait_s"] >= 5.0, (held.state, held.user_attrs)
    assert up_at - down_at >= 10
    complete_before = _complete(url)
    assert complete_before >= 4
    second = _command(tmp_path, url, tmp_path / "second.log")
    assert second.wait(timeout=240) == 0, (tmp_path / "second.log").read_text()
    out2 = (tmp_path / "second.log").read_text()
    _check_study(url, complete_before)
    lost = [t for t in _study(url).trials if t.state == State.FAIL]
    assert len(lost) >= len(killed), [t.user_attrs.get("stop_detail") for t in lost]
    for text in (out1, out2):
        assert _postgres.PASSWORD not in text and "***" in text


def test_a_journal_study_rides_out_killed_workers_and_a_killed_command(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    rng = random.Random(1)
    first = _command(tmp_path, url, tmp_path / "first.log")
    try:
        _wait("two trials", lambda: _complete(url) >= 2)
        killed = _kill_workers(tmp_path, 3, rng)
        after = _complete(url)
        _wait("two more trials", lambda: _complete(url) >= after + 2)
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        _kill_whole(first, tmp_path)
    finally:
        if first.poll() is None:
            first.kill()
    complete_before = _complete(url)
    second = _command(tmp_path, url, tmp_path / "second.log")
    assert second.wait(timeout=240) == 0, (tmp_path / "second.log").read_text()
    _check_study(url, complete_before)
    lost = [t for t in _study(url).trials if t.state == State.FAIL]
    assert len(lost) >= len(killed)
    assert "Traceback" not in (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
