"""A real, small `bstune optimize` run on examples/mlp_blobs.py, shared by the session."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest

from analysis._studies import ROOT


@pytest.fixture(scope="session")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real, small `bstune optimize` run (torch training on the blobs MLP) with an artifact dir."""
    pytest.importorskip("torch")
    from bstune.cli import main

    folder = tmp_path_factory.mktemp("optimized")
    storage = f"sqlite:///{folder / 'bstune.db'}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([
            "optimize", str(ROOT / "examples" / "mlp_blobs.py"), "--time-budget", "0.4", "--n-trials", "4",
            "--task-option", "n_samples=3000", "--storage", storage, "--study-name", "blobs",
            "--artifact-dir", str(folder / "artifacts"), "--device", "cpu",
        ])
    return {"storage": storage, "study_name": "blobs", "folder": folder, "output": out.getvalue()}
