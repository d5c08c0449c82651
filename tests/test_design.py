"""The batch-size study: its fits checked against values computed by hand, its plan on synthetic
tasks whose true learning-rate rule is known, and the command on real torch training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import bstune
from bstune.analysis import analyze, format_report
from bstune.analysis._design import DESIGN_ATTR, ROLE_ATTR, DesignPoint, fit_peaks, fit_power_law, seed_bands
from bstune.confirmation import without_pruning
from bstune.design import plan_design, run_design
from bstune.space import load_space
from bstune.study import make_objective, optimize
from bstune.testing import FakeClock, SyntheticTask

ROOT = Path(__file__).resolve().parents[1]
BLOBS = ROOT / "examples" / "mlp_blobs.py"
SPACE = {"batch_size": {"low": 16, "high": 1024}, "learning_rate": {"low": 1e-5, "high": 1.0},
         "epochs": {"low": 1, "high": 4}}


# ------------------------------------------------------------------------------ the fits by hand


def test_a_batch_sizes_peak_and_its_interval_match_the_hand_computed_least_squares():
    # One batch size, ln(lr / 1e-2) at -1, 0, 1 and twice more at 0. The parabola through the
    # means is 0.86 + 0.01 y - 0.05 y^2: peak at y = 0.1. Residuals only at y = 0 (0, -0.01,
    # +0.01): s^2 = 0.0002 / 2. (X'X)^-1 gives var(beta) = s^2 / 2 and var(gamma) = 5 s^2 / 6,
    # uncorrelated; dm/dbeta = -1 / (2 gamma) = 10, dm/dgamma = beta / (2 gamma^2) = 2, so
    # var(m) = 100 * 5e-5 + 4 * 8.333e-5 = 0.0053333 and the half-width is t(0.975, 2) * 0.073030.
    ys = [-1, 0, 1, 0, 0]
    vs = [0.80, 0.86, 0.82, 0.85, 0.87]
    pts = [DesignPoint(i, 64, 1e-2 * math.exp(y), v) for i, (y, v) in enumerate(zip(ys, vs, strict=True))]
    (peak,), s2 = fit_peaks(pts)
    assert peak.bracketed
    assert math.log(peak.learning_rate / 1e-2) == pytest.approx(0.1, abs=1e-9)
    assert s2 == pytest.approx(1e-4, rel=1e-9)
    half = 4.302652729911275 * math.sqrt(0.0053333333333)
    assert math.log(peak.low / 1e-2) == pytest.approx(0.1 - half, abs=1e-6)
    assert math.log(peak.high / 1e-2) == pytest.approx(0.1 + half, abs=1e-6)


def test_a_peak_at_the_end_of_the_rates_tried_is_not_bracketed_and_gets_no_interval():
    pts = [DesignPoint(i, 64, lr, v) for i, (lr, v) in enumerate([(1e-3, 0.7), (3e-3, 0.8), (9e-3, 0.85)])]
    (peak,), _ = fit_peaks(pts)
    assert not peak.bracketed and peak.learning_rate == 9e-3 and math.isnan(peak.low)


def test_the_exponent_of_exact_parabolas_on_a_square_root_rule_is_one_half():
    pts = []
    for b in (16, 64, 256, 1024):
        best = 1e-3 * math.sqrt(b / 16)
        for f in (1 / 3, 1, 3, 1.2):
            pts.append(DesignPoint(len(pts), b, best * f, 0.9 - 0.05 * math.log(f) ** 2 - 0.01 * math.log(b)))
    peaks, _ = fit_peaks(pts)
    law = fit_power_law(pts, peaks)
    assert law is not None
    assert law.exponent == pytest.approx(0.5, abs=1e-6)
    assert law.coefficient * 16**0.5 == pytest.approx(1e-3, rel=1e-5)
    assert law.batch_sizes == (16, 64, 256, 1024)


def test_seed_bands_match_hand_computed_means_and_pooled_noise():
    # Sample sds 0.01, 0.01 and 0.02: pooled sqrt((1e-4 + 1e-4 + 4e-4) / 3) = 0.014142. Against
    # the best (mean 0.81, 3 runs): 2 * 0.014142 * sqrt(2/3) = 0.023094; 0.79 is within, 0.75 not.
    rows, pooled = seed_bands({32: [0.80, 0.82, 0.81], 128: [0.78, 0.80, 0.79], 512: [0.73, 0.77, 0.75]},
                              maximize=True)
    assert pooled == pytest.approx(math.sqrt(2e-4), rel=1e-9)
    assert [(b, round(m, 9), round(s, 9), w) for b, m, s, w in rows] == [
        (32, 0.81, 0.01, None), (128, 0.79, 0.01, True), (512, 0.75, 0.02, False)]
    rows, _ = seed_bands({32: [10.0, 12.0], 128: [5.0, 5.5]}, maximize=False)  # seconds: less is better
    assert [w for *_, w in rows] == [False, None]


# ------------------------------------------------------------------- synthetic tasks, known rule


def _synthetic_study(exponent: float, *, seed: int = 0, stop_at: int = 24) -> tuple[optuna.Study, SyntheticTask]:
    clock = FakeClock()
    task = SyntheticTask(n_train=4000, steps_min=60, evals_per_epoch=3, lr_exponent=exponent, run_noise=0.01,
                         seed=seed, clock=clock)
    space = load_space(SPACE)
    mode = bstune.TimeBudget(5)
    study = bstune.create_study(mode, space=space, seed=seed)
    objective = make_objective(task, space, mode, clock=clock)
    design = plan_design(study, space)
    design.max_trials = stop_at  # as a rerun with a smaller --max-trials would
    run_design(study, design, space, lambda n: optimize(without_pruning(study), objective, n_trials=n),
               log=lambda line: None)
    return study, task


@pytest.mark.parametrize(("exponent", "excluded"), [(0.5, 1.0), (1.0, 0.5)])
def test_the_interval_holds_the_true_exponent_and_excludes_the_other_rule(exponent, excluded):
    study, task = _synthetic_study(exponent)
    d = analyze(study, importance=False).design
    assert d is not None and d.law is not None
    assert d.law.low <= exponent <= d.law.high, d.law
    assert not d.law.low <= excluded <= d.law.high, d.law
    assert d.law.high - d.law.low <= 0.6
    for p in d.peaks:  # each fitted peak within a factor 1.3 of the true best rate
        assert abs(math.log(p.learning_rate / task.best_lr(p.batch_size))) < math.log(1.3), p
    assert not d.unfinished
    assert all(len(x.values) == 3 for x in d.results)  # the chosen rate, then two more seeds


def test_the_plan_spreads_batch_sizes_and_stops_at_max_trials_and_a_rerun_finishes_it():
    study, _ = _synthetic_study(0.5, stop_at=8)
    plan = study.user_attrs[DESIGN_ATTR]
    assert plan["batch_sizes"] == [16, 128, 1024]
    assert len(study.trials) == 8
    d = analyze(study, importance=False).design
    assert d is not None and d.unfinished
    text = " ".join(a.answer for a in analyze(study, importance=False).answers)
    assert "run the same bstune study-batch command again" in text
    # The same study, a larger bound: it goes on from where it stopped, nothing trained twice.
    space = load_space(SPACE)
    clock = FakeClock()
    task = SyntheticTask(n_train=4000, steps_min=60, evals_per_epoch=3, run_noise=0.01, clock=clock)
    design = plan_design(study, space, max_trials=24)
    assert design.batch_sizes == [16, 128, 1024]
    objective = make_objective(task, space, bstune.TimeBudget(5), clock=clock)
    run_design(study, design, space, lambda n: optimize(without_pruning(study), objective, n_trials=n),
               log=lambda line: None)
    d = analyze(study, importance=False).design
    assert d is not None and not d.unfinished
    keys = [(t.params["log2_batch_size"], round(t.params["learning_rate"], 12)) for t in study.trials
            if t.user_attrs.get(ROLE_ATTR) == "lr"]
    assert len(keys) == len(set(keys))  # no search point trained twice


def test_a_study_without_the_design_says_the_design_would_settle_the_answers():
    clock = FakeClock()
    task = SyntheticTask(n_train=4000, steps_min=60, evals_per_epoch=3, clock=clock)
    space = load_space(SPACE)
    study = bstune.create_study(bstune.TimeBudget(5), space=space, seed=0)
    optimize(study, make_objective(task, space, bstune.TimeBudget(5), clock=clock), n_trials=10)
    answers = {a.question: a.answer for a in analyze(study, importance=False).answers}
    assert "bstune study-batch" in answers["Does the learning rate have to follow the batch size?"]
    assert any("bstune study-batch" in a for q, a in answers.items() if q.startswith("Do smaller batches hurt"))


def test_the_answers_come_from_the_design_in_every_format():
    study, _ = _synthetic_study(0.5)
    report = analyze(study, importance=False)
    answers = {a.question: a for a in report.answers}
    lr = answers["Does the learning rate have to follow the batch size?"]
    assert lr.evidence == "Batch-size study"
    assert "95% interval" in lr.answer and "square-root scaling (0.5)" in lr.answer
    assert "it rules out" in lr.answer and "linear scaling (1)" in lr.answer.split("it rules out")[1]
    assert "How sure: the batch-size study trained this configuration 3 times: mean" in report.answers[0].answer
    batches = answers["Do smaller batches hurt accuracy here, each batch size at its own best learning rate?"]
    assert "± " in batches.answer and "3 runs" in batches.answer
    md = format_report(report, "markdown")
    assert "## Batch-size study" in md and lr.answer in md
    data = json.loads(format_report(report, "json"))
    assert data["design"]["law"]["low"] <= 0.5 <= data["design"]["law"]["high"]
    assert [r["batch_size"] for r in data["design"]["results"]] == [16, 128, 1024]
    assert "batch_study" in format_report(report, "csv")
    assert "Batch-size study" in format_report(report, "table")


def test_the_html_report_and_the_pictures_show_the_design(tmp_path):
    from bstune.analysis._matplotlib import write_png
    from bstune.analysis._plotly import figures, write_html

    study, _ = _synthetic_study(1.0)
    report = analyze(study, importance=False)
    figs = figures(report)
    lr_fig = figs["design_lr"]
    names = [t.name for t in lr_fig.data]
    assert any(n.startswith("fit: lr ~ B^") for n in names)
    assert "square root, B^0.5" in names and "linear, B^1" in names
    best = figs["design_best"]
    band = next(t for t in best.data if t.name == "mean ± seed sd")
    assert list(band.x) == [16, 128, 1024] and all(v > 0 for v in band.error_y.array)
    html = write_html(report, tmp_path / "r.html").read_text()
    assert "bstune-design_lr" in html and "Batch-size study" in html
    pngs = write_png(report, tmp_path / "png")
    assert (tmp_path / "png" / "batch_study.png") in pngs and (tmp_path / "png" / "batch_study.png").stat().st_size > 10_000


# ------------------------------------------------------------------------- the command, for real


def test_study_batch_on_real_training_states_its_cost_and_answers_in_the_dashboard_note(tmp_path):
    db = tmp_path / "b.db"
    cmd = [sys.executable, "-m", "bstune", "study-batch", str(BLOBS), "--time-budget", "0.3", "--batch-sizes",
           "16,64,256", "--seeds", "1", "--max-trials", "21", "--storage", f"sqlite:///{db}",
           "--study-name", "bs", "--task-option", "n_samples=3000"]
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "batch-size study: batch sizes 16, 64, 256" in text and "Expected 15 trials" in text
    assert "at most 21 (--max-trials)" in text
    assert "Does the learning rate have to follow the batch size?" in text
    study = optuna.load_study(study_name="bs", storage=f"sqlite:///{db}")
    roles = [t.user_attrs.get(ROLE_ATTR) for t in study.trials]
    assert set(roles) <= {"lr", "seed"} and roles.count("seed") >= 3
    assert len(study.trials) <= 21
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)  # nothing pruned
    assert all(t.params["epochs"] == 30 for t in study.trials)  # the mlp space's largest: train to the budget
    from optuna_dashboard import get_note

    note = get_note(study)
    assert "## Batch-size study" in note and "each batch size at its own best learning rate?" in note
    # The dashboard serves the note and the two figures of the design beside the usual ones.
    import threading
    import urllib.request

    from bstune.analysis._dashboard import DESIGN_FIGURE_IDS, FIGURE_IDS, make_dashboard_server

    server, url = make_dashboard_server(f"sqlite:///{db}", port=0, study_name="bs")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{url.split('/dashboard')[0]}/api/studies/1?after=0", timeout=30) as resp:
            detail = json.loads(resp.read())
        assert {g["id"] for g in detail["plotly_graph_objects"]} == (
            set(FIGURE_IDS.values()) | {DESIGN_FIGURE_IDS["design_best"], DESIGN_FIGURE_IDS["design_lr"]})
        assert "Batch-size study" in detail["note"]["body"]
    finally:
        server.shutdown()
        server.server_close()
    # Run again: the design is complete, nothing more is trained. (On a busy machine a trial may
    # have been disturbed: the design trains its rate again, within --max-trials.)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    after = optuna.load_study(study_name="bs", storage=f"sqlite:///{db}").trials
    finished = "stopped at --max-trials" not in text
    if finished and not any(t.user_attrs.get("disturbed") for t in after):
        assert "already complete" in again.stdout
        assert len(after) == len(study.trials)
    else:  # the rerun goes on where the first stopped, within the same bound
        assert "already complete" in again.stdout or "stopped at --max-trials 21" in again.stdout
    assert len(after) <= 21


def test_study_batch_refuses_bad_options_in_one_line(tmp_path):
    for args, words in ((["--batch-sizes", "16,x"], "--batch-sizes must be comma-separated integers"),
                        (["--batch-sizes", "16,64"], "--batch-sizes must list three or more"),
                        (["--seeds", "0"], "--seeds must be an integer of at least 1"),
                        (["--max-trials", "5", "--batch-sizes", "16,64,256"], "--max-trials 5 is too few")):
        out = subprocess.run([sys.executable, "-m", "bstune", "study-batch", str(BLOBS), "--time-budget", "0.2",
                              "--storage", f"sqlite:///{tmp_path / 'x.db'}", *args],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode != 0
        assert words in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_target_mode_gives_steps_to_the_target_per_batch_size_and_where_batches_stop_paying():
    clock = FakeClock()
    task = SyntheticTask(n_train=4000, steps_min=60, critical_batch=64, evals_per_epoch=8, run_noise=0.002,
                         clock=clock)
    space = load_space({**SPACE, "epochs": {"low": 1, "high": 40}})  # the target before the schedule's end
    mode = bstune.Target(0.7)
    study = bstune.create_study(mode, space=space, seed=0)
    objective = make_objective(task, space, mode, clock=clock)
    design = plan_design(study, space)
    run_design(study, design, space, lambda n: optimize(without_pruning(study), objective, n_trials=n),
               log=lambda line: None)
    report = analyze(study, importance=False)
    d = report.design
    assert d is not None and [x.batch_size for x in d.results] == [16, 128, 1024]
    steps = [x.steps for x in d.results]
    assert all(math.isfinite(s) for s in steps)
    # S(B) = S_min (1 + B_noise / B) with B_noise 64: steps fall as batch^-0.6 from 16 to 128 and
    # as batch^-0.17 from 128 to 1024 (5 S_min, 1.5 S_min and 1.06 S_min to convergence).
    assert steps[0] > steps[1] > steps[2]
    assert math.log(steps[0] / steps[1]) / math.log(8) > 0.5
    assert math.log(steps[1] / steps[2]) / math.log(8) < 0.25
    assert d.stops_paying == 128
    answer = next(a.answer for a in report.answers if a.question.startswith("How many optimizer steps"))
    assert "Past batch 128, a larger batch no longer buys fewer steps" in answer
    from bstune.analysis._plotly import figures

    assert "design_steps" in figures(report)


def test_a_space_that_scales_the_rate_keeps_every_planned_rate_inside_its_batch_sizes_range():
    import warnings

    clock = FakeClock()
    task = SyntheticTask(n_train=4000, steps_min=60, evals_per_epoch=3, run_noise=0.01, clock=clock)
    space = load_space({**SPACE, "learning_rate": {"low": 1e-4, "high": 3e-2, "scaling": "sqrt",
                                                   "reference_batch_size": 64}})
    mode = bstune.TimeBudget(5)
    study = bstune.create_study(mode, space=space, seed=0)
    objective = make_objective(task, space, mode, clock=clock)
    design = plan_design(study, space)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*out of range.*")
        run_design(study, design, space, lambda n: optimize(without_pruning(study), objective, n_trials=n),
                   log=lambda line: None)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        assert 1e-4 <= t.params["base_learning_rate"] <= 3e-2
    d = analyze(study, importance=False).design
    assert d is not None and not d.unfinished


def test_study_batch_runs_its_rounds_on_worker_processes(tmp_path):
    script = ROOT / "tests" / "data" / "synthetic_task.py"  # the exact rule lr ~ batch^0.5, no noise
    cmd = [sys.executable, "-m", "bstune", "study-batch", str(script), "--workers", "2", "--storage",
           f"journal:{tmp_path / 'w.log'}", "--study-name", "w"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("2 workers:") >= 3  # one start per round, every round on the workers
    from bstune.study import resolve_storage

    study = optuna.load_study(study_name="w", storage=resolve_storage(f"journal:{tmp_path / 'w.log'}"))
    # Trained in the worker processes: each was given its share of the cores (one thread each).
    assert {t.user_attrs.get("test_omp_threads") for t in study.trials} == {"1"}
    d = analyze(study, importance=False).design
    assert d is not None and not d.unfinished and d.law is not None
    assert d.law.exponent == pytest.approx(0.5, abs=0.02)
