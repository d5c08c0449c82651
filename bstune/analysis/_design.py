"""The batch-size study read back: each batch size's best learning rate, the rule those rates
follow, and the best each batch size reaches at its own rate, with a seed band.

The study (``bstune.design``) trains each batch size at a few learning rates around its best
and then at the chosen rate with several seeds. This module fits, on those trials:

* per batch size, a parabola in log learning rate (``value = h_b - q_b (ln lr - m_b)^2``, one
  linear least-squares fit with the residual variance pooled over batch sizes): ``exp(m_b)`` is
  the batch size's best rate, with a 95% interval (delta method). Each batch size has its own
  curvature, since a batch size that reaches less in the budget also loses less off its peak;
* the rule ``m_b = a + k ln b`` inside the same model (non-linear least squares): ``k`` is the
  exponent of the best learning rate against batch size, with a 95% interval from the Jacobian
  and Student's t on the residual degrees of freedom; a lack-of-fit F test against the free
  ``m_b`` says whether one power law describes the rates at all, and a curvature term in
  ``ln b`` says whether the best rate rises and then falls;
* per batch size, the mean and standard deviation of the runs at its chosen rate, and which
  batch sizes are within noise of the best (difference of means at most two standard errors,
  variance pooled over batch sizes).

The value fitted is the trial's value made "higher is better": the best metric in time-budget
mode (negated for a metric to minimise), minus the log of the seconds to the target in target
mode (runs that missed the target are left out of the fit and counted).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "BatchResult",
    "DesignReport",
    "LrPeak",
    "PowerLaw",
    "ROLE_ATTR",
    "DESIGN_ATTR",
    "DesignPoint",
    "fit_peaks",
    "fit_power_law",
    "seed_bands",
    "read_design",
    "scaling_slopes",
]

#: Trial user attribute: the trial's role in the batch-size study, ``"lr"`` (a point of its batch
#: size's learning-rate search) or ``"seed"`` (the batch size's chosen rate, trained again).
ROLE_ATTR = "design"
#: Study user attribute: the batch-size study's plan (``bstune.design.BatchDesign``).
DESIGN_ATTR = "batch_design"


class DesignPoint(NamedTuple):
    """One finished trial of a batch size at one learning rate; ``value`` is higher-is-better
    (NaN for a run that gave no usable value: it diverged or missed the target)."""

    trial: int
    batch_size: int
    learning_rate: float
    value: float


class LrPeak(NamedTuple):
    """A batch size's best learning rate: ``learning_rate`` with its 95% interval ``low``-``high``.

    ``bracketed`` is False when the parabola through the three rates around the best has no
    maximum or has it outside them: the peak lies beyond what was measured, and
    ``learning_rate`` is the best rate tried, not fitted (no interval).
    """

    batch_size: int
    learning_rate: float
    low: float
    high: float
    tried: tuple[float, ...]
    bracketed: bool


class PowerLaw(NamedTuple):
    """``best lr = coefficient * batch ** exponent`` with the exponent's 95% interval.

    ``lack_of_fit_p`` is the p-value of the F test of this rule against a free best rate per
    batch size (small: one power law does not describe them). ``bend`` is the coefficient of
    ``(ln b - mean)^2`` added to the rule, with its 95% interval (``None`` with fewer than four
    batch sizes); ``peak_batch`` is where the bent rule's rate is highest when that lies strictly
    inside the batch sizes and the bend's interval is below zero (the rate rises and then falls).
    """

    exponent: float
    low: float
    high: float
    coefficient: float
    dof: int
    batch_sizes: tuple[int, ...]
    lack_of_fit_p: float | None
    bend: tuple[float, float, float] | None
    peak_batch: float | None

    def predict(self, batch_size: float) -> float:
        return self.coefficient * batch_size**self.exponent


class BatchResult(NamedTuple):
    """The runs of one batch size at its chosen learning rate.

    ``values`` are the trials' values (best metric in time-budget mode; seconds to the target in
    target mode, runs that missed it counted in ``missed``); ``std`` is their sample standard
    deviation (NaN for one run). ``within_noise``: the difference from the best batch size's mean
    is at most two standard errors (variance pooled over batch sizes); None for the best itself.
    ``at_examples``: the mean metric of these runs when they had all seen the same number of
    training examples (``DesignReport.examples``). ``steps``: the mean optimizer steps to
    the target (target mode).
    """

    batch_size: int
    learning_rate: float
    trials: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    std: float
    missed: int
    within_noise: bool | None
    at_examples: float
    steps: float


class DesignReport(NamedTuple):
    """What the batch-size study found (see the module's docstring); ``unfinished`` says, per
    batch size, what it lacks. ``flat`` maps a batch size whose learning rates made no difference
    beyond seed noise to (lowest rate, highest rate, spread of their values): there its best rate
    cannot be placed, whatever the parabola says."""

    batch_sizes: tuple[int, ...]
    seeds: int
    n_trials: int
    peaks: list[LrPeak]
    law: PowerLaw | None
    results: list[BatchResult]
    pooled_std: float
    examples: float
    unfinished: list[str]
    stops_paying: int | None
    flat: dict[int, tuple[float, float, float]] = {}
    lr_range: dict[int, tuple[float, float]] = {}

    def to_dict(self) -> dict[str, Any]:
        out = self._asdict()
        out["peaks"] = [p._asdict() for p in self.peaks]
        out["law"] = self.law._asdict() if self.law is not None else None
        out["results"] = [r._asdict() for r in self.results]
        out["flat"] = {str(b): list(v) for b, v in self.flat.items()}
        out["lr_range"] = {str(b): list(v) for b, v in self.lr_range.items()}
        return out


# ---------------------------------------------------------------------------------- statistics


def _t975(dof: int) -> float:
    from scipy.stats import t  # scikit-learn's own dependency

    return float(t.ppf(0.975, dof))


def _window(points: Sequence[DesignPoint], width: int = 1) -> list[DesignPoint]:
    """The points of one batch size the parabola is fitted on: ``2 * width + 1`` neighbouring
    rates around the best one (by mean value), moved inward at the ends of the rates tried, so
    far-off rates whose value no parabola describes (a diverged run, a rate ten times too small)
    do not bend the fit."""
    rates = sorted({_key(p.learning_rate) for p in points})
    means = {r: _mean([p.value for p in points if _key(p.learning_rate) == r]) for r in rates}
    finite = [r for r in rates if math.isfinite(means[r])]
    if not finite:
        return []
    best = max(finite, key=lambda r: means[r])
    n = 2 * width + 1
    start = min(max(rates.index(best) - width, 0), max(len(rates) - n, 0))
    keep = set(rates[start: start + n])
    return [p for p in points if _key(p.learning_rate) in keep and math.isfinite(p.value)]


def _key(lr: float) -> float:
    return round(math.log(lr), 9)


def _mean(xs: Sequence[float]) -> float:
    finite = [x for x in xs if math.isfinite(x)]
    return statistics.fmean(finite) if finite else math.nan


def fit_peaks(points: Sequence[DesignPoint]) -> tuple[list[LrPeak], float]:
    """Each batch size's best learning rate, from a parabola in ``ln lr`` per batch size (one
    linear least-squares fit, residual variance pooled).

    Returns the peaks, smallest batch first, and the pooled residual variance (NaN without
    residual degrees of freedom). A batch size with fewer than three rates tried, or whose
    parabola peaks outside its rates, gets its best tried rate, ``bracketed=False`` and no interval.

    Examples:
        Three rates around 1e-2 at each of two batch sizes, exact parabolas:

        >>> pts = [DesignPoint(0, b, lr, 0.9 - (math.log(lr / best)) ** 2)
        ...        for b, best in ((32, 1e-2), (128, 2e-2)) for lr in (best / 3, best, best * 3)]
        >>> peaks, _ = fit_peaks(pts)
        >>> [(p.batch_size, round(p.learning_rate, 6)) for p in peaks]
        [(32, 0.01), (128, 0.02)]
    """
    by_batch: dict[int, list[DesignPoint]] = {}
    for p in points:
        by_batch.setdefault(p.batch_size, []).append(p)
    fitted: dict[int, list[DesignPoint]] = {}
    peaks: dict[int, LrPeak] = {}
    for b, pts in sorted(by_batch.items()):
        win = _window(pts)
        best = _best_tried(pts)
        if len({_key(p.learning_rate) for p in win}) >= 3:
            fitted[b] = win
        elif best is not None:
            peaks[b] = LrPeak(b, best, math.nan, math.nan, (), False)
    s2 = math.nan
    if fitted:
        s2 = _fit_parabolas(fitted, peaks)
    every = {b: tuple(sorted({p.learning_rate for p in pts})) for b, pts in by_batch.items()}
    return [peaks[b]._replace(tried=every[b]) for b in sorted(peaks)], s2


def _best_tried(pts: Sequence[DesignPoint]) -> float | None:
    rates: dict[float, list[float]] = {}
    for p in pts:
        rates.setdefault(p.learning_rate, []).append(p.value)
    means = {lr: _mean(v) for lr, v in rates.items()}
    finite = [lr for lr in means if math.isfinite(means[lr])]
    return max(finite, key=lambda lr: means[lr]) if finite else None


def _design_matrix(fitted: Mapping[int, list[DesignPoint]], batches: Sequence[int]) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """Columns: per batch size, 1, y - ybar_b and (y - ybar_b)^2, with y = ln lr."""
    nb = len(batches)
    centre = {b: statistics.fmean(math.log(p.learning_rate) for p in fitted[b]) for b in batches}
    rows, vals = [], []
    for i, b in enumerate(batches):
        for p in fitted[b]:
            y = math.log(p.learning_rate) - centre[b]
            row = [0.0] * (3 * nb)
            row[i], row[nb + i], row[2 * nb + i] = 1.0, y, y * y
            rows.append(row)
            vals.append(p.value)
    return np.array(rows), np.array(vals), centre


def _fit_parabolas(fitted: Mapping[int, list[DesignPoint]], peaks: dict[int, LrPeak]) -> float:
    """value = alpha_b + beta_b (y - ybar_b) + gamma_b (y - ybar_b)^2, one least-squares fit with
    the residual variance pooled over batch sizes; fills ``peaks``, returns that variance."""
    batches = sorted(fitted)
    nb = len(batches)
    x, v, centre = _design_matrix(fitted, batches)
    coef, *_ = np.linalg.lstsq(x, v, rcond=None)
    dof = len(v) - 3 * nb
    cov = None
    s2 = math.nan
    if dof > 0:
        resid = v - x @ coef
        s2 = float(resid @ resid) / dof
        try:
            cov = np.linalg.inv(x.T @ x) * s2
        except np.linalg.LinAlgError:
            cov = None
    for i, b in enumerate(batches):
        tried = tuple(sorted({p.learning_rate for p in fitted[b]}))
        lo_y, hi_y = math.log(tried[0]), math.log(tried[-1])
        beta, gamma = float(coef[nb + i]), float(coef[2 * nb + i])
        if gamma >= 0:  # no maximum: the best rate tried
            best = _best_tried(fitted[b]) or tried[0]
            peaks[b] = LrPeak(b, best, math.nan, math.nan, tried, False)
            continue
        m = centre[b] - beta / (2 * gamma)
        low = high = math.nan
        if cov is not None:
            g = np.zeros(3 * nb)
            g[nb + i] = -1 / (2 * gamma)
            g[2 * nb + i] = beta / (2 * gamma**2)
            se = math.sqrt(max(float(g @ cov @ g), 0.0))
            half = _t975(dof) * se
            low, high = math.exp(m - half), math.exp(m + half)
        if not lo_y <= m <= hi_y:  # a parabola's peak is trusted inside the rates it was fitted on only
            best = _best_tried(fitted[b]) or tried[0]
            peaks[b] = LrPeak(b, best, math.nan, math.nan, tried, False)
            continue
        peaks[b] = LrPeak(b, math.exp(m), low, high, tried, True)
    return s2


def fit_power_law(points: Sequence[DesignPoint], peaks: Sequence[LrPeak]) -> PowerLaw | None:
    """The exponent of the best learning rate against batch size, fitted inside the parabola model.

    ``value = h_b - q_b (ln lr - a - k (ln b - xbar))^2`` on the bracketed batch sizes (at least
    three), by non-linear least squares started from the free peaks; the interval of ``k`` is
    ``k ± t(0.975, dof) * se`` with the standard error from the Jacobian at the solution.
    """
    from scipy.optimize import least_squares
    from scipy.stats import f as f_dist

    ok = [p for p in peaks if p.bracketed]
    if len(ok) < 3:
        return None
    by_batch: dict[int, list[DesignPoint]] = {}
    for p in points:
        by_batch.setdefault(p.batch_size, []).append(p)
    batches = [p.batch_size for p in ok]
    win = {b: _window(by_batch[b]) for b in batches}
    xbar = statistics.fmean(math.log(b) for b in batches)
    xs = np.array([math.log(b) - xbar for b in batches for _ in win[b]])
    ys = np.array([math.log(p.learning_rate) for b in batches for p in win[b]])
    vs = np.array([p.value for b in batches for p in win[b]])
    idx = np.array([i for i, b in enumerate(batches) for _ in win[b]])
    nb, n = len(batches), len(vs)
    ms = np.array([math.log(p.learning_rate) for p in ok])
    xb = np.array([math.log(b) - xbar for b in batches])
    k0, a0 = np.polyfit(xb, ms, 1)
    q0 = []
    for b in batches:  # each batch size's curvature from its own parabola, as a start
        yb = np.array([math.log(p.learning_rate) for p in win[b]])
        vb = np.array([p.value for p in win[b]])
        curv = -np.polyfit(yb, vb, 2)[0] if len(set(yb.round(9))) >= 3 else 1.0
        q0.append(math.log(curv) if curv > 0 else 0.0)

    def solve(bent: bool) -> tuple[np.ndarray, np.ndarray, float] | None:
        p0 = [*(max(vs[idx == i]) for i in range(nb)), *q0, a0, k0] + ([0.0] if bent else [])

        def resid(th: np.ndarray) -> np.ndarray:
            h, q, a, k = th[:nb], np.exp(th[nb: 2 * nb]), th[2 * nb], th[2 * nb + 1]
            c = th[2 * nb + 2] if bent else 0.0
            m = a + k * xs + c * xs**2
            return vs - (h[idx] - q[idx] * (ys - m) ** 2)

        sol = least_squares(resid, np.array(p0, dtype=float), method="lm", x_scale="jac", max_nfev=20000)
        rss = float(sol.fun @ sol.fun)
        dof = n - len(p0)
        if dof < 1:
            return None
        try:
            cov = np.linalg.inv(sol.jac.T @ sol.jac) * (rss / dof)
        except np.linalg.LinAlgError:
            return None
        return sol.x, cov, rss

    fit = solve(False)
    if fit is None:
        return None
    th, cov, rss2 = fit
    dof = n - (2 * nb + 2)
    k, a = float(th[2 * nb + 1]), float(th[2 * nb])
    half = _t975(dof) * math.sqrt(max(float(cov[2 * nb + 1, 2 * nb + 1]), 0.0))
    # Lack of fit: the free-peak model has 3 nb parameters on the same points.
    lack_p = None
    dof1 = n - 3 * nb
    if dof1 >= 1 and nb >= 3:
        rss1 = _rss_free(win, batches)
        if rss1 > 0:
            fstat = ((rss2 - rss1) / (nb - 2)) / (rss1 / dof1)
            lack_p = float(f_dist.sf(max(fstat, 0.0), nb - 2, dof1))
    bend = None
    peak_batch = None
    if nb >= 4:
        bent = solve(True)
        if bent is not None:
            thb, covb, _ = bent
            c = float(thb[2 * nb + 2])
            ch = _t975(n - (2 * nb + 3)) * math.sqrt(max(float(covb[2 * nb + 2, 2 * nb + 2]), 0.0))
            bend = (c, c - ch, c + ch)
            if c + ch < 0:
                top = -float(thb[2 * nb + 1]) / (2 * c)  # where a + k x + c x^2 is highest
                if xb.min() < top < xb.max():
                    peak_batch = math.exp(top + xbar)
    return PowerLaw(
        exponent=k, low=k - half, high=k + half, coefficient=math.exp(a - k * xbar), dof=dof,
        batch_sizes=tuple(batches), lack_of_fit_p=lack_p, bend=bend, peak_batch=peak_batch,
    )


def _rss_free(win: Mapping[int, list[DesignPoint]], batches: Sequence[int]) -> float:
    """The residual sum of squares of the free-peak model on the same points."""
    x, v, _ = _design_matrix(win, batches)
    coef, *_ = np.linalg.lstsq(x, v, rcond=None)
    r = v - x @ coef
    return float(r @ r)


def seed_bands(groups: Mapping[int, Sequence[float]], *, maximize: bool) -> tuple[list[tuple[int, float, float, bool | None]], float]:
    """Mean, standard deviation and "within noise of the best" per batch size.

    ``groups`` maps a batch size to its runs' values at its chosen rate. The variance is pooled
    over the batch sizes with two runs or more; another batch size is within noise of the best
    mean when the difference is at most two standard errors of a difference of means.

    Examples:
        >>> rows, pooled = seed_bands({32: [0.80, 0.82, 0.81], 256: [0.79, 0.81, 0.80], 1024: [0.70, 0.72, 0.71]},
        ...                           maximize=True)
        >>> [(b, round(m, 3), round(s, 3), w) for b, m, s, w in rows], round(pooled, 4)
        ([(32, 0.81, 0.01, None), (256, 0.8, 0.01, True), (1024, 0.71, 0.01, False)], 0.01)
    """
    stats = []
    for b, vals in groups.items():
        v = [x for x in vals if math.isfinite(x)]
        if v:
            stats.append((b, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else math.nan, len(v)))
    if not stats:
        return [], math.nan
    variances = [s**2 for _, _, s, n in stats if n > 1 and math.isfinite(s)]
    pooled = math.sqrt(statistics.fmean(variances)) if variances else math.nan
    best = max(stats, key=lambda r: r[1]) if maximize else min(stats, key=lambda r: r[1])
    rows = []
    for b, mean, sd, n in sorted(stats):
        within: bool | None = None
        if b != best[0]:
            se = pooled * math.sqrt(1 / n + 1 / best[3]) if math.isfinite(pooled) else math.nan
            within = bool(math.isfinite(se) and abs(mean - best[1]) <= 2 * se)
        rows.append((b, mean, sd, within))
    return rows, pooled


# ------------------------------------------------------------------------------- from a study


def read_design(trials: Sequence[Any], summaries: Sequence[Any], plan: Mapping[str, Any], *, maximize: bool,
                target: float | None) -> DesignReport:
    """The ``DesignReport`` of a study's trials (frozen trials and their summaries, in the
    same order) under the stored ``plan`` (``DESIGN_ATTR``)."""
    batch_sizes = tuple(int(b) for b in plan.get("batch_sizes", ()))
    fixed = dict(plan.get("fixed", {}))
    seeds = int(plan.get("seeds", 0))
    target_mode = target is not None
    pts: list[DesignPoint] = []
    chosen: dict[int, float] = {}
    n_design = 0
    for t, s in zip(trials, summaries, strict=True):
        if s.batch_size not in batch_sizes or s.learning_rate is None or not _same_fixed(t.params, fixed):
            continue
        if t.user_attrs.get(ROLE_ATTR) is not None:
            n_design += 1
        if t.user_attrs.get(ROLE_ATTR) == "seed":
            chosen[s.batch_size] = s.learning_rate
        if s.state != "complete" or not s.feasible:
            if s.state in ("pruned", "fail") and t.user_attrs.get(ROLE_ATTR) == "lr":
                pts.append(DesignPoint(s.number, s.batch_size, s.learning_rate, math.nan))
            continue
        pts.append(DesignPoint(s.number, s.batch_size, s.learning_rate, _response(t, s, maximize, target_mode)))
    peaks, _q = fit_peaks(pts)
    law = fit_power_law(pts, peaks)
    by_number = {s.number: s for s in summaries}
    groups: dict[int, list[float]] = {}
    members: dict[int, list[int]] = {}
    missed: dict[int, int] = {}
    for p in pts:
        lr = chosen.get(p.batch_size)
        if lr is None or _key(lr) != _key(p.learning_rate):
            continue
        s = by_number[p.trial]
        members.setdefault(p.batch_size, []).append(p.trial)
        if target_mode and not math.isfinite(p.value):
            missed[p.batch_size] = missed.get(p.batch_size, 0) + 1
            continue
        groups.setdefault(p.batch_size, []).append(s.time_s if target_mode else s.metric)
    rows, pooled = seed_bands(groups, maximize=maximize and not target_mode)
    examples = _common_examples([by_number[n] for b in members for n in members[b]])
    results = []
    for b, mean, sd, within in rows:
        runs = [by_number[n] for n in members[b]]
        at = _mean([_metric_at(r, examples, maximize) for r in runs]) if math.isfinite(examples) else math.nan
        steps = _mean([_steps_to(r, target, maximize) for r in runs]) if target_mode else math.nan
        results.append(BatchResult(b, chosen[b], tuple(members[b]), tuple(groups[b]), mean, sd,
                                   missed.get(b, 0), within, at, steps))
    unfinished = []
    for b in batch_sizes:
        have = len(groups.get(b, ()))
        mine = [p for p in pts if p.batch_size == b]
        if len({_key(p.learning_rate) for p in mine}) >= 3 and not any(math.isfinite(p.value) for p in mine):
            why = "missed the target" if target_mode else "diverged or failed"
            unfinished.append(f"batch {b}: every one of its {len(mine)} runs {why}, so it has no best rate")
        elif have < seeds + 1:
            unfinished.append(f"batch {b}: {have} of {seeds + 1} runs at its chosen learning rate")
    return DesignReport(
        batch_sizes=batch_sizes, seeds=seeds, n_trials=n_design, peaks=peaks, law=law, results=results,
        pooled_std=pooled, examples=examples, unfinished=unfinished, stops_paying=_stops_paying(results),
        flat=flat_batches(pts, pooled), lr_range={b: _bounds(plan, b) for b in batch_sizes},
    )


def _bounds(plan: Mapping[str, Any], batch_size: int) -> tuple[float, float]:
    f = (batch_size / int(plan.get("reference_batch_size", 1))) ** float(plan.get("lr_exponent", 0.0))
    return float(plan.get("lr_low", 0.0)) * f, float(plan.get("lr_high", math.inf)) * f


def flat_batches(points: Sequence[DesignPoint], noise: float) -> dict[int, tuple[float, float, float]]:
    """Batch sizes whose learning rates (three or more, with values) all reached within noise of
    one another: the spread of their mean values is at most two standard deviations of a
    difference of single runs (``2 * sqrt(2) * noise``).

    Examples:
        >>> pts = [DesignPoint(0, 64, lr, v) for lr, v in ((1e-3, 0.824), (1e-2, 0.825), (1e-1, 0.8245))]
        >>> flat_batches(pts, 0.0006)
        {64: (0.001, 0.1, 0.001)}
    """
    if not math.isfinite(noise):
        return {}
    out = {}
    by_batch: dict[int, dict[float, list[float]]] = {}
    for p in points:
        if math.isfinite(p.value):
            by_batch.setdefault(p.batch_size, {}).setdefault(p.learning_rate, []).append(p.value)
    for b, rates in sorted(by_batch.items()):
        if len(rates) < 3:
            continue
        means = [statistics.fmean(v) for v in rates.values()]
        spread = max(means) - min(means)
        if spread <= 2 * math.sqrt(2) * noise:
            out[b] = (min(rates), max(rates), round(spread, 12))
    return out


def _same_fixed(params: Mapping[str, Any], fixed: Mapping[str, Any]) -> bool:
    return all(k in params and (params[k] == v or (isinstance(v, float) and math.isclose(params[k], v)))
               for k, v in fixed.items())


def _response(t: Any, s: Any, maximize: bool, target_mode: bool) -> float:
    if target_mode:
        if not t.user_attrs.get("reached_target", False) or not (math.isfinite(s.time_s) and s.time_s > 0):
            return math.nan
        return -math.log(s.time_s)
    return s.metric if maximize else -s.metric


def _common_examples(runs: Sequence[Any]) -> float:
    ends = [max(r.curve_samples) for r in runs if r.curve_samples]
    return min(ends) if ends else math.nan


def _metric_at(s: Any, examples: float, maximize: bool) -> float:
    """The best metric of the run's curve up to ``examples`` training examples seen."""
    vals = [m for x, m in zip(s.curve_samples, s.curve_metric, strict=True) if x <= examples and math.isfinite(m)]
    if not vals:
        return math.nan
    return max(vals) if maximize else min(vals)


def _steps_to(s: Any, target: float | None, maximize: bool) -> float:
    if target is None or s.batch_size is None:
        return math.nan
    for x, m in zip(s.curve_samples, s.curve_metric, strict=True):
        if math.isfinite(m) and (m >= target if maximize else m <= target):
            return x / s.batch_size
    return math.nan


def scaling_slopes(results: Sequence[BatchResult]) -> list[tuple[int, int, float]]:
    """Target mode: between neighbouring batch sizes ``a < b`` with steps measured, the slope
    ``ln(steps_a / steps_b) / ln(b / a)``: 1 is perfect scaling (twice the batch, half the steps),
    0 is no gain at all.

    Examples:
        >>> rows = [BatchResult(b, 1e-3, (), (), 1.0, 0.0, 0, None, 1.0, s) for b, s in ((16, 800.0), (64, 200.0), (256, 150.0))]
        >>> [(a, b, round(k, 3)) for a, b, k in scaling_slopes(rows)]
        [(16, 64, 1.0), (64, 256, 0.208)]
    """
    rows = [r for r in results if math.isfinite(r.steps) and r.steps > 0]
    return [(a.batch_size, b.batch_size, math.log(a.steps / b.steps) / math.log(b.batch_size / a.batch_size))
            for a, b in zip(rows, rows[1:], strict=False)]


#: Below this slope of steps against batch size, a larger batch no longer buys fewer steps.
STOPS_PAYING_SLOPE = 0.25


def _stops_paying(results: Sequence[BatchResult]) -> int | None:
    """Target mode: the first batch size past which the steps to the target fall at less than a
    quarter of perfect scaling (``scaling_slopes`` below ``STOPS_PAYING_SLOPE``)."""
    for a, _b, k in scaling_slopes(results):
        if k < STOPS_PAYING_SLOPE:
            return a
    return None
