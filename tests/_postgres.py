"""A private PostgreSQL server on loopback for the tests: initdb into a temp dir, pg_ctl start.

The server binds 127.0.0.1 on a free port, keeps its socket in its own directory, and requires a
password (so the tests also prove the password never shows). PostgreSQL refuses to run as root,
so as root the server runs as the ``postgres`` user that the Debian package creates.

Where PostgreSQL or its Python driver is missing, :func:`start` raises :class:`Unavailable`; the
tests skip with that reason, except under ``CI=true`` where it must be there and they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "bstune"
PASSWORD = "pw-Zq8#x9!kTe"  # odd characters on purpose: the URL must quote them


class Unavailable(RuntimeError):
    """PostgreSQL cannot be started here."""


@dataclass
class Server:
    root: Path
    port: int
    run_as: list[str]
    bindir: str
    options: str = ""

    def url(self, database: str = "postgres", password: str = PASSWORD, scheme: str = "postgresql") -> str:
        """The URL as the README writes it (plain ``postgresql://``: psycopg 3), or with another scheme."""
        from urllib.parse import quote

        return f"{scheme}://{USER}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def halt(self) -> None:
        """Stop the server as a crash would (``-m immediate``: connections cut, no checkpoint)."""
        self._ctl("stop", "-m", "immediate")

    def resume(self) -> None:
        """Start the halted server again, on the same port and data."""
        self._ctl("start", "-w", "-t", "60", "-l", str(self.root / "log"), "-o", self.options)

    def _ctl(self, *args: str) -> None:
        done = subprocess.run([*self.run_as, f"{self.bindir}/pg_ctl", *args, "-D", str(self.root / "data")],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {done.stderr[-800:]}")

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, f"{self.bindir}/pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "immediate"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _bindir() -> str:
    found = shutil.which("initdb")
    if found:
        return str(Path(found).resolve().parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise Unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    return str(Path(candidates[-1]).parent)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start() -> Server:
    """Start a private server; raise :class:`Unavailable` with the reason when it cannot."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("the psycopg driver is not installed (pip install 'bstune[postgres]')") from None
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="bstune-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run the server") from None
        os.chown(root, pg.pw_uid, pg.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    (root / "pw").write_text(PASSWORD + "\n")
    if run_as:
        os.chown(root / "pw", pwd.getpwnam("postgres").pw_uid, -1)
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200 -c fsync=off"
    steps = [
        [f"{bindir}/initdb", "-D", str(root / "data"), "-U", USER, "--pwfile", str(root / "pw"),
         "-A", "scram-sha-256", "-E", "UTF8", "--no-instructions"],
        [f"{bindir}/pg_ctl", "start", "-w", "-t", "60", "-D", str(root / "data"), "-l", str(root / "log"),
         "-o", options],
    ]
    for cmd in steps:
        done = subprocess.run([*run_as, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (root / "log").read_text()[-800:] if (root / "log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {done.stderr[-800:]}{log}")
    return Server(root, port, run_as, bindir, options)
