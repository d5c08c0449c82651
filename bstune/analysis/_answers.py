"""Short answers to the questions people bring, each with the figure it rests on, from a report.

The questions: which configuration to use and how sure that is; whether smaller batches hurt;
whether batch size matters at equal training time; whether the learning rate follows the batch
size; whether powers of two run faster than their neighbours. Where the study cannot tell, the
answer says so and why, instead of reading a ranking into single runs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from bstune.analysis._confirmations import pooled_variance
from bstune.analysis._report import Answer

if TYPE_CHECKING:
    from bstune.analysis._report import Report, TrialSummary

__all__ = ["Answer", "answer_questions"]

#: The least number of batch sizes with finished trials from which the exponent is fitted.
MIN_BATCH_SIZES_FOR_SCALING = 3


def _cfg(s: TrialSummary) -> str:
    parts = [f"batch {s.batch_size}" if s.batch_size is not None else None,
             f"learning rate {s.learning_rate:.2e}" if s.learning_rate is not None else None,
             f"{s.epochs} epochs" if s.epochs is not None else None]
    return ", ".join(p for p in parts if p) + f" (trial #{s.number})" if any(parts) else f"trial #{s.number}"


def _against_best(rest: list[Any], *, close: Any, behind: Any, how: str = "") -> str:
    """The sentences that sort the rows after the best into within noise of it and behind it
    (``within_noise`` set on each), each row written by ``close`` or ``behind``."""
    near = [x for x in rest if x.within_noise]
    far = [x for x in rest if not x.within_noise]
    text = f" Within noise of it{how}: " + "; ".join(close(x) for x in near) + "." if near else ""
    if far:
        text += " Behind it by more than the noise: " + "; ".join(behind(x) for x in far) + "."
    return text


def _confirmed(r: Report, q: str) -> Answer:
    m = r.metric_name
    unit = " s" if r.mode == "target" else ""
    best, rest = r.confirmations[0], r.confirmations[1:]

    def band(c: Any) -> str:
        sd = f" ± {c.std:.2g}" if math.isfinite(c.std) else ""
        return f"{c.mean:.4g}{unit}{sd} over {len(c.values)} seeds"

    what = f"time to {m} {r.target:g}" if r.mode == "target" else m
    text = f"Use batch {best.batch_size}, learning rate {best.learning_rate:.2e}, {best.epochs} epochs (trial #{best.trial}): mean {what} {band(best)}."
    text += _against_best(rest, close=lambda c: f"#{c.trial} (batch {c.batch_size}, {band(c)})",
                          behind=lambda c: f"#{c.trial} ({band(c)})", how=" (less than two standard errors apart)")
    if any(c.missed for c in r.confirmations):
        text += " Runs that missed the target are left out of the means and counted in the table."
    return Answer(q, text, "Confirmed configurations")


def _configuration(r: Report) -> Answer:
    m = r.metric_name
    done = [s for s in r.trials if s.state == "complete" and s.feasible and math.isfinite(s.metric)]
    if r.mode == "target":
        q = f"Which configuration reaches {m} {r.target:g} soonest?"
        hits = sorted((s for s in done if s.stop_reason == "target"), key=lambda s: s.time_s)
        if not hits:
            return Answer(q, f"None yet: no finished trial reached {m} {r.target:g}.", "Best configurations")
        best, rest = hits[0], hits[1:]
        text = f"Use {_cfg(best)}: {best.time_s:.3g} s of training to reach it."
        if rest:
            text += f" The runner-up, #{rest[0].number}, took {rest[0].time_s:.3g} s."
    else:
        budget = f"within {r.budget_s:g} s" if r.budget_s else ""
        q = f"Which configuration gives the best {m} {budget}?".replace("  ", " ")
        ranked = sorted(done, key=lambda s: s.metric, reverse=r.maximize)
        if not ranked:
            return Answer(q, "None yet: no trial finished with a feasible value.", "Best configurations")
        best, rest = ranked[0], ranked[1:]
        text = f"Use {_cfg(best)}: {m} {best.metric:.4g}."
        if rest:
            text += f" The runner-up, #{rest[0].number} (batch {rest[0].batch_size}), reached {rest[0].metric:.4g}, {abs(best.metric - rest[0].metric):.2g} lower."
    if r.confirmations:
        return _confirmed(r, q)
    ran = next((x for x in (r.design.results if r.design is not None else []) if best.number in x.trials), None)
    if ran is not None and len(ran.values) > 1:
        unit = " s" if r.mode == "target" else ""
        return Answer(q, text + f" How sure: the batch-size study trained this configuration {len(ran.values)} times: "
                      f"mean {_band(ran.mean, ran.std, len(ran.values), unit)}.", "Best configurations")
    text += (
        " How sure: this ranking is from single runs; seed-to-seed noise is not measured until the best few"
        " are trained again with other seeds (bstune optimize --confirm K, or bstune confirm)."
    )
    return Answer(q, text, "Best configurations")


def _smaller_batches(r: Report, probe: dict[str, Any] | None) -> Answer:
    m = r.metric_name
    q = f"Do smaller batches hurt {m} here?"
    rows = [b for b in r.batch_sizes if b.best_trial is not None and math.isfinite(b.best_metric)]
    fits = ""
    if probe and probe.get("largest_batch"):
        fits = f" The largest batch that fits in memory is {probe['largest_batch']} (probe)."
    if len(rows) < 2:
        return Answer(q, f"Cannot tell: finished trials at {len(rows)} batch size(s), two or more are needed.{fits}",
                      "Batch-size effects")
    best = max(rows, key=lambda b: b.best_metric) if r.maximize else min(rows, key=lambda b: b.best_metric)
    smallest = rows[0]
    per = ", ".join(f"{b.batch_size}: {b.best_metric:.4g}" for b in rows)
    if smallest.batch_size == best.batch_size:
        verdict = f"No: the smallest batch with a finished trial, {smallest.batch_size}, reached the best {m}."
    else:
        gap = abs(best.best_metric - smallest.best_metric)
        verdict = (
            f"The smallest batch with a finished trial, {smallest.batch_size}, reached {smallest.best_metric:.4g}, {gap:.2g} "
            f"{'below' if r.maximize else 'above'} the best (batch {best.batch_size})."
        )
    noise = ""
    sd = seed_noise(r)
    if sd is not None:
        spread = max(b.best_metric for b in rows) - min(b.best_metric for b in rows)
        band = 2 * sd * math.sqrt(2)  # two standard deviations of a difference between two single runs
        noise = (f" Seed noise, measured on the confirmed configurations: standard deviation {sd:.2g}, so a gap "
                 f"below about {band:.2g} between two single runs is within noise; these bests span {spread:.2g}, "
                 f"{'within' if spread <= band else 'beyond'} it.")
    else:
        noise = " Seed noise is not measured yet (--confirm K trains the best again with other seeds)."
    return Answer(q, f"{verdict} Best {m} per batch size, one run each at the best learning rate the search tried "
                  f"there: {per}.{fits}{noise}{_SETTLE}", "Batch-size effects")


def seed_noise(r: Report) -> float | None:
    """The standard deviation between seeds, pooled over the confirmed configurations (None if unmeasured)."""
    pooled = pooled_variance([c.std for c in r.confirmations])
    return math.sqrt(pooled) if math.isfinite(pooled) and r.mode != "target" else None


def _equal_time(r: Report) -> Answer:
    m = r.metric_name
    q = "Does batch size matter at equal examples seen, equal steps and equal training time?"
    eq = r.equal_footing
    if eq is None:
        n = len([b for b in r.batch_sizes if b.best_trial is not None])
        return Answer(q, f"Cannot tell: finished trials at {n} batch size(s), two or more are needed.",
                      "Batch sizes at equal training")
    parts = []
    for what, amount, attr in (("examples seen", f"{eq.examples:,.0f}", "at_examples"),
                               ("steps", f"{eq.steps:,.0f}", "at_steps"),
                               ("s of training", f"{eq.time_s:.3g}", "at_time")):
        vals = [(getattr(x, attr), x.batch_size) for x in eq.rows if math.isfinite(getattr(x, attr))]
        if len(vals) < 2:
            parts.append(f"at {amount} {what}, fewer than two curves reach that far")
            continue
        vals.sort(reverse=r.maximize)
        (top, b_top), (low, _) = vals[0], vals[-1]
        parts.append(f"at {amount} {what}, batch {b_top} leads with {top:.4g} ({m} spans {abs(top - low):.2g} "
                     f"across {len(vals)} batch sizes)")
    text = "; ".join(parts) + "."
    text = text[0].upper() + text[1:]
    target = r.time_to_target_target
    reach = [b for b in r.batch_sizes if b.best_trial is not None and math.isfinite(b.time_to_target_s)]
    if target is not None and reach:
        fastest = min(reach, key=lambda b: b.time_to_target_s)
        text += f" Batch {fastest.batch_size} reaches {m} {target:.4g} soonest ({fastest.time_to_target_s:.3g} s)."
    return Answer(q, text, "Batch sizes at equal training")


def _t975(dof: int) -> float:
    from scipy.stats import t  # scikit-learn's own dependency

    return float(t.ppf(0.975, dof))


def _lr_scaling(r: Report) -> Answer:
    q = "Does the learning rate have to follow the batch size?"
    fit = r.lr_scaling
    n = len(set(fit.batch_sizes)) if fit is not None else len([b for b in r.batch_sizes if b.best_trial is not None])
    if fit is None or n < MIN_BATCH_SIZES_FOR_SCALING or not math.isfinite(fit.stderr):
        return Answer(
            q,
            f"Not enough evidence: finished trials at {n} batch size(s); the exponent of learning rate against "
            f"batch size is fitted from at least {MIN_BATCH_SIZES_FOR_SCALING}.",
            "Batch-size effects",
        )
    # Learning rates tried to the end per batch size (confirmation runs repeat a rate: they count once).
    rates: dict[int, set[float]] = {}
    for t in r.trials:
        if t.state == "complete" and t.batch_size is not None and t.learning_rate is not None:
            rates.setdefault(t.batch_size, set()).add(round(t.learning_rate, 12))
    if all(len(rates.get(b, ())) < 2 for b in fit.batch_sizes):
        return Answer(
            q,
            f"Not enough evidence: each of the {n} batch sizes has one learning rate among its finished trials, "
            f"so its best learning rate is the only one tried there; the fitted exponent ({fit.exponent:.2f}) "
            "describes the search, not the model." + _SETTLE,
            "Batch-size effects",
        )
    half = _t975(len(fit.batch_sizes) - 2) * fit.stderr
    lo, hi = fit.exponent - half, fit.exponent + half
    rules = [name for k, name in ((0.0, "no scaling (0)"), (0.5, "square-root scaling (0.5)"), (1.0, "linear scaling (1)"))
             if lo <= k <= hi]
    if len(rules) == 3:
        fits = "no, square-root and linear scaling all lie inside it, so this study cannot tell them apart"
    else:
        fits = ("consistent with " + " and ".join(rules)) if rules else "none of no, square-root or linear scaling"
    return Answer(
        q,
        f"The best learning rate per batch size goes as batch^{fit.exponent:.2f} (95% interval {lo:.2f} to {hi:.2f}, "
        f"{len(fit.batch_sizes)} batch sizes, one run each): {fits}." + _SETTLE,
        "Batch-size effects",
    )


def _powers_of_two(probe: dict[str, Any] | None, r: Report | None = None) -> Answer:
    q = "Do powers of two run faster than their neighbours on this hardware?"
    thr = {int(k): float(v) for k, v in ((probe or {}).get("throughput") or {}).items() if v}
    source = "probe"
    if r is not None and not thr:  # the trials' own median throughput, where they measured neighbours
        thr = {b.batch_size: float(b.throughput) for b in r.batch_sizes if b.throughput}
        source = "trials"
    if not thr or (source == "trials" and all(b & (b - 1) == 0 for b in thr)):
        return Answer(q, "Not measured: run bstune probe (or bstune optimize --probe) to measure throughput.", "probe")
    pow2 = sorted(b for b in thr if b & (b - 1) == 0)
    others = [b for b in sorted(thr) if b & (b - 1) and any(p < b for p in pow2) and any(p > b for p in pow2)]
    if not others:
        return Answer(q, f"Cannot tell: the {source} measured only powers of two.", "probe")
    parts = []
    for b in others:
        lo, hi = max(p for p in pow2 if p < b), min(p for p in pow2 if p > b)
        expected = math.exp(math.log(thr[lo]) + (math.log(thr[hi]) - math.log(thr[lo])) * math.log(b / lo) / math.log(hi / lo))
        parts.append(f"{b}: {thr[b] / expected - 1:+.0%} against {lo} and {hi}")
    where = "" if source == "probe" else " (the trials' median throughput)"
    return Answer(q, f"Samples per second of batches between powers of two{where}, against the line between their "
                  "neighbours: " + "; ".join(parts) + ".", "probe")


_SETTLE = (" A batch-size study (bstune study-batch SCRIPT: each batch size at its own best learning rate, "
           "with seeds) would settle it.")


def _band(mean: float, std: float, n: int, unit: str = "") -> str:
    sd = f" ± {std:.2g}" if math.isfinite(std) else ""
    return f"{mean:.4g}{unit}{sd} ({n} run{'s' if n != 1 else ''})"


def _design_unfinished(r: Report) -> str:
    d = r.design
    assert d is not None
    if not d.unfinished:
        return ""
    rerun = [u for u in d.unfinished if "no best rate" not in u]
    text = " The batch-size study is not complete (" + "; ".join(d.unfinished) + ")"
    return text + (": run the same bstune study-batch command again to finish it." if rerun else ".")


def _design_batches(r: Report) -> Answer:
    """Smaller batches, from the batch-size study: each batch size at its own best rate, with seeds."""
    d = r.design
    assert d is not None
    m = r.metric_name
    q = f"Do smaller batches hurt {m} here, each batch size at its own best learning rate?"
    ev = "Batch-size study"
    if not d.results:
        return Answer(q, "Not yet: no batch size has finished runs at its chosen learning rate." + _design_unfinished(r), ev)
    target_mode = r.mode == "target"
    unit = " s" if target_mode else ""
    best = next(x for x in d.results if x.within_noise is None)
    rest = [x for x in d.results if x.within_noise is not None]
    what = f"time to {m} {r.target:g}" if target_mode else (
        f"best {m} in {r.budget_s:g} s of training" if r.budget_s else f"best {m}")
    text = (f"Batch {best.batch_size} does best: {what} {_band(best.mean, best.std, len(best.values), unit)} "
            f"at learning rate {best.learning_rate:.2e}.")
    def one(x: Any) -> str:
        return f"batch {x.batch_size} {_band(x.mean, x.std, len(x.values), unit)}"

    text += _against_best(rest, close=one, behind=one)
    if math.isfinite(d.pooled_std):
        text += f" Seed noise (pooled standard deviation): {d.pooled_std:.2g}{unit}."
    smallest = d.results[0]
    if smallest.batch_size != best.batch_size:
        verdict = "no, within noise" if smallest.within_noise else "yes"
        text += f" So does the smallest batch, {smallest.batch_size}, do worse? {verdict.capitalize()}."
    else:
        text += f" The smallest batch studied, {smallest.batch_size}, is the best: smaller batches do not hurt here."
    if not target_mode and math.isfinite(d.examples):
        at = [x for x in d.results if math.isfinite(x.at_examples)]
        if len(at) >= 2:
            text += (f" At equal examples seen ({d.examples:,.0f}, what the slowest batch size saw in the budget), "
                     f"the mean best {m} is " + ", ".join(f"{x.batch_size}: {x.at_examples:.4g}" for x in at) + ".")
    if target_mode:
        missed = [x for x in d.results if x.missed]
        if missed:
            text += " Runs that missed the target (left out of the means): " + ", ".join(
                f"batch {x.batch_size}: {x.missed}" for x in missed) + "."
    return Answer(q, text + _design_unfinished(r), ev)


def _design_lr(r: Report) -> Answer:
    """The learning-rate rule, from the batch-size study."""
    d = r.design
    assert d is not None
    q = "Does the learning rate have to follow the batch size?"
    ev = "Batch-size study"
    peaks = ", ".join(
        f"{p.batch_size}: {p.learning_rate:.2e}" + (f" ({p.low:.2e} to {p.high:.2e})" if math.isfinite(p.low) else "")
        for p in d.peaks if p.bracketed)
    edge = [p for p in d.peaks if not p.bracketed]
    edges = ""
    if edge:
        at_bound = [p for p in edge if any(math.isclose(p.learning_rate, x, rel_tol=1e-6)
                                           for x in d.lr_range.get(p.batch_size, ()))]
        edges = (" Not bracketed (the parabola through the best rate and its neighbours peaks beyond the rates "
                 "tried): " + ", ".join(f"batch {p.batch_size} at {p.learning_rate:.2e}" for p in edge) + "; "
                 + ("the best is the space's own bound, so widen its learning_rate range to place it."
                    if at_bound else "its peak may lie beyond the rates tried there."))
    law = d.law
    if d.flat and len(d.flat) >= max(2, len(d.batch_sizes) - 1):
        spans = "; ".join(f"batch {b}: {lo:.2e} to {hi:.2e}, values within {spread:.2g}"
                          for b, (lo, hi, spread) in d.flat.items())
        return Answer(q, "Hardly, within the rates tried: at most batch sizes every learning rate tried reached "
                      f"within seed noise ({d.pooled_std:.2g}) of the best ({spans}), so no best rate can be placed "
                      "and no exponent read from them. Any rate in those ranges does as well here; a shorter "
                      "--time-budget or a harder task is where the rate starts to matter." + edges
                      + _design_unfinished(r), ev)
    if law is None:
        n = sum(1 for p in d.peaks if p.bracketed)
        return Answer(q, f"Not yet: the exponent needs three batch sizes with their best learning rate bracketed; "
                      f"{n} so far{(': ' + peaks) if peaks else ''}.{edges}" + _design_unfinished(r), ev)
    rules = [(0.0, "no scaling (0)"), (0.5, "square-root scaling (0.5)"), (1.0, "linear scaling (1)")]
    inside = [name for k, name in rules if law.low <= k <= law.high]
    outside = [name for k, name in rules if not law.low <= k <= law.high]
    if not inside:
        verdict = "none of no, square-root or linear scaling"
    elif len(inside) == 3:
        verdict = "no, square-root and linear scaling all lie inside it: this study cannot tell them apart"
    else:
        verdict = "consistent with " + " and ".join(inside) + "; it rules out " + " and ".join(outside)
    follows = "Yes" if law.low > 0 else ("No" if law.high < 0.25 and law.low < 0 else "Cannot tell whether")
    head = {"Yes": "Yes: ", "No": "No: ", "Cannot tell whether": ""}[follows]
    if d.flat:
        edges += (" At " + ", ".join(f"batch {b}" for b in d.flat) + " the rates tried reached within seed noise of "
                  "one another (two standard deviations of a difference of single runs), so that best rate rests on "
                  "small differences.")
    text = (f"{head}the best learning rate goes as batch^{law.exponent:.2f} (95% interval {law.low:.2f} to "
            f"{law.high:.2f}, from {len(law.batch_sizes)} batch sizes, each with its own learning-rate search): "
            f"{verdict}. Best rate per batch size (95% interval): {peaks}.")
    if law.peak_batch is not None:
        text += (f" The best rate rises and then falls, highest near batch {law.peak_batch:.0f} (Li et al. 2024 "
                 "report this shape for Adam): one exponent describes it poorly.")
    elif law.lack_of_fit_p is not None and law.lack_of_fit_p < 0.05:
        text += f" One power law fits these rates poorly (lack-of-fit p = {law.lack_of_fit_p:.2g})."
    return Answer(q, text + edges + _design_unfinished(r), ev)


def _design_steps(r: Report) -> Answer:
    """Target mode: steps to the target per batch size (Shallue et al. 2018, figure 1)."""
    d = r.design
    assert d is not None
    q = f"How many optimizer steps to {r.metric_name} {r.target:g} does each batch size need?"
    rows = [x for x in d.results if math.isfinite(x.steps)]
    if len(rows) < 2:
        return Answer(q, "Not yet: fewer than two batch sizes reached the target at their chosen rate." + _design_unfinished(r),
                      "Batch-size study")
    from bstune.analysis._design import STOPS_PAYING_SLOPE, scaling_slopes

    text = "Mean steps to the target at each batch size's own best rate: " + ", ".join(
        f"{x.batch_size}: {x.steps:,.0f}" for x in rows) + ". Steps fall as " + ", ".join(
        f"batch^-{k:.2f} from {a} to {b}" for a, b, k in scaling_slopes(rows)) + " (perfect scaling: batch^-1)."
    if d.stops_paying is not None:
        text += (f" Past batch {d.stops_paying}, a larger batch no longer buys fewer steps (they fall at less than "
                 f"batch^-{STOPS_PAYING_SLOPE:g}): more batch there costs compute and saves little time.")
    else:
        text += f" Every larger batch studied still bought fewer steps (at batch^-{STOPS_PAYING_SLOPE:g} or faster)."
    return Answer(q, text, "Batch-size study")


def answer_questions(r: Report, probe: dict[str, Any] | None = None) -> list[Answer]:
    """The short answers for report ``r`` (``probe``: the probe facts stored on the study, if any).

    A study holding a batch-size study (``bstune.design``) answers the batch-size and
    learning-rate questions from it; otherwise from the search's trials, saying what would settle them.
    """
    if not r.trials:
        return []
    if r.design is not None:
        design = [_design_batches(r), _design_lr(r)] + ([_design_steps(r)] if r.mode == "target" else [])
        return [_configuration(r), *design, _equal_time(r), _powers_of_two(probe, r)]
    return [_configuration(r), _smaller_batches(r, probe), _equal_time(r), _lr_scaling(r), _powers_of_two(probe, r)]
