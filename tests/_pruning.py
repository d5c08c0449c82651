"""What the pruner tests share: studies with hand-made curves, recorded real curves, the fake out-of-memory task."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

import bstune
from bstune.pruners import (
    AnyPruner,
    AsyncHalvingPruner,
    DivergencePruner,
    GainBoundPruner,
    SlowTrialPruner,
    TargetTimePruner,
    TimeAlignedPruner,
)
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


_STOPPED_WITH_DATA = {
    "divergence": (math.nan, 1500),
    "time-aligned": (0.0, 1500),  # far below the three finished trials at 1.5 s
    "async-halving": (0.0, 1500),  # rung 0.5 s of the finished trials' median 2 s: they had 0.5 there
    "slow": (0.0, 6000),  # one evaluation every 6 s: one fits into the 10 s budget
    "any": (0.0, 1500),
}


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


def _public(pruner: object) -> dict[str, object]:
    return {k: v for k, v in vars(pruner).items() if not k.startswith("_") and k != "pruners"}


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


def _run_study(
    mode: bstune.objectives.Mode, pruner: optuna.pruners.BasePruner, space: str = "default"
) -> optuna.Study:
    return create_study(mode, space=bstune.load_space(space), pruner=pruner, seed=0)


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


def _reached(study: optuna.Study, seconds: float, reached: bool = True) -> None:
    t = study.ask()
    t.report(0.0 if reached else 0.1, int(seconds * 1000) if math.isfinite(seconds) else 1000)
    t.set_user_attr("reached_target", reached)
    study.tell(t, seconds)


def _target_trial(study: optuna.Study, shortfalls: list[float], planned: float = 4) -> optuna.Trial:
    """A trial reporting once a second, half an epoch per report, ``planned`` epochs planned."""
    t = study.ask()
    t.set_user_attr("planned_epochs", planned)
    for k, gap in enumerate(shortfalls, start=1):
        t.set_user_attr("curve", {"epoch": [0.5 * i for i in range(1, k + 1)]})
        t.report(gap, 1000 * k)
    return t


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


def _planned(trial: optuna.Trial, epochs: list[float], planned: int = 1) -> None:
    trial.set_user_attr("planned_epochs", planned)
    trial.set_user_attr("curve", {"epoch": epochs})


_CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "curves"


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
