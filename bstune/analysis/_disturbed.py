"""Disturbed trials: a trial that trained far slower than its batch size's other trials.

A time-budget study measures the machine as much as the model: a trial that shared the cores with
another job trains fewer steps in its budget and reaches less, and would stand in the answers as
what its batch size can do. Each trial records its training throughput (samples per second of
training time); a trial whose throughput is below ``SLOW_RATIO`` of the median of the study's
other trials with the same batch size, micro-batch and device is disturbed. bstune marks it when it
ends (user attribute ``DISTURBED_ATTR``, with the ratio), and the report leaves it out of the
batch-size answers and says why.

What this cannot see: a disturbance that slowed every trial of a batch size alike (the whole
study ran beside another job), and a trial with nothing to compare with (the first two of a batch
size). The ratio is loose on purpose: model parameters that change the cost of a step (a wider
layer) also change the throughput, by less than that.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, NamedTuple

import optuna

__all__ = ["DISTURBED_ATTR", "RETRY_ATTR", "SLOW_RATIO", "Disturbance", "disturbance", "disturbed_trials"]

#: Trial user attribute of a disturbed trial: its throughput ratio, the reference and how many
#: trials the reference is the median of.
DISTURBED_ATTR = "disturbed"
#: Trial user attribute of a trial queued to train a disturbed trial's configuration again.
RETRY_ATTR = "retries_disturbed"
#: Below this fraction of the median throughput of its batch size's other trials, a trial was disturbed.
SLOW_RATIO = 0.2
#: Steps a trial must have trained for its throughput to count (the first steps warm up).
MIN_STEPS = 10
#: Seconds of training below which a throughput is clock noise, not a measurement.
MIN_TRAIN_S = 0.1


class Disturbance(NamedTuple):
    """A trial's throughput against the median of its batch size's other trials."""

    trial: int
    batch_size: int
    throughput: float
    reference: float
    ratio: float
    others: int


def _key(t: optuna.trial.FrozenTrial) -> tuple[Any, Any, Any]:
    ua = t.user_attrs
    return ua.get("batch_size"), ua.get("micro_batch_size"), ua.get("device")


def _throughput(t: optuna.trial.FrozenTrial) -> float | None:
    ua = t.user_attrs
    thr, batch, samples = ua.get("throughput"), ua.get("batch_size"), ua.get("samples_seen")
    if not isinstance(thr, (int, float)) or not math.isfinite(thr) or thr <= 0 or not batch or not samples:
        return None
    return float(thr) if samples >= MIN_STEPS * batch and samples / thr >= MIN_TRAIN_S else None


def disturbance(trial: optuna.trial.FrozenTrial, trials: Sequence[optuna.trial.FrozenTrial]) -> Disturbance | None:
    """``trial``'s throughput against the median of the other trials with its batch size,
    micro-batch and device (those marked disturbed left out); None without two of them."""
    mine = _throughput(trial)
    if mine is None:
        return None
    refs = [thr for t in trials
            if t.number != trial.number and _key(t) == _key(trial) and not t.user_attrs.get(DISTURBED_ATTR)
            and (thr := _throughput(t)) is not None]
    if len(refs) < 2:
        return None
    ref = statistics.median(refs)
    return Disturbance(trial.number, int(trial.user_attrs["batch_size"]), mine, ref, mine / ref, len(refs))


def disturbed_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[int, Disturbance]:
    """The finished trials that were disturbed: marked so when they ended, or found so now
    against every other trial of the study.

    Examples:
        Batch 64 at 75 samples/s where its other trials reached 2,500 to 3,500:

        >>> trials = [optuna.trial.create_trial(value=0.8, user_attrs={
        ...     "batch_size": 64, "device": "cpu", "throughput": thr, "samples_seen": 64_000})
        ...     for thr in (3000.0, 2500.0, 75.0, 3500.0)]
        >>> for i, tr in enumerate(trials):
        ...     tr.number = i
        >>> {n: round(d.ratio, 3) for n, d in disturbed_trials(trials).items()}
        {2: 0.025}
    """
    out: dict[int, Disturbance] = {}
    for t in trials:
        marked = t.user_attrs.get(DISTURBED_ATTR)
        if isinstance(marked, dict) and t.user_attrs.get("batch_size"):
            out[t.number] = Disturbance(t.number, int(t.user_attrs["batch_size"]), float(marked.get("throughput", math.nan)),
                                        float(marked.get("reference", math.nan)), float(marked.get("ratio", math.nan)),
                                        int(marked.get("others", 0)))
            continue
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        d = disturbance(t, trials)
        if d is not None and d.ratio < SLOW_RATIO:
            out[t.number] = d
    return out
