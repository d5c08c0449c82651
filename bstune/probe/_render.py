"""A probe's result as a table, summary lines, a search-space file and a picture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bstune.probe._narrow import pow2_floor
from bstune.probe._result import MIB, ProbeResult
from bstune.space import load_space

if TYPE_CHECKING:
    from rich.table import Table


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def probe_table(result: ProbeResult) -> Table:
    """The measurements as a rich table, one row per batch size."""
    from rich.table import Table

    table = Table(title=f"bstune probe: {result.task} on {result.device}", title_justify="left")
    table.add_column("batch", justify="right")
    table.add_column("step ms", justify="right")
    table.add_column("samples/s", justify="right")
    table.add_column("vs 2^k", justify="right")
    table.add_column("peak MiB", justify="right")
    table.add_column("note")
    best = max((m.samples_per_s for m in result.measurements), default=0.0)
    crit = result.critical_batch_size
    for m in result.measurements:
        notes = []
        if m.samples_per_s == best:
            notes.append("fastest")
        if m.batch_size == result.search.largest:
            notes.append("largest that fits" if result.search.memory_bound else "largest tried")
        if (
            crit is not None
            and math.isfinite(crit)
            and pow2_floor(crit) <= m.batch_size < 2 * pow2_floor(crit)
            and m.power_of_two
        ):
            notes.append(f"B_crit ~ {crit:.0f}")
        vs = "" if m.vs_powers_of_two is None else f"{100 * (m.vs_powers_of_two - 1):+.0f}%"
        table.add_row(
            f"[bold]{m.batch_size}[/]" if m.power_of_two else str(m.batch_size),
            f"{1000 * m.step_s:,.1f}",
            f"{m.samples_per_s:,.0f}",
            vs,
            _fmt_bytes(m.peak_memory_bytes),
            ", ".join(notes),
        )
    return table


def summary_lines(result: ProbeResult) -> list[str]:
    """The findings in a few sentences, for the terminal and the space file's header."""
    s = result.search
    lines = []
    if s.memory_bound:
        lines.append(f"largest batch that fits: {s.largest} (fails at {s.first_failure}); micro-batch limit {s.limit}")
    else:
        lines.append(
            f"largest batch tried: {s.largest} (the bound: data set size or --max-batch-size); memory never ran out"
        )
    if result.memory_limit_bytes:
        lines.append(f"memory limit: {result.memory_limit_bytes / MIB:,.0f} MiB ({result.memory_limit_source})")
    if result.busy:
        lines.append(f"the machine was busy during the probe ({result.busy}): throughput figures are noisy")
    ratios = [m.vs_powers_of_two for m in result.measurements if m.vs_powers_of_two is not None]
    if ratios:
        mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))  # geometric: ratios
        lines.append(
            f"sizes between powers of two run at {100 * mean:.0f}% of the throughput interpolated from their "
            f"neighbouring powers of two (range {100 * min(ratios):.0f}% to {100 * max(ratios):.0f}%, {len(ratios)} sizes)"
        )
    if result.noise is not None:
        nz = result.noise
        lines.append(
            f"gradient noise scale B_simple = {nz.b_simple:.1f} (critical batch size estimate; averaged over "
            f"steps {nz.n_burn_in + 1} to {nz.n_steps} of training, micro-batches of {nz.b_small} in batches of {nz.b_big})"
        )
    sp = result.space
    lines.append(
        f"narrowed space: batch sizes {sp.batch_low} to {sp.batch_high}"
        + (f", micro-batch {sp.micro_batch_size} (gradient accumulation above it)" if sp.micro_batch_size else "")
    )
    return lines


def write_space(result: ProbeResult, path: str | Path) -> Path:
    """Write the narrowed space as a YAML file that ``bstune optimize --space FILE`` accepts.

    The findings go in comments at the top; the file is loaded back to check it.
    """
    import yaml

    p = Path(path)
    header = [f"Written by bstune probe for {result.task} on {result.device}.", *summary_lines(result)]
    header += [f"reason: {r}" for r in result.reasons]
    body = yaml.safe_dump(result.space.to_dict(), sort_keys=False, width=100)
    p.write_text("".join(f"# {h}\n" for h in header) + body, encoding="utf-8")
    load_space(p)
    return p


def plot_probe(result: ProbeResult, path: str | Path) -> Path:
    """Draw throughput and peak memory against batch size (log2 axis) to a PNG at ``path``.

    The largest batch that fits, the memory limit, the critical batch size and the narrowed batch
    range (with the part that needs gradient accumulation) are marked; a third panel shows how the
    noise-scale estimate settled over its steps. Needs matplotlib (imported here, not with bstune).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(10, 9.5))
    grid = fig.add_gridspec(3, 1, height_ratios=[3.2, 2.2, 1.4], hspace=0.08)
    ax1 = fig.add_subplot(grid[0])
    ax2 = fig.add_subplot(grid[1], sharex=ax1)
    ax3 = fig.add_subplot(grid[2])
    title = f"bstune probe: {result.task} on {result.device}, {result.n_train:,} training samples"
    if result.hp.params:
        title += "\nmodel: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.hp.params.items()
        )
    if result.busy:
        title += f"  (machine busy during the probe: {result.busy})"
    fig.suptitle(title, fontsize=11, x=0.07, y=0.985, ha="left")
    _throughput_panel(ax1, result)
    _memory_panel(ax2, result)
    _batch_marks(ax1, ax2, result)
    _noise_panel(ax3, result)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.91 if result.hp.params else 0.94, bottom=0.06)
    grid.update(hspace=0.12)
    fig.align_ylabels([ax1, ax2, ax3])
    # The third panel has its own x axis: set it apart from the two that share one.
    pos = ax3.get_position()
    ax3.set_position((pos.x0, pos.y0, pos.width, pos.height * 0.85))
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _throughput_panel(ax1: Any, result: ProbeResult) -> None:
    ms = result.measurements
    # Throughput: powers of two filled, sizes between them hollow.
    p2 = [m for m in ms if m.power_of_two]
    other = [m for m in ms if not m.power_of_two]
    ax1.plot([m.batch_size for m in p2], [m.samples_per_s for m in p2], color="C0", lw=1.2, alpha=0.6, zorder=2)
    ax1.scatter(
        [m.batch_size for m in p2], [m.samples_per_s for m in p2], s=40, color="C0", zorder=3, label="power of two"
    )
    ax1.scatter(
        [m.batch_size for m in other],
        [m.samples_per_s for m in other],
        s=40,
        facecolor="white",
        edgecolor="C1",
        lw=1.6,
        marker="s",
        zorder=3,
        label="between powers of two (2^k+1, 3·2^(k-1))",
    )
    if ms:
        best = max(ms, key=lambda m: m.samples_per_s)
        ax1.annotate(
            f"fastest: {best.batch_size}, {best.samples_per_s:,.0f}/s",
            (best.batch_size, best.samples_per_s),
            xytext=(0, -30),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color="0.2",
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.8},
        )
        ax1.set_ylim(0, best.samples_per_s * 1.15)
    ax1.set_ylabel("training samples / s")
    ax1.grid(True, alpha=0.3)
    ax1.tick_params(labelbottom=False)


def _memory_panel(ax2: Any, result: ProbeResult) -> None:
    from matplotlib.ticker import FuncFormatter

    ms = result.measurements
    # Memory: log-log, so the line is straight where memory grows with the batch.
    mem = [(m.batch_size, m.peak_memory_bytes / MIB) for m in ms if m.peak_memory_bytes]
    if mem:
        ax2.plot(
            [b for b, _ in mem],
            [v for _, v in mem],
            color="C2",
            marker="o",
            ms=4,
            lw=1.2,
            label="peak memory of a training step",
        )
    limit_mib = result.memory_limit_bytes / MIB if result.memory_limit_bytes else None
    top_mib = max((v for _, v in mem), default=1.0)
    if limit_mib is not None and limit_mib <= 30 * top_mib:
        ax2.axhline(
            limit_mib, color="C3", lw=1.6, label=f"memory limit: {limit_mib:,.0f} MiB ({result.memory_limit_source})"
        )
    elif limit_mib is not None:
        # A limit far above every peak would flatten the curve; name it instead of drawing it.
        ax2.text(
            0.99,
            0.95,
            f"memory limit {limit_mib:,.0f} MiB ({result.memory_limit_source}): "
            f"{limit_mib / top_mib:,.0f}x the largest peak, off the chart ↑",
            transform=ax2.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="C3",
        )
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if mem and max(v for _, v in mem) < 10 * min(v for _, v in mem):  # under a decade: label minor ticks
        ax2.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax2.set_ylabel("peak memory (MiB)")
    ax2.grid(True, which="major", alpha=0.3)


def _batch_marks(ax1: Any, ax2: Any, result: ProbeResult) -> None:
    """The narrowed range, the accumulation part, the largest batch, the critical batch, the x axis."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    s, sp = result.search, result.space
    xs = [m.batch_size for m in result.measurements]
    crit = result.critical_batch_size or 0.0
    crit_ok = math.isfinite(crit) and crit > 0
    for ax in (ax1, ax2):
        ax.axvspan(sp.batch_low, min(sp.batch_high, s.limit), color="C0", alpha=0.08, lw=0)
        if sp.batch_high > s.limit:
            ax.axvspan(
                s.limit,
                sp.batch_high,
                facecolor=(0.58, 0.40, 0.74, 0.08),
                edgecolor=(0.58, 0.40, 0.74, 0.35),
                lw=0,
                hatch="//",
            )
        ax.axvline(s.largest, color="C3", ls="-" if s.memory_bound else ":", lw=1.3)
        if crit_ok:
            ax.axvline(crit, color="C4", ls="--", lw=1.6)
    lo = min([*xs, sp.batch_low]) / 1.25
    hi = max([*xs, sp.batch_high, crit if crit_ok else 1.0]) * 1.25
    box = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85}
    ax2.text(
        s.largest,
        0.04,
        f"{'largest that fits' if s.memory_bound else 'largest tried'}: {s.largest} ",
        transform=ax2.get_xaxis_transform(),
        color="C3",
        ha="right",
        va="bottom",
        fontsize=8,
        bbox=box,
    )
    if crit_ok:
        right_half = math.log(crit / lo) > 0.5 * math.log(hi / lo)  # label on the side with room
        ax1.text(
            crit,
            0.97,
            f" critical batch ≈ {crit:.0f} (B_simple) ",
            transform=ax1.get_xaxis_transform(),
            color="C4",
            ha="right" if right_half else "left",
            va="top",
            fontsize=9,
            bbox=box,
        )
    handles, labels = ax1.get_legend_handles_labels()
    handles.append(Patch(color="C0", alpha=0.25, label=f"narrowed search: batch {sp.batch_low} to {sp.batch_high}"))
    if sp.batch_high > s.limit:
        handles.append(
            Patch(
                facecolor=(0.58, 0.40, 0.74, 0.08),
                edgecolor=(0.58, 0.40, 0.74, 0.5),
                hatch="//",
                label=f"gradient accumulation (micro-batch {s.limit})",
            )
        )
    ax1.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.95)
    ax2.legend(loc="upper left", fontsize=8, framealpha=0.95)

    ax2.set_xscale("log", base=2)
    ax2.set_xlim(lo, hi)
    ticks = [2**k for k in range(64) if lo <= 2**k <= hi]
    ax2.xaxis.set_major_locator(FixedLocator(ticks))
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}"))
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.set_xlabel("batch size (log2 scale)")


def _noise_panel(ax3: Any, result: ProbeResult) -> None:
    from matplotlib.ticker import MaxNLocator

    # How the noise-scale estimate settled.
    nz = result.noise
    if nz is not None and nz.running:
        steps = list(range(1, len(nz.running) + 1))
        finite = [(i, v) for i, v in zip(steps, nz.running, strict=True) if math.isfinite(v) and v > 0]
        if finite:
            ax3.plot(
                [i for i, _ in finite], [v for _, v in finite], color="C4", marker=".", lw=1.2, label="moving estimate"
            )
        if nz.n_burn_in:
            ax3.axvspan(0.5, nz.n_burn_in + 0.5, color="0.5", alpha=0.12, lw=0, label="left out (burn-in)")
        if math.isfinite(nz.b_simple):
            ax3.hlines(
                nz.b_simple,
                nz.n_burn_in + 0.5,
                nz.n_steps + 0.5,
                color="C4",
                ls="--",
                lw=1.2,
                label=f"estimate: {nz.b_simple:.0f}",
            )
        ax3.set_xlim(0.5, nz.n_steps + 0.5)
        ax3.legend(loc="upper left", fontsize=8, framealpha=0.95)
        ax3.set_xlabel(f"noise-scale training step (batches of {nz.b_big}, micro-batches of {nz.b_small})")
        ax3.set_ylabel("B_simple")
        ax3.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax3.grid(True, alpha=0.3)
    else:
        ax3.text(0.5, 0.5, "noise scale not measured", ha="center", va="center", transform=ax3.transAxes)
        ax3.set_axis_off()
