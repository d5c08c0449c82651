"""bstune.analysis.best_configurations: the table ``bstune optimize`` ends with."""

from __future__ import annotations

import optuna

from bstune.analysis import best_configurations
from bstune.objectives import Target, TimeBudget
from bstune.space import load_space
from bstune.study import create_study, make_objective, optimize
from bstune.testing import FakeClock


def _study(mode, plan):  # type: ignore[no-untyped-def]
    """A study whose trial n trains plan[n][0] seconds and then reports plan[n][1]."""
    clock = FakeClock()
    space = load_space("default")

    def train(hp, run):  # type: ignore[no-untyped-def]
        seconds, metric = plan[run.trial.number]
        with run.training():
            clock.advance(seconds)
        run.report(metric)

    study = create_study(mode, space=space, seed=0, pruner=optuna.pruners.NopPruner())
    optimize(study, make_objective(train, space, mode, clock=clock), n_trials=len(plan))
    return study


def test_target_mode_lists_the_feasible_trials_fastest_first():
    # Trial 1 misses the target after 1 s: the smallest value, and infeasible, so not listed.
    study = _study(Target(0.9), {0: (3.0, 0.95), 1: (1.0, 0.5), 2: (2.0, 0.92), 3: (5.0, 0.91)})
    rows = best_configurations(study)
    assert [(r.number, r.value) for r in rows] == [(2, 2.0), (0, 3.0), (3, 5.0)]
    assert all(r.feasible for r in rows)


def test_time_budget_mode_lists_the_most_accurate_first_and_keeps_k():
    study = _study(TimeBudget(10.0), {0: (10.0, 0.7), 1: (10.0, 0.9), 2: (10.0, 0.8), 3: (10.0, 0.6)})
    assert [r.number for r in best_configurations(study, k=3)] == [1, 2, 0]
