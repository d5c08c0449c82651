"""The Hugging Face callback with the real ``transformers.Trainer`` on CPU, on a fake clock.

Every training forward pass advances the clock by ``STEP_S`` and every evaluation forward pass by
``EVAL_S``, so the time axis can be checked exactly: training time excludes evaluation.
"""

from __future__ import annotations

import math
import os

import optuna
import pytest
import torch
from torch import nn

import bstune
from bstune.run import curve_from_attrs
from bstune.testing import FakeClock

from .conftest import EVAL_S, N_TRAIN, STEP_S, check_budget_stop_and_time_axis, finished, need, one_trial_study

transformers = need("transformers", "transformers")
from bstune.integrations.transformers import BstuneCallback, search_kwargs  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Scripted(nn.Module):
    """A linear model on a fake clock; ``steps`` counts training forward passes for the scripted metric."""

    def __init__(self, clock: FakeClock, *, nan_loss: bool = False, oom_from: int | None = None) -> None:
        super().__init__()
        self.clock, self.nan_loss, self.oom_from = clock, nan_loss, oom_from
        self.net = nn.Linear(4, 2)
        self.steps = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            if self.oom_from is not None and len(x) >= self.oom_from:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            self.clock.advance(STEP_S)
            self.steps += 1
        else:
            self.clock.advance(EVAL_S)
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels)
        return {"loss": loss * math.nan if self.nan_loss else loss, "logits": logits}


def _trainer(tmp_path, model: Scripted, callback: BstuneCallback, **args) -> transformers.Trainer:
    args = {"eval_strategy": "epoch", **args}
    targs = transformers.TrainingArguments(
        str(tmp_path / "out"),
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        per_device_eval_batch_size=32,
        dataloader_pin_memory=False,
        **args,
    )

    def scripted_accuracy(prediction) -> dict[str, float]:
        return {"accuracy": min(1.0, model.steps / 20)}

    return transformers.Trainer(
        model=model,
        args=targs,
        train_dataset=Rows(N_TRAIN),
        eval_dataset=Rows(32),
        compute_metrics=scripted_accuracy,
        callbacks=[callback],
    )


def _optimize(
    tmp_path, study, space, mode, clock, n_trials=1, evaluate_every_s=None, micro_batch_size=None, args=None, **model_kw
):
    seen: dict = {}

    def train(hp: bstune.Hyperparams, run: bstune.Run) -> None:
        callback = BstuneCallback(run, metric="eval_accuracy", evaluate_every_s=evaluate_every_s)
        trainer = _trainer(tmp_path, Scripted(clock, **model_kw), callback, **callback.training_args(), **(args or {}))
        seen["trainer"], seen["callback"] = trainer, callback
        trainer.train()

    objective = bstune.make_objective(train, space, mode, clock=clock, micro_batch_size=micro_batch_size)
    study.optimize(objective, n_trials=n_trials)
    return seen


def test_budget_stop_within_one_step_and_evaluation_kept_out_of_training_time(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(1.0)
    study, space = one_trial_study(tmp_path, mode, batch=16)
    _optimize(tmp_path, study, space, mode, clock)
    (t,) = finished(study)
    # one evaluation at the end of epoch 1, one after the stop, and not a third at that epoch's end
    check_budget_stop_and_time_axis(t)


def test_evaluations_come_every_tenth_of_the_budget_at_a_tenth_of_training_cost(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(20.0)
    study, space = one_trial_study(tmp_path, mode, batch=16, epochs=10)  # 7 s of training
    _optimize(tmp_path, study, space, mode, clock, evaluate_every_s="auto", args={"eval_strategy": "no"})
    (t,) = finished(study)
    # The first after a tenth of the budget (2 s, rounded up to a step); the next no sooner than
    # ten times the 0.5 s it cost, so not at 4.06 s; the last where training ends.
    assert t.user_attrs["stop_reason"] == "epochs"
    assert [p.train_s for p in curve_from_attrs(t)] == pytest.approx([2.03, 7.0])
    assert t.user_attrs["eval_s"] == pytest.approx(2 * EVAL_S)


def test_target_stops_training_at_the_report_that_reaches_it(tmp_path):
    clock = FakeClock()
    mode = bstune.Target(0.5)
    study, space = one_trial_study(tmp_path, mode, batch=16)
    seen = _optimize(tmp_path, study, space, mode, clock)
    (t,) = finished(study)
    assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["stop_reason"] == "target"
    assert t.value == pytest.approx(0.7)
    assert seen["trainer"].state.global_step == 10


def test_a_pruner_stops_the_trial_at_its_first_report(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(5.0)
    study, space = one_trial_study(tmp_path, mode, batch=16, pruner=optuna.pruners.ThresholdPruner(lower=0.9))
    seen = _optimize(tmp_path, study, space, mode, clock)
    (t,) = finished(study)
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["stop_reason"] == "pruned"
    assert "ThresholdPruner" in t.user_attrs["stop_detail"]
    assert len(t.intermediate_values) == 1 and seen["trainer"].state.global_step == 10


def test_a_diverging_trial_stops_at_its_first_report(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(5.0)
    study, space = one_trial_study(tmp_path, mode, batch=16)
    _optimize(tmp_path, study, space, mode, clock, nan_loss=True)
    (t,) = finished(study)
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["stop_reason"] == "diverged"
    assert len(curve_from_attrs(t)) == 1


def test_out_of_memory_is_a_constraint_and_the_study_goes_on(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(1.0)
    study, space = one_trial_study(tmp_path, mode, batch=64)
    study.enqueue_trial({"log2_batch_size": 4, "learning_rate": 1e-2, "epochs": 10})
    _optimize(tmp_path, study, space, mode, clock, n_trials=2, oom_from=64)
    big, small = finished(study)
    assert big.state == optuna.trial.TrialState.PRUNED and big.user_attrs["stop_reason"] == "oom"
    assert big.constraints["out_of_memory"] == 1.0
    assert small.state == optuna.trial.TrialState.COMPLETE and small.constraints["out_of_memory"] == 0.0


def test_micro_batches_become_gradient_accumulation(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(5.0)
    study, space = one_trial_study(tmp_path, mode, batch=32, epochs=1)
    seen = _optimize(tmp_path, study, space, mode, clock, micro_batch_size=8)
    (t,) = finished(study)
    args = seen["trainer"].args
    assert args.per_device_train_batch_size == 8 and args.gradient_accumulation_steps == 4
    assert t.user_attrs["micro_batch_size"] == 8 and t.user_attrs["samples_seen"] == N_TRAIN
    assert seen["trainer"].state.global_step == N_TRAIN // 32


def test_hyperparameter_search_runs_a_bstune_study(tmp_path):
    """Trainer.hyperparameter_search(backend="optuna") with bstune's study, space, sampler and pruner."""
    clock = FakeClock()
    # --8<-- [start:hyperparameter_search]
    callback = BstuneCallback(metric="eval_accuracy", evaluate_every_s=None)  # each trial binds its own run
    model = Scripted(clock)
    trainer = _trainer(tmp_path, model, callback)
    trainer.model_init = lambda: Scripted(clock)
    trainer.model = model
    mode = bstune.TimeBudget(1.0)
    storage = f"sqlite:///{tmp_path / 'hf.db'}"
    kwargs = search_kwargs(callback, mode, storage=storage, study_name="hf", seed=0, clock=clock)
    best = trainer.hyperparameter_search(n_trials=3, **kwargs)
    # --8<-- [end:hyperparameter_search]
    study = optuna.load_study(study_name="hf", storage=storage)
    assert study.user_attrs["mode"] == "time_budget"  # made by bstune.create_study
    assert len(study.trials) == 3 and best.run_id in {str(t.number) for t in study.trials}
    for t in study.trials:
        curve = curve_from_attrs(t)
        assert t.user_attrs["stop_reason"] in ("budget", "epochs", "pruned")
        # only bstune's reports, at training milliseconds; the Trainer's own (at global steps) muted
        assert sorted(t.intermediate_values) == [int(p.train_s * 1000) for p in curve]
        assert set(t.params) == {"log2_batch_size", "learning_rate", "epochs"}
