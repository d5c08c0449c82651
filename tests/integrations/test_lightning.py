"""The Lightning callback with the real ``lightning.pytorch.Trainer`` on CPU, on a fake clock.

Every training batch advances the clock by ``STEP_S`` and every validation batch by ``EVAL_S``, so
the time axis can be checked exactly: training time excludes validation and the sanity check.
"""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bstune
from bstune.run import curve_from_attrs
from bstune.testing import FakeClock

from .conftest import EVAL_S, N_TRAIN, STEP_S, check_budget_stop_and_time_axis, finished, need, one_trial_study

L = need("lightning.pytorch", "lightning")
from bstune.integrations.lightning import BstuneCallback  # noqa: E402


class Scripted(L.LightningModule):
    """A linear model whose validation metric is scripted: ``global_step / 20`` (optimizer steps)."""

    def __init__(self, clock: FakeClock, lr: float, *, nan_loss: bool = False, oom_from: int | None = None):
        super().__init__()
        self.clock, self.lr, self.nan_loss, self.oom_from = clock, lr, nan_loss, oom_from
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.oom_from is not None and len(x) >= self.oom_from:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.clock.advance(STEP_S)
        loss = nn.functional.cross_entropy(self.net(x), y)
        return loss * math.nan if self.nan_loss else loss

    def validation_step(self, batch, batch_idx):
        self.clock.advance(EVAL_S)
        self.log("val_acc", min(1.0, self.trainer.global_step / 20), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N_TRAIN, 4, generator=g), torch.randint(0, 2, (N_TRAIN,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size), DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32)


def _train_fn(clock: FakeClock, seen: dict, **module_kw):
    def train(hp: bstune.Hyperparams, run: bstune.Run) -> None:
        callback = BstuneCallback(run, monitor="val_acc")
        trainer = L.Trainer(
            **callback.trainer_kwargs(),
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        seen["trainer"], seen["callback"] = trainer, callback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on data loader workers
            trainer.fit(Scripted(clock, hp.learning_rate, **module_kw), *_loaders(callback.batch_size))

    return train


def _optimize(study, space, mode, clock, n_trials=1, micro_batch_size=None, **module_kw):
    seen: dict = {}
    objective = bstune.make_objective(
        _train_fn(clock, seen, **module_kw), space, mode, clock=clock, micro_batch_size=micro_batch_size
    )
    study.optimize(objective, n_trials=n_trials)
    return seen


def test_budget_stop_within_one_batch_and_validation_kept_out_of_training_time(tmp_path):
    clock = FakeClock()
    study, space = one_trial_study(tmp_path, bstune.TimeBudget(1.0), batch=16)
    _optimize(study, space, bstune.TimeBudget(1.0), clock)
    (t,) = finished(study)
    # one validation at the end of epoch 1, one after the stop (Lightning validates when stopped)
    check_budget_stop_and_time_axis(t)
    assert t.user_attrs["overhead_s"] == pytest.approx(EVAL_S)  # the sanity check


def test_target_stops_the_trainer_at_the_report_that_reaches_it(tmp_path):
    clock = FakeClock()
    mode = bstune.Target(0.5)
    study, space = one_trial_study(tmp_path, mode, batch=16)
    seen = _optimize(study, space, mode, clock)
    (t,) = finished(study)
    assert t.user_attrs["stop_reason"] == "target"
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.value == pytest.approx(0.7)  # time to target: the first validation, after 10 steps
    assert seen["trainer"].current_epoch == 1 and seen["trainer"].global_step == 10


def test_a_pruner_stops_the_trial_at_its_first_report(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(5.0)
    study, space = one_trial_study(tmp_path, mode, batch=16, pruner=optuna.pruners.ThresholdPruner(lower=0.9))
    seen = _optimize(study, space, mode, clock)
    (t,) = finished(study)
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.user_attrs["stop_reason"] == "pruned"
    assert "ThresholdPruner" in t.user_attrs["stop_detail"]
    assert len(t.intermediate_values) == 1 and seen["trainer"].global_step == 10


def test_a_diverging_trial_stops_at_its_first_report(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(5.0)
    study, space = one_trial_study(tmp_path, mode, batch=16)
    _optimize(study, space, mode, clock, nan_loss=True)
    (t,) = finished(study)
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.user_attrs["stop_reason"] == "diverged"
    assert len(curve_from_attrs(t)) == 1


def test_out_of_memory_is_a_constraint_and_the_study_goes_on(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(1.0)
    study, space = one_trial_study(tmp_path, mode, batch=64)
    study.enqueue_trial({"log2_batch_size": 4, "learning_rate": 1e-2, "epochs": 10})
    _optimize(study, space, mode, clock, n_trials=2, oom_from=64)
    big, small = finished(study)
    assert big.state == optuna.trial.TrialState.PRUNED and big.user_attrs["stop_reason"] == "oom"
    assert big.constraints["out_of_memory"] == 1.0
    assert small.state == optuna.trial.TrialState.COMPLETE and small.user_attrs["batch_size"] == 16
    assert small.constraints["out_of_memory"] == 0.0


def test_micro_batches_become_gradient_accumulation(tmp_path):
    clock = FakeClock()
    mode = bstune.TimeBudget(5.0)
    study, space = one_trial_study(tmp_path, mode, batch=32, epochs=1)
    seen = _optimize(study, space, mode, clock, micro_batch_size=8)
    (t,) = finished(study)
    assert seen["callback"].batch_size == 8 and seen["trainer"].accumulate_grad_batches == 4
    assert t.user_attrs["micro_batch_size"] == 8 and t.user_attrs["batch_size"] == 32
    assert t.user_attrs["samples_seen"] == N_TRAIN  # one epoch, every micro-batch counted
    assert seen["trainer"].global_step == N_TRAIN // 32  # optimizer steps of the effective batch
