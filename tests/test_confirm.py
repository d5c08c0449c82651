"""Seed noise, measured: the best configurations trained again with other seeds, never pruned."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest

import bstune
from bstune.analysis import analyze, format_report
from bstune.confirmation import CONFIRMS_ATTR, enqueue_confirmations

BLOBS = Path(__file__).resolve().parents[1] / "examples" / "mlp_blobs.py"


def _add(study: optuna.Study, value: float, params: dict, confirms: int | None = None) -> None:
    attrs = {"batch_size": 2 ** params["log2_batch_size"], "learning_rate": params["learning_rate"],
             "planned_epochs": params["epochs"], "stop_reason": "budget", "train_s": 1.0}
    if confirms is not None:
        attrs[CONFIRMS_ATTR] = confirms
    dists = {"log2_batch_size": optuna.distributions.IntDistribution(4, 9),
             "learning_rate": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True),
             "epochs": optuna.distributions.IntDistribution(1, 10)}
    study.add_trial(optuna.trial.create_trial(value=value, params=params, distributions=dists, user_attrs=attrs,
                                              system_attrs={"constraints": [0.0]}))


A = {"log2_batch_size": 5, "learning_rate": 1e-3, "epochs": 3}
B = {"log2_batch_size": 6, "learning_rate": 2e-3, "epochs": 3}
C = {"log2_batch_size": 7, "learning_rate": 4e-3, "epochs": 3}


def test_the_best_distinct_configurations_are_queued_once_and_only_what_is_missing():
    study = bstune.create_study(bstune.TimeBudget(1))
    _add(study, 0.90, A)
    _add(study, 0.90, A)  # the same configuration again: counted once
    _add(study, 0.85, B)
    _add(study, 0.80, C)
    _add(study, 0.95, C, confirms=2)  # a confirmation run is never itself a "best configuration"
    assert enqueue_confirmations(study, seeds=2, top=2) == [0, 0, 2]  # #2 (C) already has one run
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs[CONFIRMS_ATTR] for t in waiting] == [0, 0, 2]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [A, A, B]
    assert enqueue_confirmations(study, seeds=2, top=2) == []  # nothing missing any more
    with pytest.raises(ValueError, match="seeds"):
        enqueue_confirmations(study, seeds=0)


def test_mean_spread_and_noise_against_a_hand_computation():
    study = bstune.create_study(bstune.TimeBudget(1))
    _add(study, 0.90, A)  # #0
    _add(study, 0.86, B)  # #1
    _add(study, 0.70, C)  # #2
    for v in (0.86, 0.88):
        _add(study, v, A, confirms=0)
    for v in (0.87, 0.85):
        _add(study, v, B, confirms=1)
    for v in (0.72, 0.68):
        _add(study, v, C, confirms=2)
    report = analyze(study, importance=False)
    a, b, c = report.confirmations
    assert (a.trial, b.trial, c.trial) == (0, 1, 2)
    assert a.mean == pytest.approx(0.88) and a.std == pytest.approx(statistics.stdev([0.9, 0.86, 0.88]))
    pooled = statistics.fmean([statistics.stdev(v) ** 2 for v in ([0.9, 0.86, 0.88], [0.86, 0.87, 0.85], [0.7, 0.72, 0.68])])
    se = math.sqrt(pooled * (1 / 3 + 1 / 3))
    assert abs(a.mean - b.mean) <= 2 * se and b.within_noise is True  # 0.02 apart, 2 se = 0.033
    assert abs(a.mean - c.mean) > 2 * se and c.within_noise is False
    assert a.within_noise is None
    (answer,) = [x.answer for x in report.answers if x.question.startswith("Which configuration")]
    assert answer.startswith("Use batch 32, learning rate 1.00e-03, 3 epochs (trial #0): mean accuracy 0.88 ± 0.02 over 3 seeds.")
    assert "Within noise of it (less than two standard errors apart): #1 (batch 64" in answer
    assert "Behind it by more than the noise: #2" in answer
    (smaller,) = [x.answer for x in report.answers if x.question.startswith("Do smaller batches")]
    sd = math.sqrt(pooled)  # 0.0173; a difference of two single runs: 2 * sd * sqrt(2) = 0.049
    assert f"standard deviation {sd:.2g}, so a gap below about {2 * sd * math.sqrt(2):.2g}" in smaller
    assert "these bests span 0.18, beyond it" in smaller  # 0.90 (batch 32) against 0.72 (batch 128)
    md = format_report(report, "markdown")
    assert "| #0 | 32 | 1.00e-03 | 3 | 3 | 0.8800 | 0.0200 | 0.8600 - 0.9000 | best |" in md
    assert "| #1 | 64 | 2.00e-03 | 3 | 3 | 0.8600 | 0.0100 | 0.8500 - 0.8700 | within noise |" in md
    assert "| #2 | 128 | 4.00e-03 | 3 | 3 | 0.7000 | 0.0200 | 0.6800 - 0.7200 | behind |" in md


def test_unconfirmed_ranking_says_it_is_from_single_runs():
    study = bstune.create_study(bstune.TimeBudget(1))
    _add(study, 0.90, A)
    _add(study, 0.86, B)
    report = analyze(study, importance=False)
    assert report.confirmations == []
    (answer,) = [x.answer for x in report.answers if x.question.startswith("Which configuration")]
    assert "this ranking is from single runs" in answer


def test_optimize_confirm_trains_the_best_again_unpruned_and_confirm_adds_only_what_is_missing(cli, tmp_path):
    args = ("--time-budget", "0.3", "--storage", "sqlite:///c.db", "--study-name", "s")
    # No pruning in the search: two completed trials to confirm, whatever the machine's speed.
    code, out, err = cli("optimize", BLOBS, "--n-trials", "4", "--confirm", "2", "--confirm-top", "2", "--pruner",
                         "none", *args)
    assert code == 0, err + out
    study = optuna.load_study(study_name="s", storage="sqlite:///c.db")
    firsts = [t for t in study.trials if CONFIRMS_ATTR not in t.user_attrs]
    runs = [t for t in study.trials if CONFIRMS_ATTR in t.user_attrs]
    assert len(firsts) == 4 and len(runs) == 4
    ranked = sorted((t for t in firsts if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: -t.value)
    assert sorted({t.user_attrs[CONFIRMS_ATTR] for t in runs}) == sorted(t.number for t in ranked[:2])
    for t in runs:
        first = study.trials[t.user_attrs[CONFIRMS_ATTR]]
        assert t.params == first.params and t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs["seed"] != first.user_attrs["seed"]  # another seed
    assert "confirming #" in out and "Confirmed configurations" in out and "over 3 seeds" in out
    report = analyze(study, importance=False)
    for c in report.confirmations:
        values = [study.trials[n].value for n in c.runs]
        assert len(values) == 3 and c.mean == pytest.approx(statistics.fmean(values))

    code, out, err = cli("confirm", BLOBS, "--storage", "sqlite:///c.db", "--seeds", "2", "--top", "2")
    assert code == 0, err + out
    assert "already have 2 confirmation runs each" in out
    code, out, err = cli("confirm", BLOBS, "--storage", "sqlite:///c.db", "--seeds", "3", "--top", "2")
    assert code == 0, err + out
    study = optuna.load_study(study_name="s", storage="sqlite:///c.db")
    assert len(study.trials) == 10  # one more run for each of the two


def test_confirmation_runs_are_never_pruned():
    from bstune.testing import SyntheticTask

    task = SyntheticTask(n_train=4_000, steps_min=60, evals_per_epoch=3)
    space, mode = bstune.load_space("default"), bstune.TimeBudget(2.0)
    study = bstune.create_study(mode, space=space, seed=0)
    objective = bstune.make_objective(task, space, mode, clock=task.clock)
    bstune.optimize(study, objective, n_trials=3)
    # The same study with a pruner that stops every trial at its first report.
    strict = optuna.load_study(study_name=study.study_name, storage=study._storage,
                               pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    queued = bstune.confirm(strict, objective, seeds=2, top=2)
    runs = [t for t in study.get_trials() if CONFIRMS_ATTR in t.user_attrs]
    assert len(queued) == len(runs) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["stop_reason"] != "pruned" for t in runs)


def test_confirm_trains_as_the_study_trained_unless_told_otherwise(cli, tmp_path):
    args = ("--storage", "sqlite:///c.db", "--study-name", "s")
    code, out, err = cli("optimize", BLOBS, "--n-trials", "2", "--time-budget", "0.3", "--pruner", "none",
                         "--compile", "--no-amp", "--device", "cpu", *args)
    assert code == 0, err + out
    code, out, err = cli("confirm", BLOBS, "--seeds", "1", "--top", "1", "--device", "cpu", *args)
    assert code == 0, err + out
    study = optuna.load_study(study_name="s", storage="sqlite:///c.db")
    (run,) = [t for t in study.trials if CONFIRMS_ATTR in t.user_attrs]
    assert run.user_attrs["compiled"] is True and run.user_attrs["amp"] == "off"  # as the searched trials
    code, out, err = cli("confirm", BLOBS, "--seeds", "2", "--top", "1", "--device", "cpu", "--no-compile", *args)
    assert code == 0, err + out
    study = optuna.load_study(study_name="s", storage="sqlite:///c.db")
    runs = [t for t in study.trials if CONFIRMS_ATTR in t.user_attrs]
    assert [t.user_attrs["compiled"] for t in runs] == [True, False]  # told otherwise


def test_resuming_with_other_training_settings_says_so(cli, tmp_path):
    args = ("--n-trials", "1", "--time-budget", "0.3", "--pruner", "none", "--device", "cpu",
            "--storage", "sqlite:///c.db", "--study-name", "s")
    code, out, err = cli("optimize", BLOBS, "--compile", *args)
    assert code == 0, err + out
    code, out, err = cli("optimize", BLOBS, *args)
    assert code == 0, err + out
    assert ("note: the study's 1 completed trial trained compiled, amp off; this run trains not compiled, "
            "amp off (to measure alike, add --compile)") in " ".join(out.split())
    code, out, err = cli("optimize", BLOBS, "--compile", *args)  # one trial each way now: no single way to match
    assert code == 0, err + out
    assert "note: the study's" not in out


def test_confirm_hands_the_recorded_precision_to_the_trainer(cli, tmp_path, trainer_calls):
    args = ("--device", "cpu", "--storage", "sqlite:///c.db", "--study-name", "s")
    code, out, err = cli("optimize", BLOBS, "--n-trials", "2", "--time-budget", "0.3", "--pruner", "none", *args)
    assert code == 0, err + out
    assert [c.get("amp") for c in trainer_calls] == [None]  # no DEFAULTS, no option: the trainer's own default
    code, out, err = cli("confirm", BLOBS, "--seeds", "1", "--top", "1", *args)
    assert code == 0, err + out
    assert trainer_calls[-1].get("amp") is False  # every trial recorded amp off: float32, as they trained
    code, out, err = cli("confirm", BLOBS, "--seeds", "2", "--top", "1", "--amp", *args)
    assert code == 0, err + out
    assert trainer_calls[-1].get("amp") is True  # told otherwise
