"""Static PNG pictures of a ``Report`` with matplotlib.

Drawing only. It uses matplotlib's object API with the Agg canvas (no pyplot, no display, no
global state) and is imported on first use.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import cm, colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from bstune.analysis._report import Report

__all__ = ["write_png"]

_GREY = "#9a9a9a"
_FRONT = "#d62728"
_ANYTIME = "#1f77b4"


def _log2_x(ax: Axes, values: list[int]) -> None:
    ax.set_xscale("log", base=2)
    if values:
        lo, hi = int(math.floor(math.log2(min(values)))), int(math.ceil(math.log2(max(values))))
        ax.set_xticks([2**k for k in range(lo, hi + 1)])
        ax.set_xlim(2 ** (lo - 0.3), 2 ** (hi + 0.3))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size (log2 scale)")


def _log_y(ax: Axes, values: list[float], label: str, fmt: str = "{:g}") -> None:
    """A log y axis whose ticks read as plain numbers; a narrow range (under a factor of 3) stays
    linear, where a log scale would show no labelled tick at all."""
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    if not finite or max(finite) / min(finite) < 3:
        ax.set_ylabel(label)
        return
    ax.set_yscale("log")
    ax.set_ylabel(label[:-1] + ", log scale)" if label.endswith(")") else label + " (log scale)")
    labels = FuncFormatter(lambda v, _: fmt.format(v))
    ax.yaxis.set_major_formatter(labels)
    if max(finite) / min(finite) < 10:
        ax.yaxis.set_minor_formatter(labels)
        ax.tick_params(axis="y", which="minor", labelsize=8)


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#555555")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _front(report: Report, path: Path) -> Path:
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    on_front = report.front_trials
    done = [s for s in report.trials if s.state == "complete" and math.isfinite(s.time_s) and math.isfinite(s.metric)]
    dom = [s for s in done if s.number not in on_front]
    ax.scatter([s.time_s for s in dom], [s.metric for s in dom], s=30, color=_GREY, label="dominated trials", zorder=2)
    # A front holds from each point on: its steps run on to the reference time (the right edge).
    right = report.reference[0] if report.reference else None
    a = report.anytime_front
    if a:
        xs, ys = [p.time_s for p in a], [p.metric for p in a]
        if right is not None and right > xs[-1]:
            xs, ys = [*xs, right], [*ys, ys[-1]]
        ax.step(xs, ys, where="post", color=_ANYTIME, ls=":", lw=1.3, label="anytime front (every curve point)",
                zorder=3)
    f = report.front
    if f:
        xs, ys = [p.time_s for p in f], [p.metric for p in f]
        if right is not None and right > xs[-1]:
            xs, ys = [*xs, right], [*ys, ys[-1]]
        ax.step(xs, ys, where="post", color=_FRONT, lw=2, zorder=4)
        ax.scatter([p.time_s for p in f], [p.metric for p in f], s=70, marker="D", color=_FRONT, zorder=5,
                   label="Pareto front (finished trials)")
        for i, p in enumerate(f):  # alternate above-left and below-right, so neighbours do not collide
            ax.annotate(f"B={p.batch_size}", (p.time_s, p.metric), textcoords="offset points",
                        xytext=(-6, 7) if i % 2 == 0 else (6, -13), ha="right" if i % 2 == 0 else "left",
                        fontsize=8, color=_FRONT)
    if not done and not a:
        _note(ax, "no measured trial yet")
    ax.set_xlabel(report.time_label)
    ax.set_ylabel(report.metric_label)
    ax.set_title(f"Pareto front: {report.metric_label} against {report.time_label.split(' (')[0]}\n{report.study_name}",
                 fontsize=11)
    ax.grid(alpha=0.3)
    if done or a:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _curves(report: Report, path: Path) -> Path:
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    batches = [s.batch_size for s in report.trials if s.batch_size]
    norm = Normalize(math.log2(min(batches)), max(math.log2(max(batches)), math.log2(min(batches)) + 1)) if batches else None
    cmap = colormaps["viridis"]
    drawn = 0
    for s in report.trials:
        if not s.curve_time_s:
            continue
        color = cmap(norm(math.log2(s.batch_size))) if norm and s.batch_size else _GREY
        ax.plot(s.curve_time_s, s.curve_metric, color=color, lw=1.2, alpha=0.85,
                ls="-" if s.state == "complete" else ":", marker="." if len(s.curve_time_s) < 30 else None, ms=3)
        drawn += 1
    if norm is not None and drawn:
        sm = cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = fig.colorbar(sm, ax=ax)
        lo, hi = int(math.ceil(float(norm.vmin or 0.0))), int(math.floor(float(norm.vmax or 0.0)))
        bar.set_ticks(list(range(lo, hi + 1)))
        bar.set_ticklabels([str(2**k) for k in range(lo, hi + 1)])
        bar.set_label("batch size (log2 colour scale)")
    else:
        _note(ax, "no learning curve recorded yet")
    ax.set_xlabel(report.time_label)
    ax.set_ylabel(report.metric_label)
    ax.set_title(f"Learning curves (dotted: pruned, failed or running)\n{report.study_name}", fontsize=11)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _batch_sizes(report: Report, path: Path) -> Path:
    fig = Figure(figsize=(11, 8), layout="constrained")
    (a1, a2), (a3, a4) = fig.subplots(2, 2)
    rows = report.batch_sizes
    values = [r.batch_size for r in rows]
    trials = [s for s in report.trials if s.batch_size]
    done = [s for s in trials if s.state == "complete" and math.isfinite(s.metric)]
    m = report.metric_label

    a1.scatter([s.batch_size for s in done], [s.metric for s in done], s=18, color=_GREY, label="finished trials")
    best = [r for r in rows if math.isfinite(r.best_metric)]
    a1.plot([r.batch_size for r in best], [r.best_metric for r in best], "o-", color=_FRONT, label="best per batch size")
    a1.set_ylabel(m)
    a1.set_title(f"Best {m} against batch size", fontsize=10)

    tt = report.time_to_target_target
    hit = [r for r in rows if math.isfinite(r.time_to_target_s)]
    a2.plot([r.batch_size for r in hit], [r.time_to_target_s for r in hit], "o-", color=_ANYTIME,
            label="fastest trial to reach it")
    miss = [r.batch_size for r in rows if not math.isfinite(r.time_to_target_s)]
    _log_y(a2, [r.time_to_target_s for r in hit], report.time_label)
    if miss:
        a2.text(0.02, 0.02, "never reached at batch " + ", ".join(str(b) for b in miss), transform=a2.transAxes,
                fontsize=8, color="#555555")
    a2.set_title(f"Time to reach {report.metric_name} {tt:.4g} (steps-to-result, in seconds)" if tt is not None
                 else "Time to target", fontsize=10)

    with_lr = [s for s in trials if s.learning_rate]
    a3.scatter([s.batch_size for s in with_lr], [s.learning_rate for s in with_lr], s=14, color=_GREY, label="all trials")
    fit = report.lr_scaling
    if fit is not None:
        a3.scatter(fit.batch_sizes, fit.learning_rates, s=60, marker="D", color=_FRONT, label="best trial per batch size",
                   zorder=3)
        xs = [min(fit.batch_sizes), max(fit.batch_sizes)]
        a3.plot(xs, [fit.predict(x) for x in xs], "k--", lw=1.2,
                label=f"fit: lr ~ B^{fit.exponent:.2f} (R^2 {fit.r2:.2f})")
    _log_y(a3, [s.learning_rate or 0.0 for s in with_lr], "learning rate", "{:.0e}")
    a3.set_title("Learning rate against batch size (1 = linear, 0.5 = square-root scaling)", fontsize=10)

    thr = [s for s in trials if s.throughput]
    a4.scatter([s.batch_size for s in thr], [s.throughput for s in thr], s=14, color=_GREY, label="trials")
    med = [r for r in rows if r.throughput]
    a4.plot([r.batch_size for r in med], [r.throughput for r in med], "o-", color="#2ca02c", label="median")
    _log_y(a4, [s.throughput or 0.0 for s in thr], "throughput (samples/s)", "{:,.0f}")
    a4.set_title("Training throughput against batch size", fontsize=10)

    for ax in (a1, a2, a3, a4):
        _log2_x(ax, values)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if not rows:
            _note(ax, "no trial with a batch size yet")
    fig.suptitle(f"Batch-size effects: {report.study_name}", fontsize=12)
    return _save(fig, path)


def _design(report: Report, path: Path) -> Path:
    """The batch-size study: the best per batch size with seed bands, and the best learning rate
    per batch size with its interval, the fitted rule and the two reference slopes."""
    d = report.design
    assert d is not None
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    target_mode = report.mode == "target"
    res = [x for x in d.results if math.isfinite(x.mean)]
    by_number = {s.number: s for s in report.trials}
    for x in res:
        ys = [by_number[n].time_s if target_mode else by_number[n].metric for n in x.trials if n in by_number]
        a1.scatter([x.batch_size] * len(ys), ys, s=14, color=_ANYTIME, zorder=2)
    a1.errorbar([x.batch_size for x in res], [x.mean for x in res],
                yerr=[x.std if math.isfinite(x.std) else 0.0 for x in res], fmt="o-", color=_FRONT, capsize=4,
                label="mean ± seed sd at its best rate", zorder=3)
    a1.set_ylabel(f"seconds to {report.metric_name} {report.target:g}" if target_mode else report.metric_label)
    a1.set_title("Best per batch size, each at its own learning rate", fontsize=10)
    ok = [p for p in d.peaks if p.bracketed]
    a2.errorbar([p.batch_size for p in ok], [p.learning_rate for p in ok],
                yerr=[[p.learning_rate - p.low if math.isfinite(p.low) else 0.0 for p in ok],
                      [p.high - p.learning_rate if math.isfinite(p.high) else 0.0 for p in ok]],
                fmt="D", color=_FRONT, capsize=4, label="best rate (fitted), 95% interval", zorder=3)
    edge = [p for p in d.peaks if not p.bracketed]
    if edge:
        a2.scatter([p.batch_size for p in edge], [p.learning_rate for p in edge], marker="D", facecolors="none",
                   edgecolors=_FRONT, s=50, label="best tried, not bracketed")
    law = d.law
    if law is not None:
        lo, hi = min(law.batch_sizes), max(law.batch_sizes)
        mid = math.sqrt(lo * hi)
        a2.plot([lo, hi], [law.predict(lo), law.predict(hi)], "k-", lw=1.4,
                label=f"fit: B^{law.exponent:.2f} ({law.low:.2f} to {law.high:.2f})")
        for k, style, label in ((0.5, "--", "square root"), (1.0, ":", "linear")):
            a2.plot([lo, hi], [law.predict(mid) * (lo / mid) ** k, law.predict(mid) * (hi / mid) ** k], style,
                    color="#7f7f7f", label=label)
    _log_y(a2, [p.learning_rate for p in d.peaks] or [1e-3], "learning rate", "{:.0e}")
    a2.set_title("Best learning rate against batch size", fontsize=10)
    for ax in (a1, a2):
        _log2_x(ax, list(d.batch_sizes))
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if not d.peaks:
            _note(ax, "no batch-size study results yet")
    fig.suptitle(f"Batch-size study: {report.study_name}", fontsize=12)
    return _save(fig, path)


def _importance(report: Report, path: Path) -> Path:
    items = sorted(report.importance.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(7, 1.2 + 0.5 * max(len(items), 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=_ANYTIME)
    ax.set_xlabel("importance (fraction of the total)")
    ax.set_title("Parameter importance (Optuna)", fontsize=11)
    if not items:
        _note(ax, "parameter importance not available")
    return _save(fig, path)


def write_png(report: Report, directory: str | Path) -> list[Path]:
    """Write ``front.png``, ``curves.png``, ``batch_sizes.png`` and ``importance.png`` (and
    ``batch_study.png`` for a study holding a batch-size study) into ``directory`` (created if
    missing) and return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return [
        *([_design(report, out / "batch_study.png")] if report.design is not None else []),
        _front(report, out / "front.png"),
        _curves(report, out / "curves.png"),
        _batch_sizes(report, out / "batch_sizes.png"),
        _importance(report, out / "importance.png"),
    ]
