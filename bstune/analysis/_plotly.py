"""Interactive plotly figures of a ``Report``, and the self-contained HTML.

Drawing only. Imported on first use (plotly is heavy); ``import bstune`` never loads it.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import plotly.colors
import plotly.graph_objects as go

from bstune.analysis._format import _headline, _sections
from bstune.analysis._report import Report, TrialSummary

__all__ = [
    "batch_size_figures", "curves_figure", "design_best_figure", "design_lr_figure", "design_steps_figure", "equal_training_figure", "figures", "front_figure", "importance_figure",
    "write_html",
]

_GREY = "rgba(140,140,140,0.55)"
_FRONT = "#d62728"
_ANYTIME = "#1f77b4"
_PALETTE = plotly.colors.qualitative.D3


def _hover(s: TrialSummary) -> str:
    lr = f"{s.learning_rate:.2e}" if s.learning_rate is not None else "?"
    return f"trial #{s.number}<br>batch {s.batch_size}<br>lr {lr}<br>epochs {s.epochs}<br>{s.stop_reason}"


def _log2_axis(values: list[int]) -> dict[str, object]:
    if not values:
        return {"type": "log"}
    lo, hi = int(math.log2(min(values))), int(math.ceil(math.log2(max(values))))
    ticks = [2**k for k in range(lo, hi + 1)]
    return {"type": "log", "tickvals": ticks, "ticktext": [str(t) for t in ticks]}


def _title(text: str, study_name: str) -> dict[str, object]:
    """A figure title that fits a dashboard card: the question, then the study's name on a small line."""
    return {"text": f"{text}<br><span style='font-size:11px'>{html.escape(study_name)}</span>", "font": {"size": 15}}


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 14})
    return fig


def front_figure(report: Report) -> go.Figure:
    """Every finished trial at (time, best metric); the front as a step line above the dominated
    trials, and the anytime front over all curve points."""
    fig = go.Figure()
    on_front = report.front_trials
    done = [s for s in report.trials if s.state == "complete" and math.isfinite(s.time_s) and math.isfinite(s.metric)]
    dominated = [s for s in done if s.number not in on_front]
    fig.add_trace(
        go.Scatter(
            x=[s.time_s for s in dominated], y=[s.metric for s in dominated], mode="markers", name="dominated trials",
            marker={"color": _GREY, "size": 8}, text=[_hover(s) for s in dominated], hoverinfo="text+x+y",
        )
    )
    # A front holds from each point on: the step lines run on to the reference time.
    right = report.reference[0] if report.reference else None
    if report.anytime_front:
        a = report.anytime_front
        xs, ys = [p.time_s for p in a], [p.metric for p in a]
        if right is not None and right > xs[-1]:
            xs, ys = [*xs, right], [*ys, ys[-1]]
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line_shape="hv", showlegend=False, hoverinfo="skip",
                line={"color": _ANYTIME, "dash": "dot"},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[p.time_s for p in a], y=[p.metric for p in a], mode="lines+markers", line_shape="hv",
                name="anytime front (curve points)", line={"color": _ANYTIME, "dash": "dot"},
                marker={"size": 5, "symbol": "circle-open"},
                text=[f"trial #{p.trial} ({p.state}), batch {p.batch_size}" for p in a], hoverinfo="text+x+y",
            )
        )
    if report.front:
        byn = {s.number: s for s in done}
        f = report.front
        if right is not None and right > f[-1].time_s:
            fig.add_trace(go.Scatter(x=[f[-1].time_s, right], y=[f[-1].metric] * 2, mode="lines", showlegend=False,
                                     hoverinfo="skip", line={"color": _FRONT, "width": 2}))
        fig.add_trace(
            go.Scatter(
                x=[p.time_s for p in f], y=[p.metric for p in f], mode="lines+markers+text", line_shape="hv",
                name="Pareto front (finished trials)", line={"color": _FRONT, "width": 2},
                marker={"color": _FRONT, "size": 11, "symbol": "diamond"},
                text=[f"B={p.batch_size}" for p in f], textposition="top left",
                hovertext=[_hover(byn[p.trial]) for p in f], hoverinfo="text+x+y",
            )
        )
    fig.update_layout(
        title=_title(f"Pareto front: {report.metric_label} against {report.time_label}", report.study_name),
        xaxis_title=report.time_label, yaxis_title=report.metric_label, template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    if not done and not report.anytime_front:
        _empty(fig, "no measured trial yet")
    return fig


def curves_figure(report: Report) -> go.Figure:
    """Each trial's validation metric against time, coloured by log2 of its batch size."""
    fig = go.Figure()
    batches = [s.batch_size for s in report.trials if s.batch_size]
    lo, hi = (math.log2(min(batches)), math.log2(max(batches))) if batches else (0.0, 1.0)
    import plotly.colors as pc

    for s in report.trials:
        if not s.curve_time_s:
            continue
        frac = 0.5 if hi == lo or not s.batch_size else (math.log2(s.batch_size) - lo) / (hi - lo)
        color = pc.sample_colorscale("Viridis", [frac])[0]
        fig.add_trace(
            go.Scatter(
                x=list(s.curve_time_s), y=[m if math.isfinite(m) else None for m in s.curve_metric],
                mode="lines+markers", name=f"#{s.number} B={s.batch_size}",
                line={"color": color, "dash": "solid" if s.state == "complete" else "dot"}, marker={"size": 4},
                hovertext=_hover(s), hoverinfo="text+x+y",
            )
        )
    fig.update_layout(
        title=f"Learning curves: {report.metric_label} against {report.time_label} (dotted: not finished)",
        xaxis_title=report.time_label, yaxis_title=report.metric_label, template="plotly_white",
    )
    if not fig.data:
        _empty(fig, "no learning curve recorded yet")
    return fig


def _batch_layout(fig: go.Figure, report: Report, title: str, y_title: str, *, log_y: bool = False,
                  empty: str | None = None) -> go.Figure:
    """One question per figure, sized for a dashboard card: legend below the plot, one-line title."""
    fig.update_xaxes(title_text="batch size (log2 scale)", **_log2_axis([r.batch_size for r in report.batch_sizes]))
    fig.update_yaxes(title_text=y_title, **({"type": "log"} if log_y else {}))
    fig.update_layout(title=_title(title, report.study_name), template="plotly_white", height=420,
                      margin={"t": 60, "b": 40, "l": 70, "r": 20},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0})
    if empty is not None:
        _empty(fig, empty)
    return fig


def batch_best_figure(report: Report) -> go.Figure:
    """Do smaller batches hurt? Every finished trial's metric, and the best per batch size."""
    fig = go.Figure()
    done = [s for s in report.trials if s.batch_size and s.state == "complete" and math.isfinite(s.metric)]
    fig.add_trace(go.Scatter(x=[s.batch_size for s in done], y=[s.metric for s in done], mode="markers",
                             marker={"color": _GREY}, name="finished trials", text=[_hover(s) for s in done],
                             hoverinfo="text+y"))
    best = [r for r in report.batch_sizes if math.isfinite(r.best_metric)]
    fig.add_trace(go.Scatter(x=[r.batch_size for r in best], y=[r.best_metric for r in best], mode="lines+markers",
                             marker={"color": _FRONT}, name="best per batch size"))
    return _batch_layout(fig, report, f"Best {report.metric_label} per batch size",
                         report.metric_label, empty=None if done else "no finished trial yet")


def batch_time_figure(report: Report) -> go.Figure:
    """Which batch size gets there first? Training time to a level of the metric per batch size."""
    tt = report.time_to_target_target
    hit = [r for r in report.batch_sizes if math.isfinite(r.time_to_target_s)]
    fig = go.Figure(go.Scatter(x=[r.batch_size for r in hit], y=[r.time_to_target_s for r in hit],
                               mode="lines+markers", marker={"color": _ANYTIME}, name="fastest trial"))
    level = f"{report.metric_name} {tt:.4g}" if tt is not None else "the target"
    return _batch_layout(fig, report, f"{report.time_label.split(' (')[0].capitalize()} to {level} per batch size",
                         "seconds (log scale)", log_y=True,
                         empty=None if hit else f"no trial reached {level}")


def batch_lr_figure(report: Report) -> go.Figure:
    """Does the learning rate follow the batch size? Every trial's rate, the best ones and the fit."""
    fig = go.Figure()
    with_lr = [s for s in report.trials if s.batch_size and s.learning_rate]
    fig.add_trace(go.Scatter(x=[s.batch_size for s in with_lr], y=[s.learning_rate for s in with_lr], mode="markers",
                             marker={"color": _GREY, "size": 5}, name="all trials",
                             text=[_hover(s) for s in with_lr], hoverinfo="text"))
    fit = report.lr_scaling
    if fit is not None:
        fig.add_trace(go.Scatter(x=list(fit.batch_sizes), y=list(fit.learning_rates), mode="markers",
                                 marker={"color": _FRONT, "size": 10, "symbol": "diamond"},
                                 name="best trial per batch size"))
        xs = sorted(set(fit.batch_sizes))
        xs = [xs[0], xs[-1]]
        fig.add_trace(go.Scatter(x=xs, y=[fit.predict(x) for x in xs], mode="lines",
                                 line={"color": "black", "dash": "dash"}, name=f"fit: lr ~ B^{fit.exponent:.2f}"))
    return _batch_layout(fig, report, "Learning rate against batch size",
                         "learning rate (log scale)", log_y=True, empty=None if with_lr else "no trial yet")


def batch_throughput_figure(report: Report) -> go.Figure:
    """Do larger batches run faster here? Samples per second of every trial and the median."""
    fig = go.Figure()
    thr = [s for s in report.trials if s.batch_size and s.throughput]
    fig.add_trace(go.Scatter(x=[s.batch_size for s in thr], y=[s.throughput for s in thr], mode="markers",
                             marker={"color": _GREY, "size": 5}, name="trials"))
    med = [r for r in report.batch_sizes if r.throughput]
    fig.add_trace(go.Scatter(x=[r.batch_size for r in med], y=[r.throughput for r in med], mode="lines+markers",
                             marker={"color": "#2ca02c"}, name="median per batch size"))
    return _batch_layout(fig, report, "Training throughput per batch size",
                         "samples/s (log scale)", log_y=True, empty=None if thr else "no throughput measured yet")


def batch_size_figures(report: Report) -> dict[str, go.Figure]:
    """The batch-size effects, one question per figure: best metric, time to a level, learning rate
    (with the fitted exponent), throughput."""
    return {
        "batch_best": batch_best_figure(report),
        "batch_time": batch_time_figure(report),
        "batch_lr": batch_lr_figure(report),
        "batch_throughput": batch_throughput_figure(report),
    }


def design_best_figure(report: Report) -> go.Figure:
    """The batch-size study: each batch size's runs at its own best learning rate, their mean and
    seed band (± one standard deviation), and every learning-rate search point in grey."""
    fig = go.Figure()
    d = report.design
    target_mode = report.mode == "target"
    y_title = f"seconds to {report.metric_name} {report.target:g}" if target_mode else report.metric_label
    if d is not None:
        by_number = {s.number: s for s in report.trials}
        chosen = {n for x in d.results for n in x.trials}
        search = [s for s in report.trials if s.batch_size in d.batch_sizes and s.number not in chosen
                  and s.state == "complete" and math.isfinite(s.metric if not target_mode else s.time_s)]
        fig.add_trace(go.Scatter(
            x=[s.batch_size for s in search], y=[s.time_s if target_mode else s.metric for s in search],
            mode="markers", marker={"color": _GREY, "size": 6}, name="learning-rate search (other rates)",
            text=[_hover(s) for s in search], hoverinfo="text+y"))
        runs = [by_number[n] for x in d.results for n in x.trials if n in by_number]
        fig.add_trace(go.Scatter(
            x=[s.batch_size for s in runs], y=[s.time_s if target_mode else s.metric for s in runs], mode="markers",
            marker={"color": _ANYTIME, "size": 7}, name="runs at the batch size's best rate",
            text=[_hover(s) for s in runs], hoverinfo="text+y"))
        res = [x for x in d.results if math.isfinite(x.mean)]
        sd = [x.std if math.isfinite(x.std) else 0.0 for x in res]
        fig.add_trace(go.Scatter(
            x=[x.batch_size for x in res], y=[x.mean for x in res], mode="lines+markers",
            marker={"color": _FRONT, "size": 10}, line={"color": _FRONT},
            error_y={"type": "data", "array": sd, "visible": True, "color": _FRONT},
            name="mean ± seed sd", text=[f"batch {x.batch_size}, lr {x.learning_rate:.2e}, {len(x.values)} runs"
                                         for x in res], hoverinfo="text+y"))
    return _batch_layout(fig, report, "Batch-size study: best per batch size, each at its own learning rate",
                         y_title, log_y=target_mode,
                         empty=None if d is not None and d.results else "no batch-size study results yet")


def design_lr_figure(report: Report) -> go.Figure:
    """The batch-size study: each batch size's fitted best learning rate with its 95% interval, the
    fitted rule, and the square-root and linear slopes through the rule's middle for reference."""
    fig = go.Figure()
    d = report.design
    if d is not None:
        tried = [s for s in report.trials if s.batch_size in d.batch_sizes and s.learning_rate]
        fig.add_trace(go.Scatter(x=[s.batch_size for s in tried], y=[s.learning_rate for s in tried], mode="markers",
                                 marker={"color": _GREY, "size": 5}, name="rates tried",
                                 text=[_hover(s) for s in tried], hoverinfo="text"))
        ok = [p for p in d.peaks if p.bracketed]
        fig.add_trace(go.Scatter(
            x=[p.batch_size for p in ok], y=[p.learning_rate for p in ok], mode="markers",
            marker={"color": _FRONT, "size": 11, "symbol": "diamond"}, name="best rate (fitted) with 95% interval",
            error_y={"type": "data", "symmetric": False, "visible": True, "color": _FRONT,
                     "array": [p.high - p.learning_rate if math.isfinite(p.high) else 0.0 for p in ok],
                     "arrayminus": [p.learning_rate - p.low if math.isfinite(p.low) else 0.0 for p in ok]}))
        edge = [p for p in d.peaks if not p.bracketed]
        if edge:
            fig.add_trace(go.Scatter(x=[p.batch_size for p in edge], y=[p.learning_rate for p in edge], mode="markers",
                                     marker={"color": _FRONT, "size": 11, "symbol": "diamond-open"},
                                     name="best rate tried, peak not bracketed"))
        law = d.law
        if law is not None:
            lo, hi = min(law.batch_sizes), max(law.batch_sizes)
            mid = math.sqrt(lo * hi)
            fig.add_trace(go.Scatter(x=[lo, hi], y=[law.predict(lo), law.predict(hi)], mode="lines",
                                     line={"color": "black"},
                                     name=f"fit: lr ~ B^{law.exponent:.2f} ({law.low:.2f} to {law.high:.2f})"))
            for k, dash, label in ((0.5, "dash", "square root, B^0.5"), (1.0, "dot", "linear, B^1")):
                fig.add_trace(go.Scatter(
                    x=[lo, hi], y=[law.predict(mid) * (lo / mid) ** k, law.predict(mid) * (hi / mid) ** k],
                    mode="lines", line={"color": "#7f7f7f", "dash": dash}, name=label))
    return _batch_layout(fig, report, "Batch-size study: best learning rate against batch size",
                         "learning rate (log scale)", log_y=True,
                         empty=None if d is not None and d.peaks else "no batch-size study results yet")


def design_steps_figure(report: Report) -> go.Figure:
    """Target mode: mean optimizer steps to the target per batch size, each at its own best rate,
    on log-log axes with the line of perfect scaling (steps halve as the batch doubles)."""
    fig = go.Figure()
    d = report.design
    rows = [x for x in (d.results if d is not None else []) if math.isfinite(x.steps)]
    if rows:
        fig.add_trace(go.Scatter(x=[x.batch_size for x in rows], y=[x.steps for x in rows], mode="lines+markers",
                                 marker={"color": _FRONT, "size": 10}, name="mean steps to the target"))
        b0, s0 = rows[0].batch_size, rows[0].steps
        xs = [r.batch_size for r in rows]
        fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[s0, s0 * b0 / xs[-1]], mode="lines",
                                 line={"color": "#7f7f7f", "dash": "dash"}, name="perfect scaling"))
        if d is not None and d.stops_paying is not None:
            fig.add_vline(x=d.stops_paying, line={"color": "black", "dash": "dot"},
                          annotation_text=f"more batch stops paying past {d.stops_paying}")
    target = f"{report.metric_name} {report.target:g}" if report.target is not None else "the target"
    return _batch_layout(fig, report, f"Batch-size study: steps to {target} per batch size",
                         "optimizer steps (log scale)", log_y=True,
                         empty=None if rows else "no batch size reached the target at its chosen rate yet")


def equal_training_figure(report: Report, axis: str = "examples") -> go.Figure:
    """The best finished trial of each batch size against examples seen (``axis="examples"``) or
    optimizer steps (``"steps"``), with the common amount the report compares them at."""
    if axis not in ("examples", "steps"):
        raise ValueError(f"axis must be 'examples' or 'steps'; got {axis!r}")
    eq = report.equal_footing
    what = "training examples seen" if axis == "examples" else "optimizer steps (examples seen / batch size)"
    fig = go.Figure()
    if eq is not None:
        by_number = {s.number: s for s in report.trials}
        for i, row in enumerate(eq.rows):
            s = by_number[row.trial]
            xs = list(s.curve_samples) if axis == "examples" else [x / row.batch_size for x in s.curve_samples]
            fig.add_trace(go.Scatter(
                x=xs, y=[m if math.isfinite(m) else None for m in s.curve_metric], mode="lines+markers",
                name=f"batch {row.batch_size} (#{row.trial})", text=[_hover(s)] * len(xs), hoverinfo="text+x+y",
                line={"color": _PALETTE[i % len(_PALETTE)]},
            ))
        at = eq.examples if axis == "examples" else eq.steps
        fig.add_vline(x=at, line={"color": "black", "dash": "dash"},
                      annotation_text=f"compared at {at:,.0f}", annotation_position="top left")
    fig.update_layout(
        title=_title(f"Best trial per batch size against {'examples seen' if axis == 'examples' else 'optimizer steps'}",
                     report.study_name),
        xaxis_title=what, yaxis_title=report.metric_label, template="plotly_white", height=420,
        margin={"t": 60, "b": 40, "l": 70, "r": 20}, legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
    )
    if eq is None:
        _empty(fig, "needs finished trials at two batch sizes or more")
    return fig


def importance_figure(report: Report) -> go.Figure:
    """Parameter importance as horizontal bars."""
    items = sorted(report.importance.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    fig.update_layout(title="Parameter importance (Optuna)", xaxis_title="importance (fraction of the total)",
                      template="plotly_white", height=max(250, 60 * len(items) + 120))
    if not items:
        _empty(fig, "parameter importance not available")
    return fig


def figures(report: Report) -> dict[str, go.Figure]:
    """All figures by name: design_best and design_lr (a study holding a batch-size study only),
    front, curves, batch_best, batch_time, batch_lr, batch_throughput, examples, steps, importance."""
    design = {"design_best": design_best_figure(report), "design_lr": design_lr_figure(report)} if (
        report.design is not None) else {}
    if report.design is not None and report.mode == "target":
        design["design_steps"] = design_steps_figure(report)
    return {
        **design,
        "front": front_figure(report),
        "curves": curves_figure(report),
        **batch_size_figures(report),
        "examples": equal_training_figure(report, "examples"),
        "steps": equal_training_figure(report, "steps"),
        "importance": importance_figure(report),
    }


def write_html(report: Report, path: str | Path) -> Path:
    """Write one HTML file with the report's tables and interactive figures. plotly.js is embedded
    inline, so the file opens offline."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>bstune report: {html.escape(report.study_name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}</style></head><body>",
        f"<h1>bstune report: {html.escape(report.study_name)}</h1>",
    ]
    parts += [f"<p>{html.escape(line)}</p>" for line in _headline(report)]
    if report.answers:
        parts.append("<h2>Answers</h2><ul>")
        parts += [f"<li><b>{html.escape(a.question)}</b> {html.escape(a.answer)} <em>({html.escape(a.evidence)})</em></li>"
                  for a in report.answers]
        parts.append("</ul>")
    parts += [f"<p><em>note: {html.escape(m)}</em></p>" for m in report.messages]
    first = True
    figs = figures(report)
    order = [*(name for name in ("design_best", "design_lr", "design_steps") if name in figs), "front", "recommendations", "curves", "batch_best", "batch_time", "batch_lr", "batch_throughput",
             "examples", "steps", "importance"]
    sections = {title: (header, rows) for title, header, rows in _sections(report)}
    for name in order:
        if name == "recommendations":
            for title, (header, rows) in sections.items():
                if not rows:
                    continue
                parts.append(f"<h2>{html.escape(title)}</h2><table><tr>")
                parts += [f"<th>{html.escape(h)}</th>" for h in header]
                parts.append("</tr>")
                for row in rows:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
                parts.append("</table>")
            continue
        parts.append(figs[name].to_html(full_html=False, include_plotlyjs=True if first else False,
                                        div_id=f"bstune-{name}"))
        first = False
    parts.append("</body></html>")
    out = Path(path)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
