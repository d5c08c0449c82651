"""The batch-size study: each batch size given its own learning rate, then trained again with seeds.

A search for the best configuration cannot say whether smaller batches hurt, or how the learning
rate must follow the batch size: it tries each batch size at whatever rates the sampler picked.
This designed experiment measures it the way Shallue et al. (2018) did, on the user's own model:

1. for each batch size in a set (powers of two spread over the space), train a few learning rates
   around a first guess (three, a factor ``step`` apart), and one more step out while the best
   of them is an end (the peak is bracketed);
2. fit a parabola in log learning rate per batch size, curvature shared
   (``bstune.analysis._design``), and take each batch size's peak as its rate (a rate already
   tried within 15% of the peak is reused);
3. train each batch size at that rate until it has ``seeds + 1`` runs there.

Every trial is an ordinary trial of the study, with the user attribute ``design`` (``"lr"`` or
``"seed"``) and all other parameters fixed (epochs at the top of the space: the schedule ends
with the budget); the plan is stored on the study (``batch_design``), so a rerun resumes it,
workers run its rounds, and the report and the dashboard read it. Trials the study already has
at a planned batch size with the same fixed parameters count as points of the search.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from bstune.analysis._design import DESIGN_ATTR, ROLE_ATTR, DesignPoint, fit_peaks
from bstune.analysis._disturbed import DISTURBED_ATTR
from bstune.errors import BstuneError
from bstune.options import DEFAULT_MAX_TRIALS, FIRST_RATES, check_design_options
from bstune.space import SearchSpace

__all__ = ["BatchDesign", "DEFAULT_MAX_TRIALS", "PlannedTrial", "next_round", "plan_design", "run_design"]

#: How many steps out the search may go from the first three rates, per side.
MAX_EXTEND = 2


@dataclass
class BatchDesign:
    """The plan of a batch-size study, stored on the study as plain data.

    Attributes:
        batch_sizes: The batch sizes compared, smallest first.
        first_rates: The first guess of each batch size's best learning rate.
        fixed: The study parameters held fixed (Optuna names: epochs and the space's extras).
        seeds: Runs at each batch size's chosen rate beyond the first.
        step: The factor between neighbouring learning rates of the search.
        max_trials: The most trials the study may use.
        lr_low: The lowest learning rate the space allows (at ``reference_batch_size`` when the
            space scales the rate with the batch size).
        lr_high: The highest.
        lr_exponent: The space's scaling exponent (0: the rate's range is the same at every batch size).
        reference_batch_size: The batch size the range holds at when the space scales it.
    """

    batch_sizes: list[int]
    first_rates: dict[int, float]
    fixed: dict[str, Any]
    seeds: int = 2
    step: float = 3.0
    max_trials: int = DEFAULT_MAX_TRIALS
    lr_low: float = 0.0
    lr_high: float = math.inf
    lr_exponent: float = 0.0
    reference_batch_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_rates"] = {str(k): v for k, v in self.first_rates.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BatchDesign:
        return cls(
            batch_sizes=[int(b) for b in d["batch_sizes"]],
            first_rates={int(k): float(v) for k, v in d["first_rates"].items()},
            fixed=dict(d["fixed"]), seeds=int(d["seeds"]), step=float(d["step"]),
            max_trials=int(d["max_trials"]), lr_low=float(d["lr_low"]), lr_high=float(d["lr_high"]),
            lr_exponent=float(d.get("lr_exponent", 0.0)), reference_batch_size=int(d.get("reference_batch_size", 1)),
        )

    def bounds(self, batch_size: int) -> tuple[float, float]:
        """The learning rates the space allows at ``batch_size``."""
        f = (batch_size / self.reference_batch_size) ** self.lr_exponent
        return self.lr_low * f, self.lr_high * f

    def trials_per_batch(self) -> int:
        """Trials one batch size takes when its peak lies inside the first three rates."""
        return FIRST_RATES + self.seeds + 1

    def expected_trials(self) -> int:
        return len(self.batch_sizes) * self.trials_per_batch()


@dataclass(frozen=True)
class PlannedTrial:
    """One trial to run: its batch size, learning rate and role (``"lr"`` or ``"seed"``)."""

    batch_size: int
    learning_rate: float
    role: str


def spread(sizes: Sequence[int], n: int) -> list[int]:
    """``n`` of ``sizes`` spread evenly in log scale, both ends kept.

    Examples:
        >>> spread([16, 32, 64, 128, 256, 512, 1024], 4)
        [16, 64, 256, 1024]
    """
    if n >= len(sizes):
        return list(sizes)
    if n < 2:
        return [sizes[len(sizes) // 2]]
    return sorted({sizes[round(i * (len(sizes) - 1) / (n - 1))] for i in range(n)})


def plan_design(
    study: optuna.Study,
    space: SearchSpace,
    *,
    batch_sizes: Sequence[int] | None = None,
    seeds: int = 2,
    max_trials: int = DEFAULT_MAX_TRIALS,
    step: float = 3.0,
) -> BatchDesign:
    """The plan for ``study``: the one it stores, else a new one from the space and its trials.

    Batch sizes: ``batch_sizes``, else the space's powers of two below any size the study or its
    probe found out of memory, as many as ``max_trials`` allows (spread in log scale, at least
    three). First guesses: the rule fitted on the study's finished trials where one exists, else
    the best trial's rate scaled as the square root of the batch size, else the geometric middle
    of the space's rates at the middle batch size, scaled the same way. The other parameters are
    the best trial's, else the middle of their ranges; epochs are the space's largest.

    Raises:
        BstuneError: A bad option, or a stored plan that differs from the options given.
    """
    check_design_options(batch_sizes, seeds, max_trials)
    stored = study.user_attrs.get(DESIGN_ATTR)
    if isinstance(stored, dict):
        design = BatchDesign.from_dict(stored)
        if batch_sizes is not None and sorted(batch_sizes) != design.batch_sizes:
            raise BstuneError(f"study {study.study_name!r} already holds a batch-size study of batch sizes "
                              f"{design.batch_sizes}; choose another --study-name to study {sorted(batch_sizes)}")
        design.max_trials, design.seeds = max_trials, seeds  # more seeds on a rerun add runs at the chosen rates
        return design
    per_batch = FIRST_RATES + seeds + 1
    fits = _fitting_sizes(study, space)
    if batch_sizes is not None:
        sizes = sorted({int(b) for b in batch_sizes})
    else:
        # One trial of slack per batch size, for a step out when a peak lies beyond the first rates.
        sizes = spread(fits, max(3, max_trials // (per_batch + 1)))
        if len(fits) < 3:
            raise BstuneError(f"the batch-size study needs three batch sizes or more; the space {space.name!r} "
                              f"offers {fits} (fitting in memory); widen its batch_size range")
    from bstune.space import SCALING_EXPONENTS

    best = _best_trial(study)
    design = BatchDesign(batch_sizes=sizes, first_rates={}, fixed=_fixed_params(space, best), seeds=seeds, step=step,
                         max_trials=max_trials, lr_low=space.lr_low, lr_high=space.lr_high,
                         lr_exponent=SCALING_EXPONENTS[space.scaling], reference_batch_size=space.reference_batch_size)
    for b, r in _first_rates(study, space, sizes, best).items():
        lo, hi = design.bounds(b)
        design.first_rates[b] = min(max(r, lo), hi)
    return design


def _fitting_sizes(study: optuna.Study, space: SearchSpace) -> list[int]:
    sizes = [2**k for k in range(64) if space.batch_low <= 2**k <= space.batch_high]
    limit = math.inf
    probe = study.user_attrs.get("probe")
    if isinstance(probe, dict) and probe.get("largest_batch"):
        limit = float(probe["largest_batch"])
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("stop_reason") == "oom" and t.user_attrs.get("batch_size"):
            limit = min(limit, float(t.user_attrs["batch_size"]) - 1)
    return [b for b in sizes if b <= limit]


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    from bstune.objectives import is_feasible

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value) and is_feasible(t)]
    if not done:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return max(done, key=lambda t: float(t.value) if maximize else -float(t.value))  # type: ignore[arg-type]


def _fixed_params(space: SearchSpace, best: optuna.trial.FrozenTrial | None) -> dict[str, Any]:
    fixed: dict[str, Any] = {"epochs": space.epochs_high}
    for p in space.params:
        if best is not None and p.name in best.params:
            fixed[p.name] = best.params[p.name]
        elif p.kind == "categorical":
            fixed[p.name] = p.choices[0]
        else:
            lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
            mid = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
            if p.kind == "int":
                step = int(p.step or 1)
                fixed[p.name] = int(lo + round((mid - lo) / step) * step)
            else:
                fixed[p.name] = mid if p.step is None else lo + round((mid - lo) / p.step) * p.step
    return fixed


def _first_rates(study: optuna.Study, space: SearchSpace, sizes: Sequence[int],
                 best: optuna.trial.FrozenTrial | None) -> dict[int, float]:
    from bstune.analysis import analyze

    if best is not None:
        report = analyze(study, importance=False)
        fit = report.lr_scaling
        if fit is not None and len(set(fit.batch_sizes)) >= 3 and 0.0 <= fit.exponent <= 1.0:
            return {b: fit.predict(b) for b in sizes}
        b0, lr0 = best.user_attrs.get("batch_size"), best.user_attrs.get("learning_rate")
        if b0 and lr0:
            return {b: float(lr0) * math.sqrt(b / b0) for b in sizes}
    mid_lr = math.sqrt(space.lr_low * space.lr_high)
    mid_b = math.sqrt(sizes[0] * sizes[-1])
    return {b: mid_lr * math.sqrt(b / mid_b) for b in sizes}


# ------------------------------------------------------------------------------------ rounds


def _design_trials(study: optuna.Study, design: BatchDesign) -> list[optuna.trial.FrozenTrial]:
    from bstune.analysis._design import _same_fixed

    return [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("batch_size", _batch_of(t)) in design.batch_sizes and _same_fixed(t.params, design.fixed)]


def _batch_of(t: optuna.trial.FrozenTrial) -> int | None:
    if "log2_batch_size" in t.params:
        return 2 ** int(t.params["log2_batch_size"])
    b = t.params.get("batch_size")
    return int(b) if b is not None else None


def _lr_of(t: optuna.trial.FrozenTrial, space: SearchSpace) -> float | None:
    lr = t.user_attrs.get("learning_rate")
    if lr is not None:
        return float(lr)
    b = _batch_of(t)
    if "learning_rate" in t.params:
        return float(t.params["learning_rate"])
    if "base_learning_rate" in t.params and b is not None:
        return space.scaled_learning_rate(float(t.params["base_learning_rate"]), b)
    return None


def _points(study: optuna.Study, design: BatchDesign, space: SearchSpace) -> tuple[list[DesignPoint], dict[int, list[float]], dict[int, float], set[int]]:
    """The finished points, every rate tried or queued per batch size, the chosen rates, and the
    batch sizes with a trial still waiting or running."""
    from bstune.analysis._analyze import _summarize
    from bstune.analysis._design import _response
    from bstune.objectives import Target, mode_from_attrs

    mode = mode_from_attrs(study.user_attrs)
    target_mode = isinstance(mode, Target)
    maximize = mode is None or mode.metric_direction == "maximize"
    clock = mode.clock if mode is not None else "train"
    pts: list[DesignPoint] = []
    tried: dict[int, list[float]] = {b: [] for b in design.batch_sizes}
    chosen: dict[int, float] = {}
    pending: set[int] = set()
    for t in _design_trials(study, design):
        b, lr = _batch_of(t), _lr_of(t, space)
        if b is None or lr is None or b not in tried:
            continue
        if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(ROLE_ATTR) is None:
            continue  # another search's failure: not a point of this one
        if t.user_attrs.get(ROLE_ATTR) == "seed":
            chosen[b] = lr
        if t.user_attrs.get(DISTURBED_ATTR):
            continue  # it measured a busy machine: the next round trains that rate again
        tried[b].append(lr)
        if t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING):
            pending.add(b)
        elif t.state == optuna.trial.TrialState.COMPLETE:
            s = _summarize(t, clock, maximize, not target_mode)
            value = _response(t, s, maximize, target_mode) if s.feasible else math.nan
            pts.append(DesignPoint(t.number, b, lr, value))
        else:  # failed or pruned (diverged, out of memory): tried, no value
            pts.append(DesignPoint(t.number, b, lr, math.nan))
    return pts, tried, chosen, pending


def _centre(design: BatchDesign, batch_size: int, guess: float | None) -> float:
    """The log of the middle one of a batch size's first three rates (inside the rate range)."""
    step = math.log(design.step)
    c = math.log(guess if guess is not None else design.first_rates[batch_size])
    lo, hi = (math.log(x) for x in design.bounds(batch_size))
    return min(max(c, lo + step), hi - step) if hi - lo >= 2 * step else (lo + hi) / 2


def _order(sizes: Sequence[int]) -> list[int]:
    """The order batch sizes start in: the middle one, then outward, nearest first.

    Examples:
        >>> _order([16, 64, 256, 1024])
        [256, 64, 1024, 16]
    """
    mid = len(sizes) // 2
    return sorted(sizes, key=lambda b: (abs(sizes.index(b) - mid), sizes.index(b)))


def _guesses(design: BatchDesign, tried: Mapping[int, list[float]], chosen: Mapping[int, float]) -> dict[int, float]:
    """The first guesses of the batch sizes that may start now.

    The middle batch size starts from the plan's guess. Another starts once a neighbour (in the
    order ``_order`` gives) has chosen its rate, from the rule the chosen rates give: the
    square root of the batch size from one, the least-squares line through two or more (its
    slope held to -0.5 ... 1.5).
    """
    order = _order(design.batch_sizes)
    out: dict[int, float] = {}
    if not any(tried[b] for b in order):
        return {order[0]: design.first_rates[order[0]]}
    if not chosen:
        return out
    xs = [math.log(b) for b in chosen]
    ys = [math.log(lr) for lr in chosen.values()]
    if len(chosen) >= 2:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        k = min(max(k, -0.5), 1.5)
    else:
        mx, my, k = xs[0], ys[0], 0.5
    sizes = design.batch_sizes
    for b in order:
        if tried[b]:
            continue
        i = sizes.index(b)
        if any(sizes[j] in chosen for j in (i - 1, i + 1) if 0 <= j < len(sizes)):
            out[b] = math.exp(my + k * (math.log(b) - mx))
    return out


def next_round(study: optuna.Study, design: BatchDesign, space: SearchSpace) -> list[PlannedTrial]:
    """The trials the study needs next; empty when the design is complete.

    Per batch size, in order: the first three rates; one step beyond the best rate while it is the
    lowest or highest tried (at most two steps per side, never past the space's range: the last
    one may be its bound); half a step to each side of the best when a neighbour gave no value;
    then the
    chosen rate (the fitted peak, or a tried rate within 15% of it) until it has ``seeds + 1``
    runs. A batch size with a trial still waiting or running waits for it.
    """
    pts, tried, chosen, pending = _points(study, design, space)
    out: list[PlannedTrial] = []
    step = math.log(design.step)
    need_peak: list[int] = []
    centres = _guesses(design, tried, chosen)
    for b in design.batch_sizes:
        if b in pending:
            continue
        lo, hi = (math.log(x) for x in design.bounds(b))
        lo, hi = lo - 1e-9, hi + 1e-9
        keys = sorted({round(math.log(lr), 9) for lr in tried[b]})
        if b in chosen:
            runs = sum(1 for lr in tried[b] if abs(math.log(lr / chosen[b])) < 1e-9)
            out += [PlannedTrial(b, chosen[b], "seed")] * max(design.seeds + 1 - runs, 0)
            continue
        if b not in centres and not tried[b]:
            continue  # starts once a batch size next to it has its peak bracketed
        if b in centres:  # starts now: its first guess is kept with the plan, so later rounds agree
            design.first_rates[b] = centres[b]
        c = _centre(design, b, None)
        first = [round(y, 9) for y in (c - step, c, c + step)]
        missing = [y for y in first if y not in keys]
        if missing:
            out += [PlannedTrial(b, math.exp(y), "lr") for y in missing]
            continue
        finite = [p for p in pts if p.batch_size == b and math.isfinite(p.value)]
        if not finite:
            continue  # no rate gave a value (all missed the target or diverged): the report says so
        y_best = round(math.log(max(finite, key=lambda p: p.value).learning_rate), 9)
        below = sum(1 for y in keys if y < first[0] - 1e-6)
        above = sum(1 for y in keys if y > first[2] + 1e-6)
        ext = None
        if y_best == keys[0] and below < MAX_EXTEND:
            ext = max(keys[0] - step, lo + 2e-9)  # a step out, or the space's lowest rate
            ext = ext if keys[0] - ext > step / 4 else None
        elif y_best == keys[-1] and above < MAX_EXTEND:
            ext = min(keys[-1] + step, hi - 2e-9)  # a step out, or the space's highest rate
            ext = ext if ext - keys[-1] > step / 4 else None
        if ext is not None:
            out.append(PlannedTrial(b, math.exp(ext), "lr"))
            continue
        # Refine: the best has a neighbour without a value (a run that missed the target or
        # diverged), so no parabola fits yet; try half a step to each side of it, once.
        i = keys.index(y_best)
        values = {round(math.log(p.learning_rate), 9) for p in finite}
        around = [keys[j] for j in (i - 1, i + 1) if 0 <= j < len(keys)]
        if any(y not in values for y in around):
            half = [round(y_best + d, 9) for d in (-step / 2, step / 2)]
            new = [y for y in half if lo <= y <= hi and all(abs(y - k) > step / 4 for k in keys)]
            if new:
                out += [PlannedTrial(b, math.exp(y), "lr") for y in new]
                continue
        need_peak.append(b)
    if need_peak:
        peaks = {p.batch_size: p for p in fit_peaks(pts)[0]}
        for b in need_peak:
            lr = peaks[b].learning_rate
            near = [x for x in tried[b] if abs(math.log(x / lr)) <= math.log(1.15)]
            if near:
                lr = min(near, key=lambda x: abs(math.log(x / lr)))
            runs = sum(1 for x in tried[b] if abs(math.log(x / lr)) < 1e-9)
            # At least one run marks the choice (role "seed"), even when the rate was tried often.
            out += [PlannedTrial(b, lr, "seed")] * max(design.seeds + 1 - runs, 1)
    return out


def params_for(space: SearchSpace, design: BatchDesign, batch_size: int, learning_rate: float) -> dict[str, Any]:
    """The Optuna parameters of a planned trial (batch and rate in the space's own names)."""
    params: dict[str, Any] = dict(design.fixed)
    low, high = design.bounds(batch_size)
    learning_rate = min(max(learning_rate, low), high)  # exp(log(x)) may round past a bound
    if space.powers_of_two:
        params["log2_batch_size"] = int(round(math.log2(batch_size)))
    else:
        params["batch_size"] = int(batch_size)
    if space.scaling == "none":
        params["learning_rate"] = float(learning_rate)
    else:
        params["base_learning_rate"] = float(learning_rate) / space.scaled_learning_rate(1.0, batch_size)
    return params


def run_design(
    study: optuna.Study,
    design: BatchDesign,
    space: SearchSpace,
    run_trials: Callable[[int], None],
    *,
    log: Callable[[str], None] = print,
) -> int:
    """Run the design's rounds on ``study`` until it is complete or ``design.max_trials`` is used.

    ``run_trials(n)`` runs ``n`` queued trials (in this process, or on workers) with pruning off.
    The plan is stored on the study first. Returns the number of trials run.
    """
    study.set_user_attr(DESIGN_ATTR, design.to_dict())
    done = 0
    while True:
        planned = next_round(study, design, space)
        used = len(_design_trials(study, design))
        room = design.max_trials - used
        if not planned:
            break
        if room <= 0:
            log(f"batch-size study: stopped at --max-trials {design.max_trials}, {len(planned)} more trial(s) planned; "
                "raise --max-trials and run the same command again to finish it")
            break
        planned = planned[:room]
        roles = {"lr": 0, "seed": 0}
        study.set_user_attr(DESIGN_ATTR, design.to_dict())  # the first guesses of the batch sizes started now
        for p in planned:
            study.enqueue_trial(params_for(space, design, p.batch_size, p.learning_rate),
                                user_attrs={ROLE_ATTR: p.role})
            roles[p.role] += 1
        what = ", ".join(f"{n} {'learning-rate search' if r == 'lr' else 'at the chosen rate'}"
                         for r, n in roles.items() if n)
        log(f"batch-size study: round of {len(planned)} trial(s) ({what}); {used + len(planned)} of at most "
            f"{design.max_trials}")
        run_trials(len(planned))
        done += len(planned)
    study.set_user_attr(DESIGN_ATTR, design.to_dict())
    return done
