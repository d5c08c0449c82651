"""Benchmark: bstune's time-axis pruning against no pruning and Optuna's step-based pruners.

Not a test: it prints Markdown tables (commit them with the command, see RESULTS_pruning.md).

    python benchmarks/pruning.py                 # simulated task only (fake clock, seconds)
    python benchmarks/pruning.py --real          # also the MLP and LSTM examples (a few minutes)

Strategies, each with the same sampler (bstune's default TPE) and the same seed:

* ``bstune default``: :func:`bstune.pruners.default_pruner` for the mode;
* ``no pruning``: Optuna's ``NopPruner``;
* ``median, epoch steps``: Optuna's ``MedianPruner`` with trials reporting at step = evaluation
  index (4 per epoch on the simulated task), how Optuna users usually report;
* ``SH, ms steps``: Optuna's ``SuccessiveHalvingPruner`` on bstune's millisecond steps.

Two comparisons: the same number of trials (training time spent, best value), and the same total
tuning time (training seconds summed over trials; new trials start until it is spent).
Hypervolume: of the (training seconds, validation accuracy) front over every evaluation of every
trial, minimising time and maximising accuracy, against the reference point (budget, chance).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bstune  # noqa: E402
from bstune.pruners import (  # noqa: E402
    AnyPruner,
    DivergencePruner,
    SlowTrialPruner,
    TimeAlignedPruner,
    default_pruner,
)
from bstune.run import curve_from_attrs  # noqa: E402
from bstune.study import create_study, make_objective  # noqa: E402
from bstune.testing import FakeClock, SyntheticTask  # noqa: E402

STRATEGIES = ("bstune default", "no pruning", "median, epoch steps", "SH, ms steps")


class _EpochSteps:
    """A trial seen through Optuna's usual lens: each report's step is its evaluation index."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial
        self._n = 0

    def report(self, value: float, step: int) -> None:
        self._n += 1
        self._trial.report(value, self._n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


#: Settings of the time-aligned pruner to try instead of bstune's default (``--variant``).
VARIANTS: dict[str, dict[str, float]] = {
    "keep-third": {"reduction_factor": 3.0},
    "equal-time": {"peer_progress": 1.0},
    "fraction": {"peer_progress": 0.0},
}


def make_pruner(strategy: str, mode: bstune.TimeBudget) -> optuna.pruners.BasePruner:
    if strategy == "bstune default":
        return default_pruner(mode)
    if strategy.startswith("variant "):
        kw = VARIANTS[strategy.removeprefix("variant ")]
        return AnyPruner(DivergencePruner(), SlowTrialPruner(), TimeAlignedPruner(**kw))  # type: ignore[arg-type]
    if strategy == "no pruning":
        return optuna.pruners.NopPruner()
    if strategy == "median, epoch steps":
        return optuna.pruners.MedianPruner()
    if strategy == "SH, ms steps":
        return optuna.pruners.SuccessiveHalvingPruner()
    raise ValueError(strategy)


@dataclass
class Outcome:
    strategy: str
    seed: int
    train_s: float
    finished: int
    stopped: int
    best: float
    hypervolume: float
    wall_s: float
    best_params: dict[str, Any]


def hypervolume(points: list[tuple[float, float]], t_ref: float, acc_ref: float) -> float:
    """Area dominated by (time, accuracy) points (less time, more accuracy) up to the reference."""
    pts = sorted((t, a) for t, a in points if t <= t_ref and a > acc_ref)
    area, best = 0.0, acc_ref
    for i, (t, a) in enumerate(pts):
        best = max(best, a)
        t_next = pts[i + 1][0] if i + 1 < len(pts) else t_ref
        area += (t_next - t) * (best - acc_ref)
    return area


def run_strategy(
    strategy: str,
    seed: int,
    mode: bstune.TimeBudget,
    space: bstune.SearchSpace,
    objective_for: Callable[[], tuple[Callable[[optuna.Trial], float], float]],
    *,
    n_trials: int | None,
    total_train_s: float | None,
    chance: float,
) -> Outcome:
    study = create_study(mode, space=space, seed=seed, pruner=make_pruner(strategy, mode))
    objective, _ = objective_for()
    if strategy == "median, epoch steps":
        inner = objective
        objective = lambda trial: inner(_EpochSteps(trial))  # noqa: E731

    def spent() -> float:
        return sum(float(t.user_attrs.get("train_s", 0.0)) for t in study.trials)

    def cap(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if total_train_s is not None and spent() >= total_train_s:
            study.stop()

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, callbacks=[cap], catch=(Exception,))
    wall = time.perf_counter() - t0
    states = [t.state for t in study.trials]
    complete = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
    ]
    best_t = max(complete, key=lambda t: t.value) if complete else None
    pts = [
        (p.train_s, p.metric)
        for t in study.trials
        for p in curve_from_attrs(t)
        if math.isfinite(p.metric)
    ]
    return Outcome(
        strategy,
        seed,
        spent(),
        states.count(optuna.trial.TrialState.COMPLETE),
        states.count(optuna.trial.TrialState.PRUNED),
        best_t.value if best_t else math.nan,
        hypervolume(pts, mode.budget, chance),
        wall,
        dict(best_t.user_attrs) if best_t else {},
    )


def simulated(
    seeds: list[int], n_trials: int, budget: float, total_train_s: float | None
) -> list[Outcome]:
    mode = bstune.TimeBudget(budget)
    space = bstune.load_space("default")
    out = []
    for seed in seeds:
        for strategy in STRATEGIES:

            def objective_for(seed: int = seed) -> tuple[Callable[[optuna.Trial], float], float]:
                task = SyntheticTask(seed=seed, clock=FakeClock())
                return make_objective(task, space, mode, clock=task.clock), task.chance

            out.append(
                run_strategy(
                    strategy,
                    seed,
                    mode,
                    space,
                    objective_for,
                    n_trials=None if total_train_s else n_trials,
                    total_train_s=total_train_s,
                    chance=0.5,
                )
            )
    return out


#: The real examples: script, search space, per-trial budget (s), total training time (s), chance.
REAL = {
    "mlp_blobs": ("examples/mlp_blobs.py", "mlp", 1.0, 16.0, 1 / 3, {}),
    "lstm": ("examples/lstm.py", "lstm", 3.0, 30.0, 0.5, {}),
}


def real(name: str, seed: int, max_trials: int = 60) -> list[Outcome]:
    """One real example: every strategy with the same seed and the same total training time."""
    from bstune.task import load_task
    from bstune.train import Trainer

    script, space_name, budget, total, chance, options = REAL[name]
    root = Path(__file__).resolve().parents[1]
    task = load_task(root / script, options)
    trainer = Trainer(task, seed=seed)
    trainer.data()  # loaded once, outside every strategy's time
    mode = bstune.TimeBudget(budget)
    space = bstune.load_space(space_name)
    out = []
    for strategy in STRATEGIES:

        def objective_for() -> tuple[Callable[[optuna.Trial], float], float]:
            return make_objective(task, space, mode, trainer=trainer), chance

        o = run_strategy(
            strategy,
            seed,
            mode,
            space,
            objective_for,
            n_trials=max_trials,
            total_train_s=total,
            chance=chance,
        )
        o.strategy = f"{name}: {strategy}"
        out.append(o)
        print(f"  {o.strategy}: {o.wall_s:.0f} s wall", file=sys.stderr, flush=True)
    return out


def simulated_target(seeds: list[int], n_trials: int, target: float) -> str:
    """Target mode on the simulated task: bstune's default pruning against none, same trials."""
    mode = bstune.Target(target)
    space = bstune.load_space("default")
    lines = [
        f"### Simulated task, target accuracy {target:g}, {n_trials} trials each",
        "",
        "| strategy | seed | training s | finished | stopped | best time-to-target s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for seed in seeds:
        for name, pruner in (("bstune default", default_pruner(mode)), ("no pruning", None)):
            task = SyntheticTask(seed=seed, clock=FakeClock())
            study = create_study(mode, space=space, seed=seed, pruner=pruner)
            study.optimize(make_objective(task, space, mode, clock=task.clock), n_trials=n_trials)
            spent = sum(float(t.user_attrs.get("train_s", 0.0)) for t in study.trials)
            states = [t.state for t in study.trials]
            hits = [
                t.value
                for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs.get("reached_target")
            ]
            best = f"{min(hits):.2f}" if hits else "none reached"
            lines.append(
                f"| {name} | {seed} | {spent:.1f} | {states.count(optuna.trial.TrialState.COMPLETE)} "
                f"| {states.count(optuna.trial.TrialState.PRUNED)} | {best} |"
            )
    return "\n".join(lines)


def table(rows: list[Outcome], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| strategy | seed | training s | finished | stopped | best value | hypervolume |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.strategy} | {r.seed} | {r.train_s:.1f} | {r.finished} | {r.stopped} | {r.best:.4f} | {r.hypervolume:.3f} |"
        )
    return "\n".join(lines)


def summary(rows: list[Outcome], title: str) -> str:
    """Means over seeds; against no pruning, the time spent and the best value, seed by seed."""
    nop = {r.seed: r for r in rows if r.strategy.endswith("no pruning")}
    lines = [
        f"### {title}: mean over seeds",
        "",
        "| strategy | training s | time / no pruning | finished | stopped | best value "
        "| best vs no pruning | seeds within 1% | hypervolume |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in dict.fromkeys(r.strategy for r in rows):
        rs = [r for r in rows if r.strategy == s]
        ratio = statistics.mean(r.train_s / nop[r.seed].train_s for r in rs) if nop else math.nan
        gap = [(r.best - nop[r.seed].best) / nop[r.seed].best * 100 for r in rs] if nop else []
        within = sum(g >= -1.0 for g in gap)
        lines.append(
            f"| {s} | {statistics.mean(r.train_s for r in rs):.1f} | {ratio:.3f} "
            f"| {statistics.mean(r.finished for r in rs):.1f} | {statistics.mean(r.stopped for r in rs):.1f} "
            f"| {statistics.mean(r.best for r in rs):.4f} | {statistics.mean(gap) if gap else math.nan:+.2f}% "
            f"| {within}/{len(rs)} | {statistics.mean(r.hypervolume for r in rs):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--real", action="store_true", help="also the MLP and LSTM examples (minutes)")
    ap.add_argument(
        "--target", type=float, help="only target mode on the simulated task, to this accuracy"
    )
    ap.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        help="only the same-number-of-trials comparison, for this time-aligned setting against "
        "bstune's default and no pruning",
    )
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seeds = list(range(args.seeds))
    if args.target is not None:
        print(simulated_target(seeds, args.n_trials, args.target))
        return
    if args.variant:
        global STRATEGIES
        STRATEGIES = ("bstune default", f"variant {args.variant}", "no pruning")
        rows = simulated(seeds, args.n_trials, args.budget, None)
        print(summary(rows, f"Simulated task, {args.n_trials} trials each, variant {args.variant}"))
        print()
        print(table(rows, f"Simulated task, variant {args.variant}, per seed"))
        return
    same_n = simulated(seeds, args.n_trials, args.budget, None)
    print(summary(same_n, f"Simulated task, {args.n_trials} trials each, budget {args.budget:g} s"))
    print()
    print(table(same_n, "Simulated task, same number of trials, per seed"))
    print()
    cap = statistics.mean(r.train_s for r in same_n if r.strategy == "no pruning") / 2
    same_t = simulated(seeds, args.n_trials, args.budget, cap)
    print(summary(same_t, f"Simulated task, same total training time ({cap:.0f} s)"))
    print()
    print(table(same_t, "Simulated task, same total training time, per seed"))
    if args.real:
        rows = []
        for name in REAL:
            rows += real(name, seed=0)
        print()
        print(table(rows, "Real examples (CPU), same total training time, seed 0"))
        print()
        print(" ".join(f"{r.strategy}: {r.wall_s:.0f} s wall;" for r in rows))


if __name__ == "__main__":
    main()
