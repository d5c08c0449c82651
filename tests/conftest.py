from __future__ import annotations

import os
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def pytest_terminal_summary(terminalreporter, config):
    """Say the random order's seed even under -q (pytest-randomly prints it in the header -q hides)."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and getattr(config.option, "randomly_reorganize", True):
        terminalreporter.write_line(f"tests ran in a random order: repeat it with --randomly-seed={seed}")


def shared_data(name: str) -> Path:
    """A data set from ../shared/data: skipped when absent, except under CI, where that fails."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing, and CI must have ../shared/data beside the checkout")
        pytest.skip(f"{path} is absent (the shared data sets are for development and CI only)")
    return path


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run ``bstune`` in-process in a temporary working directory; returns (exit code, out, err)."""
    from bstune.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def trainer_calls(monkeypatch) -> list[dict]:
    """Record the keyword arguments every built-in ``Trainer`` is made with (one dict per trainer);
    the trainers then train with their default precision, as this machine may have no GPU."""
    import bstune.train

    calls: list[dict] = []

    class Recording(bstune.train.Trainer):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(dict(kwargs))
            super().__init__(*args, **{**kwargs, "amp": None})

    monkeypatch.setattr(bstune.train, "Trainer", Recording)
    return calls


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL server on loopback for the tests of one module (``tests/_postgres.py``):
    skipped with the reason when it cannot start, except under ``CI=true``, where that fails."""
    import _postgres

    try:
        server = _postgres.start()
    except _postgres.Unavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs PostgreSQL: {e}")
        pytest.skip(str(e))
    yield server
    server.stop()
