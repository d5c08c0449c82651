"""The search benchmark's statistics (``benchmarks/search.py``): what its comparison table says."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "search.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("bstune_search_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _runs(strategy: str, rows: list[list[float]]) -> list[tuple]:
    return [("names", "budget", strategy, seed, r, 10, 0.0) for seed, r in enumerate(rows)]


def test_comparison_counts_every_pair_and_marks_only_a_clear_loss(search) -> None:
    inf = math.inf
    ours = _runs("bstune default", [[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    theirs = _runs("tpe", [[2.0, 1.0, inf, 0.0], [2.0, 1.0, inf, 0.0], [4.0, 1.0, inf, 0.0]])
    better = _runs("grid", [[0.0] * 4 for _ in range(12)])
    out = search.comparison(ours + theirs + better, "budget", "names", "bstune default", ["tpe", "grid"])
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()[2:]}
    # 10%, the 9 pairs: (1<2, 1<2, 1<4), (2=2, 2=2, 2<4), (3>2, 3>2, 3<4): 5 lower, 2 ties
    cells = [c.strip() for c in rows["tpe"].split("|")[2:6]]
    assert cells[0].startswith(f"{(5 + 0.5 * 2) / 9:.2f} (")
    assert cells[1].startswith("1.00 (") and cells[2].startswith("1.00 (")  # "not yet" is the worst regret
    assert cells[3] == "0.50 (1.00)"  # all equal: no difference, and no test to run
    assert "**" not in rows["tpe"]
    # Ours never lower than a grid that is always at 0: a clear loss where ours is above it.
    grid = [c.strip() for c in rows["grid"].split("|")[2:6]]
    assert grid[0].startswith("**0.00 (") and grid[1] == "0.50 (1.00)"
    assert rows["grid"].rstrip().endswith("| 12 |")
    assert search.comparison(theirs, "budget", "names", "bstune default", ["tpe"]) is None


def test_early_ranks_reads_each_curve_at_the_fraction_and_a_finished_one_at_its_end(search, monkeypatch) -> None:
    from types import SimpleNamespace

    def curve(train_s, metric):
        return SimpleNamespace(train_s=tuple(train_s), metric=tuple(metric))

    fake = SimpleNamespace(
        budget=8.0,
        curves={
            (32, 0.01, 1): curve([1, 2, 4, 8], [0.2, 0.3, 0.5, 0.95]),  # the best: a slow starter
            (64, 0.01, 1): curve([1, 2, 4, 8], [0.6, 0.7, 0.8, 0.9]),
            (128, 0.01, 1): curve([1], [0.85]),  # ended at 1 s: 0.85 at every later fraction
            (256, 0.01, 1): curve([1, 2, 4, 8], [0.1, 0.1, 0.2, float("nan")]),
            (96, 0.01, 1): curve([1, 8], [0.99, 0.99]),  # not a power of two: not searched, left out
        },
    )
    monkeypatch.setitem(search._CACHE, "fake", fake)
    quarter, half = search.early_ranks("fake", fractions=(1 / 4, 1 / 2))
    # at 2 s: 0.3, 0.7, 0.85, 0.1 against the finals 0.95, 0.9, 0.85, 0.2 (the NaN skipped): rank
    # differences 2, 0, 2, 0, Spearman 1 - 6 * 8 / (4 * 15) = 0.2; the five best are all four
    assert quarter == "| fake | 1/4 | 0.20 | 0.50, 0.25, 0.00, 0.75 | 1 of 4 |"
    # at 4 s the slow starter has 0.5: still behind 0.8 and 0.85
    assert half == "| fake | 1/2 | 0.20 | 0.50, 0.25, 0.00, 0.75 | 1 of 4 |"


def test_a_rung_set_apart_sits_at_its_fraction_and_keeps_its_share(search) -> None:
    import optuna

    import bstune

    study = bstune.create_study(bstune.TimeBudget(16.0), pruner=optuna.pruners.NopPruner())
    rung = search._Rung(1 / 8, 2.0)
    assert rung.max_t(study) == pytest.approx(16.0 / 8 * 2)  # its one rung: max_t / keep = 2 s
    for v in (0.5, 0.6, 0.9):
        done = study.ask()
        done.report(v, 1000)
        done.report(v, 2000)
        study.tell(done, v)
    trial = study.ask()
    trial.report(0.55, 2100)  # at the 2 s rung: 0.55 against 0.5, 0.6, 0.9; keep the top half
    assert rung.prune(study, study._storage.get_trial(trial._trial_id))
    other = study.ask()
    other.report(0.7, 2100)
    assert not rung.prune(study, study._storage.get_trial(other._trial_id))


@pytest.mark.parametrize("agree", [True, False])
def test_the_adaptive_rung_acts_only_where_early_values_ranked_the_study_s_trials_well(search, agree) -> None:
    import optuna

    import bstune

    study = bstune.create_study(bstune.TimeBudget(16.0), pruner=optuna.pruners.NopPruner())
    rung = search._AdaptiveRung(1 / 16, 4.0, 0.8, 4, 0.5)  # at 1 s, once 4 trials past 8 s agree
    at_half = [0.5, 0.6, 0.7, 0.8]
    at_rung = [0.1, 0.2, 0.3, 0.4] if agree else [0.4, 0.3, 0.2, 0.1]
    for early, late in zip(at_rung, at_half, strict=True):
        done = study.ask()
        done.report(early, 1000)
        done.report(late, 8000)
        study.tell(done, late)
    trial = study.ask()
    trial.report(0.15, 1100)  # outside the top quarter of the four at the rung in either order
    assert rung.prune(study, study._storage.get_trial(trial._trial_id)) is agree


def test_tpe_on_completed_trials_sizes_its_good_group_by_the_completed_ones_only(search) -> None:
    import optuna

    study = optuna.create_study(direction="maximize")
    for i in range(20):
        t = study.ask()
        t.suggest_float("x", 0.0, 1.0)
        t.report(0.1, 1)
        if i < 8:
            study.tell(t, float(i))
        else:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    with pytest.warns(FutureWarning, match="gamma"):  # Optuna deprecated gamma in 4.9 (removal in 6.0)
        sampler = search._TPEOnCompleted(0.5, seed=0, n_startup_trials=1)
    trial = study.ask()
    sampler.sample_independent(study, study._storage.get_trial(trial._trial_id), "x", optuna.distributions.FloatDistribution(0, 1))
    assert sampler._gamma(20) == 4  # half of the 8 completed, whatever the 12 pruned
    study.tell(trial, 9.0)
    sampler._count(study)
    assert sampler._gamma(21) == 5  # 9 completed: ceil(4.5)
