from __future__ import annotations

import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

torch = pytest.importorskip("torch")

from bstune import Run, TimeBudget  # noqa: E402
from bstune.errors import TaskError  # noqa: E402
from bstune.space import Hyperparams  # noqa: E402
from bstune.task import load_task  # noqa: E402
from bstune.testing import FakeClock  # noqa: E402
from bstune.train import Trainer, _lr_multiplier  # noqa: E402

TORCH_DIR = str(Path(torch.__file__).parent)

TASK = """
import torch
from torch import nn

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(640, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w).argmax(1)
    return x[:512], y[:512], x[512:], y[512:]

def model(hp):
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
"""


@pytest.fixture
def task(tmp_path):
    f = tmp_path / "task.py"
    f.write_text(TASK)
    return load_task(f)


def _train(task, hp, **kw):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trainer = Trainer(task, device="cpu", **kw)
    with Run(
        trial, TimeBudget(1e6), hp, clock=FakeClock(), micro_batch_size=trainer.micro_batch_for(hp.batch_size)
    ) as run:
        trainer(hp, run)
    study.tell(trial, run.value)
    return run, study.trials[0]


def hp(batch=64, epochs=2, lr=0.05):
    return Hyperparams(batch_size=batch, learning_rate=lr, epochs=epochs, base_learning_rate=lr)


def test_trains_and_records_the_curve(task):
    run, frozen = _train(task, hp())
    assert run.stop_reason == "epochs"
    assert frozen.user_attrs["samples_seen"] == 2 * 512
    assert frozen.user_attrs["epochs_done"] == 2.0
    assert len(run.curve) == 8  # four evaluations per epoch
    assert run.curve[-1].metric > 0.6  # it learned something
    assert frozen.user_attrs["device"] == "cpu" and frozen.user_attrs["amp"] == "off"


def test_gradient_accumulation_gives_the_effective_batch(task):
    full, _ = _train(task, hp(batch=64))
    accumulated, frozen = _train(task, hp(batch=64), micro_batch_size=16)
    smaller, _ = _train(task, hp(batch=16))
    assert frozen.user_attrs["micro_batch_size"] == 16 and frozen.user_attrs["batch_size"] == 64
    for a, b in zip(full.curve, accumulated.curve, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.metric == pytest.approx(b.metric, abs=1e-6)
    assert [p.loss for p in smaller.curve] != pytest.approx([p.loss for p in full.curve], rel=1e-4)


def test_seeded(task):
    a, _ = _train(task, hp(), seed=3)
    b, _ = _train(task, hp(), seed=3)
    c, _ = _train(task, hp(), seed=4)
    assert [p.loss for p in a.curve] == [p.loss for p in b.curve]
    assert [p.loss for p in a.curve] != [p.loss for p in c.curve]


def test_the_training_step_never_syncs(task, monkeypatch):
    """Reading a tensor's value inside a training region would stall a GPU every step."""
    inside = {"training": False, "reads": 0}
    original = Run.training

    @contextmanager
    def watched(self):
        with original(self):
            inside["training"] = True
            try:
                yield
            finally:
                inside["training"] = False

    def guard(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            # torch.optim reads its own step counters, host scalars even for GPU parameters.
            caller = sys._getframe(1).f_code.co_filename
            if inside["training"] and not caller.startswith(TORCH_DIR):
                inside["reads"] += 1
            return real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)

    monkeypatch.setattr(Run, "training", watched)
    for name in ("item", "tolist", "__bool__", "__float__", "cpu"):
        guard(name)
    run, _ = _train(task, hp())
    assert run.curve and inside["reads"] == 0


def test_learning_rate_schedule_warms_up_and_decays_to_zero():
    assert _lr_multiplier(0.0) == pytest.approx(0.1)
    assert _lr_multiplier(0.05) == pytest.approx(0.95)
    assert _lr_multiplier(0.5) == pytest.approx(0.5)
    assert _lr_multiplier(1.0) == 0.0


@pytest.mark.parametrize(("budget", "n_steps"), [(2.0, 20), (2.04, 20), (2.06, 21)])
def test_budget_ends_the_schedule(task, budget, n_steps):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    clock = FakeClock()
    trainer = Trainer(task, device="cpu")
    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        clock.advance(0.1)  # each step costs 0.1 s of training time
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    torch.optim.AdamW.step = step
    try:
        with Run(trial, TimeBudget(budget), hp(batch=32, epochs=50), clock=clock) as run:
            trainer(hp(batch=32, epochs=50), run)
    finally:
        torch.optim.AdamW.step = real_step
    assert run.stop_reason == "budget"
    # 0.1 s steps: no step starts with less than half a step (0.05 s) of budget left.
    assert len(seen) == n_steps
    assert seen[-1] < 0.1 * max(seen)  # the rate is near zero when the budget ends
    assert max(p.train_s for p in run.curve) == pytest.approx(n_steps * 0.1)


def test_bad_data_is_named(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text(
        textwrap.dedent("""
        import torch
        def data():
            return torch.zeros(4, 2), torch.zeros(3), torch.zeros(2, 2), torch.zeros(2)
        def model(hp):
            return torch.nn.Linear(2, 2)
    """)
    )
    with pytest.raises(TaskError, match=r"inputs and targets differ in length \(train 4 vs 3"):
        Trainer(load_task(f), device="cpu").data()


def test_device_must_exist(task):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(
        ValueError, match=r"'device' parameter of Trainer must be 'auto', 'cpu' or an available CUDA device"
    ):
        Trainer(task, device="cuda")
