"""A ``Report`` as text: a terminal table, JSON, CSV or Markdown.

Formatting only: every number comes from the report.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any

from bstune.analysis._report import Report
from bstune.errors import check_choice

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["FORMATS", "format_report", "print_report"]

#: The text formats of ``bstune report --format``.
FORMATS = ("table", "json", "csv", "markdown")


def _f(x: float | None, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _lr(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def _epochs(done: float | None, planned: int | None) -> str:
    if done is None:
        return "-" if planned is None else str(planned)
    return f"{done:.2f}/{planned if planned is not None else '?'}"


def _headline(r: Report) -> list[str]:
    if r.mode == "time_budget":
        what = f"time budget {r.budget_s:g} s per trial"
    elif r.mode == "target":
        what = f"target {r.metric_name} {r.target:g}"
    else:
        what = "a study not made by bstune"
    counts = ", ".join(f"{n} {k}" for k, n in sorted(r.states.items())) or "no trials"
    # The hypervolumes (area dominated by the front, up to a reference point) are in the JSON and HTML.
    return [f"Study {r.study_name!r}: {what}; {r.n_trials} trials ({counts})."]


def _design_section(r: Report, value: str) -> tuple[str, list[str], list[list[str]]]:
    """The batch-size study's table: per batch size its search, fitted rate and seed band."""
    m = r.metric_name
    design_rows: list[list[str]] = []
    d = r.design
    if d is not None:
        peaks = {p.batch_size: p for p in d.peaks}
        results = {x.batch_size: x for x in d.results}
        for b in d.batch_sizes:
            pk, x = peaks.get(b), results.get(b)
            interval = f"{_lr(pk.low)} - {_lr(pk.high)}" if pk is not None and math.isfinite(pk.low) else (
                "not bracketed" if pk is not None else "-")
            design_rows.append([
                str(b), str(len(pk.tried)) if pk is not None else "0", _lr(pk.learning_rate) if pk is not None else "-",
                interval, str(len(x.values)) + (f" (+{x.missed} missed)" if x and x.missed else "") if x else "0",
                _f(x.mean) if x else "-", _f(x.std) if x else "-",
                ("best" if x.within_noise is None else "within noise" if x.within_noise else "behind") if x else "-",
                _f(x.at_examples) if x else "-",
                *([_f(x.steps, ",.0f") if x else "-"] if r.mode == "target" else []),
            ])
    design_header = ["batch", "rates tried", "best rate (fitted)", "95% interval", "runs at it", f"mean {value}",
                     "seed sd", "against the best", f"{m} at {d.examples:,.0f} examples" if d is not None and
                     math.isfinite(d.examples) else f"{m} at equal examples"] + (
                         ["steps to target"] if r.mode == "target" else [])
    law = d.law if d is not None else None
    law_text = (f"; best rate ~ batch^{law.exponent:.2f} (95% interval {law.low:.2f} to {law.high:.2f})"
                if law is not None else "")
    return (f"Batch-size study: each batch size at its own best learning rate, then {d.seeds if d else 0} more "
            f"seed(s) there{law_text}", design_header, design_rows)


def _sections(r: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table, as strings shared by the table and Markdown formats."""
    m = r.metric_name
    front = [
        [f"#{p.trial}", _f(p.time_s, ".2f"), _f(p.metric), str(p.batch_size), _lr(p.learning_rate),
         _epochs(p.epochs_done, p.epochs)]
        for p in r.front
    ]
    # The anytime front has a point per evaluation; consecutive points of one trial read as a run.
    anytime = []
    seg: list[Any] = []
    for p in [*r.anytime_front, None]:
        if seg and (p is None or p.trial != seg[0].trial):
            a, b = seg[0], seg[-1]
            anytime.append([f"#{a.trial}", f"{_f(a.time_s, '.2f')} - {_f(b.time_s, '.2f')}",
                            f"{_f(a.metric)} - {_f(b.metric)}", str(len(seg)), str(a.batch_size),
                            _lr(a.learning_rate), a.state])
            seg = []
        if p is not None:
            seg.append(p)
    recs = [
        [_f(x.budget_s, "g"), x.basis, f"#{x.trial}" if x.trial is not None else "-",
         str(x.batch_size) if x.trial is not None else "-", _lr(x.learning_rate),
         _epochs(x.epochs_done, x.epochs) if x.basis == "finished" else f"-/{x.epochs}" if x.trial is not None else "-",
         _f(x.metric), _f(x.time_s, ".2f"),
         _f(x.anytime_metric) + (f" (#{x.anytime_trial})" if x.anytime_trial is not None else "")]
        for x in r.recommendations
    ]
    tt = f"s to {m} {_f(r.time_to_target_target, '.4g')}"
    batches = [
        [str(b.batch_size), str(b.n_trials), str(b.n_finished), _f(b.best_metric),
         f"#{b.best_trial}" if b.best_trial is not None else "-", _lr(b.best_learning_rate),
         _f(b.time_to_target_s, ".2f"), _f(b.throughput, ",.0f")]
        for b in r.batch_sizes
    ]
    imp = [[k, f"{v:.3f}"] for k, v in r.importance.items()]
    # One front that means something: in budget mode every trial trains for the budget, so the
    # finished trials all sit at its end and the anytime front (every curve point) is the real one.
    if r.mode == "target":
        front_section = (f"Pareto front: {r.time_label} against {r.metric_label} (finished trials)",
                         ["trial", "seconds", m, "batch", "learning rate", "epochs"], front)
    else:
        front_section = (f"Pareto front: {r.time_label} against {r.metric_label} (every curve point, pruned trials "
                         "included; consecutive points of a trial joined)",
                         ["trial", "seconds", m, "points", "batch", "learning rate", "state"], anytime)
    eq_section: tuple[str, list[str], list[list[str]]] = ("Batch sizes at equal training", [], [])
    eq = r.equal_footing
    if eq is not None:
        ex, st, ts = f"{eq.examples:,.0f} examples", f"{eq.steps:,.0f} steps", f"{_f(eq.time_s, '.3g')} s"
        eq_section = (
            f"Batch sizes at equal training: the best finished trial of each, its {m} after the same examples "
            "seen, optimizer steps and training time (the most every one of them reached)",
            ["batch", "trial", f"{m} at {ex}", f"{m} at {st}", f"{m} at {ts}"],
            [[str(x.batch_size), f"#{x.trial}", _f(x.at_examples), _f(x.at_steps), _f(x.at_time)] for x in eq.rows],
        )
    value = f"s to {m} {_f(r.target, 'g')}" if r.mode == "target" else m
    confirmed = [
        [f"#{c.trial}", str(c.batch_size) if c.batch_size is not None else "-", _lr(c.learning_rate),
         str(c.epochs) if c.epochs is not None else "-",
         f"{len(c.values)}" + (f" (+{c.missed} missed)" if c.missed else ""), _f(c.mean), _f(c.std),
         f"{_f(min(c.values))} - {_f(max(c.values))}",
         "best" if c.within_noise is None else "within noise" if c.within_noise else "behind"]
        for c in r.confirmations
    ]
    design_section = _design_section(r, value)
    return [
        design_section,
        ("Confirmed configurations: each trained again with other seeds; mean and spread (standard deviation) "
         "of the runs, and whether the difference to the best mean is within two standard errors",
         ["trial", "batch", "learning rate", "epochs", "runs", f"mean {value}", "spread", "min - max", "against the best"],
         confirmed),
        front_section,
        ("Recommendation per budget (best finished trial within it, else the best curve by then)",
         ["budget s", "from", "trial", "batch", "learning rate", "epochs", m, "took s", f"anytime {m}"], recs),
        ("Batch-size effects", ["batch", "trials", "finished", f"best {m}", "trial", "its learning rate", tt, "samples/s"],
         batches),
        eq_section,
        ("Parameter importance", ["parameter", "importance"], imp),
    ]


def print_report(report: Report, console: Console) -> None:
    """Print ``report`` on a rich ``console``: the answers first, then the tables they rest on."""
    from rich.table import Table

    for line in _headline(report):
        console.print(line, highlight=False, markup=False)
    for a in report.answers:
        console.print(f"- {a.question} {a.answer} [{a.evidence}]", highlight=False, markup=False)
    for title, header, rows in _sections(report):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 or h in ("state",) else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for msg in report.messages:
        console.print(f"note: {msg}", highlight=False, markup=False)


def _markdown(r: Report) -> str:
    out = [f"# bstune report: {r.study_name}", ""]
    for line in _headline(r):
        out += [line, ""]  # one paragraph each
    if r.answers:
        out += ["## Answers", ""] + [f"- **{a.question}** {a.answer} *({a.evidence})*" for a in r.answers] + [""]
    for title, header, rows in _sections(r):
        if not rows and title.startswith(("Confirmed", "Batch sizes at equal", "Batch-size study")):
            continue  # sections that exist only once there is something to show
        out += [f"## {title}", ""]
        if not rows:
            out += ["(none)", ""]
            continue
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        out.append("")
    if r.messages:
        out += ["## Notes", ""] + [f"- {m}" for m in r.messages]
    return "\n".join(out).rstrip("\n") + "\n"


_CSV_COLUMNS = (
    "section", "trial", "budget_s", "time_s", "metric", "batch_size", "learning_rate", "epochs",
    "epochs_done", "state", "n_trials", "n_finished", "time_to_target_s", "throughput", "anytime_metric",
    "anytime_trial", "basis", "parameter", "importance", "message", "at_examples", "at_steps", "at_time",
    "runs", "mean", "std", "within_noise",
)


def _csv(r: Report) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()

    def put(section: str, row: dict[str, Any]) -> None:
        clean = {k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in row.items()}
        w.writerow({"section": section, **clean})

    for p in r.front:
        put("front", p._asdict())
    for p in r.anytime_front:
        put("anytime_front", p._asdict())
    for x in r.recommendations:
        d = x._asdict()
        put("recommendation", d)
    for b in r.batch_sizes:
        d = b._asdict()
        d["metric"], d["trial"], d["learning_rate"] = d.pop("best_metric"), d.pop("best_trial"), d.pop("best_learning_rate")
        put("batch_size", d)
    for c in r.confirmations:
        put("confirmation", {"trial": c.trial, "batch_size": c.batch_size, "learning_rate": c.learning_rate,
                             "epochs": c.epochs, "runs": " ".join(str(n) for n in c.runs), "mean": c.mean,
                             "std": c.std, "within_noise": "" if c.within_noise is None else c.within_noise})
    if r.design is not None:
        for res in r.design.results:
            put("batch_study", {"batch_size": res.batch_size, "learning_rate": res.learning_rate,
                                "runs": " ".join(str(n) for n in res.trials), "mean": res.mean, "std": res.std,
                                "within_noise": "" if res.within_noise is None else res.within_noise,
                                "at_examples": res.at_examples})
    if r.equal_footing is not None:
        for row in r.equal_footing.rows:
            put("equal_footing", row._asdict())
    for k, v in r.importance.items():
        put("importance", {"parameter": k, "importance": v})
    for m in r.messages:
        put("message", {"message": m})
    for a in r.answers:
        put("answer", {"message": f"{a.question} {a.answer}", "basis": a.evidence})
    return buf.getvalue()


def format_report(report: Report, fmt: str) -> str:
    """``report`` as ``"json"``, ``"csv"`` (one table, its ``section`` column says which part a row
    belongs to), ``"markdown"`` or ``"table"`` (plain-text terminal tables)."""
    check_choice("format_report", "fmt", fmt, FORMATS)
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "markdown":
        return _markdown(report)
    from rich.console import Console  # "table"

    console = Console(file=io.StringIO(), width=160, force_terminal=False, color_system=None, highlight=False)
    print_report(report, console)
    return console.file.getvalue()  # type: ignore[attr-defined]
