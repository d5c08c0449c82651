"""analyze() on studies made through bstune's objective, checked against brute force on the raw
trial attributes; batch-size effects on simulated learning curves; degenerate studies."""

from __future__ import annotations

import json
import math
import statistics

import optuna
import pytest

from analysis._studies import make_synthetic_study
from bstune.analysis import FORMATS, analyze, format_report, pareto_indices
from bstune.objectives import Target, TimeBudget
from bstune.run import curve_from_attrs
from bstune.space import load_space
from bstune.testing import SyntheticTask


def _pruning_study(n_trials: int = 24) -> optuna.Study:
    # Trials below 60% accuracy after 1.5 s of training are pruned, so the study has both kinds.
    return make_synthetic_study(n_trials=n_trials, pruner=optuna.pruners.ThresholdPruner(lower=0.6, n_warmup_steps=1500))


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    s = _pruning_study()
    states = {t.state for t in s.trials}
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states
    return s


def _raw_finished(study: optuna.Study) -> list[tuple[int, float, float]]:
    out = []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        metrics = [p.metric for p in curve_from_attrs(t) if math.isfinite(p.metric)]
        out.append((t.number, float(t.user_attrs["train_s"]), max(metrics)))
    return out


def test_front_is_the_brute_force_front_of_finished_trials(study: optuna.Study) -> None:
    r = analyze(study)
    raw = _raw_finished(study)
    want = {raw[i][0] for i in pareto_indices([x[1] for x in raw], [x[2] for x in raw])}
    assert {p.trial for p in r.front} == want
    for p in r.front:
        t = study.trials[p.trial]
        assert p.time_s == t.user_attrs["train_s"]
        assert p.batch_size == t.user_attrs["batch_size"] and p.learning_rate == t.user_attrs["learning_rate"]
        # Nothing finished is faster and at least as good.
        assert not any(x[1] < p.time_s and x[2] >= p.metric for x in raw)


def test_anytime_front_covers_every_curve_point_including_pruned_trials(study: optuna.Study) -> None:
    r = analyze(study)
    pts = [(t.number, p.train_s, p.metric) for t in study.trials for p in curve_from_attrs(t)]
    want = sorted((pts[i][0], pts[i][1], pts[i][2]) for i in pareto_indices([p[1] for p in pts], [p[2] for p in pts]))
    assert sorted((p.trial, p.time_s, p.metric) for p in r.anytime_front) == want
    # Every finished trial's best point lies on a curve no later than the trial's end, so the anytime
    # front dominates at least as much.
    assert r.anytime_hypervolume is not None and r.hypervolume is not None
    assert r.anytime_hypervolume >= r.hypervolume > 0


def test_a_pruned_trial_leads_the_anytime_front_where_it_was_best() -> None:
    s = optuna.create_study(direction="maximize")
    def curve(ts, ms):
        return {"train_s": ts, "wall_s": ts, "epoch": ts, "samples_seen": ts, "metric": ms, "loss": ms}
    s.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"curve": curve([1, 2, 4], [0.5, 0.6, 0.9]), "train_s": 4}))
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                          user_attrs={"curve": curve([0.5, 1.5], [0.7, 0.65]), "train_s": 1.5}))
    r = analyze(s)
    assert [(p.trial, p.time_s, p.metric, p.state) for p in r.anytime_front] == [
        (1, 0.5, 0.7, "pruned"), (0, 4, 0.9, "complete")]
    assert [(p.trial, p.time_s) for p in r.front] == [(0, 4)]
    # Reference (4 s, 0.5): the front's rectangle is empty in time; the anytime one is 3.5 x 0.2.
    assert r.reference == (4, 0.5)
    assert r.hypervolume == 0.0 and r.anytime_hypervolume == pytest.approx(3.5 * 0.2)


def test_recommendations_are_the_best_finished_trial_within_each_budget(study: optuna.Study) -> None:
    budgets = [0.3, 1.0, 2.0, 4.5, 100.0]
    r = analyze(study, budgets=budgets)
    raw = _raw_finished(study)
    assert [x.budget_s for x in r.recommendations] == budgets
    for rec in r.recommendations:
        fits = [x for x in raw if x[1] <= rec.budget_s]
        if fits:
            best = max(x[2] for x in fits)
            assert rec.basis == "finished" and rec.metric == best
            assert rec.trial in {x[0] for x in fits if x[2] == best}
        else:
            assert rec.basis in ("anytime", "none")
        curve_best = max(
            (p.metric for t in study.trials for p in curve_from_attrs(t) if p.train_s <= rec.budget_s), default=math.nan
        )
        assert rec.anytime_metric == curve_best or (math.isnan(curve_best) and math.isnan(rec.anytime_metric))
    finished_metrics = [x.metric for x in r.recommendations if x.basis == "finished"]
    assert finished_metrics == sorted(finished_metrics)


def test_default_budgets_end_at_the_slowest_finished_trial(study: optuna.Study) -> None:
    r = analyze(study)
    slowest = max(x[1] for x in _raw_finished(study))
    assert len(r.recommendations) == 5
    assert r.recommendations[-1].budget_s >= slowest
    assert r.recommendations[-1].basis == "finished"


def test_batch_size_rows_match_the_trials(study: optuna.Study) -> None:
    r = analyze(study, target=0.7)
    assert r.time_to_target_target == 0.7
    by_batch: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in study.trials:
        by_batch.setdefault(t.user_attrs["batch_size"], []).append(t)
    assert [row.batch_size for row in r.batch_sizes] == sorted(by_batch)
    for row in r.batch_sizes:
        group = by_batch[row.batch_size]
        assert row.n_trials == len(group)
        done = [t for t in group if t.state == optuna.trial.TrialState.COMPLETE]
        assert row.n_finished == len(done)
        if done:
            assert row.best_metric == max(max(p.metric for p in curve_from_attrs(t)) for t in done)
        hits = [next((p.train_s for p in curve_from_attrs(t) if p.metric >= 0.7), math.inf) for t in group]
        assert row.time_to_target_s == min(hits) or (math.isnan(row.time_to_target_s) and min(hits) == math.inf)
        assert row.throughput == statistics.median(t.user_attrs["throughput"] for t in group)


def _grid_study(task: SyntheticTask) -> optuna.Study:
    # Every batch size with the same learning rates, one epoch: the best rate per batch size is the
    # grid point nearest to the task's optimum.
    space = ({"name": "grid", "batch_size": {"low": 16, "high": 512, "powers_of_two": True},
                        "learning_rate": {"low": 1e-4, "high": 1.0}, "epochs": {"low": 1, "high": 2}})
    # A ratio of 1.3 between rates is not a power of sqrt(2), so the optima fall between grid points.
    lrs = [2.5e-4 * 1.3**k for k in range(19)]
    sampler = optuna.samplers.GridSampler(
        {"log2_batch_size": list(range(4, 10)), "learning_rate": lrs, "epochs": [1]}, seed=0
    )
    return make_synthetic_study(n_trials=6 * len(lrs), task=task, space=space, sampler=sampler,
                                mode=TimeBudget(100.0))


class _LinearTask(SyntheticTask):
    def best_lr(self, batch_size: int) -> float:
        return self.best_lr_at_64 * batch_size / 64


@pytest.mark.parametrize(("task_cls", "exponent"), [(SyntheticTask, 0.5), (_LinearTask, 1.0)])
def test_learning_rate_exponent_is_recovered(task_cls: type[SyntheticTask], exponent: float) -> None:
    task = task_cls(n_train=2_000, steps_min=20, evals_per_epoch=1, noise=0.0005, best_lr_at_64=2.3e-3)
    r = analyze(_grid_study(task), importance=False)
    fit = r.lr_scaling
    assert fit is not None and len(fit.batch_sizes) == 6
    assert fit.exponent == pytest.approx(exponent, abs=0.12)
    assert fit.r2 > 0.9


def test_importance_names_the_searched_parameters(study: optuna.Study) -> None:
    r = analyze(study)
    assert set(r.importance) == {"log2_batch_size", "learning_rate", "epochs"}
    assert sum(r.importance.values()) == pytest.approx(1.0)


def test_target_mode_study_uses_its_target_and_curve_metrics() -> None:
    s = make_synthetic_study(n_trials=12, mode=Target(0.75))
    r = analyze(s)
    assert r.mode == "target" and r.time_to_target_target == 0.75
    for p in r.front:
        assert p.metric == max(q.metric for q in curve_from_attrs(s.trials[p.trial]))
    hit = [row for row in r.batch_sizes if math.isfinite(row.time_to_target_s)]
    assert hit, "some batch size reaches 0.75"
    for row in hit:
        reached = [s.trials[i].value for i in range(len(s.trials))
                   if s.trials[i].user_attrs.get("reached_target") and s.trials[i].user_attrs["batch_size"] == row.batch_size]
        assert row.time_to_target_s == pytest.approx(min(reached))


# Degenerate studies: each gives a report (maybe empty, with a message) in every format, never a traceback.

def _empty() -> optuna.Study:
    return optuna.create_study(direction="maximize")


def _one_trial() -> optuna.Study:
    return make_synthetic_study(n_trials=1)


def _all_pruned() -> optuna.Study:
    return make_synthetic_study(n_trials=4, pruner=optuna.pruners.ThresholdPruner(lower=0.99, n_warmup_steps=0))


def _all_failed() -> optuna.Study:
    def broken(hp, run):  # a training loop that crashes after its first evaluation
        run.report(0.5)
        raise RuntimeError("boom")

    from bstune.study import create_study, make_objective, optimize

    mode = TimeBudget(1.0)
    space = load_space("default")
    s = create_study(mode, space=space)
    with pytest.raises(ValueError, match="stopped after 3 failed trials"):
        optimize(s, make_objective(broken, space, mode), n_trials=5)
    return s


def _nan_values() -> optuna.Study:
    # A finished trial whose curve holds nulls (NaN) and whose train_s is missing, one with only
    # NaN metrics, and a plain Optuna trial with neither curve nor attributes.
    s = optuna.create_study(direction="maximize")
    s.set_user_attr("mode", "time_budget")
    s.set_user_attr("budget", 5.0)
    curve = {"train_s": [1.0, None, 3.0], "wall_s": [1.1, 2.1, 3.1], "epoch": [1, 2, 3], "samples_seen": [10, 20, 30],
             "metric": [0.5, None, 0.7], "loss": [None, None, 0.3]}
    s.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"curve": curve, "batch_size": 32,
                                                                 "throughput": float("nan")}))
    nan_curve = dict(curve, metric=[None, None, None])
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                          user_attrs={"curve": nan_curve, "batch_size": 64, "train_s": None}))
    s.add_trial(optuna.trial.create_trial(value=0.6))
    return s


DEGENERATE = {"empty": _empty, "one trial": _one_trial, "all pruned": _all_pruned, "all failed": _all_failed,
              "NaN values": _nan_values}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_studies_give_a_report_in_every_format(name: str) -> None:
    r = analyze(DEGENERATE[name]())
    for fmt in FORMATS:
        text = format_report(r, fmt)
        assert text.strip()
    data = json.loads(format_report(r, "json"))
    assert data["n_trials"] == r.n_trials
    if name == "empty":
        assert r.front == [] and r.recommendations == [] and r.hypervolume is None
        assert r.messages == ["the study has no trials yet"]
    if name in ("all pruned", "all failed"):
        assert r.front == []
        assert any("no finished trial" in m for m in r.messages)
        assert r.anytime_front, "the curves of pruned or failed trials still make an anytime front"
    if name == "one trial":
        assert len(r.front) == 1 and r.lr_scaling is None
        assert r.front[0].trial == r.anytime_front[-1].trial
    if name == "NaN values":
        # The plain trial has no training time recorded: its duration stands in (0 s when made by hand).
        assert [(p.trial, p.time_s, p.metric) for p in r.front] == [(2, 0.0, 0.6), (0, 3.0, 0.7)]
        assert all(math.isfinite(p.metric) and math.isfinite(p.time_s) for p in r.anytime_front)


def test_analyze_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="'budgets' parameter of analyze"):
        analyze(_empty(), budgets=[1.0, -2.0])
    with pytest.raises(ValueError, match="'target' parameter of analyze"):
        analyze(_empty(), target=math.nan)
    with pytest.raises(ValueError, match="has 2 objectives"):
        analyze(optuna.create_study(directions=["minimize", "maximize"]))


def _plain(x):  # type: ignore[no-untyped-def]
    """What the JSON of a report field should be, computed without the code under test."""
    if hasattr(x, "_asdict"):
        return {k: _plain(v) for k, v in x._asdict().items()}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def test_json_is_the_report_field_by_field(study: optuna.Study) -> None:
    import dataclasses

    from bstune.analysis import Report

    report = analyze(study)
    assert report.lr_scaling is not None and report.equal_footing is not None and report.front
    for curves in (False, True):
        data = json.loads(json.dumps(report.to_dict(curves=curves), allow_nan=False))
        assert set(data) == {f.name for f in dataclasses.fields(Report)}
        for name in data:
            expected = _plain(getattr(report, name))
            if name == "trials":
                for row in expected:
                    for k in ("curve_time_s", "curve_metric", "curve_samples"):
                        if not curves:
                            del row[k]
            assert data[name] == expected, name
    assert any(t["curve_time_s"] for t in data["trials"])  # the last pass had the curves
