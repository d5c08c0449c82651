"""Out of memory (faked on CPU): recorded as infeasible, not trained blindly again, avoided by the sampler."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
from _pruning import _OOM_TASK
from optuna.trial import TrialState

import bstune
from bstune.pruners import (
    known_out_of_memory,
)
from bstune.study import create_study, make_objective
from bstune.testing import FakeClock, SyntheticTask


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
