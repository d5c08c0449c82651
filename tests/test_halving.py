"""AsyncHalvingPruner: asynchronous successive halving on elapsed training time, by hand and on
replayed real learning curves in a target study."""

from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
import pytest
from _pruning import _finished as _finished_steps
from _pruning import _random_start_then_best
from _pruning import _study as _pruner_study
from optuna.trial import TrialState

import bstune
from bstune.pruners import AnyPruner, AsyncHalvingPruner, default_pruner
from bstune.study import create_study, make_objective
from bstune.testing import FakeClock, RecordedCurves

_CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "curves"


def _study(direction: str = "maximize", budget: float | None = 16.0, **kw: object) -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=AsyncHalvingPruner(**kw))  # type: ignore[arg-type]
    if budget is not None:
        study.set_user_attr("mode", "time_budget")
        study.set_user_attr("budget", budget)
    return study


def _finished(study: optuna.Study, curve: list[tuple[float, float]], state: TrialState = TrialState.COMPLETE) -> None:
    t = study.ask()
    for seconds, v in curve:
        t.report(v, int(round(seconds * 1000)))
    study.tell(t, curve[-1][1] if state == TrialState.COMPLETE else None, state=state)


def _verdict(study: optuna.Study, reports: list[tuple[float, float]]) -> bool:
    """Whether a trial with these reports is stopped (at any of them, as a run would stop it)."""
    t = study.ask()
    pruned = False
    for seconds, v in reports:
        t.report(v, int(round(seconds * 1000)))
        pruned = t.should_prune()
        if pruned:
            break
    study.tell(t, state=TrialState.FAIL)  # out of the way of the next check
    return pruned


def test_rungs_and_cut_off_by_hand() -> None:
    # Budget 16 s, reduction factor 4: rungs at 4 s and 1 s. Four finished trials had 0.1, 0.2,
    # 0.3, 0.4 at their first report past 1 s; the cut-off is their 75th percentile,
    # 0.3 + 0.25 x (0.4 - 0.3) = 0.325 (linear interpolation). Strictly worse is stopped.
    study = _study()
    for v in (0.1, 0.2, 0.3, 0.4):
        _finished(study, [(0.5, 0.0), (1.2, v), (4.5, v + 0.1), (16.0, v + 0.2)])
    assert _verdict(study, [(1.1, 0.32)])
    assert not _verdict(study, [(1.1, 0.325)])
    assert not _verdict(study, [(1.1, 0.33)])
    reason = study.pruner.explain(study, study.trials[4].number)
    assert reason is not None and reason.pruner == "AsyncHalvingPruner"
    assert reason.why == (
        "at 1.10 s (rung 1.00 s of 16.00 s) its best 0.32 is outside the top 25% of the 4 trials that "
        "passed the rung (cut-off 0.325)"
    )


def test_a_trial_is_judged_once_per_rung_at_its_first_report_past_it() -> None:
    study = _study()
    for v in (0.5, 0.6):
        _finished(study, [(1.0, v), (4.0, v + 0.1), (16.0, v + 0.2)])
    assert not _verdict(study, [(0.9, 0.0)])  # before the first rung: nothing to compare
    assert not _verdict(study, [(0.9, 0.7), (1.5, 0.1)])  # 1.5 s: past 1 s, but its best 0.7 ranks first
    # Past 1 s already at its previous report: not judged again at 2 s, only at 4 s.
    t = study.ask()
    t.report(0.9, 1000)
    assert not t.should_prune()
    t.report(0.0, 2000)
    assert not t.should_prune()  # its best-so-far is still 0.9
    study.tell(t, state=TrialState.FAIL)
    assert _verdict(study, [(1.0, 0.9), (2.0, 0.9), (4.1, 0.0)]) is False  # 0.9 >= the 4 s values 0.6, 0.7
    assert _verdict(study, [(1.0, 0.9), (4.1, 0.55)]) is False  # best-so-far 0.9 counts, not the last value
    assert _verdict(study, [(1.0, 0.45)]) is True  # 0.45 against 0.5 and 0.6 at the 1 s rung
    assert _verdict(study, [(1.0, 0.58), (4.1, 0.6)]) is True  # kept at 1 s (cut-off 0.575), not at 4 s (0.675)


def test_a_report_past_both_rungs_is_judged_at_the_later_one() -> None:
    study = _study()
    _finished(study, [(0.5, 0.9), (4.0, 0.2), (16.0, 0.95)])  # 0.9 at 1 s (best-so-far), 0.9 at 4 s
    _finished(study, [(1.0, 0.1), (4.0, 0.3), (16.0, 0.5)])  # 0.1 at 1 s, 0.3 at 4 s
    # One report at 5 s: judged at the 4 s rung against 0.9 and 0.3 (cut-off 0.75).
    assert _verdict(study, [(5.0, 0.7)])
    assert not _verdict(study, [(5.0, 0.8)])


def test_target_mode_rungs_follow_the_longest_completed_trial() -> None:
    # No time budget (a target study): max_t is the longest training time of the completed trials,
    # 4, 16 and 8 s -> 16 s, so the rungs are at 4 s and 1 s; a pruned trial does not count.
    study = _study("minimize", budget=None)
    assert study.pruner.max_t(study) is None
    assert not _verdict(study, [(1.1, 0.9)])  # nothing completed: nothing stopped
    for end, start in ((4.0, 0.20), (16.0, 0.10), (8.0, 0.30)):
        _finished(study, [(1.0, start), (end, 0.0)])
    _finished(study, [(1.0, 0.05), (90.0, 0.01)], TrialState.PRUNED)
    assert study.pruner.max_t(study) == 16.0
    # Shortfalls at 1 s: 0.20, 0.10, 0.30 and the pruned trial's 0.05; minimising, the cut-off is
    # their 25th percentile, 0.05 + 0.75 x (0.10 - 0.05) = 0.0875.
    assert _verdict(study, [(1.05, 0.09)])
    assert not _verdict(study, [(1.05, 0.0875)])
    # A trial that reaches the target quickly does not shrink the rungs; a longer one stretches them.
    _finished(study, [(0.1, 0.0)])
    assert study.pruner.max_t(study) == 16.0
    _finished(study, [(1.0, 0.3), (32.0, 0.0)])
    assert study.pruner.max_t(study) == 32.0


def test_a_target_study_with_a_limit_ranks_at_fractions_of_the_limit_from_the_start() -> None:
    # Target(limit=16): max_t is the limit, known before any trial completes; rungs at 4 s and 1 s.
    study = create_study(bstune.Target(0.9, limit=16), pruner=AsyncHalvingPruner())
    assert study.pruner.max_t(study) == 16.0
    _finished(study, [(1.0, 0.20), (2.0, 0.15)], TrialState.PRUNED)  # no completed trial at all
    assert _verdict(study, [(1.05, 0.25)])  # shortfall 0.25 against 0.20 at the 1 s rung
    assert not _verdict(study, [(0.5, 0.25), (0.95, 0.25)])  # not at a rung yet
    _finished(study, [(1.0, 0.30), (40.0, 0.0)])  # a longer completed trial does not move the rungs
    assert study.pruner.max_t(study) == 16.0
    # Minimising shortfalls 0.20 and 0.30 at 1 s, the cut-off is their 25th percentile, 0.225.
    assert _verdict(study, [(1.02, 0.23)]) and not _verdict(study, [(1.02, 0.22)])


def test_too_few_values_at_the_rung_stop_nothing() -> None:
    study = _study(n_min_trials=3)
    _finished(study, [(1.0, 0.8), (16.0, 0.9)])
    _finished(study, [(1.0, 0.8), (16.0, 0.9)])
    _finished(study, [(0.5, 0.8), (0.9, 0.9)], TrialState.PRUNED)  # never reached 1 s
    assert not _verdict(study, [(1.1, 0.0)])
    _finished(study, [(1.0, 0.8), (16.0, 0.9)])
    assert _verdict(study, [(1.1, 0.0)])


def test_reduction_factor_and_number_of_rungs() -> None:
    # Factor 2 and three rungs below 16 s: 8, 4 and 2 s; the top half continues.
    study = _study(reduction_factor=2.0, n_rungs=3)
    for v in (0.2, 0.4):
        _finished(study, [(2.0, v), (4.0, v), (8.0, v), (16.0, v)])
    assert _verdict(study, [(2.1, 0.29)])  # median of 0.2 and 0.4 is 0.3
    assert not _verdict(study, [(2.1, 0.31)])
    assert not _verdict(study, [(1.0, 0.0)])  # 1 s is not a rung with three


def test_rank_correlation_by_hand() -> None:
    from bstune.pruners._halving import rank_correlation

    # ranks 1 2 3 4 against 1 3 2 4: 1 - 6 x (0 + 1 + 1 + 0) / (4 x 15) = 0.8
    assert rank_correlation([0.1, 0.2, 0.3, 0.4], [5.0, 7.0, 6.0, 8.0]) == pytest.approx(0.8)
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: x ranks 1.5 1.5 3, y ranks 1 2 3 -> Pearson of the ranks 0.866
    assert rank_correlation([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def _crossing(study: optuna.Study, n: int, agree: bool) -> None:
    """n finished trials whose values at 1.2 s rank them as their final values do (agree) or in
    reverse (curves that cross: the slow starters end best)."""
    for i in range(n):
        early = 0.1 + 0.05 * i
        final = 0.5 + 0.05 * i if agree else 0.9 - 0.05 * i
        _finished(study, [(1.2, early), (4.5, (early + final) / 2), (16.0, final)])


def test_with_a_rank_check_a_rung_ranks_only_where_the_study_shows_early_values_rank_final_ones() -> None:
    # Five finished trials, values at the 1 s rung 0.10 .. 0.30: a newcomer with 0.12 is outside
    # their top quarter. It is stopped where those early values ranked the trials' final values
    # (Spearman 1.0), and left to train where the curves crossed (Spearman -1.0).
    agreeing = _study(min_rank_correlation=0.8)
    _crossing(agreeing, 5, agree=True)
    assert _verdict(agreeing, [(1.1, 0.12)])
    assert "Spearman 1.00" in agreeing.pruner.explain(agreeing, agreeing.trials[-1].number).why
    crossing = _study(min_rank_correlation=0.8)
    _crossing(crossing, 5, agree=False)
    assert not _verdict(crossing, [(1.1, 0.12)])
    assert crossing.pruner.rank_agreement(crossing, 1.0) == (pytest.approx(-1.0), 5)
    # Too few completed trials to tell: no ranking, however they agree.
    few = _study(min_rank_correlation=0.8)
    _crossing(few, 4, agree=True)
    assert not _verdict(few, [(1.1, 0.12)])
    # Without the check (the default) the same newcomer is stopped among crossing curves too.
    plain = _study()
    _crossing(plain, 5, agree=False)
    assert _verdict(plain, [(1.1, 0.12)])


def test_a_trial_not_yet_evaluated_at_the_rung_is_judged_on_its_first_value() -> None:
    # One evaluation an epoch: a small batch first reports at 3 s, past the 1 s rung. It is ranked on
    # that value against the others' first values at or past 1 s, not as if it had none.
    study = _study()
    for v in (0.1, 0.2, 0.3, 0.4):
        _finished(study, [(1.2, v), (16.0, v + 0.2)])
    assert not _verdict(study, [(3.0, 0.45)])
    assert _verdict(study, [(3.0, 0.30)])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"min_rank_correlation": 1.5}, r"'min_rank_correlation' parameter of AsyncHalvingPruner .* Got 1.5"),
        ({"n_min_ranked": 2}, r"'n_min_ranked' parameter of AsyncHalvingPruner .* Got 2"),
        ({"reduction_factor": 1}, r"'reduction_factor' parameter of AsyncHalvingPruner .* Got 1"),
        ({"reduction_factor": math.inf}, r"'reduction_factor' parameter of AsyncHalvingPruner .* Got inf"),
        ({"n_rungs": 0}, r"'n_rungs' parameter of AsyncHalvingPruner .* Got 0"),
        ({"n_min_trials": True}, r"'n_min_trials' parameter of AsyncHalvingPruner .* Got True"),
    ],
)
def test_bad_parameters_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(bstune.errors.InvalidParameterError, match=match):
        AsyncHalvingPruner(**kw)  # type: ignore[arg-type]


def test_on_recorded_real_curves_a_target_study_stops_slow_starters_and_keeps_the_fastest() -> None:
    """Replayed real learning curves (the names LSTM), a target study with the default pruners and
    this one:
    after a random start, the three configurations with the shortest recorded time-to-target reach
    the target, and successive halving stops many of the others early, each with its reason."""
    curves = RecordedCurves(_CURVES / "names.jsonl")
    space = curves.space()
    target = 0.97 * curves.best
    mode = bstune.Target(target)
    times = sorted(
        (t, k) for k, c in curves.curves.items() if k[0] & (k[0] - 1) == 0 and (t := c.time_to(target)) is not None
    )
    fastest = [k for _, k in times[:3]]
    rng = random.Random(0)
    others = [k for k in sorted(curves.curves) if k[0] & (k[0] - 1) == 0 and k not in fastest]
    start, rest = rng.sample(others, 8), rng.sample(others, 24)
    order = start + rest[:12] + fastest + rest[12:]
    clock = FakeClock()
    pruner = AnyPruner(*default_pruner(mode).pruners, AsyncHalvingPruner())
    study = create_study(mode, space=space, pruner=pruner, seed=0)
    for b, lr, e in order:
        study.enqueue_trial({"log2_batch_size": int(math.log2(b)), "learning_rate": lr, "epochs": e})
    study.optimize(make_objective(curves.task(clock), space, mode, clock=clock), n_trials=len(order))
    by_config = {tuple(t.user_attrs["replayed"]): t for t in study.trials}
    for k in fastest:
        t = by_config[k]
        assert t.state == TrialState.COMPLETE and t.user_attrs["reached_target"], (k, t.user_attrs.get("stop_detail"))
    assert study.best_trial.user_attrs["replayed"] == list(fastest[0])
    halved = [t for t in study.trials if "by AsyncHalvingPruner" in t.user_attrs.get("stop_detail", "")]
    assert len(halved) >= 8
    for t in halved:
        assert "outside the top 25%" in t.user_attrs["stop_detail"]
        assert t.user_attrs["train_s"] < 0.5 * curves.budget


def test_a_rung_that_always_ranks_stops_a_slow_starting_best_configuration_the_default_keeps() -> None:
    """Curves that cross (a CNN on digits, SGD with a cosine schedule over 60 epochs, evaluated once an
    epoch): the best recorded configuration, batch 16, is behind at a quarter of the budget. Ranked
    there against the trials before it, as the default once did, it is stopped; the default keeps it."""
    mode = bstune.TimeBudget(1.0)
    ranked = _random_start_then_best("digits_cnn", AnyPruner(*default_pruner(mode).pruners, AsyncHalvingPruner(n_rungs=1)), 1)
    assert ranked.trials[12].state == TrialState.PRUNED
    assert "by AsyncHalvingPruner" in ranked.trials[12].user_attrs["stop_detail"]
    kept = _random_start_then_best("digits_cnn", default_pruner(mode), 1)
    assert kept.trials[12].state == TrialState.COMPLETE and kept.best_trial.number == 12
    assert kept.best_value > ranked.best_value


@pytest.mark.parametrize("task", ["names", "polarity", "digits"])
def test_a_rung_with_skip_sweep_leaves_the_start_up_sweep_to_train(task: str) -> None:
    """The default sampler's sweep measures each batch size; a halving rung with ``skip_sweep``
    added to the default judges only the trials after it (the sweep's values at the rung still
    count for them)."""
    from bstune.testing import RecordedCurves

    curves = RecordedCurves(_CURVES / f"{task}.jsonl")
    space = curves.space()
    mode = bstune.TimeBudget(curves.budget)
    clock = FakeClock()
    pruner = AnyPruner(*default_pruner(mode).pruners, AsyncHalvingPruner(n_rungs=1, skip_sweep=True))
    study = create_study(mode, space=space, pruner=pruner, seed=0)
    n_sweep = study.sampler.n_sweep
    assert n_sweep == 7  # batch sizes 16 to 1024
    study.optimize(make_objective(curves.task(clock), space, mode, clock=clock), n_trials=n_sweep + 12)
    halved = [t.number for t in study.trials if "by AsyncHalvingPruner" in t.user_attrs.get("stop_detail", "")]
    assert halved and min(halved) >= n_sweep, halved


def test_async_halving_skips_sweep_trials_only_when_asked() -> None:
    study = _pruner_study(AsyncHalvingPruner(n_rungs=1, skip_sweep=True))
    study.set_user_attr("mode", "time_budget")
    study.set_user_attr("budget", 4.0)
    study.sampler.n_sweep = 2  # type: ignore[attr-defined]  # as bstune.study.BatchSweep says
    _finished_steps(study, [(500, 0.9), (1000, 0.95)])  # trial 0, far ahead at the 1 s rung
    for number, expected in ((1, False), (2, True)):
        t = study.ask()
        assert t.number == number
        t.report(0.1, 1100)
        assert t.should_prune() is expected
        study.tell(t, state=TrialState.FAIL)
    assert "of the 1 trial that passed" in study.pruner.explain(study, 2).why
    plain = AsyncHalvingPruner(n_rungs=1)
    assert plain.skip_sweep is False
