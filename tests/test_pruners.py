"""Every bstune pruner alike: conformance with Optuna's own pruner tests, the time axis, validation
at the door, composition, the factory, and the default on recorded real curves. Each pruner's own
rules are in its own file (tests/test_gain_bound.py, test_time_aligned.py, ...)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from _pruning import (
    _CURVES,
    _STOPPED_WITH_DATA,
    MAX,
    MIN,
    REFUSALS,
    _bstune_pruners,
    _CountingStorage,
    _finished,
    _objective,
    _public,
    _ramp,
    _random_start_then_best,
    _study,
)
from optuna.trial import TrialState

import bstune
from bstune.errors import InvalidParameterError
from bstune.objectives import better
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
    make_pruner,
)
from bstune.pruners._base import best_so_far, value_at
from bstune.study import create_study, make_objective
from bstune.testing import FakeClock


def test_value_at_interpolates_the_best_so_far_curve_between_uneven_reports() -> None:
    curve = best_so_far([(0.1, 0.2), (0.15, 0.5), (9.0, 0.4), (10.0, 0.9)], MAX)
    assert curve == [(0.1, 0.2), (0.15, 0.5), (9.0, 0.5), (10.0, 0.9)]
    assert value_at(curve, 0.15) == 0.5
    assert value_at(curve, 9.5) == pytest.approx(0.7)
    assert value_at(curve, 0.05) is None  # before its first report nothing is known
    assert value_at(curve, 10.5) is None  # it has not reached that time
    assert best_so_far([(1.0, math.nan), (2.0, 0.3), (3.0, 0.1)], MIN) == [(2.0, 0.3), (3.0, 0.1)]


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


def test_value_at_and_better_by_hand() -> None:
    curve = [(1.0, 0.5), (3.0, 0.7)]
    assert value_at(curve, 1.0) == 0.5  # its first point is known
    assert value_at(curve, 2.0) == pytest.approx(0.6)
    assert value_at(curve, 3.0) == 0.7
    assert value_at(curve, 0.99) is None and value_at(curve, 3.01) is None
    assert not better(0.5, 0.5, maximize=True) and not better(0.5, 0.5, maximize=False)  # a tie is not better
    assert better(0.6, 0.5, maximize=True) and better(0.4, 0.5, maximize=False)
