"""Tests for bstune.pruners: conformance like Optuna's own pruner tests, the time axis, crossing
curves on the synthetic task, the reasons in stop_detail, and out of memory (faked on CPU)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import bstune
from bstune.errors import InvalidParameterError
from bstune.pruners import (
    PRUNER_NAMES,
    AnyPruner,
    AsyncHalvingPruner,
    DivergencePruner,
    GainBoundPruner,
    PruneReason,
    SlowTrialPruner,
    TargetTimePruner,
    TimeAlignedPruner,
    default_pruner,
    known_out_of_memory,
    make_pruner,
)
from bstune.pruners._base import best_so_far, better, value_at
from bstune.study import create_study, make_objective
from bstune.testing import FakeClock, SyntheticTask

MAX = optuna.study.StudyDirection.MAXIMIZE
MIN = optuna.study.StudyDirection.MINIMIZE


def _study(
    pruner: optuna.pruners.BasePruner, direction: str = "maximize", **kw: object
) -> optuna.Study:
    return optuna.create_study(direction=direction, pruner=pruner, **kw)  # type: ignore[arg-type]


def _finished(
    study: optuna.Study, curve: list[tuple[int, float]], state: TrialState = TrialState.COMPLETE
) -> None:
    t = study.ask()
    for step, v in curve:
        t.report(v, step)
    if state == TrialState.COMPLETE:
        study.tell(t, curve[-1][1])
    else:
        study.tell(t, state=state)


def _ramp(final: float, ms: list[int], end: int = 4000) -> list[tuple[int, float]]:
    return [(s, final * s / end) for s in ms]


# ------------------------------------------------------------------ the time axis


def test_value_at_interpolates_the_best_so_far_curve_between_uneven_reports() -> None:
    curve = best_so_far([(0.1, 0.2), (0.15, 0.5), (9.0, 0.4), (10.0, 0.9)], MAX)
    assert curve == [(0.1, 0.2), (0.15, 0.5), (9.0, 0.5), (10.0, 0.9)]
    assert value_at(curve, 0.15) == 0.5
    assert value_at(curve, 9.5) == pytest.approx(0.7)
    assert value_at(curve, 0.05) is None  # before its first report nothing is known
    assert value_at(curve, 10.5) is None  # it has not reached that time
    assert best_so_far([(1.0, math.nan), (2.0, 0.3), (3.0, 0.1)], MIN) == [(2.0, 0.3), (3.0, 0.1)]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_time_aligned_prunes_the_worst_at_a_rung_in_both_directions(direction: str) -> None:
    sign = 1.0 if direction == "maximize" else -1.0
    study = _study(
        TimeAlignedPruner(min_seconds=1.0, n_startup_trials=2, n_min_trials=3), direction
    )
    for final in (0.9, 0.8, 0.7, 0.6):
        _finished(study, [(s, sign * v) for s, v in _ramp(final, [400, 1300, 2500, 4000])])
    good, bad = study.ask(), study.ask()
    for t, final in ((good, 0.95), (bad, 0.3)):
        t.report(sign * final * 0.7 / 4, 700)
        assert not t.should_prune()  # before the first rung
        t.report(sign * final * 1.2 / 4, 1200)  # first report past the 1 s rung
    assert not good.should_prune()
    assert bad.should_prune()
    reason = study.pruner.explain(study, bad.number)
    assert reason.pruner == "TimeAlignedPruner" and "ranks 6 of 6" in reason.why
    assert study.pruner.explain(study, bad.number) is None  # handed over once


def test_time_aligned_compares_sparse_and_uneven_reports_at_equal_time() -> None:
    # Other trials reported at times that never coincide with this trial's, some very sparsely.
    study = _study(TimeAlignedPruner(min_seconds=2.0, n_startup_trials=0, n_min_trials=3))
    _finished(study, [(150, 0.1), (9000, 0.9)])
    _finished(study, [(1999, 0.4), (2001, 0.45), (7777, 0.6)])
    _finished(study, [(333, 0.2), (5000, 0.8)])
    t = study.ask()
    t.report(0.30, 2500)
    # At 2.5 s the others stand at about 0.31, 0.46 and 0.48 (interpolated): 0.30 is last.
    assert t.should_prune()
    ok = study.ask()
    ok.report(0.50, 2600)  # best of four at 2.6 s
    assert not ok.should_prune()


def test_time_aligned_percentile_style_judges_every_report_between_rungs() -> None:
    def study_with(percentile: float | None) -> optuna.Study:
        pruner = TimeAlignedPruner(min_seconds=1.0, n_startup_trials=0, n_min_trials=3, percentile=percentile)
        study = _study(pruner)
        for final in (0.9, 0.8, 0.7, 0.6):
            _finished(study, _ramp(final, [500, 1000, 2000, 3000, 4000]))
        return study

    # Optuna's rule: percentile=50 prunes below the median, percentile=90 only below the 10th.
    for percentile, expected in ((None, False), (50.0, True), (90.0, False)):
        study = study_with(percentile)
        t = study.ask()
        t.report(0.25, 1100)  # the 1 s rung: second of five, kept
        assert not t.should_prune()
        t.report(0.36, 1800)  # not a rung; at 1.8 s the others stand at 0.27 to 0.405, median 0.34
        assert not t.should_prune()
        t.report(0.37, 2000)  # at 2 s: 0.30 to 0.45, median 0.375, 10th percentile 0.315
        assert t.should_prune() is expected, percentile


def test_time_aligned_waits_for_enough_trials_to_reach_that_time() -> None:
    study = _study(TimeAlignedPruner(min_seconds=1.0, n_startup_trials=0, n_min_trials=3))
    _finished(study, _ramp(0.9, [500, 4000]))
    _finished(study, _ramp(0.9, [500, 4000]))
    _finished(study, _ramp(0.9, [500, 1000]), TrialState.PRUNED)  # never reached 3 s
    t = study.ask()
    t.report(0.01, 3000)
    assert not t.should_prune()  # only two trials reached 3 s
    t2 = study.ask()
    t2.report(0.01, 1000)
    assert t2.should_prune()  # three reached 1 s


# ------------------------------------------------------------------ conformance, for every pruner


def _bstune_pruners() -> dict[str, Callable[[], optuna.pruners.BasePruner]]:
    return {
        "divergence": DivergencePruner,
        "time-aligned": lambda: TimeAlignedPruner(
            min_seconds=1.0, n_startup_trials=2, n_min_trials=2
        ),
        "target-time": TargetTimePruner,
        "async-halving": AsyncHalvingPruner,
        "slow": lambda: SlowTrialPruner(budget=10.0),
        "any": lambda: AnyPruner(
            DivergencePruner(),
            TimeAlignedPruner(min_seconds=1.0, n_startup_trials=2, n_min_trials=2),
        ),
    }


#: A report each pruner stops once it has data (target-time needs a target study: tested apart).
_STOPPED_WITH_DATA = {
    "divergence": (math.nan, 1500),
    "time-aligned": (0.0, 1500),  # far below the three finished trials at 1.5 s
    "async-halving": (0.0, 1500),  # rung 0.5 s of the finished trials' median 2 s: they had 0.5 there
    "slow": (0.0, 6000),  # one evaluation every 6 s: one fits into the 10 s budget
    "any": (0.0, 1500),
}


@pytest.mark.parametrize("name", list(_bstune_pruners()))
def test_no_pruning_without_data(name: str) -> None:
    study = _study(_bstune_pruners()[name]())
    for _ in range(3):
        _finished(study, [(1000, 0.5), (2000, 0.6)])
    trial = study.ask()
    assert not trial.should_prune()
    if name in _STOPPED_WITH_DATA:  # the same pruner, the same study, and data: it stops the trial
        value, step = _STOPPED_WITH_DATA[name]
        trial.report(value, step)
        assert trial.should_prune()


def test_no_pruning_before_the_startup_trials() -> None:
    study = _study(TimeAlignedPruner(min_seconds=1.0, n_startup_trials=3, n_min_trials=1))
    _finished(study, _ramp(0.9, [500, 1500, 4000]))
    _finished(study, _ramp(0.9, [500, 1500, 4000]))
    t = study.ask()
    t.report(0.0, 1500)
    assert not t.should_prune()
    _finished(study, _ramp(0.9, [500, 1500, 4000]))
    t2 = study.ask()
    t2.report(0.0, 1500)
    assert t2.should_prune()


@pytest.mark.parametrize(
    ("name", "prunes_nan"),
    [
        ("divergence", True),
        ("time-aligned", True),
        ("target-time", False),
        ("async-halving", False),
        ("slow", False),
        ("any", True),
    ],
)
def test_nan_policy(name: str, prunes_nan: bool) -> None:
    """NaN latest values: the divergence and time-aligned pruners stop the trial (diverged) with no
    other trial and no warm-up; the target-time, async-halving and slow pruners skip NaN, as documented."""
    study = _study(_bstune_pruners()[name](), "minimize" if name == "target-time" else "maximize")
    t = study.ask()
    t.report(math.nan, 100)
    assert t.should_prune() is prunes_nan
    if prunes_nan:
        reason = study.pruner.explain(study, t.number)
        assert reason is not None and reason.outcome == "diverged"


@pytest.mark.parametrize("name", list(_bstune_pruners()))
def test_pickling_keeps_the_configuration_and_the_decisions(name: str) -> None:
    pruner = _bstune_pruners()[name]()
    clone = pickle.loads(pickle.dumps(pruner))
    assert type(clone) is type(pruner)
    assert {k: v for k, v in vars(clone).items() if k not in ("_lock", "_reasons", "pruners")} == {
        k: v for k, v in vars(pruner).items() if k not in ("_lock", "_reasons", "pruners")
    }
    study = _study(clone)
    t = study.ask()
    t.report(math.inf, 100)
    expected = name in ("divergence", "time-aligned", "any")
    assert t.should_prune() is expected


def _objective(trial: optuna.Trial) -> float:
    """Curves at millisecond steps: trial i improves at rate x, reports every 0.7 s for 7 s.

    Trial n reports n ms late so that steps never coincide; its values follow its report times
    (x * t / 7 s), so at equal time the larger x is ahead even when two rates differ by less than
    the offset (with values x * k / 10 at those steps, a trial could trail one with a 0.4% smaller
    rate and a smaller number, and be ranked out).
    """
    x = trial.suggest_float("x", 0.0, 1.0)
    for k in range(1, 11):
        step = 700 * k + trial.number
        trial.report(x * step / 7000, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return x


@pytest.mark.parametrize("storage_kind", ["memory", "sqlite", "journal"])
def test_through_study_optimize_on_every_storage(storage_kind: str, tmp_path: Path) -> None:
    storage: str | optuna.storages.BaseStorage | None = None
    if storage_kind == "sqlite":
        storage = f"sqlite:///{tmp_path / 'p.db'}"
    elif storage_kind == "journal":
        storage = bstune.study.resolve_storage(f"journal:{tmp_path / 'p.log'}")
    pruner = AnyPruner(
        DivergencePruner(), TimeAlignedPruner(min_seconds=1.0, n_startup_trials=3, n_min_trials=3)
    )
    study = optuna.create_study(
        direction="maximize",
        pruner=pruner,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    study.optimize(_objective, n_trials=16)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.PRUNED) >= 3
    assert states.count(TrialState.COMPLETE) >= 3
    best_x = max(t.params["x"] for t in study.trials)
    assert study.best_trial.params["x"] == best_x  # the best configuration was never pruned
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert pruner.explain(study, t.number).pruner == "TimeAlignedPruner"


@pytest.mark.parametrize("name", ["default", "time-aligned"])
def test_two_threads_share_one_pruner(name: str) -> None:
    if name == "default":
        pruner: optuna.pruners.BasePruner = default_pruner(bstune.TimeBudget(7.0))
    else:
        pruner = TimeAlignedPruner(min_seconds=1.0, n_startup_trials=3, n_min_trials=3)
    study = optuna.create_study(
        direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(_objective, n_trials=24, n_jobs=2)
    states = [t.state for t in study.trials]
    assert len(states) == 24 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    if name == "time-aligned":  # straight lines of different slopes: the slow ones are stopped
        assert states.count(TrialState.PRUNED) >= 3
        best_x = max(t.params["x"] for t in study.trials)
        assert study.best_trial.params["x"] == best_x


def test_composes_with_optuna_pruners_and_names_them() -> None:
    pruner = AnyPruner(DivergencePruner(), optuna.pruners.ThresholdPruner(lower=0.2))
    study = _study(pruner)
    t = study.ask()
    t.report(0.1, 500)
    assert t.should_prune()
    assert pruner.explain(study, t.number) == PruneReason("ThresholdPruner", "")
    sh = AnyPruner(DivergencePruner(), optuna.pruners.SuccessiveHalvingPruner())
    study2 = optuna.create_study(
        direction="maximize", pruner=sh, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study2.optimize(_objective, n_trials=12)
    assert any(t.state == TrialState.PRUNED for t in study2.trials)


class _CountingStorage(optuna.storages.InMemoryStorage):
    """In-memory storage that counts the reads a pruning decision makes (each is a query on RDB)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = {"trials": 0, "attrs": 0}

    def get_all_trials(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.reads["trials"] += 1
        return super().get_all_trials(*args, **kwargs)

    def get_study_user_attrs(self, study_id: int):  # type: ignore[no-untyped-def]
        self.reads["attrs"] += 1
        return super().get_study_user_attrs(study_id)


@pytest.mark.parametrize("mode", [bstune.TimeBudget(4.0), bstune.Target(0.9, limit=4.0)])
def test_a_composite_pruner_reads_the_study_once_per_decision(mode: bstune.Mode) -> None:
    storage = _CountingStorage()
    pruner = default_pruner(mode)
    study = create_study(mode, storage=storage, pruner=pruner)
    for final in (0.5, 0.6, 0.7, 0.8):
        _finished(study, _ramp(final, [500, 1000, 2000, 4000]))
    t = study.ask()
    for step, v in _ramp(0.1, [500, 1000, 1500]):
        t.report(v, step)
    frozen = study._storage.get_trial(t._trial_id)
    storage.reads = {"trials": 0, "attrs": 0}
    pruner.prune(study, frozen)
    assert len(pruner.pruners) >= 3
    assert storage.reads == {"trials": 1, "attrs": 1}
    # Outside a decision every call reads again: nothing stale is kept between reports.
    from bstune.pruners._base import study_attrs, trials

    storage.reads = {"trials": 0, "attrs": 0}
    trials(study, (TrialState.COMPLETE,)), trials(study, (TrialState.COMPLETE,)), study_attrs(study)
    assert storage.reads == {"trials": 2, "attrs": 1}


# ------------------------------------------------------------------ validation at the door


def _public(pruner: object) -> dict[str, object]:
    return {k: v for k, v in vars(pruner).items() if not k.startswith("_") and k != "pruners"}


def test_pruner_defaults_are_the_documented_ones() -> None:
    assert _public(TargetTimePruner()) == {"margin": 0.1, "optimism": 3.0, "n_warmup_reports": 3, "min_progress": 0.25}
    assert _public(TimeAlignedPruner()) == {
        "first_rung_fraction": 0.25, "min_seconds": None, "reduction_factor": 2.5, "n_startup_trials": 4,
        "n_min_trials": 4, "peer_progress": 0.5, "percentile": None,
    }
    assert _public(GainBoundPruner()) == {"optimism": 3.0, "min_delta": 0.0, "n_min_trials": 3, "min_progress": 0.25}
    assert _public(DivergencePruner()) == {"loss_factor": 3.0, "n_warmup_reports": 1}
    assert _public(SlowTrialPruner()) == {"budget": None, "min_evaluations": 2, "first_epoch": False}


def test_pruners_accept_the_edges_of_their_ranges() -> None:
    assert _public(TargetTimePruner(0, optimism=1, n_warmup_reports=2, min_progress=0)) == {
        "margin": 0.0, "optimism": 1.0, "n_warmup_reports": 2, "min_progress": 0.0
    }
    assert TargetTimePruner(min_progress=1).min_progress == 1.0
    assert _public(GainBoundPruner(1, min_delta=0, n_min_trials=1, min_progress=0))["optimism"] == 1.0
    assert TimeAlignedPruner(0.99, peer_progress=1.0, percentile=100).percentile == 100
    assert SlowTrialPruner(budget=1e-3, min_evaluations=1, first_epoch=True).first_epoch is True


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TargetTimePruner(margin=-0.1), "The 'margin' parameter of TargetTimePruner must be a finite number of at least 0. Got -0.1 instead."),
        (lambda: TargetTimePruner(optimism=0.5), "The 'optimism' parameter of TargetTimePruner must be a finite number of at least 1. Got 0.5 instead."),
        (lambda: TargetTimePruner(n_warmup_reports=1), "The 'n_warmup_reports' parameter of TargetTimePruner must be an int in the range [2, inf). Got 1 instead."),
        (lambda: TargetTimePruner(min_progress=1.5), "The 'min_progress' parameter of TargetTimePruner must be a number in the range [0, 1]. Got 1.5 instead."),
        (lambda: TargetTimePruner(margin=True), "The 'margin' parameter of TargetTimePruner must be a finite number of at least 0. Got True instead."),
        (lambda: make_pruner("asha", bstune.TimeBudget(5)), "The 'pruner' parameter of make_pruner must be one of " + ", ".join(PRUNER_NAMES) + ". Got 'asha' instead."),
    ],
)
def test_refusals_say_the_rule_in_full(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        make()
    assert str(info.value) == message


REFUSALS = [
    (DivergencePruner, {"loss_factor": 1}, "The 'loss_factor' parameter of DivergencePruner must be a finite number greater than 1. Got 1 instead."),
    (DivergencePruner, {"loss_factor": True}, "The 'loss_factor' parameter of DivergencePruner must be a finite number greater than 1. Got True instead."),
    (DivergencePruner, {"n_warmup_reports": -1}, "The 'n_warmup_reports' parameter of DivergencePruner must be an int in the range [0, inf). Got -1 instead."),
    (DivergencePruner, {"n_warmup_reports": True}, "The 'n_warmup_reports' parameter of DivergencePruner must be an int in the range [0, inf). Got True instead."),
    (TimeAlignedPruner, {"first_rung_fraction": 1}, "The 'first_rung_fraction' parameter of TimeAlignedPruner must be a number in the range (0, 1). Got 1 instead."),
    (TimeAlignedPruner, {"min_seconds": 0}, "The 'min_seconds' parameter of TimeAlignedPruner must be a finite number greater than 0 or None. Got 0 instead."),
    (TimeAlignedPruner, {"reduction_factor": 1}, "The 'reduction_factor' parameter of TimeAlignedPruner must be a finite number greater than 1. Got 1 instead."),
    (TimeAlignedPruner, {"n_startup_trials": -1}, "The 'n_startup_trials' parameter of TimeAlignedPruner must be an int in the range [0, inf). Got -1 instead."),
    (TimeAlignedPruner, {"n_min_trials": 0}, "The 'n_min_trials' parameter of TimeAlignedPruner must be an int in the range [1, inf). Got 0 instead."),
    (TimeAlignedPruner, {"n_min_trials": True}, "The 'n_min_trials' parameter of TimeAlignedPruner must be an int in the range [1, inf). Got True instead."),
    (TimeAlignedPruner, {"peer_progress": 1.5}, "The 'peer_progress' parameter of TimeAlignedPruner must be a number in the range [0, 1]. Got 1.5 instead."),
    (TimeAlignedPruner, {"percentile": -1}, "The 'percentile' parameter of TimeAlignedPruner must be a number in the range [0, 100] or None. Got -1 instead."),
    (TimeAlignedPruner, {"percentile": True}, "The 'percentile' parameter of TimeAlignedPruner must be a number in the range [0, 100] or None. Got True instead."),
    (SlowTrialPruner, {"budget": True}, "The 'budget' parameter of SlowTrialPruner must be a finite number of seconds greater than 0 or None. Got True instead."),
    (SlowTrialPruner, {"min_evaluations": True}, "The 'min_evaluations' parameter of SlowTrialPruner must be an int in the range [1, inf). Got True instead."),
    (SlowTrialPruner, {"first_epoch": 1}, "The 'first_epoch' parameter of SlowTrialPruner must be True or False. Got 1 instead."),
    (GainBoundPruner, {"optimism": True}, "The 'optimism' parameter of GainBoundPruner must be a finite number of at least 1. Got True instead."),
    (GainBoundPruner, {"min_delta": True}, "The 'min_delta' parameter of GainBoundPruner must be a finite number of at least 0. Got True instead."),
    (GainBoundPruner, {"n_min_trials": True}, "The 'n_min_trials' parameter of GainBoundPruner must be an int in the range [1, inf). Got True instead."),
    (GainBoundPruner, {"min_progress": 1}, "The 'min_progress' parameter of GainBoundPruner must be a number in the range [0, 1). Got 1 instead."),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), REFUSALS)
def test_every_pruner_argument_is_refused_in_full(cls: type, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        cls(**kwargs)
    assert str(info.value) == message


def test_any_pruner_refusals_in_full() -> None:
    with pytest.raises(InvalidParameterError) as info:
        AnyPruner()
    assert str(info.value) == "The 'pruners' parameter of AnyPruner must be at least one optuna.pruners.BasePruner. Got () instead."
    with pytest.raises(InvalidParameterError) as info:
        AnyPruner(DivergencePruner(), "x")  # type: ignore[arg-type]
    assert str(info.value) == "The 'pruners' parameter of AnyPruner must be optuna.pruners.BasePruner instances. Got 'x' instead."


def test_every_pruner_accepts_the_edges_of_its_ranges() -> None:
    assert _public(DivergencePruner(1.0001, 0)) == {"loss_factor": 1.0001, "n_warmup_reports": 0}
    edge = TimeAlignedPruner(0.99, min_seconds=1e-9, reduction_factor=1.01, n_startup_trials=0, n_min_trials=1,
                             peer_progress=0, percentile=0)
    assert (edge.n_startup_trials, edge.n_min_trials, edge.peer_progress, edge.percentile) == (0, 1, 0.0, 0.0)
    assert TimeAlignedPruner(peer_progress=1, percentile=100).percentile == 100
    assert SlowTrialPruner(min_evaluations=1).min_evaluations == 1
    assert GainBoundPruner(min_progress=0.99).min_progress == 0.99
    edge_h = AsyncHalvingPruner(1.0001, n_rungs=1, n_min_trials=1)
    assert (edge_h.reduction_factor, edge_h.n_rungs, edge_h.n_min_trials) == (1.0001, 1, 1)


def test_make_pruner_default_follows_the_mode() -> None:
    budget = make_pruner("default", bstune.TimeBudget(5))
    target = make_pruner("default", bstune.Target(0.9))
    # bounds only: nothing is stopped for ranking low early, with or without a target's limit
    assert [type(p).__name__ for p in budget.pruners] == ["DivergencePruner", "SlowTrialPruner", "GainBoundPruner"]
    assert [type(p).__name__ for p in target.pruners] == ["DivergencePruner", "TargetTimePruner", "GainBoundPruner"]
    limited = make_pruner("default", bstune.Target(0.9, limit=10))
    assert [type(p).__name__ for p in limited.pruners] == ["DivergencePruner", "TargetTimePruner", "GainBoundPruner"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: DivergencePruner(loss_factor=1.0),
            r"'loss_factor' parameter of DivergencePruner must be .* Got 1.0",
        ),
        (
            lambda: DivergencePruner(n_warmup_reports=-1),
            r"'n_warmup_reports' parameter of DivergencePruner",
        ),
        (
            lambda: TimeAlignedPruner(0.0),
            r"'first_rung_fraction' parameter of TimeAlignedPruner .* Got 0.0",
        ),
        (
            lambda: TimeAlignedPruner(reduction_factor=1),
            r"'reduction_factor' parameter .* Got 1 instead",
        ),
        (
            lambda: TimeAlignedPruner(n_min_trials=0),
            r"'n_min_trials' parameter .* \[1, inf\)\. Got 0",
        ),
        (lambda: TimeAlignedPruner(peer_progress=2), r"'peer_progress' parameter .* Got 2"),
        (lambda: TimeAlignedPruner(percentile=101), r"'percentile' parameter .* Got 101"),
        (lambda: TimeAlignedPruner(min_seconds=-1.0), r"'min_seconds' parameter .* Got -1.0"),
        (
            lambda: TargetTimePruner(margin=-0.1),
            r"'margin' parameter of TargetTimePruner .* Got -0.1",
        ),
        (lambda: TargetTimePruner(optimism=0.5), r"'optimism' parameter .* Got 0.5"),
        (lambda: SlowTrialPruner(budget=0), r"'budget' parameter of SlowTrialPruner .* Got 0"),
        (lambda: GainBoundPruner(0.5), r"'optimism' parameter of GainBoundPruner .* Got 0.5"),
        (lambda: GainBoundPruner(min_delta=-1), r"'min_delta' parameter of GainBoundPruner .* Got -1"),
        (lambda: GainBoundPruner(n_min_trials=0), r"'n_min_trials' parameter of GainBoundPruner .* Got 0"),
        (lambda: GainBoundPruner(min_progress=1), r"'min_progress' parameter of GainBoundPruner .* Got 1"),
        (lambda: SlowTrialPruner(min_evaluations=0), r"'min_evaluations' parameter .* Got 0"),
        (lambda: AnyPruner(), r"'pruners' parameter of AnyPruner must be at least one"),
        (lambda: AnyPruner("median"), r"'pruners' parameter of AnyPruner .* Got 'median'"),  # type: ignore[arg-type]
        (
            lambda: make_pruner("asha", bstune.TimeBudget(5)),
            r"'pruner' parameter of make_pruner .* Got 'asha'",
        ),
    ],
)
def test_bad_parameters_are_refused_with_one_message_template(
    make: Callable[[], object], match: str
) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        make()


def test_make_pruner_knows_every_name_and_picks_a_default_per_mode() -> None:
    expected = {
        "default": "AnyPruner",
        "none": "NopPruner",
        "divergence": "DivergencePruner",
        "gain-bound": "GainBoundPruner",
        "time-aligned": "TimeAlignedPruner",
        "async-halving": "AsyncHalvingPruner",
        "target-time": "TargetTimePruner",
        "slow": "SlowTrialPruner",
        "median": "MedianPruner",
        "successive-halving": "SuccessiveHalvingPruner",
        "hyperband": "HyperbandPruner",
    }
    assert set(expected) == set(PRUNER_NAMES)
    for name, cls in expected.items():
        assert type(make_pruner(name, bstune.Target(0.9))).__name__ == cls
    budget = [type(p).__name__ for p in default_pruner(bstune.TimeBudget(5)).pruners]
    target = [type(p).__name__ for p in default_pruner(bstune.Target(0.9)).pruners]
    assert budget == ["DivergencePruner", "SlowTrialPruner", "GainBoundPruner"]
    assert target == ["DivergencePruner", "TargetTimePruner", "GainBoundPruner"]


def test_importing_the_pruners_does_not_import_torch() -> None:
    code = "import sys, bstune.pruners, bstune.study; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1]
    )


# ------------------------------------------------------------------ through bstune's Run


def _run_study(
    mode: bstune.objectives.Mode, pruner: optuna.pruners.BasePruner, space: str = "default"
) -> optuna.Study:
    return create_study(mode, space=bstune.load_space(space), pruner=pruner, seed=0)


def test_a_nan_trial_is_stopped_at_its_first_report() -> None:
    clock = FakeClock()
    mode = bstune.TimeBudget(10.0)
    study = _run_study(mode, default_pruner(mode))
    calls: list[int] = []

    def train(hp: bstune.Hyperparams, run: bstune.Run) -> None:
        while not run.should_stop:
            with run.training():
                clock.advance(0.5)
            calls.append(1)
            run.report(0.5 if hp.learning_rate < 1e-2 else math.nan, loss=0.7)

    study.enqueue_trial({"log2_batch_size": 5, "learning_rate": 2e-2, "epochs": 3})
    optuna_objective = make_objective(train, bstune.load_space("default"), mode, clock=clock)
    study.optimize(optuna_objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED and len(calls) == 1
    assert t.user_attrs["stop_reason"] == "diverged" and len(t.user_attrs["curve"]["metric"]) == 1


def test_a_loss_that_explodes_is_stopped_as_diverged_by_the_divergence_pruner() -> None:
    clock = FakeClock()
    study = optuna.create_study(
        direction="maximize", pruner=AnyPruner(DivergencePruner(loss_factor=3.0))
    )
    trial = study.ask()
    with pytest.raises(
        optuna.TrialPruned, match="pruned by DivergencePruner at step 3000: loss 3.5 grew past 3 x"
    ):
        with bstune.Run(trial, bstune.TimeBudget(60.0), clock=clock) as run:
            for loss in (1.0, 1.4, 3.5, 1.0):
                with run.training():
                    clock.advance(1.0)
                run.report(0.6, loss=loss)
    assert run.stop_reason == "diverged" and len(run.curve) == 3
    frozen = study.trials[0]
    assert frozen.user_attrs["stop_detail"].startswith("pruned by DivergencePruner at step 3000")


def test_an_optuna_pruner_is_named_in_the_stop_detail() -> None:
    clock = FakeClock()
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5)
    )
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match=r"^pruned by ThresholdPruner at step 1000$"):
        with bstune.Run(trial, bstune.TimeBudget(60.0), clock=clock) as run:
            with run.training():
                clock.advance(1.0)
            run.report(0.4)


def _crossing_study(pruner: optuna.pruners.BasePruner) -> tuple[optuna.Study, dict[str, int]]:
    """Short-schedule trials that look better early, then the long one that wins at the end.

    At 4.1 s (a quarter of its 16.5 s schedule) the winner (batch 64, ten epochs) stands near 0.65,
    while the short ones (batch 256, about 3 s) have already annealed to about 0.8 and stop there.
    """
    task = SyntheticTask(seed=0, clock=FakeClock())
    mode = bstune.TimeBudget(30.0)
    space = bstune.load_space("default")
    study = create_study(mode, space=space, pruner=pruner, seed=0)
    for lr, epochs in ((6e-3, 4), (5e-3, 5), (7e-3, 4), (6e-3, 6), (4e-3, 5)):
        study.enqueue_trial({"log2_batch_size": 8, "learning_rate": lr, "epochs": epochs})
    study.enqueue_trial({"log2_batch_size": 6, "learning_rate": 3e-3, "epochs": 10})
    study.optimize(make_objective(task, space, mode, clock=task.clock), n_trials=6)
    return study, {"winner": 5}


def test_crossing_curves_do_not_lose_the_best_configuration() -> None:
    study, idx = _crossing_study(default_pruner(bstune.TimeBudget(30.0)))
    winner = study.trials[idx["winner"]]
    assert winner.state == TrialState.COMPLETE
    assert study.best_trial.number == winner.number
    # The same comparison at plain equal time (what successive halving on time does) loses it.
    naive, _ = _crossing_study(TimeAlignedPruner(peer_progress=1.0))
    lost = naive.trials[idx["winner"]]
    assert lost.state == TrialState.PRUNED
    assert "TimeAlignedPruner" in lost.user_attrs["stop_detail"]
    assert naive.best_value < study.best_value - 0.03


def test_time_aligned_prunes_hopeless_trials_on_the_synthetic_task_and_says_why() -> None:
    task = SyntheticTask(seed=1, clock=FakeClock())
    mode = bstune.TimeBudget(30.0)
    space = bstune.load_space("default")
    pruned = create_study(mode, space=space, pruner=default_pruner(mode), seed=3)
    pruned.optimize(make_objective(task, space, mode, clock=task.clock), n_trials=24)
    task2 = SyntheticTask(seed=1, clock=FakeClock())
    plain = create_study(mode, space=space, seed=3)
    plain.optimize(make_objective(task2, space, mode, clock=task2.clock), n_trials=24)
    stopped = [t for t in pruned.trials if t.state == TrialState.PRUNED]
    assert len(stopped) >= 4
    for t in stopped:
        assert t.user_attrs["stop_reason"] in ("pruned", "diverged")
        assert t.user_attrs["stop_detail"].startswith("pruned by ")

    def spent(s: optuna.Study) -> float:
        return sum(t.user_attrs["train_s"] for t in s.trials)

    assert spent(pruned) < 0.9 * spent(plain)


def _reached(study: optuna.Study, seconds: float, reached: bool = True) -> None:
    t = study.ask()
    t.report(0.0 if reached else 0.1, int(seconds * 1000) if math.isfinite(seconds) else 1000)
    t.set_user_attr("reached_target", reached)
    study.tell(t, seconds)


def test_target_time_pruner_too_slow_rule_at_its_boundary() -> None:
    study = _study(TargetTimePruner(margin=0.25), "minimize")
    _reached(study, 2.0)  # trial 0: the best time-to-target
    _reached(study, 1.0, reached=False)  # trial 1: faster, but it missed the target
    _reached(study, 3.0)  # trial 2
    _reached(study, math.inf)  # trial 3: no usable time
    trial = study.ask()
    for seconds, pruned in ((2.1, False), (2.5, False), (2.6, True)):  # 1.25 x 2.0 = 2.5 exactly
        trial.report(0.05, int(seconds * 1000))
        assert trial.should_prune() is pruned, seconds
    assert study.pruner.explain(study, trial.number).why == (
        "2.60 s of training without reaching the target, more than 1.25 x the best time-to-target 2.00 s (trial 0)"
    )
    late = study.ask()
    late.report(0.0, 9000)  # reached the target, late: the run stops it, not the pruner
    assert not late.should_prune()


def _target_trial(study: optuna.Study, shortfalls: list[float], planned: float = 4) -> optuna.Trial:
    """A trial reporting once a second, half an epoch per report, ``planned`` epochs planned."""
    t = study.ask()
    t.set_user_attr("planned_epochs", planned)
    for k, gap in enumerate(shortfalls, start=1):
        t.set_user_attr("curve", {"epoch": [0.5 * i for i in range(1, k + 1)]})
        t.report(gap, 1000 * k)
    return t


def test_target_time_pruner_out_of_reach_rule_by_hand() -> None:
    # Planned end: 4 epochs at 0.5 epochs/s = 8 s. At 3 s the shortfall is 0.27 and the best rate
    # over the later half is (0.30 - 0.28) / 1 s = 0.02/s, so with optimism 2 it leaves
    # 0.27 - 2 x 0.02 x 5 = 0.07 > 0 (stopped), and with optimism 3 it leaves -0.03 (kept).
    study = _study(TargetTimePruner(optimism=2.0), "minimize")
    t = _target_trial(study, [0.30, 0.28, 0.27])
    assert t.should_prune()
    assert study.pruner.explain(study, t.number).why == (
        "at 3.00 s the shortfall is 0.27; even 2 x its best recent rate (0.02/s) leaves 0.07 at its planned end 8.00 s"
    )
    study3 = _study(TargetTimePruner(optimism=3.0), "minimize")
    assert not _target_trial(study3, [0.30, 0.28, 0.27]).should_prune()
    # The shortfall counts at its best so far: a worse report (0.35) does not widen it, and the
    # rate runs from the best so far (0.30 to 0.27 in 1 s: 0.03/s, leaving -0.03 with optimism 2).
    assert not _target_trial(study, [0.30, 0.35, 0.27]).should_prune()
    # Before the warm-up reports, past the planned end, or before min_progress: no verdict.
    assert not _target_trial(study, [0.30, 0.28]).should_prune()
    assert not _target_trial(study, [0.30, 0.29, 0.285, 0.284], planned=2).should_prune()
    study_late = _study(TargetTimePruner(optimism=2.0, min_progress=0.5), "minimize")
    assert not _target_trial(study_late, [0.30, 0.28, 0.27]).should_prune()  # 3 s < 0.5 x 8 s
    # Exactly at min_progress (2 s of 8 s, two reports enough): judged, 0.28 - 2 x 0.02 x 6 > 0.
    study_two = _study(TargetTimePruner(optimism=2.0, n_warmup_reports=2), "minimize")
    assert _target_trial(study_two, [0.30, 0.28]).should_prune()
    # The rate is the best over the later half only: the early plunge (0.6 to 0.3) is left out, so
    # 0.28 - 2 x 0.01 x (12 - 6) = 0.16 is left at the planned end (6 epochs at 0.5 a second).
    assert _target_trial(study, [0.60, 0.40, 0.30, 0.29, 0.285, 0.28], planned=6).should_prune()
    # Exactly closing the shortfall by the planned end (0.25 - 1 x 0.125 x 2 = 0) keeps it.
    study_one = _study(TargetTimePruner(optimism=1.0), "minimize")
    assert not _target_trial(study_one, [0.5, 0.375, 0.25], planned=2.5).should_prune()


def test_target_time_pruner_stops_trials_slower_than_the_best_time_to_target() -> None:
    mode = bstune.Target(0.8)
    task = SyntheticTask(seed=0, clock=FakeClock())
    space = bstune.load_space("default")
    study = create_study(
        mode,
        space=space,
        pruner=AnyPruner(DivergencePruner(), TargetTimePruner(margin=0.1)),
        seed=0,
    )
    study.enqueue_trial(
        {"log2_batch_size": 8, "learning_rate": 6e-3, "epochs": 10}
    )  # reaches 0.8 fast
    study.enqueue_trial({"log2_batch_size": 4, "learning_rate": 1.5e-3, "epochs": 10})  # slow
    study.enqueue_trial(
        {"log2_batch_size": 7, "learning_rate": 1.5e-4, "epochs": 10}
    )  # plateaus far below
    study.optimize(make_objective(task, space, mode, clock=task.clock), n_trials=3)
    fast, slow, flat = study.trials
    assert fast.state == TrialState.COMPLETE and fast.user_attrs["reached_target"]
    assert slow.state == TrialState.PRUNED
    assert (
        "without reaching the target, more than 1.1 x the best time-to-target"
        in slow.user_attrs["stop_detail"]
    )
    assert slow.user_attrs["train_s"] <= 1.1 * fast.value + 2.0
    assert flat.state == TrialState.PRUNED
    assert flat.user_attrs["stop_detail"].startswith("pruned by TargetTimePruner")


def test_target_time_pruner_sees_a_target_out_of_reach_before_any_trial_reached_it() -> None:
    study = _study(TargetTimePruner(optimism=2.0), "minimize")
    t = study.ask()
    t.set_user_attr("planned_epochs", 4)
    shortfalls = [0.30, 0.29, 0.285, 0.283]
    for k, s in enumerate(shortfalls, start=1):
        t.set_user_attr("curve", {"epoch": [0.5 * i for i in range(1, k + 1)]})
        t.report(s, 1000 * k)
    # 4 s in, 2 of 4 epochs done, improving 0.005/s at best: 2 x 0.005 x 4 s left is far from 0.283.
    assert t.should_prune()
    assert "leaves" in study.pruner.explain(study, t.number).why


def test_slow_trial_pruner_stops_a_trial_that_fits_too_few_evaluations() -> None:
    clock = FakeClock()
    mode = bstune.TimeBudget(10.0)
    study = _run_study(mode, default_pruner(mode))
    trial = study.ask()
    with pytest.raises(
        optuna.TrialPruned,
        match=r"SlowTrialPruner at step 6000: one evaluation every 6.00 s: 1 of the 2",
    ):
        with bstune.Run(trial, mode, clock=clock) as run:
            with run.training():
                clock.advance(6.0)
            run.report(0.7)


def test_slow_trial_pruner_lets_a_schedule_that_ends_before_its_next_evaluation_finish() -> None:
    # One evaluation every 6 s fits once into 10 s, which the rule stops, unless the trial's own
    # schedule (planned epochs at its pace) ends before the next evaluation would come.
    for planned, pruned in ((2, False), (4, True)):  # ends at 2 x 6 / 1.5 = 8 s < 12 s; at 16 s > 12 s
        study = _study(SlowTrialPruner(budget=10.0))
        trial = study.ask()
        trial.set_user_attr("planned_epochs", planned)
        trial.set_user_attr("curve", {"epoch": [1.5]})
        trial.report(0.6, 6000)
        assert trial.should_prune() is pruned, planned


def test_slow_trial_pruner_first_epoch_rule_needs_a_faster_trial() -> None:
    study = _study(SlowTrialPruner(budget=10.0, first_epoch=True))
    slow = study.ask()
    slow.set_user_attr("curve", {"epoch": [0.1]})
    slow.report(0.5, 2000)  # an epoch would take 20 s
    short = study.ask()  # half an epoch in 1 s, then stopped: it never finished one
    short.set_user_attr("curve", {"epoch": [0.5]})
    short.report(0.6, 1000)
    study.tell(short, 0.6)
    assert not slow.should_prune()  # no trial finished an epoch within 10 s: maybe none can
    fast = study.ask()
    fast.set_user_attr("curve", {"epoch": [0.5, 1.0]})
    fast.report(0.6, 5000)
    fast.report(0.7, 10000)  # its first epoch ends exactly at the budget: within it
    study.tell(fast, 0.7)
    edge = study.ask()  # a quarter epoch in 2.5 s: its epoch would take exactly the 10 s budget
    edge.set_user_attr("curve", {"epoch": [0.25]})
    edge.report(0.5, 2500)
    assert not edge.should_prune()
    assert slow.should_prune()
    assert "first epoch would take 20.0 s" in study.pruner.explain(study, slow.number).why


# ------------------------------------------------------------------ out of memory, faked on CPU

_OOM_TASK = """
import numpy as np
import torch
from torch import nn

DEFAULTS = {"time_budget": 0.2}
FORWARDS = []


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x[:1536], y[:1536], x[1536:], y[1536:]


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        if self.training:
            FORWARDS.append(x.shape[0])
            if x.shape[0] >= 256:  # the device "runs out of memory" from batch 256 on
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.body(x)


def model(hp):
    return Net(int(hp.get("hidden", 8)))
"""


def test_out_of_memory_is_recorded_as_infeasible_and_not_retried_blindly(tmp_path: Path) -> None:
    import torch  # noqa: F401  (the faked error is torch's own)

    from bstune.task import load_task
    from bstune.train import Trainer

    script = tmp_path / "oom_task.py"
    script.write_text(textwrap.dedent(_OOM_TASK))
    task = load_task(script, {})
    forwards = task.module.FORWARDS  # type: ignore[attr-defined]
    space = bstune.SearchSpace.from_dict(
        {
            "name": "oom",
            "batch_size": {"low": 64, "high": 1024, "powers_of_two": True},
            "learning_rate": {"low": 1e-3, "high": 1e-1},
            "epochs": {"low": 1, "high": 2},
            "params": {
                "hidden": {"type": "int", "low": 8, "high": 16},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            },
        }
    )
    mode = bstune.TimeBudget(0.2)
    study = create_study(mode, space=space, storage=f"sqlite:///{tmp_path / 'oom.db'}", seed=0)
    for log2, hidden, dropout in (
        (8, 8, 0.1),
        (10, 8, 0.3),
        (9, 16, 0.0),
        (6, 8, 0.2),
        (9, 8, 0.4),
    ):
        study.enqueue_trial(
            {
                "log2_batch_size": log2,
                "learning_rate": 1e-2,
                "epochs": 1,
                "hidden": hidden,
                "dropout": dropout,
            }
        )
    objective = make_objective(task, space, mode, trainer=Trainer(task, seed=0))
    seen: list[int] = []

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen.append(len(forwards))

    bstune.optimize(study, objective, n_trials=8, callbacks=[count])
    trials = study.trials
    assert len(trials) == 8  # the study went on to the requested number of trials
    oom256, skipped1024, oom512_other_model, fits64, skipped512 = trials[:5]
    assert oom256.user_attrs["stop_reason"] == "oom" and oom256.state == TrialState.PRUNED
    assert oom256.constraints["out_of_memory"] == 1.0 and oom256.user_attrs["batch_size"] == 256
    # batch 1024, same model (hidden 8; dropout does not change what fits): not trained
    assert skipped1024.user_attrs["stop_reason"] == "oom"
    assert skipped1024.user_attrs["stop_detail"] == (
        "not trained: batch 1024 (micro-batch 1024) >= 256, which ran out of memory in trial 0"
    )
    assert skipped1024.constraints["out_of_memory"] == 1.0 and seen[1] == seen[0]
    # another model (hidden 16) is tried, and fails for itself
    assert oom512_other_model.user_attrs["stop_reason"] == "oom" and seen[2] == seen[1] + 1
    assert fits64.state == TrialState.COMPLETE and fits64.constraints["out_of_memory"] == 0.0
    assert skipped512.user_attrs["stop_detail"].startswith("not trained: batch 512")
    assert seen[4] == seen[3]
    # the sampler (TPE with constraints) ranks every out-of-memory trial as infeasible
    assert all(
        t.constraints["out_of_memory"] == 1.0
        for t in trials
        if t.user_attrs["stop_reason"] == "oom"
    )


def test_known_out_of_memory_respects_gradient_accumulation() -> None:
    study = optuna.create_study()
    old = study.ask()
    old.set_user_attr("stop_reason", "oom")
    old.set_user_attr("batch_size", 1024)
    old.set_user_attr("micro_batch_size", 256)
    study.tell(old, state=TrialState.PRUNED)
    new = study.ask()
    assert (
        known_out_of_memory(new, 2048, micro_batch_size=128) is None
    )  # accumulates smaller pieces
    assert known_out_of_memory(new, 2048, micro_batch_size=256) == (
        "batch 2048 (micro-batch 256) >= 256, which ran out of memory in trial 0"
    )


# ------------------------------------------------------------------ the command


def test_cli_rejects_an_unknown_pruner(capsys: pytest.CaptureFixture[str]) -> None:
    from bstune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", "examples/mlp_blobs.py", "--pruner", "asha"])
    assert exit_info.value.code == 1
    assert "--pruner must be one of default, none," in capsys.readouterr().err


@pytest.mark.parametrize("name", ["none", "default", "median"])
def test_cli_optimize_with_a_pruner(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bstune import pruners
    from bstune.cli import main

    made: list[tuple[str, optuna.pruners.BasePruner]] = []
    asked = []
    real = pruners.make_pruner

    def spy(pruner_name: str, mode: object) -> optuna.pruners.BasePruner:
        p = real(pruner_name, mode)  # type: ignore[arg-type]
        inner = p.prune
        p.prune = lambda study, trial: asked.append(trial.number) or inner(study, trial)  # type: ignore[method-assign]
        made.append((pruner_name, p))
        return p

    monkeypatch.setattr(pruners, "make_pruner", spy)
    root = Path(__file__).resolve().parents[1]
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    main(
        [
            "optimize",
            str(root / "examples" / "mlp_blobs.py"),
            "--time-budget",
            "0.2",
            "--n-trials",
            "3",
            "--storage",
            db,
            "--pruner",
            name,
            "--task-option",
            "n_samples=3000",
        ]
    )
    assert "Best configurations" in capsys.readouterr().out
    # The named pruner was made, and it is the one the study asked at the trials' reports.
    assert [n for n, _ in made] == [name]
    assert asked and set(asked) <= {0, 1, 2}
    study = optuna.load_study(study_name="mlp_blobs-budget-0.2s", storage=db)
    assert len(study.trials) == 3
    assert all(t.user_attrs["stop_reason"] in ("budget", "epochs", "pruned") for t in study.trials)


def test_reasons_nobody_asks_for_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from bstune.pruners import _base

    monkeypatch.setattr(_base, "_MAX_REASONS", 3)
    pruner = DivergencePruner()
    study = _study(pruner)
    numbers = []
    for _ in range(5):
        t = study.ask()
        t.report(math.nan, 100)
        assert t.should_prune()
        numbers.append(t.number)
    assert pruner.explain(study, numbers[0]) is None  # the oldest was dropped
    assert pruner.explain(study, numbers[-1]).outcome == "diverged"


def test_the_sampler_moves_away_from_batches_that_run_out_of_memory() -> None:
    import torch

    task = SyntheticTask(seed=0, clock=FakeClock())

    def train(hp: bstune.Hyperparams, run: bstune.Run) -> None:
        if hp.batch_size >= 128:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        task(hp, run)

    mode = bstune.TimeBudget(30.0)
    space = bstune.load_space("default")  # batch 16 to 512: half the sizes "do not fit"
    study = create_study(mode, space=space, seed=0)
    bstune.optimize(study, make_objective(train, space, mode, clock=task.clock), n_trials=30)
    assert len(study.trials) == 30
    big = [t.user_attrs["batch_size"] >= 128 for t in study.trials]
    assert sum(big[8:]) / 22 <= 0.25  # after TPE's 8 random trials, about half of which were big
    assert sum(big[8:]) / 22 < sum(big[:8]) / 8
    skipped = [t for t in study.trials if t.user_attrs.get("stop_detail", "").startswith("not trained")]
    assert skipped and all(t.constraints["out_of_memory"] == 1.0 and t.user_attrs["train_s"] == 0 for t in skipped)


# ------------------------------------------------------------------ the gain bound


def _planned(trial: optuna.Trial, epochs: list[float], planned: int = 1) -> None:
    trial.set_user_attr("planned_epochs", planned)
    trial.set_user_attr("curve", {"epoch": epochs})


def test_gain_bound_prunes_only_what_the_largest_finished_gain_cannot_lift() -> None:
    study = _study(GainBoundPruner(optimism=1.0, n_min_trials=2))
    _finished(study, [(1000, 0.50), (5000, 0.70), (10000, 0.80)])  # gains 0.10 from its halfway point
    _finished(study, [(1000, 0.60), (5000, 0.82), (10000, 0.85)])  # gains 0.03 from there; the best
    close = study.ask()
    _planned(close, [0.5])
    close.report(0.76, 5000)  # 0.76 + 0.10 > 0.85: might still win
    assert not close.should_prune()
    far = study.ask()
    _planned(far, [0.5])
    far.report(0.74, 5000)  # 0.74 + 0.10 < 0.85: cannot win
    assert far.should_prune()
    why = study.pruner.explain(study, far.number).why
    assert "50% of its schedule" in why and "short of the best 0.85" in why and "trial 0" in why
    # More optimism credits more: 1.5 x 0.10 lifts it past 0.85.
    lenient = _study(GainBoundPruner(optimism=1.5, n_min_trials=2))
    for t in study.trials[:2]:
        lenient.add_trial(t)
    again = lenient.ask()
    _planned(again, [0.5])
    again.report(0.74, 5000)
    assert not again.should_prune()


def test_gain_bound_reads_each_finished_trial_at_the_same_fraction_of_its_own_schedule() -> None:
    """A short finished trial (its schedule ended at 4 s) is read at half of 4 s, not at the judged
    trial's 5 s, so its late annealing gain counts for the judged trial too."""
    study = _study(GainBoundPruner(optimism=1.0, n_min_trials=1))
    _finished(study, [(1000, 0.5), (2000, 0.6), (4000, 0.9)])  # +0.3 from its halfway point
    trial = study.ask()
    _planned(trial, [0.5])
    trial.report(0.65, 5000)  # halfway through 10 s: 0.65 + 0.3 > 0.9
    assert not trial.should_prune()
    late = study.ask()
    _planned(late, [0.5])
    late.report(0.55, 5000)  # 0.55 + 0.3 < 0.9
    assert late.should_prune()


def test_gain_bound_waits_for_finished_trials_and_for_a_known_schedule() -> None:
    study = _study(GainBoundPruner(optimism=1.0, n_min_trials=2))
    _finished(study, [(1000, 0.8), (2000, 0.9)])
    hopeless = study.ask()
    _planned(hopeless, [0.5])
    hopeless.report(0.1, 1000)
    assert not hopeless.should_prune()  # one finished trial of the two it needs
    _finished(study, [(1000, 0.8), (2000, 0.9)])
    assert hopeless.should_prune()
    unknown = study.ask()  # no planned_epochs, no budget: where it is in its schedule is unknown
    unknown.report(0.1, 1000)
    assert not unknown.should_prune()
    early = study.ask()  # 10% into its schedule: too early to judge
    _planned(early, [0.1])
    early.report(0.1, 100)
    assert not early.should_prune()
    # Judged that early anyway, the finished trials count with their gain from their first report.
    eager = _study(GainBoundPruner(optimism=1.0, n_min_trials=1, min_progress=0.0))
    eager.add_trial(study.trials[0])
    t = eager.ask()
    _planned(t, [0.1])
    t.report(0.1, 100)  # 0.1 + (0.9 - 0.8) < 0.9
    assert t.should_prune()
    assert "trial 0" in eager.pruner.explain(eager, t.number).why


@pytest.mark.parametrize(
    ("kind", "finished", "near", "far", "why"),
    [
        # Target mode: the shortfall (0 once reached) was closed by 0.1 from halfway.
        ("target", [(1000, 0.3), (2000, 0.1), (4000, 0.0)], 0.08, 0.2, "would not reach the target"),
        # A minimised metric: the loss fell by 0.1 from halfway.
        ("minimize", [(1000, 0.5), (2000, 0.3), (4000, 0.2)], 0.28, 0.35, "short of the best 0.2"),
    ],
)
def test_gain_bound_judges_lower_is_better_values(
    kind: str, finished: list[tuple[int, float]], near: float, far: float, why: str
) -> None:
    pruner = GainBoundPruner(optimism=1.0, n_min_trials=1)
    if kind == "target":
        study = bstune.create_study(bstune.Target(0.9), pruner=pruner)
    else:
        study = _study(pruner, "minimize")
    _finished(study, finished)
    for value, expected in ((near, False), (far, True)):
        t = study.ask()
        _planned(t, [0.5])
        t.report(value, 2000)
        assert t.should_prune() is expected
    assert why in study.pruner.explain(study, t.number).why


# ------------------------------------------------------------------ recorded real curves

_CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "curves"


@pytest.mark.parametrize("task", ["names", "polarity", "digits"])
def test_default_pruner_keeps_the_winners_of_recorded_real_curves(task: str) -> None:
    """Replayed real learning curves: after a random start, the five best recorded configurations
    all train to their end under the default pruner's bounds, and the five worst that do not
    diverge are stopped early, with a reason."""
    from bstune.testing import RecordedCurves

    curves = RecordedCurves(_CURVES / f"{task}.jsonl")
    space = curves.space()
    mode = bstune.TimeBudget(curves.budget)
    ranked = sorted(
        (c.best(), k) for k, c in curves.curves.items() if math.isfinite(c.best()) and k[0] & (k[0] - 1) == 0
    )
    healthy = [k for _, k in ranked if all(math.isfinite(x) for x in curves.curves[k].loss)]
    best, worst = [k for _, k in ranked[-5:]], healthy[:5]
    rng = __import__("random").Random(0)
    start = rng.sample(sorted(curves.curves), 6)
    clock = FakeClock()
    study = create_study(mode, space=space, pruner=default_pruner(mode), seed=0)
    order = start + [k for pair in zip(worst, best, strict=True) for k in pair]
    for b, lr, e in order:
        study.enqueue_trial({"log2_batch_size": int(math.log2(b)), "learning_rate": lr, "epochs": e})
    study.optimize(make_objective(curves.task(clock), space, mode, clock=clock), n_trials=len(order))
    by_config = {tuple(t.user_attrs["replayed"]): t for t in study.trials[len(start) :]}
    for k in best:
        assert by_config[k].state == TrialState.COMPLETE, (k, by_config[k].user_attrs.get("stop_detail"))
    stopped = [by_config[k] for k in worst if by_config[k].state == TrialState.PRUNED]
    assert len(stopped) >= 3
    for t in stopped:
        assert t.user_attrs["stop_detail"].startswith("pruned by ")
        assert t.user_attrs["train_s"] < 0.75 * curves.budget


def _random_start_then_best(task: str, pruner: optuna.pruners.BasePruner, seed: int) -> optuna.Study:
    """A time-budget study replaying recorded curves: 12 random configurations (powers of two),
    the best recorded one, 12 more."""
    import random

    from bstune.testing import RecordedCurves

    curves = RecordedCurves(_CURVES / f"{task}.jsonl")
    space = curves.space()
    mode = bstune.TimeBudget(curves.budget)
    pow2 = sorted(k for k, c in curves.curves.items() if math.isfinite(c.best()) and k[0] & (k[0] - 1) == 0)
    best = max(pow2, key=lambda k: curves.curves[k].best())
    others = random.Random(seed).sample([k for k in pow2 if k != best], 24)
    clock = FakeClock()
    study = create_study(mode, space=space, pruner=pruner, seed=0)
    for b, lr, e in others[:12] + [best] + others[12:]:
        study.enqueue_trial({"log2_batch_size": int(math.log2(b)), "learning_rate": lr, "epochs": e})
    study.optimize(make_objective(curves.task(clock), space, mode, clock=clock), n_trials=25)
    assert tuple(study.trials[12].user_attrs["replayed"]) == best
    return study


@pytest.mark.parametrize("task", ["names", "polarity", "digits", "polarity_bow"])
def test_the_default_keeps_the_best_recorded_configuration_after_a_random_start(task: str) -> None:
    """The whole default on replayed real curves: the best recorded configuration, after 12 random
    ones, trains to its end and is the study's best; nothing is stopped for ranking low."""
    study = _random_start_then_best(task, default_pruner(bstune.TimeBudget(1.0)), seed=0)
    winner = study.trials[12]
    assert winner.state == TrialState.COMPLETE, winner.user_attrs.get("stop_detail")
    assert study.best_trial.number == 12
    stopped = [t.user_attrs["stop_detail"] for t in study.trials if t.state == TrialState.PRUNED]
    assert stopped and all(d.startswith(("pruned by GainBoundPruner", "pruned by DivergencePruner", "pruned by SlowTrialPruner")) for d in stopped)


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
    study = _study(AsyncHalvingPruner(n_rungs=1, skip_sweep=True))
    study.set_user_attr("mode", "time_budget")
    study.set_user_attr("budget", 4.0)
    study.sampler.n_sweep = 2  # type: ignore[attr-defined]  # as bstune.study.BatchSweep says
    _finished(study, [(500, 0.9), (1000, 0.95)])  # trial 0, far ahead at the 1 s rung
    for number, expected in ((1, False), (2, True)):
        t = study.ask()
        assert t.number == number
        t.report(0.1, 1100)
        assert t.should_prune() is expected
        study.tell(t, state=TrialState.FAIL)
    assert "of the 1 trial that passed" in study.pruner.explain(study, 2).why
    plain = AsyncHalvingPruner(n_rungs=1)
    assert plain.skip_sweep is False


def test_time_aligned_rungs_by_hand() -> None:
    # A bstune time-budget study of 8 s: rungs at 0.25 x 8 = 2 s, then x 2.5 (5 s, 12.5 s); no
    # verdict in the last 5% (from 7.6 s). Five finished trials climb straight lines: at time t
    # they have 0.10t, 0.09t, 0.08t, 0.07t, 0.06t. With six trials compared, the top
    # floor(6 / 2.5) = 2 continue.
    study = _study(TimeAlignedPruner(n_startup_trials=0, n_min_trials=4))
    study.set_user_attr("mode", "time_budget")
    study.set_user_attr("budget", 8.0)
    for slope in (0.10, 0.09, 0.08, 0.07, 0.06):
        _finished(study, [(500 * k, slope * 0.5 * k) for k in range(1, 17)])

    def verdict(reports: list[tuple[float, float]]) -> bool:
        t = study.ask()
        for seconds, value in reports:
            t.report(value, int(round(seconds * 1000)))
        pruned = t.should_prune()
        study.tell(t, state=TrialState.FAIL)  # out of the way of the next check
        return pruned

    assert not verdict([(1.5, 0.0)])  # before the first rung
    assert verdict([(1.5, 0.0), (2.5, 0.21)])  # crossing 2 s: third of six (0.25, 0.225 ahead)
    assert study.pruner.explain(study, study.trials[-1].number).why == (
        "at 2.50 s (rung 2.00 s) its best 0.21 ranks 3 of 6 trials compared at that time; the top 2 continue"
    )
    assert not verdict([(1.5, 0.0), (2.5, 0.23)])  # second of six: it continues
    assert not verdict([(2.5, 0.3), (3.0, 0.0)])  # between rungs: no verdict, however low
    assert verdict([(4.5, 0.3), (5.0, 0.36)])  # crossing 5 s exactly: 0.5, 0.45, 0.4 ahead
    assert not verdict([(4.5, 0.3), (5.0, 0.46)])
    assert not verdict([(4.0, 0.5), (7.6, 0.0)])  # the last 5% of its schedule: no verdict


def _budget_study(pruner: optuna.pruners.BasePruner, budget: float = 10.0) -> optuna.Study:
    study = _study(pruner)
    study.set_user_attr("mode", "time_budget")
    study.set_user_attr("budget", budget)
    return study


def _judged(study: optuna.Study, seconds: float, value: float) -> bool:
    t = study.ask()
    t.report(value, int(seconds * 1000))
    pruned = t.should_prune()
    study.tell(t, state=TrialState.FAIL)
    return pruned


def test_gain_bound_by_hand_in_a_time_budget_study() -> None:
    # Finished trials (values exact in binary): #0 climbs 0.5 -> 0.625 -> 0.75 (from half its
    # schedule, 5 s, it gains 0.125); #1 gains 0.0625 from half of its 8 s; #2 first reports at 7 s,
    # after half of its 9 s, so its gain counts from its first report: 0.25, the largest.
    # Judged at 5 s of a 10 s budget (half), with optimism 1: its best + 0.25 against the best 0.75.
    def study_with(pruner: optuna.pruners.BasePruner) -> optuna.Study:
        study = _budget_study(pruner)
        _finished(study, [(2000, 0.5), (5000, 0.625), (10000, 0.75)])
        _finished(study, [(4000, 0.625), (8000, 0.6875)])
        _finished(study, [(7000, 0.25), (9000, 0.5)])
        return study

    study = study_with(GainBoundPruner(1.0, n_min_trials=3))
    assert not _judged(study, 5.0, 0.5)  # 0.5 + 0.25 = 0.75: it could still tie the best
    assert _judged(study, 5.0, 0.375)  # 0.625 < 0.75
    assert study.pruner.explain(study, study.trials[-1].number).why == (
        "at 5.00 s (50% of its schedule) its best is 0.375; even 1 x the largest gain a finished trial made "
        "from there (0.25, trial 2) reaches 0.625, short of the best 0.75"
    )
    assert _judged(study, 2.5, 0.0)  # exactly min_progress (25%): judged
    assert not _judged(study, 10.0, 0.0)  # its schedule is over: the run stops it, not the pruner
    # min_delta widens the credit: 0.375 + 0.25 + 0.125 = 0.75 ties the best.
    assert not _judged(study_with(GainBoundPruner(1.0, min_delta=0.125, n_min_trials=3)), 5.0, 0.375)
    # Only completed trials that reported count toward n_min_trials.
    few = _budget_study(GainBoundPruner(1.0, n_min_trials=3))
    _finished(few, [(2000, 0.5), (5000, 0.625), (10000, 0.75)])
    _finished(few, [(4000, 0.625), (8000, 0.6875)])
    silent = few.ask()
    few.tell(silent, 0.1)
    assert not _judged(few, 5.0, 0.0)


def test_gain_bound_by_hand_in_a_target_study() -> None:
    # Shortfalls (lower is better, 0 = reached). The finished trial went 0.5 -> 0.25 -> 0 over 8 s:
    # from half its schedule (4 s) it closed 0.25. The judged trial plans 2 epochs and did 1 in 4 s
    # (half of 8 s): with optimism 1 a shortfall above 0.25 cannot reach the target.
    study = _study(GainBoundPruner(1.0, n_min_trials=1), "minimize")
    study.set_user_attr("mode", "target")
    done = study.ask()
    for ms, gap in ((2000, 0.5), (4000, 0.25), (8000, 0.0)):
        done.report(gap, ms)
    study.tell(done, 8.0)

    def judged(gap: float) -> bool:
        t = study.ask()
        t.set_user_attr("planned_epochs", 2)
        t.set_user_attr("curve", {"epoch": [1.0]})
        t.report(gap, 4000)
        pruned = t.should_prune()
        study.tell(t, state=TrialState.FAIL)
        return pruned

    assert not judged(0.25)  # 0.25 - 0.25 = 0: it may just reach it
    assert not judged(0.125)
    assert judged(0.5)
    assert study.pruner.explain(study, study.trials[-1].number).why == (
        "at 4.00 s (50% of its schedule) the shortfall is 0.5; 1 x the largest gain a finished trial made "
        "from there (0.25, trial 0) would not reach the target by its end"
    )


def test_divergence_rules_by_hand() -> None:
    def judged(losses: list[float], pruner: DivergencePruner | None = None, value: float = 0.5) -> str | None:
        study = _study(pruner or DivergencePruner())  # loss factor 3, one warm-up report
        t = study.ask()
        t.set_user_attr("curve", {"loss": losses})
        t.report(value, 1500)
        reason = study.pruner.explain(study, t.number) if t.should_prune() else None
        return reason.why if reason else None

    assert judged([1.0], value=math.nan) == "intermediate value nan at 1.50 s"
    assert judged([1.0, 3.0]) is None  # exactly 3 x the first: not past it
    assert judged([1.0, 3.5]) == "loss 3.5 grew past 3 x its first value 1"
    assert judged([4.0]) is None  # the warm-up report
    assert judged([1.0, 4.0], DivergencePruner(n_warmup_reports=2)) is None
    assert judged([1.0, 2.0, 4.0], DivergencePruner(n_warmup_reports=2)) is not None
    assert judged([0.0, 5.0]) is None  # a first loss of 0 gives no scale to grow from


def test_slow_trial_rule_at_its_boundaries() -> None:
    def judged(ms: int, epochs: list[float] | None = None, planned: int | None = None) -> bool:
        study = _study(SlowTrialPruner(budget=10.0))
        t = study.ask()
        if planned is not None:
            t.set_user_attr("planned_epochs", planned)
        if epochs is not None:
            t.set_user_attr("curve", {"epoch": epochs})
        t.report(0.5, ms)
        return t.should_prune()

    assert not judged(10000)  # the budget is spent: the run stops it with "budget"
    assert not judged(5000)  # one evaluation every 5 s: two fit, enough
    assert judged(5001)
    # Schedule ends at 4 x 6 / 2 = 12 s, exactly when the next evaluation would come: it counts.
    assert judged(6000, epochs=[2.0], planned=4)


def test_known_out_of_memory_looks_past_trials_that_do_not_apply() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def old(stop_reason: str, hidden: int, micro: int) -> None:
        study.enqueue_trial({"hidden": hidden})
        t = study.ask()
        t.suggest_int("hidden", 16, 64)
        t.set_user_attr("stop_reason", stop_reason)
        t.set_user_attr("batch_size", micro)
        study.tell(t, state=TrialState.PRUNED if stop_reason == "oom" else TrialState.COMPLETE,
                   values=None if stop_reason == "oom" else 0.5)

    old("budget", 32, 4096)  # trial 0: finished, no memory trouble
    old("oom", 32, 1024)  # trial 1: ran out at 1024, more than the new micro-batch
    old("oom", 64, 128)  # trial 2: another model (hidden 64)
    old("oom", 32, 256)  # trial 3: the same model, out of memory at 256
    study.enqueue_trial({"hidden": 32})
    new = study.ask()
    new.suggest_int("hidden", 16, 64)
    assert known_out_of_memory(new, 512) == "batch 512 (micro-batch 512) >= 256, which ran out of memory in trial 3"
    assert known_out_of_memory(new, 200) is None


def test_value_at_and_better_by_hand() -> None:
    curve = [(1.0, 0.5), (3.0, 0.7)]
    assert value_at(curve, 1.0) == 0.5  # its first point is known
    assert value_at(curve, 2.0) == pytest.approx(0.6)
    assert value_at(curve, 3.0) == 0.7
    assert value_at(curve, 0.99) is None and value_at(curve, 3.01) is None
    up, down = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    assert not better(up, 0.5, 0.5) and not better(down, 0.5, 0.5)  # a tie is not better
    assert better(up, 0.6, 0.5) and better(down, 0.4, 0.5)
