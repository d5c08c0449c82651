"""The study made readable in optuna-dashboard: note, figures, artifacts, the server, and a real
headless Chromium that opens the dashboard on a study made by `bstune optimize`."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from analysis._studies import ROOT, make_synthetic_study
from bstune.analysis import make_dashboard_server, publish_report, write_html
from bstune.analysis._dashboard import FIGURE_IDS
from bstune.errors import BstuneError
from bstune.study import resolve_storage


def _figure_ids(storage: str, name: str) -> set[str]:
    # optuna-dashboard keeps figures in study system attributes under "dashboard:plot_data:<id>:<n>";
    # reading that layout here is the one place that would notice it change.
    from bstune.study import resolve_storage

    st = resolve_storage(storage)
    assert st is not None
    attrs = st.get_study_system_attrs(st.get_study_id_from_name(name))
    return {k.split(":")[2] for k in attrs if k.startswith("dashboard:plot_data:")}


def _get(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as resp:
        return json.loads(resp.read())


def test_publish_saves_note_figures_metric_names_and_artifacts(tmp_path: Path) -> None:
    from optuna_dashboard import get_note

    # A journal file: bstune's storage for several workers, and much quicker to fill than SQLite.
    storage = f"journal:{tmp_path / 's.log'}"
    study = make_synthetic_study(n_trials=10, storage=storage, study_name="syn")
    published = publish_report(study, artifact_dir=tmp_path / "art")
    study = optuna.load_study(study_name="syn", storage=resolve_storage(storage))
    note = get_note(study)
    assert note.startswith("# bstune report: syn")
    assert "## Pareto front" in note and "## Recommendation per budget" in note
    assert f"| #{published.report.front[-1].trial} |" in note
    assert _figure_ids(storage, "syn") == set(FIGURE_IDS.values()) == set(published.figure_ids)
    assert study.metric_names == ["best validation accuracy within 4 s"]
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert {m.filename for m in metas} == {"report.html", "report.json", "report.md", "report.csv", "front.png",
                                          "curves.png", "batch_sizes.png", "importance.png"}
    for m in metas:
        assert (tmp_path / "art" / m.artifact_id).is_file()
    assert study.user_attrs["artifact_dir"] == str((tmp_path / "art").resolve())
    # Publishing again (a resumed study) replaces the figures instead of adding more.
    publish_report(study)
    assert _figure_ids(storage, "syn") == set(FIGURE_IDS.values())


def test_optimize_prints_the_report_and_saves_it(optimized: dict[str, Any]) -> None:
    from optuna_dashboard import get_note

    out = optimized["output"]
    assert "Pareto front" in out and "Recommendation per budget" in out and "Batch-size effects" in out
    assert "inspect it: bstune dashboard --storage" in out
    study = optuna.load_study(study_name="blobs", storage=optimized["storage"])
    assert get_note(study).startswith("# bstune report: blobs")
    assert _figure_ids(optimized["storage"], "blobs") == set(FIGURE_IDS.values())
    assert len(optuna.artifacts.get_all_artifact_meta(study)) == 8


def test_dashboard_server_serves_the_study_and_its_artifacts(optimized: dict[str, Any]) -> None:
    server, url = make_dashboard_server(optimized["storage"], port=0, study_name="blobs")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard/studies/1")
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = url.split("/dashboard")[0]
        detail = _get(f"{base}/api/studies/1?after=0")
        assert detail["name"] == "blobs"
        assert detail["note"]["body"].startswith("# bstune report: blobs")
        assert {g["id"] for g in detail["plotly_graph_objects"]} == set(FIGURE_IDS.values())
        assert "report.html" in {a["filename"] for a in detail["artifacts"]}
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_server_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(BstuneError, match="does not exist"):
        make_dashboard_server(f"sqlite:///{tmp_path / 'none.db'}", port=0)
    storage = f"journal:{tmp_path / 's.log'}"
    make_synthetic_study(n_trials=1, storage=storage, study_name="one")
    with pytest.raises(BstuneError, match="no study named 'two' in the storage; studies there: 'one'"):
        make_dashboard_server(storage, port=0, study_name="two")
    with pytest.raises(BstuneError, match="is not a directory"):
        make_dashboard_server(storage, port=0, artifact_dir=tmp_path / "missing")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BstuneError, match="cannot serve on 127.0.0.1"):
            make_dashboard_server(storage, port=taken.getsockname()[1])


# A real browser: Debian's chromium, headless.

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; checked before the study is built, so a skip costs nothing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "chromium is not installed (apt-get install chromium); the dashboard browser test needs it"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _dump_dom(chromium: str, url: str, profile: Path, *extra: str) -> str:
    profile.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [chromium, *_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", *extra, "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _start_dashboard(storage: str, study_name: str) -> tuple[subprocess.Popen[str], str]:
    """`bstune dashboard` as a user runs it, on a free port; returns the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bstune", "dashboard", "--storage", storage, "--study-name", study_name, "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=60):
        proc.kill()
        pytest.fail("bstune dashboard printed no address within 60 s")
    line = proc.stdout.readline()
    if "open http" not in line:
        proc.kill()
        pytest.fail(f"bstune dashboard said {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split("open ", 1)[1].split()[0]


def test_browser_shows_the_study_its_note_and_figures(chromium: str, optimized: dict[str, Any], tmp_path: Path) -> None:
    proc, url = _start_dashboard(optimized["storage"], "blobs")
    try:
        assert url.startswith("http://127.0.0.1:")
        page = _dump_dom(chromium, url, tmp_path / "p1")
        assert "blobs" in page
        # The saved figures, drawn by plotly in the page: their titles are SVG text.
        assert "main-svg" in page
        assert "Pareto front: validation accuracy against training time (s)" in page
        assert "Best validation accuracy per batch size" in page and "Learning rate against batch size" in page
        note = _dump_dom(chromium, url + "/note", tmp_path / "p2")
        assert "bstune report: blobs" in note
        assert "Recommendation per budget" in note and "Which configuration gives the best accuracy" in note
    finally:
        proc.terminate()
        proc.wait(timeout=30)


_OUTSIDE_ITS_CARD = r"""
JSON.stringify([...document.querySelectorAll('[id^="user-defined-plot:"]')].map(p => {
  const card = p.closest('.MuiCard-root') || p.closest('.MuiPaper-root');
  const c = card.getBoundingClientRect();
  const out = [];
  for (const sel of ['.gtitle', '.xtitle', '.ytitle', '.legend', '.bglayer .bg', '.annotation', '.xtick', '.ytick']) {
    for (const e of p.querySelectorAll(sel)) {
      const r = e.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.left < c.left - 1 || r.right > c.right + 1 || r.top < c.top - 1 || r.bottom > c.bottom + 1)
        out.push(sel + ' at ' + [r.left, r.top, r.right, r.bottom].map(Math.round).join(','));
    }
  }
  return [p.id.split(':')[1], out];
}))"""


def test_every_figure_fits_its_card_in_a_real_browser(chromium: str, optimized: dict[str, Any], tmp_path: Path) -> None:
    """At 1400 px wide, every part of every bstune figure (titles, axes, ticks, legend, plot area)
    lies inside the dashboard card it is drawn in: one question per figure, nothing cut off."""
    from analysis._cdp import Browser

    proc, url = _start_dashboard(optimized["storage"], "blobs")
    browser = Browser(chromium, tmp_path / "p4")
    try:
        browser.open(url)
        n = len(FIGURE_IDS)
        browser.wait_for(f"document.querySelectorAll('[id^=\"user-defined-plot:\"] .main-svg').length >= {n}", 90)
        time.sleep(2)  # plotly's last relayout
        placed = dict(json.loads(browser.evaluate(_OUTSIDE_ITS_CARD)))
        assert set(placed) == set(FIGURE_IDS.values())
        assert placed == {gid: [] for gid in FIGURE_IDS.values()}
    finally:
        browser.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_browser_opens_the_html_report_offline(chromium: str, optimized: dict[str, Any], tmp_path: Path) -> None:
    from bstune.analysis import analyze

    study = optuna.load_study(study_name="blobs", storage=optimized["storage"])
    path = write_html(analyze(study), tmp_path / "report.html")
    # Every host name fails to resolve: only what is inside the file can draw the figures.
    page = _dump_dom(chromium, path.as_uri(), tmp_path / "p3", "--host-resolver-rules=MAP * ~NOTFOUND")
    assert page.count('class="main-svg"') >= 4
    assert "Pareto front: validation accuracy against training time (s)" in page
