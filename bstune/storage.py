"""Storages: URLs, SQLite settings, and riding out a database or file system that goes away.

``resolve_storage`` turns a URL into an Optuna storage. With ``retry`` seconds (what
``bstune optimize --storage-retry`` sets, 60 by default), every call to the storage that fails
because the connection was lost, the database restarted or a file could not be locked is tried
again with backoff until it succeeds or ``retry`` seconds pass (``RetryingStorage``). One line
says when the storage went away and one when it is back; past the limit one line names the storage
(password masked) and the error, and the command stops. Nothing is lost meanwhile: a call that
waits holds its trial there (a report is written when the storage returns).

What counts as a lost connection comes from SQLAlchemy's error classes, not from message text: a
DBAPI error that invalidated its connection, an operational or interface error, a disconnection
(and, for SQLite, a busy or locked file); for a journal file, an operating-system error. Connections
are checked before use (``pool_pre_ping``), so one that died while idle is replaced unnoticed.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat

from bstune.errors import StorageError

__all__ = [
    "DEFAULT_STORAGE",
    "DEFAULT_STORAGE_RETRY",
    "RetryingStorage",
    "SharedOutage",
    "StorageUnavailable",
    "is_connection_lost",
    "mask_url",
    "outage_seconds",
    "resolve_storage",
    "retry_trial",
    "set_outage_listener",
]

#: Where ``bstune optimize`` keeps studies unless told otherwise.
DEFAULT_STORAGE = "sqlite:///bstune.db"

_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; safe to print.

    Examples:
        >>> mask_url("postgresql://ann:secret@db:5432/bs")
        'postgresql://ann:***@db:5432/bs'
    """
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def resolve_storage(
    storage: str | BaseStorage | None,
    *,
    heartbeat_interval: int | None = None,
    retry: float | None = None,
) -> BaseStorage | None:
    """Turn a URL into an Optuna storage; ``None`` stays in memory.

    Accepted: RDB URLs (``sqlite:///bstune.db``, ``postgresql://...``) and journal files
    (``journal:PATH`` or a path ending in ``.log``), the storage Optuna recommends for several
    processes on one machine.

    With ``heartbeat_interval`` (seconds), an RDB storage records a heartbeat for each running
    trial; a trial whose heartbeat stops for twice that long (its process was killed) is failed
    by the next trial to start and retried (``bstune.retry_trial``). Journal files have no
    heartbeats; ``bstune optimize --workers`` retries its own lost trials instead.

    With ``retry`` (seconds), opening the storage and every later call to it wait out a lost
    connection for that long (``RetryingStorage``); without it, the first error is final.

    Raises:
        StorageError: The URL has an unknown scheme or the storage cannot be opened. The message
            never shows a password.
        StorageUnavailable: The storage stayed unreachable for ``retry`` seconds.
    """
    if storage is None or isinstance(storage, BaseStorage):
        return storage
    url = str(storage)
    shown = mask_url(url)
    opened = _open(url, shown, heartbeat_interval, retry)
    return RetryingStorage(opened, name=shown, retry=retry) if retry else opened


def _open(url: str, shown: str, heartbeat_interval: int | None, retry: float | None) -> BaseStorage:
    journal_path: str | None = None
    if url.startswith("journal:"):
        journal_path = url[len("journal:") :].removeprefix("//")
    elif "://" not in url and url.endswith(".log"):
        journal_path = url
    if journal_path is not None:
        if not journal_path:
            raise StorageError(f"storage {shown!r}: journal storage needs a file path, as in journal:bstune.log")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(journal_path))
        except OSError as e:
            raise StorageError(f"storage {shown!r}: cannot open the journal file ({e.strerror})") from None
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in _RDB_SCHEMES:
        raise StorageError(
            f"storage {shown!r}: unknown kind of storage; use sqlite:///FILE.db, postgresql://HOST/DB or journal:FILE.log"
        )
    path = ""
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:" and not Path(path).parent.exists():
            raise StorageError(f"storage {shown!r}: the folder {str(Path(path).parent)!r} does not exist")
    url = _postgres_driver(url)
    rdb_options: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}}
    if heartbeat_interval is not None:
        rdb_options.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=2 * heartbeat_interval,
            heartbeat_stale_trial_callback=retry_trial,
        )
    since: float | None = None
    pause = 0.25
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(url, **rdb_options)
            if scheme == "sqlite" and path and path != ":memory:" and "mode=memory" not in path:
                _fast_sqlite(rdb)  # not in memory: closing those connections would drop the database
            if since is not None:
                _OUTAGES.back(shown)
            if not retry:
                return rdb  # Optuna wraps it in its cache itself
            from optuna.storages._cached_storage import _CachedStorage

            return _CachedStorage(rdb)  # the cache Optuna would add, under the retries
        except ImportError as e:
            raise StorageError(f"storage {shown!r}: the database driver is not installed ({e.name or e})") from None
        except Exception as e:  # sqlalchemy raises many kinds; none may leak the password
            if retry and is_connection_lost(e) and (since is not None or not _server_answers(url)):
                since = _OUTAGES.lost(shown, e, retry)
                if time.monotonic() - since < retry:
                    time.sleep(pause)
                    pause = min(pause * 2, MAX_BACKOFF_S)
                    continue
                raise StorageUnavailable(
                    f"storage {shown!r}: unreachable for {retry:g} s ({_one_line(e)}); nothing was written"
                ) from None
            reason = mask_url(str(e).splitlines()[0]) if str(e) else type(e).__name__
            raise StorageError(f"storage {shown!r}: cannot open it ({reason})") from None


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueue a new trial with the parameters of ``trial``, which was lost with its process.

    The new trial carries the system attributes of Optuna's ``RetryFailedTrialCallback``
    (``failed_trial``, ``retry_history``), so ``RetryFailedTrialCallback.retried_trial_number``
    works on it; user attributes are not copied, since they describe the run that was lost.
    """
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    system_attrs = {
        "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
        "retry_history": history,
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs=system_attrs,
        )
    )


def _server_answers(url: str) -> bool:
    """Whether the database server of ``url`` accepts a TCP connection now.

    At the first connection of a command, a server that answers but refuses the database (a wrong
    password, a database that does not exist) is not an outage: the command stops at once instead
    of waiting. One that does not answer at all (down, restarting, unreachable) is waited for.
    """
    import socket

    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return False
    if not parsed.host or parsed.host.startswith("/"):
        return False  # a local socket or a file: no TCP to ask
    default = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}
    port = parsed.port or default.get(parsed.get_backend_name())
    if port is None:
        return False
    try:
        with socket.create_connection((parsed.host, port), timeout=2.0):
            return True
    except OSError:
        return False


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging and ``synchronous=NORMAL`` on every connection to a SQLite file.

    Each report commits; with SQLite's defaults (a rollback journal, a full sync per commit) a
    commit costs about 5 ms on this project's machines, with these about 2 ms
    (``benchmarks/RESULTS_trainer.md``). Readers (optuna-dashboard, ``bstune report``) no longer
    block the study's writes. A commit survives the process being killed; only a power cut or an
    operating-system crash can lose the last commits, never the database's consistency. The
    journal mode stays with the file; Optuna and optuna-dashboard open it as before. Network file
    systems do not support write-ahead logging: keep studies there in PostgreSQL or a journal file.
    """
    import sqlite3

    from sqlalchemy import event

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # answers the old mode where WAL is impossible
            cursor.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:  # a read-only file keeps its own journal mode
            pass
        finally:
            cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # the connections opened while creating the tables get them too


def _postgres_driver(url: str) -> str:
    """``postgresql://`` as SQLAlchemy means it (psycopg 3, what ``bstune[postgres]`` installs),
    or with the psycopg2 driver when only that one is installed; ``postgres://`` as an alias. An
    explicit driver (``postgresql+psycopg2://``) is kept."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return f"postgresql{sep}{rest}"


#: Seconds a command waits for a storage that went away before it stops (``--storage-retry``).
DEFAULT_STORAGE_RETRY = 60.0
#: The longest pause between two tries; a storage that is back is seen within about this long.
MAX_BACKOFF_S = 2.0


class StorageUnavailable(StorageError):
    """The storage stayed unreachable for longer than the retry limit."""


def is_connection_lost(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) means the storage went away, not bad data.

    Examples:
        >>> import sqlalchemy.exc
        >>> is_connection_lost(sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError()))
        True
        >>> is_connection_lost(ValueError("exceeding max length"))
        False
    """
    import sqlite3

    import sqlalchemy.exc as sa

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa.DisconnectionError):
            return True
        if isinstance(e, (sa.OperationalError, sa.InterfaceError)):
            orig = e.orig
            if isinstance(orig, sqlite3.Error):  # a busy or locked file; not "no such table"
                return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
            return True
        if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return True  # a journal file on a file system that hiccupped
        e = e.__cause__ or e.__context__
    return False


def _print_line(kind: str, line: str) -> None:
    print(f"bstune: {line}", file=sys.stderr, flush=True)


class _Outages:
    """This process's view of its storages: since when each is down, the seconds they were down in
    all, and which were given up on (until one of their calls succeeds again).

    One line when a storage goes away (the first call to fail) and one when a call succeeds again,
    however many threads (the trial, its heartbeat) were waiting. Each storage (by its masked URL)
    has its own outage: one that stays away says nothing about another.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_since: dict[str, float] = {}
        self.given_up: set[str] = set()
        self.total_s = 0.0
        self.listener: Callable[[str, str], None] = _print_line

    def lost(self, name: str, error: BaseException, retry: float) -> float:
        with self.lock:
            if name not in self.down_since:
                self.down_since[name] = time.monotonic()
                self.listener("lost", f"storage {name!r}: connection lost ({_one_line(error)}); "
                                      f"retrying for up to {retry:g} s")
            return self.down_since[name]

    def give_up(self, name: str) -> None:
        """Past the limit: every later call to this storage fails at once, until one succeeds."""
        with self.lock:
            self.given_up.add(name)

    def back(self, name: str) -> None:
        with self.lock:
            self.given_up.discard(name)
            since = self.down_since.pop(name, None)
            if since is None:
                return
            waited = time.monotonic() - since
            self.total_s += waited
            self.listener("back", f"storage {name!r}: back after {waited:.1f} s; going on")


_OUTAGES = _Outages()


def set_outage_listener(listener: Callable[[str, str], None] | None) -> None:
    """Send this process's storage lines (``"lost"`` or ``"back"``, and the line) to ``listener``
    instead of standard error; ``None`` restores standard error. The workers pass them on to the
    coordinator, which prints each outage once."""
    _OUTAGES.listener = listener or _print_line


class SharedOutage:
    """The storage lines of several processes (the coordinator and its workers) said once: the first
    process to lose the storage prints "lost", the last one to get it back prints "back".

    Each event carries the time it happened (``at``, seconds since the epoch; now when not given):
    a worker's events may arrive late (the coordinator reads them when its own storage call
    returns), and a "lost" that happened before the "back" already printed belongs to that outage,
    so neither it nor its "back" is said again.
    """

    def __init__(self, printer: Callable[[str, str], None] = _print_line) -> None:
        self.down: set[str] = set()
        self.late: set[str] = set()  # sources whose loss happened before the last "back" printed
        self.back_at = -math.inf
        self.printer = printer
        self.lock = threading.Lock()

    def __call__(self, source: str, kind: str, line: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self.lock:
            if kind == "lost":
                if at <= self.back_at:
                    self.late.add(source)
                    return
                if not self.down:
                    self.printer(kind, line)
                self.down.add(source)
            elif source in self.late:
                self.late.discard(source)
            elif source in self.down:
                self.down.discard(source)
                if not self.down and kind == "back":
                    self.printer(kind, line)
                    self.back_at = at


def outage_seconds() -> float:
    """Seconds this process has waited for its storage so far (outages that ended)."""
    return _OUTAGES.total_s


def _one_line(error: BaseException) -> str:
    e: BaseException = error
    while e.__cause__ is not None:  # the driver's error says what happened; Optuna's wrapper does not
        e = e.__cause__
    orig = getattr(e, "orig", None)
    if orig is not None:
        e = orig
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return mask_url(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def _retried(name: str) -> Callable[..., Any]:
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    call.__name__ = name
    call.__doc__ = f"``{name}`` of the wrapped storage, tried again while the storage is away."
    return call


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that waits out a lost connection instead of failing the study.

    Every call goes to ``inner``; one that fails with a lost connection (``is_connection_lost``)
    is tried again after 0.25 s, 0.5 s, 1 s, then every ``MAX_BACKOFF_S``, until ``retry``
    seconds have passed since the storage went away; then ``StorageUnavailable``. Any other
    error passes through at once. Heartbeats pass through too, with one guard: a trial looks stale
    to Optuna only if it still does after every live process has had time to record a heartbeat
    (after an outage every running trial looks stale for a moment).

    Args:
        inner: The storage (an ``RDBStorage``, Optuna's cached one, or a ``JournalStorage``).
        name: How to name it in messages, password masked.
        retry: Seconds to keep trying.
    """

    def __init__(self, inner: BaseStorage, *, name: str, retry: float = DEFAULT_STORAGE_RETRY) -> None:
        self.inner = inner
        self.name = name
        self.retry = float(retry)
        #: User attributes written with every trial this process creates (in the same write) or
        #: takes from the queue: a worker's ``process`` (host and pid), so that a trial whose
        #: process is killed at any moment, even while its parameters are drawn, can be found.
        self.trial_attrs: dict[str, Any] = {}

    def __getattr__(self, attr: str) -> Any:  # engine, url, ... of the storage underneath
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.inner, name)
        failed = False
        pause = 0.25
        while True:
            try:
                out = method(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if failed and name == "set_trial_state_values" and self._already_set(*args, **kwargs):
                    out = True  # the try that lost its connection had committed
                else:
                    raise
            except Exception as e:
                if not self.retry or not is_connection_lost(e):
                    raise  # retry 0: every error as it came
                since = _OUTAGES.lost(self.name, e, self.retry)
                waited = time.monotonic() - since
                if self.name in _OUTAGES.given_up or waited >= self.retry:
                    _OUTAGES.give_up(self.name)
                    raise StorageUnavailable(
                        f"storage {self.name!r}: unreachable for {waited:.0f} s ({_one_line(e)}); the study is "
                        "kept as it was: run the same command again to resume (--storage-retry waits longer)"
                    ) from None
                failed = True
                time.sleep(min(pause, max(self.retry - waited, 0.0)))
                pause = min(pause * 2, MAX_BACKOFF_S)
                _remove_session(self.inner)
                continue
            _OUTAGES.back(self.name)
            return out

    def _already_set(self, trial_id: int, state: optuna.trial.TrialState, values: Any = None) -> bool:
        return bool(self.inner.get_trial(trial_id).state == state)

    # The storage API, each call tried again while the storage is away.
    create_new_study = _retried("create_new_study")
    delete_study = _retried("delete_study")
    set_study_user_attr = _retried("set_study_user_attr")
    set_study_system_attr = _retried("set_study_system_attr")
    get_study_id_from_name = _retried("get_study_id_from_name")
    get_study_name_from_id = _retried("get_study_name_from_id")
    get_study_directions = _retried("get_study_directions")
    get_study_user_attrs = _retried("get_study_user_attrs")
    get_study_system_attrs = _retried("get_study_system_attrs")
    get_all_studies = _retried("get_all_studies")
    set_trial_param = _retried("set_trial_param")
    get_trial_id_from_study_id_trial_number = _retried("get_trial_id_from_study_id_trial_number")
    get_trial_number_from_id = _retried("get_trial_number_from_id")
    get_trial_param = _retried("get_trial_param")
    set_trial_intermediate_value = _retried("set_trial_intermediate_value")
    set_trial_user_attr = _retried("set_trial_user_attr")
    set_trial_system_attr = _retried("set_trial_system_attr")
    get_trial = _retried("get_trial")
    get_all_trials = _retried("get_all_trials")
    get_n_trials = _retried("get_n_trials")
    get_best_trial = _retried("get_best_trial")
    record_heartbeat = _retried("record_heartbeat")

    def create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> int:
        if template_trial is None and self.trial_attrs:
            template_trial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                                       user_attrs=dict(self.trial_attrs))
        trial_id: int = self._call("create_new_trial", study_id, template_trial)
        return trial_id

    def set_trial_state_values(
        self, trial_id: int, state: optuna.trial.TrialState, values: Sequence[float] | None = None
    ) -> bool:
        started: bool = self._call("set_trial_state_values", trial_id, state, values)
        if started and state == optuna.trial.TrialState.RUNNING:  # taken from the queue
            for key, value in self.trial_attrs.items():
                self._call("set_trial_user_attr", trial_id, key, value)
        return started

    def remove_session(self) -> None:
        self.inner.remove_session()

    def get_heartbeat_interval(self) -> int | None:
        return self.inner.get_heartbeat_interval() if isinstance(self.inner, BaseHeartbeat) else None

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None:
        return self.inner.get_heartbeat_stale_trial_callback() if isinstance(self.inner, BaseHeartbeat) else None

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale: list[int] = self._call("_get_stale_trial_ids", study_id)
        interval = self.get_heartbeat_interval()
        if not stale or interval is None:
            return stale
        # A live process records its heartbeat at least every interval, and within MAX_BACKOFF_S
        # of its storage coming back: look again after both.
        time.sleep(interval + MAX_BACKOFF_S + 0.5)
        again = set(self._call("_get_stale_trial_ids", study_id))
        return [t for t in stale if t in again]


def _remove_session(storage: BaseStorage) -> None:
    try:
        storage.remove_session()
    except Exception:  # a dead connection may fail to close; the next try opens a new one
        pass
