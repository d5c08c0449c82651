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


def _confirmed(r: Report, q: str) -> Answer:
    m = r.metric_name
    unit = " s" if r.mode == "target" else ""
    best, rest = r.confirmations[0], r.confirmations[1:]

    def band(c: Any) -> str:
        sd = f" ± {c.std:.2g}" if math.isfinite(c.std) else ""
        return f"{c.mean:.4g}{unit}{sd} over {len(c.values)} seeds"

    what = f"time to {m} {r.target:g}" if r.mode == "target" else m
    text = f"Use batch {best.batch_size}, learning rate {best.learning_rate:.2e}, {best.epochs} epochs (trial #{best.trial}): mean {what} {band(best)}."
    close = [c for c in rest if c.within_noise]
    behind = [c for c in rest if not c.within_noise]
    if close:
        text += " Within noise of it (less than two standard errors apart): " + "; ".join(
            f"#{c.trial} (batch {c.batch_size}, {band(c)})" for c in close) + "."
    if behind:
        text += " Behind it by more than the noise: " + "; ".join(f"#{c.trial} ({band(c)})" for c in behind) + "."
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
    return Answer(q, f"{verdict} Best {m} per batch size, one run each at its best learning rate: {per}.{fits}{noise}",
                  "Batch-size effects")


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
            "describes the search, not the model. Trials at two or more learning rates per batch size would tell.",
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
        f"{len(fit.batch_sizes)} batch sizes, one run each): {fits}.",
        "Batch-size effects",
    )


def _powers_of_two(probe: dict[str, Any] | None) -> Answer:
    q = "Do powers of two run faster than their neighbours on this hardware?"
    thr = {int(k): float(v) for k, v in ((probe or {}).get("throughput") or {}).items() if v}
    if not thr:
        return Answer(q, "Not measured: run bstune probe (or bstune optimize --probe) to measure throughput.", "probe")
    pow2 = sorted(b for b in thr if b & (b - 1) == 0)
    others = [b for b in sorted(thr) if b & (b - 1) and any(p < b for p in pow2) and any(p > b for p in pow2)]
    if not others:
        return Answer(q, "Cannot tell: the probe measured only powers of two.", "probe")
    parts = []
    for b in others:
        lo, hi = max(p for p in pow2 if p < b), min(p for p in pow2 if p > b)
        expected = math.exp(math.log(thr[lo]) + (math.log(thr[hi]) - math.log(thr[lo])) * math.log(b / lo) / math.log(hi / lo))
        parts.append(f"{b}: {thr[b] / expected - 1:+.0%} against {lo} and {hi}")
    return Answer(q, "Samples per second of batches between powers of two, against the line between their neighbours: "
                  + "; ".join(parts) + ".", "probe")


def answer_questions(r: Report, probe: dict[str, Any] | None = None) -> list[Answer]:
    """The short answers for report ``r`` (``probe``: the probe facts stored on the study, if any)."""
    if not r.trials:
        return []
    return [_configuration(r), _smaller_batches(r, probe), _equal_time(r), _lr_scaling(r), _powers_of_two(probe)]
