"""Every output format of a report, the self-contained HTML file and the PNG pictures."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import optuna
import pytest

from analysis._studies import make_synthetic_study
from bstune.analysis import Report, analyze, format_report, write_html, write_png
from bstune.objectives import Target


@pytest.fixture(scope="module")
def report() -> Report:
    s = make_synthetic_study(n_trials=16, pruner=optuna.pruners.ThresholdPruner(lower=0.6, n_warmup_steps=1500))
    return analyze(s, budgets=[0.5, 1.0, 4.5])


def test_json_lists_front_recommendations_and_batch_sizes(report: Report) -> None:
    data = json.loads(format_report(report, "json"))
    assert [(p["trial"], p["time_s"], p["metric"]) for p in data["front"]] == [
        (p.trial, p.time_s, p.metric) for p in report.front
    ]
    assert [r["budget_s"] for r in data["recommendations"]] == [0.5, 1.0, 4.5]
    assert data["recommendations"][-1]["trial"] == report.recommendations[-1].trial
    assert len(data["anytime_front"]) == len(report.anytime_front)
    assert [b["batch_size"] for b in data["batch_sizes"]] == [b.batch_size for b in report.batch_sizes]
    assert data["lr_scaling"]["exponent"] == pytest.approx(report.lr_scaling.exponent)
    assert set(data["importance"]) == set(report.importance)
    assert "curve_time_s" not in data["trials"][0]


def test_json_has_no_nan(report: Report) -> None:
    text = format_report(report, "json")
    assert "NaN" not in text and "Infinity" not in text
    # A batch size that never reached the target has no time: null, not NaN.
    data = json.loads(text)
    missing = [b for b in report.batch_sizes if math.isnan(b.time_to_target_s)]
    assert len([b for b in data["batch_sizes"] if b["time_to_target_s"] is None]) == len(missing)


def test_csv_sections_hold_the_same_rows(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    by = {}
    for row in rows:
        by.setdefault(row["section"], []).append(row)
    assert [int(r["trial"]) for r in by["front"]] == [p.trial for p in report.front]
    assert [float(r["time_s"]) for r in by["front"]] == [p.time_s for p in report.front]
    assert [float(r["budget_s"]) for r in by["recommendation"]] == [0.5, 1.0, 4.5]
    assert [r["basis"] for r in by["recommendation"]] == [x.basis for x in report.recommendations]
    assert [int(r["batch_size"]) for r in by["batch_size"]] == [b.batch_size for b in report.batch_sizes]
    assert len(by["anytime_front"]) == len(report.anytime_front)
    assert {r["parameter"] for r in by["importance"]} == set(report.importance)


def test_markdown_opens_with_answers_then_one_front(report: Report) -> None:
    md = format_report(report, "markdown")
    assert md.startswith(f"# bstune report: {report.study_name}\n")
    titles = [t.split(":")[0].split(" (")[0] for t in re.findall(r"^## (.+)$", md, re.M)]
    assert titles == ["Answers", "Pareto front", "Recommendation per budget", "Batch-size effects",
                      "Batch sizes at equal training", "Parameter importance"]
    # budget mode: the one front is the anytime front (every trial trains for the budget)
    assert "## Pareto front: training time (s) against validation accuracy (every curve point" in md
    last = report.anytime_front[-1]
    assert re.search(rf"^\| #{last.trial} \| [\d.]+ - {last.time_s:.2f} \| [\d.]+ - {last.metric:.4f} \|", md, re.M)
    assert "Hypervolume" not in md
    for a in report.answers:
        assert f"- **{a.question}** {a.answer}" in md


def test_table_names_the_study_and_answers_first(report: Report) -> None:
    text = format_report(report, "table")
    assert f"Study {report.study_name!r}: time budget 4 s per trial" in text
    assert "Pareto front" in text and "Recommendation per budget" in text
    assert text.index("Which configuration gives the best accuracy within 4 s?") < text.index("Pareto front")
    assert f"#{report.anytime_front[-1].trial}" in text


def test_csv_and_json_carry_the_answers(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    answers = [r for r in rows if r["section"] == "answer"]
    assert [r["message"] for r in answers] == [f"{a.question} {a.answer}" for a in report.answers]
    data = json.loads(format_report(report, "json"))
    assert [a["question"] for a in data["answers"]] == [a.question for a in report.answers]


def test_a_target_study_shows_the_finished_front() -> None:
    s = make_synthetic_study(n_trials=8, mode=Target(0.7))
    r = analyze(s)
    md = format_report(r, "markdown")
    assert "## Pareto front: training time (s) against validation accuracy (finished trials)" in md
    assert "every curve point" not in md
    assert r.answers[0].question == "Which configuration reaches accuracy 0.7 soonest?"


def test_unknown_format_is_refused(report: Report) -> None:
    with pytest.raises(ValueError, match="'fmt' parameter of format_report must be one of table, json"):
        format_report(report, "xml")


def test_html_is_self_contained(report: Report, tmp_path: Path) -> None:
    path = write_html(report, tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    # plotly.js is inline (several megabytes) and nothing is fetched from the network.
    assert len(text) > 1_000_000
    assert not re.search(r"<script[^>]+src=", text)
    assert "<link" not in text and "<iframe" not in text
    for div in ("bstune-front", "bstune-curves", "bstune-batch_best", "bstune-batch_time", "bstune-batch_lr",
                "bstune-batch_throughput", "bstune-examples", "bstune-steps", "bstune-importance"):
        assert f'id="{div}"' in text
    assert "Recommendation per budget" in text
    assert "<h2>Answers</h2>" in text and "Which configuration gives the best accuracy" in text


def test_png_pictures_are_written(report: Report, tmp_path: Path) -> None:
    from matplotlib.image import imread

    paths = write_png(report, tmp_path / "png")
    assert [p.name for p in paths] == ["front.png", "curves.png", "batch_sizes.png", "importance.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 500
    # The front is drawn in its own colour (red diamonds), distinct from the grey dominated trials.
    img = imread(paths[0])
    red = (img[..., 0] > 0.75) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() > 200


def test_png_and_html_for_an_empty_study(tmp_path: Path) -> None:
    r = analyze(optuna.create_study(direction="maximize"))
    assert len(write_png(r, tmp_path)) == 4
    assert "the study has no trials yet" in write_html(r, tmp_path / "e.html").read_text(encoding="utf-8")
