"""The report's answers in words: checked against hand computations on studies built trial by trial."""

from __future__ import annotations

import math

import optuna

import bstune
from bstune.analysis import analyze, format_report
from bstune.run import CurvePoint, curve_to_attrs


def _study(rows: list[tuple[int, float, float]], probe: dict | None = None) -> optuna.Study:
    """A budget study with one finished trial per (batch size, learning rate, accuracy)."""
    study = bstune.create_study(bstune.TimeBudget(10))
    if probe is not None:
        study.set_user_attr("probe", probe)
    for b, lr, acc in rows:
        curve = [CurvePoint(5.0, 6.0, 1.0, 100, acc - 0.1, 1.0), CurvePoint(10.0, 12.0, 2.0, 200, acc, 0.5)]
        attrs = {"batch_size": b, "learning_rate": lr, "planned_epochs": 2, "train_s": 10.0, "stop_reason": "budget",
                 "curve": curve_to_attrs(curve), "throughput": 20.0}
        study.add_trial(optuna.trial.create_trial(value=acc, user_attrs=attrs,
                                                  system_attrs={"constraints": [0.0]}))
    return study


def _answer(study: optuna.Study, start: str) -> str:
    (a,) = [a for a in analyze(study, importance=False).answers if a.question.startswith(start)]
    return a.answer


def test_two_batch_sizes_cannot_fit_the_learning_rate_exponent():
    study = _study([(32, 1e-3, 0.8), (64, 2e-3, 0.82), (64, 1e-3, 0.7)])
    text = _answer(study, "Does the learning rate have to follow")
    assert text.startswith("Not enough evidence: finished trials at 2 batch size(s)")
    assert "at least 3" in text
    md = format_report(analyze(study, importance=False), "markdown")
    assert "Not enough evidence: finished trials at 2 batch size(s)" in md


def test_the_exponent_and_its_interval_match_a_hand_fit():
    # best learning rate per batch size: 32 -> 1e-3, 64 -> 2e-3, 128 -> 2.4e-3
    study = _study([(32, 1e-3, 0.8), (64, 2e-3, 0.85), (128, 2.4e-3, 0.83), (128, 1e-2, 0.5)])
    one_each = _study([(32, 1e-3, 0.8), (64, 2e-3, 0.85), (128, 2.4e-3, 0.83)])
    assert _answer(one_each, "Does the learning rate have to follow").startswith(
        "Not enough evidence: each of the 3 batch sizes has one finished trial"
    )
    xs = [math.log(32), math.log(64), math.log(128)]
    ys = [math.log(1e-3), math.log(2e-3), math.log(2.4e-3)]
    mx, my = sum(xs) / 3, sum(ys) / 3
    sxx = sum((x - mx) ** 2 for x in xs)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    ss = sum((y - (my + k * (x - mx))) ** 2 for x, y in zip(xs, ys, strict=True))
    half = 12.706204736174694 * math.sqrt(ss / 1 / sxx)  # t(0.975, 1 degree of freedom)
    text = _answer(study, "Does the learning rate have to follow")
    assert f"batch^{k:.2f} (95% interval {k - half:.2f} to {k + half:.2f}, 3 batch sizes" in text
    assert "no, square-root and linear scaling all lie inside it, so this study cannot tell them apart" in text


def test_which_configuration_and_smaller_batches():
    study = _study([(32, 1e-3, 0.8), (64, 2e-3, 0.85), (128, 2.4e-3, 0.83)])
    text = _answer(study, "Which configuration")
    assert text.startswith("Use batch 64, learning rate 2.00e-03, 2 epochs (trial #1): accuracy 0.85.")
    assert "runner-up, #2 (batch 128), reached 0.83, 0.02 lower" in text and "trained once" in text
    text = _answer(study, "Do smaller batches hurt")
    assert text.startswith("The smallest batch with a finished trial, 32, reached 0.8, 0.05 below the best (batch 64).")
    assert "32: 0.8, 64: 0.85, 128: 0.83" in text


def test_powers_of_two_against_their_neighbours_from_a_probe():
    probe = {"largest_batch": 256, "throughput": {"64": 1000.0, "96": 1200.0, "128": 2000.0}}
    study = _study([(32, 1e-3, 0.8), (64, 2e-3, 0.85)], probe=probe)
    # the line between 64 and 128 in log-log space at 96: 1000 * 2 ** log2(1.5) = 1500
    assert _answer(study, "Do powers of two") == (
        "Samples per second of batches between powers of two, against the line between their neighbours: "
        "96: -20% against 64 and 128."
    )
    assert "The largest batch that fits in memory is 256 (probe)." in _answer(study, "Do smaller batches hurt")
    no_probe = _study([(32, 1e-3, 0.8), (64, 2e-3, 0.85)])
    assert _answer(no_probe, "Do powers of two").startswith("Not measured")
