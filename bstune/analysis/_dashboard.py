"""The study made readable in optuna-dashboard, and the dashboard server itself.

``publish_report`` is what ``bstune optimize`` calls when it ends: it analyses the study,
prints the report table, saves the report as the study's note and the front and batch-size figures
as the study's plotly figures (optuna-dashboard's public API), and, given an artifact directory,
uploads the report files as Optuna artifacts. ``make_dashboard_server`` serves optuna-dashboard
on a study's storage, bound to 127.0.0.1 unless asked otherwise.

optuna-dashboard and plotly are imported here only, on first use.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import optuna

from bstune.analysis._analyze import analyze
from bstune.analysis._format import format_report, print_report
from bstune.analysis._report import Report
from bstune.errors import BstuneError
from bstune.objectives import mode_from_attrs

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from rich.console import Console

__all__ = ["FIGURE_IDS", "Published", "make_dashboard_server", "publish_report"]

#: The ids of the figures saved on a study; fixed, so a resumed study's figures are replaced.
FIGURE_IDS = {
    "front": "bstune-front",
    "batch_best": "bstune-batch-best",
    "batch_time": "bstune-batch-time",
    "batch_lr": "bstune-batch-lr",
    "batch_throughput": "bstune-batch-throughput",
    "examples": "bstune-equal-examples",
}

#: The figures of a batch-size study, saved only on a study that holds one.
DESIGN_FIGURE_IDS = {"design_best": "bstune-design-best", "design_lr": "bstune-design-lr",
                     "design_steps": "bstune-design-steps"}

#: The study user attribute that remembers where the study's artifacts are.
ARTIFACT_DIR_ATTR = "artifact_dir"


class Published(NamedTuple):
    """What ``publish_report`` saved: the report, the figure ids and the artifact ids."""

    report: Report
    figure_ids: list[str]
    artifact_ids: dict[str, str]


def publish_report(
    study: optuna.Study,
    *,
    console: Console | None = None,
    artifact_dir: str | Path | None = None,
    report: Report | None = None,
) -> Published:
    """Analyse ``study``, print the report and save it where optuna-dashboard shows it.

    Args:
        study: The study (any storage; in-memory works too).
        console: Where to print the report table; ``None`` prints nothing.
        artifact_dir: A directory for Optuna's file-system artifact store; the report as HTML, JSON
            and Markdown and the PNG pictures are uploaded to the study there, and the directory is
            recorded on the study (user attribute ``artifact_dir``) for ``bstune dashboard``.
        report: A report already computed for ``study``.

    Returns:
        The report, the ids of the saved figures, and the artifact id of each uploaded file.
    """
    from optuna_dashboard import save_note, save_plotly_graph_object

    from bstune.analysis._plotly import figures

    report = report if report is not None else analyze(study)
    if console is not None:
        print_report(report, console)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        mode = mode_from_attrs(study.user_attrs)
        if mode is not None and not study.metric_names:
            study.set_metric_names([mode.value_name])
        save_note(study, format_report(report, "markdown"))
        figs = figures(report)
        ids = [save_plotly_graph_object(study, figs[name], graph_object_id=gid)
               for name, gid in {**DESIGN_FIGURE_IDS, **FIGURE_IDS}.items() if name in figs]
        artifacts: dict[str, str] = {}
        if artifact_dir is not None:
            artifacts = _upload(study, report, Path(artifact_dir))
    return Published(report, ids, artifacts)


def _upload(study: optuna.Study, report: Report, artifact_dir: Path) -> dict[str, str]:
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from bstune.analysis._matplotlib import write_png
    from bstune.analysis._plotly import write_html

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(artifact_dir)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bstune-report-") as tmp:
        folder = Path(tmp)
        files = [write_html(report, folder / "report.html")]
        for fmt, name in (("json", "report.json"), ("markdown", "report.md"), ("csv", "report.csv")):
            (folder / name).write_text(format_report(report, fmt), encoding="utf-8")
            files.append(folder / name)
        files += write_png(report, folder / "png")
        for f in files:
            out[f.name] = upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=study)
    study.set_user_attr(ARTIFACT_DIR_ATTR, str(artifact_dir.resolve()))
    return out


def make_dashboard_server(
    storage: str | optuna.storages.BaseStorage,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: str | Path | None = None,
    study_name: str | None = None,
) -> tuple[WSGIServer, str]:
    """A threaded optuna-dashboard server on ``storage``, bound but not yet serving.

    Args:
        storage: A storage URL (as for ``bstune optimize``) or object.
        host: The address to bind; 127.0.0.1 keeps the dashboard private to this machine.
        port: The port; 0 picks a free one.
        artifact_dir: Optuna's file-system artifact store, so the dashboard lists the files;
            by default the directory recorded on the study by ``publish_report``.
        study_name: Open this study's page; its name must exist in the storage.

    Returns:
        The server (call ``serve_forever()``; ``shutdown()`` from another thread) and the URL to open.

    Raises:
        BstuneError: The study or the artifact directory does not exist, or the port is taken.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    from bstune.analysis._load import existing_storage

    storage_obj = existing_storage(storage) if isinstance(storage, str) else storage
    path = "/dashboard/"
    if study_name is not None:
        try:
            study_id = storage_obj.get_study_id_from_name(study_name)
        except KeyError:
            names = ", ".join(repr(s.study_name) for s in storage_obj.get_all_studies()) or "none"
            raise BstuneError(f"no study named {study_name!r} in the storage; studies there: {names}") from None
        path = f"/dashboard/studies/{study_id}"
        if artifact_dir is None:
            recorded = storage_obj.get_study_user_attrs(study_id).get(ARTIFACT_DIR_ATTR)
            if isinstance(recorded, str) and Path(recorded).is_dir():
                artifact_dir = recorded
    store: Any = None
    if artifact_dir is not None:
        if not Path(artifact_dir).is_dir():
            raise BstuneError(f"--artifact-dir {str(artifact_dir)!r} is not a directory")
        from optuna.artifacts import FileSystemArtifactStore

        store = FileSystemArtifactStore(artifact_dir)

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass  # one line per request would bury the address the user needs

    try:
        server = make_server(host, port, wsgi(storage_obj, artifact_store=store), server_class=_Server,
                             handler_class=_Quiet)
    except OSError as e:
        raise BstuneError(f"cannot serve on {host}:{port} ({e.strerror or e})") from None
    shown_host = f"[{host}]" if ":" in host else host
    return server, f"http://{shown_host}:{server.server_port}{path}"
