"""`bstune report` (bstune/cli.py) on a study made by `bstune optimize`, in every format."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis._studies import ROOT, make_synthetic_study
from bstune.cli import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_lists_the_front_and_the_recommendations(optimized: dict[str, Any], capsys) -> None:
    code, out, _ = _run(["report", "--storage", optimized["storage"], "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["study_name"] == "blobs" and data["mode"] == "time_budget" and data["n_trials"] == 4
    assert data["front"] and all({"trial", "time_s", "metric", "batch_size", "learning_rate"} <= set(p) for p in data["front"])
    assert len(data["recommendations"]) == 5
    last = data["recommendations"][-1]
    assert last["basis"] == "finished" and last["metric"] == max(p["metric"] for p in data["front"])
    assert {b["batch_size"] for b in data["batch_sizes"]} == {t["batch_size"] for t in data["trials"]}


def test_other_formats_and_budgets(optimized: dict[str, Any], capsys) -> None:
    base = ["report", "--storage", optimized["storage"], "--study-name", "blobs"]
    code, out, _ = _run([*base, "--format", "csv", "--budget", "0.1", "--budget", "10"], capsys)
    assert code == 0
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["section"] == "recommendation"]
    assert [float(r["budget_s"]) for r in rows] == [0.1, 10.0]
    code, out, _ = _run([*base, "--format", "markdown"], capsys)
    assert code == 0 and out.startswith("# bstune report: blobs\n") and "## Pareto front" in out
    code, out, _ = _run([*base, "--target", "0.5"], capsys)
    assert code == 0 and "Study 'blobs': time budget 0.4 s per trial; 4 trials" in out and "s to accuracy 0.5" in out


def test_html_and_png_files(optimized: dict[str, Any], tmp_path: Path, capsys) -> None:
    code, out, err = _run(["report", "--storage", optimized["storage"], "--format", "json",
                           "--html", str(tmp_path / "r.html"), "--png", str(tmp_path / "png")], capsys)
    assert code == 0
    json.loads(out)  # the file messages go to stderr, so stdout stays valid JSON
    assert f"wrote {tmp_path / 'r.html'}" in err
    assert (tmp_path / "r.html").stat().st_size > 1_000_000
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "batch_sizes.png", "curves.png", "front.png", "importance.png"]


def test_user_errors_are_one_line(tmp_path: Path, optimized: dict[str, Any], capsys) -> None:
    code, _, err = _run(["report", "--storage", f"sqlite:///{tmp_path / 'none.db'}"], capsys)
    assert code == 1 and err.startswith("bstune: error: storage") and "does not exist" in err
    assert not (tmp_path / "none.db").exists()
    code, _, err = _run(["report", "--storage", optimized["storage"], "--study-name", "x"], capsys)
    assert code == 1 and err == "bstune: error: no study named 'x' in the storage; studies there: 'blobs'\n"
    code, _, err = _run(["report", "--storage", optimized["storage"], "--format", "xml"], capsys)
    assert code == 1 and "--format must be one of table, json, csv, markdown; got 'xml'" in err
    code, _, err = _run(["report", "--storage", optimized["storage"], "--budget", "0"], capsys)
    assert code == 1 and "--budget must be a number greater than 0" in err
    storage = f"journal:{tmp_path / 'two.log'}"
    make_synthetic_study(n_trials=1, storage=storage, study_name="a")
    make_synthetic_study(n_trials=1, storage=storage, study_name="b")
    code, _, err = _run(["report", "--storage", storage], capsys)
    assert code == 1 and "holds 2 studies ('a', 'b'); choose one with --study-name" in err


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_an_empty_study_is_a_message_not_a_traceback(fmt: str, tmp_path: Path, capsys) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(storage=storage, study_name="empty", direction="maximize")
    code, out, err = _run(["report", "--storage", storage, "--format", fmt], capsys)
    assert code == 0 and err == ""
    assert "the study has no trials yet" in out


def test_import_bstune_stays_light() -> None:
    code = (
        "import sys, bstune, bstune.analysis\n"
        "bstune.analysis.analyze\n"
        "heavy = [m for m in ('torch', 'plotly', 'matplotlib', 'optuna_dashboard') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dashboard_command_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = _run(["dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}"], capsys)
    assert code == 1 and err.startswith("bstune: error: storage") and err.endswith("does not exist\n")
    code, _, err = _run(["dashboard", "--port", "70000"], capsys)
    assert code == 1 and err == "bstune: error: --port must be an integer in [0, 65535]; got 70000\n"
