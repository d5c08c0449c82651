"""bstune/storage.py: riding out a storage that goes away, on a real PostgreSQL server and SQLite.

The server is stopped as a crash would stop it (``pg_ctl stop -m immediate``) and started again;
calls made meanwhile wait, the lines say so once, and past ``--storage-retry`` the command stops
with one line that hides the password. The longer scenario (workers killed, the command killed)
is tests/test_chaos.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import _postgres
import optuna
import pytest
import sqlalchemy

from bstune.cli import main
from bstune.storage import RetryingStorage, StorageUnavailable, is_connection_lost, outage_seconds, resolve_storage

State = optuna.trial.TrialState


def _resume_after(server: _postgres.Server, seconds: float) -> threading.Thread:
    def later() -> None:
        time.sleep(seconds)  # the outage itself, not a timing under test
        server.resume()

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def test_a_refused_connection_and_a_locked_sqlite_file_are_lost_connections_bad_sql_is_not(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
        sqlalchemy.create_engine("postgresql://u:p@127.0.0.1:1/db").connect()
    assert is_connection_lost(refused.value)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/x.db", connect_args={"timeout": 0})
    with engine.connect() as c, pytest.raises(sqlalchemy.exc.OperationalError) as missing:
        c.exec_driver_sql("SELECT * FROM no_such_table")
    assert not is_connection_lost(missing.value)
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with engine.connect() as c, pytest.raises(sqlalchemy.exc.OperationalError) as locked:
            c.exec_driver_sql("CREATE TABLE t (x INT)")
        assert is_connection_lost(locked.value)
    finally:
        holder.execute("ROLLBACK")
    assert not is_connection_lost(ValueError("exceeding max length"))
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = refused.value  # what Optuna's RDB storage raises from a lost connection
    assert is_connection_lost(wrapped)


def test_calls_wait_out_a_database_restart_and_the_reports_are_kept(postgres, capsys) -> None:
    url = postgres.create_database(f"s{uuid.uuid4().hex[:16]}")
    storage = resolve_storage(url, retry=60)
    assert isinstance(storage, RetryingStorage)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    trial = study.ask()
    trial.report(0.1, 1)
    waited_before = outage_seconds()
    postgres.halt()
    thread = _resume_after(postgres, 3.0)
    trial.report(0.2, 2)  # made while the server is down: waits, then written
    trial.report(0.3, 3)
    study.tell(trial, 0.3)
    thread.join()
    frozen = optuna.load_study(study_name="s", storage=url).trials[0]
    assert frozen.state == State.COMPLETE and frozen.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    assert outage_seconds() - waited_before >= 2.5
    err = capsys.readouterr().err
    assert err.count("connection lost") == 1 and err.count("back after") == 1, err
    assert _postgres.PASSWORD not in err and "bstune:***@127.0.0.1" in err


def test_past_the_limit_one_error_names_the_storage_without_its_password(postgres) -> None:
    url = postgres.create_database(f"s{uuid.uuid4().hex[:16]}")
    study = optuna.create_study(storage=resolve_storage(url, retry=1.5), study_name="s")
    postgres.halt()
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            study.set_user_attr("k", 1)
        assert time.monotonic() - t0 >= 1.5
    finally:
        postgres.resume()
    message = str(info.value)
    assert "unreachable for" in message and "bstune:***@127.0.0.1" in message and _postgres.PASSWORD not in message
    study.set_user_attr("k", 2)  # back: the same storage object works again
    assert optuna.load_study(study_name="s", storage=url).user_attrs == {"k": 2}


def test_a_server_that_answers_but_refuses_the_database_stops_at_once(postgres, capsys) -> None:
    from bstune.errors import StorageError

    for url in (postgres.url("no_such_db"), postgres.url(password="wrong-password")):
        with pytest.raises(StorageError, match="cannot open it") as info:
            resolve_storage(url, retry=60)  # no waiting: it would take 60 s
        assert not isinstance(info.value, StorageUnavailable)
        assert "wrong-password" not in str(info.value) and _postgres.PASSWORD not in str(info.value)
    assert "connection lost" not in capsys.readouterr().err


def test_after_an_outage_a_live_trial_is_not_taken_for_a_dead_one(postgres) -> None:
    from optuna.storages._heartbeat import get_heartbeat_thread

    url = postgres.create_database(f"s{uuid.uuid4().hex[:16]}")
    storage = resolve_storage(url, heartbeat_interval=1, retry=60)
    study = optuna.create_study(storage=storage, study_name="s")
    live, dead = study.ask(), study.ask()
    storage.record_heartbeat(dead._trial_id)  # then never again: its process died
    beating = get_heartbeat_thread(live._trial_id, storage)
    beating.start()
    postgres.halt()
    _resume_after(postgres, 4.0).join()  # longer than the grace period (2 s): every heartbeat is old
    optuna.storages.fail_stale_trials(study)
    beating.join()
    states = {t.number: t.state for t in optuna.load_study(study_name="s", storage=url).trials}
    assert states[live.number] == State.RUNNING  # its heartbeat came back before the second look
    assert states[dead.number] == State.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state == State.WAITING


def test_the_command_stops_with_one_line_when_the_storage_stays_away(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("psycopg")
    (tmp_path / "task.py").write_text("def train(hp, run):\n    run.report(0.5)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="^1$"):
        main(["optimize", "task.py", "--storage", "postgresql://ann:s3cret@127.0.0.1:1/bstune", "--storage-retry", "1"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("bstune: storage 'postgresql://ann:***@127.0.0.1:1/bstune': connection lost (")
    assert lines[0].endswith("retrying for up to 1 s")
    assert lines[1].startswith("bstune: error: storage 'postgresql://ann:***@127.0.0.1:1/bstune': unreachable for 1 s (")
    assert "s3cret" not in out + err and "Traceback" not in err
    assert not list(tmp_path.glob("*.db")) and not list(tmp_path.glob("*.log"))


def test_a_storage_given_up_on_does_not_make_another_fail_at_once(postgres, capsys) -> None:
    """Each storage has its own outage: one that stayed away past its limit (the command would have
    stopped; a library user goes on) leaves another storage's outage to be waited out as usual."""
    pytest.importorskip("psycopg")
    with pytest.raises(StorageUnavailable):
        resolve_storage("postgresql://ann:s3cret@127.0.0.1:1/gone", retry=0.5)
    url = postgres.create_database(f"s{uuid.uuid4().hex[:16]}")
    study = optuna.create_study(storage=resolve_storage(url, retry=60), study_name="s")
    postgres.halt()
    thread = _resume_after(postgres, 1.5)
    study.set_user_attr("k", 1)  # waits for its own server, not failed for the other one's outage
    thread.join()
    assert optuna.load_study(study_name="s", storage=url).user_attrs == {"k": 1}
    assert capsys.readouterr().err.count("back after") == 1


def test_one_outage_is_said_once_when_a_workers_lines_come_late() -> None:
    from bstune.storage import SharedOutage

    said: list[str] = []
    outage = SharedOutage(lambda kind, line: said.append(f"{kind}: {line}"))
    # The coordinator was blocked in its own storage call for the whole outage, so the lines its
    # worker wrote meanwhile are read after its own "back".
    outage("coordinator", "lost", "lost A", at=100.0)
    outage("coordinator", "back", "back A", at=111.8)
    outage("worker 1", "lost", "lost B", at=100.1)
    outage("worker 1", "back", "back B", at=111.9)
    assert said == ["lost: lost A", "back: back A"]
    # In order: the last process to get the storage back says so.
    outage("worker 1", "lost", "lost C", at=200.0)
    outage("coordinator", "lost", "lost D", at=200.2)
    outage("worker 1", "back", "back C", at=205.0)
    outage("coordinator", "back", "back D", at=205.1)
    # A later outage is said again; a worker that dies while the storage is away counts as back.
    outage("worker 2", "lost", "lost E", at=300.0)
    outage("worker 2", "gone", "", at=301.0)
    assert said == ["lost: lost A", "back: back A", "lost: lost C", "back: back D", "lost: lost E"]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_process_comes_with_every_trial_it_creates_or_takes_from_the_queue(tmp_path: Path, kind: str) -> None:
    """A worker's ``process`` attribute is in the write that creates its trial: a worker killed
    while drawing the parameters leaves a trial that names its process (and is found, retried)."""
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    storage = RetryingStorage(resolve_storage(url), name=url, retry=0)
    storage.trial_attrs["process"] = {"host": "h", "pid": 7}
    study = optuna.create_study(storage=storage, study_name="s")
    writes: list[str] = []
    for name in ("create_new_trial", "set_trial_user_attr", "set_trial_state_values"):
        method = getattr(storage.inner, name)
        setattr(storage.inner, name, lambda *a, _m=method, _n=name, **k: (writes.append(_n), _m(*a, **k))[1])
    trial = study.ask()
    assert writes == ["create_new_trial"]  # one write
    def stored(number: int) -> dict:
        return optuna.load_study(study_name="s", storage=resolve_storage(url)).trials[number].user_attrs

    assert stored(trial.number) == {"process": {"host": "h", "pid": 7}}
    study.enqueue_trial({"x": 1.0})
    queued = study.ask()
    assert stored(queued.number)["process"] == {"host": "h", "pid": 7}
    plain = optuna.create_study(storage=RetryingStorage(resolve_storage(url), name=url, retry=0), study_name="p")
    assert plain.ask().user_attrs == {}  # no attributes unless asked
