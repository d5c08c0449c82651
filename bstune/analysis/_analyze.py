"""What a study says: fronts, a recommendation per budget, batch-size effects, importance.

``analyze`` reads a study once and returns a ``Report`` of plain data (named tuples and
numbers); ``bstune.analysis._format``, ``bstune.analysis._plotly`` and
``bstune.analysis._matplotlib`` only format or draw it.

Definitions, in the study's own terms:

* Time is training seconds (the ``train_s`` user attribute), or wall seconds for a study made with
  ``clock="wall"``. A trial's metric is the best finite validation metric on its learning curve
  (the ``curve`` user attribute); in target mode the value Optuna sees is a time, so the metric
  comes from the curve too.
* The front is the Pareto front of (time, metric) over finished (complete) trials: a configuration
  as it was run, schedule and all. The anytime front is the front over every point of every curve,
  pruned and failed trials included: for each elapsed time, the best metric observed by then.
* The hypervolume is the area each front dominates up to a reference point: the slowest time seen
  (the budget, in time-budget mode, if larger) and the worst metric seen. Both fronts share it, so
  the two numbers compare.
* Points with a NaN time or metric are left out of every front; trials without a curve count only
  where their facts are known.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna

from bstune.analysis._answers import answer_questions
from bstune.analysis._confirmations import confirmations
from bstune.analysis._design import DESIGN_ATTR, read_design
from bstune.analysis._disturbed import disturbed_trials
from bstune.analysis._equal import equal_footing
from bstune.analysis._pareto import hypervolume_2d, pareto_indices
from bstune.analysis._report import BatchSizeRow, FrontPoint, Recommendation, Report, TrialSummary
from bstune.analysis._scaling import fit_scaling
from bstune.errors import BstuneError, check, invalid
from bstune.objectives import Mode, Target, TimeBudget, better, is_feasible, mode_from_attrs
from bstune.run import curve_from_attrs

__all__ = ["analyze", "default_budgets"]


def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x)


def _opt_num(x: Any) -> float | None:
    v = _num(x)
    return v if math.isfinite(v) else None


def _opt_int(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _summarize(t: optuna.trial.FrozenTrial, clock: str, maximize: bool, budget_mode: bool) -> TrialSummary:
    ua = t.user_attrs
    curve = curve_from_attrs(t)
    times = tuple(p.wall_s if clock == "wall" else p.train_s for p in curve)
    metrics = tuple(p.metric for p in curve)
    best = math.nan
    for m in metrics:
        if math.isfinite(m) and better(m, best, maximize=maximize):
            best = m
    if math.isnan(best) and budget_mode and t.value is not None:
        best = _num(t.value)  # a study without curves: the value is the metric
    time_s = _num(ua.get("wall_s" if clock == "wall" else "train_s"))
    if not math.isfinite(time_s):
        finite = [x for x in times if math.isfinite(x)]
        if finite:
            time_s = max(finite)
        elif t.datetime_start is not None and t.datetime_complete is not None:
            time_s = (t.datetime_complete - t.datetime_start).total_seconds()
    state = t.state.name.lower()
    return TrialSummary(
        number=t.number,
        state=state,
        stop_reason=str(ua.get("stop_reason", state)),
        batch_size=_opt_int(ua.get("batch_size")),
        learning_rate=_opt_num(ua.get("learning_rate")),
        epochs=_opt_int(ua.get("planned_epochs", t.params.get("epochs"))),
        epochs_done=_opt_num(ua.get("epochs_done")),
        time_s=time_s,
        metric=best,
        throughput=_opt_num(ua.get("throughput")),
        feasible=is_feasible(t),
        curve_time_s=times,
        curve_metric=metrics,
        curve_samples=tuple(float(p.samples_seen) for p in curve),
    )


def default_budgets(times: Sequence[float], n: int = 5, span: float = 8.0) -> list[float]:
    """``n`` budgets spread geometrically from the fastest of ``times`` (or the slowest over
    ``span``, if that is sooner) to the slowest, rounded up to 3 significant figures so that the
    slowest time fits its budget.

    In time-budget mode every trial runs about as long as the budget, so the smaller budgets are
    answered by the anytime front (the best curve point by then).

    Examples:
        >>> default_budgets([1.0, 16.0], n=5)
        [1.0, 2.0, 4.0, 8.0, 16.0]
        >>> default_budgets([7.5, 8.0], n=4)
        [1.0, 2.0, 4.0, 8.0]
    """
    finite = sorted(t for t in times if math.isfinite(t) and t > 0)
    if not finite:
        return []
    lo, hi = min(finite[0], finite[-1] / span), finite[-1]
    if hi <= lo * (1 + 1e-9) or n == 1:
        return [_round_up(hi)]
    raw = [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    return sorted({_round_up(x) for x in raw})


def _round_up(x: float) -> float:
    scale = 10 ** (math.floor(math.log10(x)) - 2)
    return round(math.ceil(x / scale - 1e-9) * scale, 12)


def _time_to(curve_t: Sequence[float], curve_m: Sequence[float], target: float, maximize: bool) -> float:
    for t, m in zip(curve_t, curve_m, strict=True):
        if math.isfinite(t) and math.isfinite(m) and (m >= target if maximize else m <= target):
            return t
    return math.nan


def _importance(study: optuna.Study, n_complete: int) -> tuple[dict[str, float], str | None]:
    if n_complete < 2:
        return {}, "parameter importance needs at least two finished trials"
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # A parameter held fixed (the batch-size study holds all but batch size and learning rate)
    # explains nothing; left in, the forest would still give it a share.
    varied = [k for k in {k for t in done for k in t.params}
              if len({repr(t.params.get(k)) for t in done}) > 1]
    if not varied:
        return {}, "parameter importance: no parameter varied across the finished trials"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, params=sorted(varied))
    except Exception as e:  # importance is an extra; a study it cannot read still gets its report
        return {}, f"parameter importance could not be computed ({type(e).__name__}: {e})"
    out = {k: float(v) for k, v in imp.items() if math.isfinite(v)}
    if not out:
        return {}, "parameter importance: no parameter varied across the finished trials"
    return out, None


def _point(s: TrialSummary, time_s: float, metric: float, epochs_done: float | None) -> FrontPoint:
    return FrontPoint(
        trial=s.number,
        time_s=time_s,
        metric=metric,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        epochs=s.epochs,
        epochs_done=epochs_done,
        state=s.state,
    )


def analyze(
    study: optuna.Study,
    *,
    budgets: Sequence[float] | None = None,
    target: float | None = None,
    importance: bool = True,
) -> Report:
    """Read ``study`` and return its ``Report``.

    Args:
        study: A single-objective study, best made by bstune (its mode, clock and curves are read
            from the study's and trials' user attributes; other studies fall back to trial values
            and durations).
        budgets: Seconds for which to recommend a configuration; by default five budgets spread
            geometrically over the finished trials' times.
        target: The metric for time-to-target against batch size; by default the study's target
            (target mode), else the median over batch sizes of their best metric (so the smaller
            half of the batch sizes shows where larger batches stop paying).
        importance: Compute parameter importance (Optuna's default evaluator).

    Raises:
        BstuneError: The study has several objectives.

    Examples:
        >>> import optuna
        >>> analyze(optuna.create_study()).messages
        ['the study has no trials yet']
    """
    _check_arguments(study, budgets, target)
    attrs = study.user_attrs
    mode = mode_from_attrs(attrs)
    if mode is not None:
        maximize = mode.metric_direction == "maximize"
        metric_name, clock = mode.metric_name, mode.clock
    else:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        metric_name, clock = "objective value", "train"
    budget_mode = mode is None or isinstance(mode, TimeBudget)
    study_target = mode.target if isinstance(mode, Target) else None
    direction = "maximize" if maximize else "minimize"
    all_trials = study.get_trials(deepcopy=False)
    summaries = [_summarize(t, clock, maximize, budget_mode) for t in all_trials]
    messages: list[str] = []
    states = dict(Counter(s.state for s in summaries))
    reasons = dict(Counter(s.stop_reason for s in summaries))
    if not summaries:
        messages.append("the study has no trials yet")

    finished = [s for s in summaries if s.state == "complete" and math.isfinite(s.time_s) and math.isfinite(s.metric)]
    if summaries and not finished:
        what = ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
        messages.append(f"no finished trial with a measured time and metric ({what}): the front is empty")

    front, anytime, flat, reference, hv, a_hv = _fronts(summaries, finished, mode, maximize)
    recs = _recommend(finished, flat, budgets, maximize)
    # A trial that trained far slower than its batch size's others measured the busy machine, not
    # the batch size: the batch-size answers rest on the others.
    disturbed = disturbed_trials(all_trials)
    clean = [s for s in summaries if s.number not in disturbed]
    for d in disturbed.values():
        messages.append(
            f"trial #{d.trial} (batch {d.batch_size}) trained at {d.throughput:,.0f} samples/s, {d.ratio:.2f} of the "
            f"{d.reference:,.0f} its batch size's {d.others} other trials reached: it was disturbed (the machine was "
            "busy), so the batch-size answers leave it out")
    rows, tt_target = _batch_sizes(clean, target if target is not None else study_target, maximize)
    best_rows = [r for r in rows if r.best_learning_rate is not None]
    fit = fit_scaling([r.batch_size for r in best_rows], [r.best_learning_rate or 0.0 for r in best_rows])
    if rows and fit is None:
        messages.append("the learning-rate scaling exponent needs finished trials at two batch sizes or more")
    imp: dict[str, float] = {}
    if importance and summaries:
        imp, why = _importance(study, sum(1 for s in summaries if s.state == "complete"))
        if why:
            messages.append(why)

    report = Report(
        study_name=study.study_name, mode=mode.kind if mode is not None else None, metric_name=metric_name,
        metric_direction=direction, clock=clock, budget_s=mode.budget if isinstance(mode, TimeBudget) else None,
        target=study_target, time_to_target_target=tt_target, n_trials=len(summaries), states=states,
        stop_reasons=reasons, trials=summaries, front=front, anytime_front=anytime, reference=reference,
        hypervolume=hv, anytime_hypervolume=a_hv, recommendations=recs, batch_sizes=rows, lr_scaling=fit,
        importance=imp, messages=messages,
    )
    report.equal_footing = equal_footing(clean, rows)
    report.disturbed = list(disturbed.values())
    report.confirmations = confirmations(all_trials, summaries, maximize=maximize if budget_mode else False,
                                          target_mode=not budget_mode)
    plan = attrs.get(DESIGN_ATTR)
    if isinstance(plan, dict):
        kept = [(t, s) for t, s in zip(all_trials, summaries, strict=True) if s.number not in disturbed]
        report.design = read_design([t for t, _ in kept], [s for _, s in kept], plan, maximize=maximize,
                                    target=study_target if not budget_mode else None)
    probe = attrs.get("probe")
    report.answers = answer_questions(report, probe if isinstance(probe, dict) else None)
    return report


def _check_arguments(study: optuna.Study, budgets: Sequence[float] | None, target: float | None) -> None:
    if len(study.directions) != 1:
        raise BstuneError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; bstune reports read single-objective studies"
        )
    if budgets is not None:
        for b in budgets:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not (math.isfinite(b) and b > 0):
                raise invalid("budgets", "analyze", "a list of seconds greater than 0", list(budgets))
    check("analyze", "target", target, "a finite number", math.isfinite, none=True)


def _fronts(
    summaries: list[TrialSummary], finished: list[TrialSummary], mode: Mode | None, maximize: bool
) -> tuple[list[FrontPoint], list[FrontPoint], list[tuple[TrialSummary, float, float]], tuple[float, float] | None,
           float | None, float | None]:
    """The finished front, the anytime front, every curve point, and both hypervolumes' reference."""
    # The finished front: each trial at its full training time with the best metric it reached.
    idx = pareto_indices([s.time_s for s in finished], [s.metric for s in finished], maximize=maximize)
    front = [_point(finished[i], finished[i].time_s, finished[i].metric, finished[i].epochs_done) for i in idx]

    # The anytime front: every curve point of every trial.
    flat: list[tuple[TrialSummary, float, float]] = []
    for s in summaries:
        flat.extend((s, t, m) for t, m in zip(s.curve_time_s, s.curve_metric, strict=True))
    a_idx = pareto_indices([f[1] for f in flat], [f[2] for f in flat], maximize=maximize)
    anytime = [_point(flat[i][0], flat[i][1], flat[i][2], None) for i in a_idx]

    # One reference for both hypervolumes: the slowest time and the worst metric measured.
    all_t = [f[1] for f in flat if math.isfinite(f[1]) and math.isfinite(f[2])]
    all_m = [f[2] for f in flat if math.isfinite(f[1]) and math.isfinite(f[2])]
    all_t += [s.time_s for s in finished]
    all_m += [s.metric for s in finished]
    reference: tuple[float, float] | None = None
    hv = a_hv = None
    if all_t:
        t_ref = max(all_t)
        if isinstance(mode, TimeBudget):
            t_ref = max(t_ref, mode.budget)
        m_ref = min(all_m) if maximize else max(all_m)
        reference = (t_ref, m_ref)
        hv = hypervolume_2d([p.time_s for p in front], [p.metric for p in front], reference, maximize=maximize)
        a_hv = hypervolume_2d([p.time_s for p in anytime], [p.metric for p in anytime], reference, maximize=maximize)
    return front, anytime, flat, reference, hv, a_hv


def _recommend(
    finished: list[TrialSummary],
    flat: list[tuple[TrialSummary, float, float]],
    budgets: Sequence[float] | None,
    maximize: bool,
) -> list[Recommendation]:
    if budgets is None:
        budgets = default_budgets([s.time_s for s in finished])
    out = []
    for b in sorted(float(x) for x in budgets):
        pick: TrialSummary | None = None
        for s in finished:
            if s.time_s <= b and (
                pick is None or better(s.metric, pick.metric, maximize=maximize) or (s.metric == pick.metric and s.time_s < pick.time_s)
            ):
                pick = s
        a_best, a_time, a_trial = math.nan, math.nan, None
        for s, t, m in flat:
            if math.isfinite(t) and t <= b and math.isfinite(m) and better(m, a_best, maximize=maximize):
                a_best, a_time, a_trial = m, t, s
        basis = "finished" if pick else "anytime" if a_trial else "none"
        chosen = pick or a_trial
        out.append(
            Recommendation(
                budget_s=b,
                basis=basis,
                trial=chosen.number if chosen else None,
                time_s=pick.time_s if pick else a_time,
                metric=pick.metric if pick else a_best,
                batch_size=chosen.batch_size if chosen else None,
                learning_rate=chosen.learning_rate if chosen else None,
                epochs=chosen.epochs if chosen else None,
                epochs_done=pick.epochs_done if pick else None,
                anytime_metric=a_best,
                anytime_trial=a_trial.number if a_trial else None,
            )
        )
    return out


def _batch_sizes(
    summaries: list[TrialSummary], target: float | None, maximize: bool
) -> tuple[list[BatchSizeRow], float | None]:
    by_batch: dict[int, list[TrialSummary]] = {}
    for s in summaries:
        if s.batch_size is not None:
            by_batch.setdefault(s.batch_size, []).append(s)
    bests: dict[int, TrialSummary | None] = {}
    for b, group in by_batch.items():
        best: TrialSummary | None = None
        for s in group:
            if s.state == "complete" and math.isfinite(s.metric) and (best is None or better(s.metric, best.metric, maximize=maximize)):
                best = s
        bests[b] = best
    if target is None:
        vals = [s.metric for s in bests.values() if s is not None]
        target = statistics.median(vals) if vals else None
    rows = []
    for b in sorted(by_batch):
        group = by_batch[b]
        best = bests[b]
        ttt, ttt_trial = math.nan, None
        if target is not None:
            for s in group:
                t = _time_to(s.curve_time_s, s.curve_metric, target, maximize)
                if math.isfinite(t) and (math.isnan(ttt) or t < ttt):
                    ttt, ttt_trial = t, s.number
        thr = [s.throughput for s in group if s.throughput is not None and s.throughput > 0]
        rows.append(
            BatchSizeRow(
                batch_size=b,
                n_trials=len(group),
                n_finished=sum(1 for s in group if s.state == "complete"),
                best_metric=best.metric if best else math.nan,
                best_trial=best.number if best else None,
                best_learning_rate=best.learning_rate if best else None,
                time_to_target_s=ttt,
                time_to_target_trial=ttt_trial,
                throughput=statistics.median(thr) if thr else None,
            )
        )
    return rows, target
