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


def _train(task, hp, device="cpu", **kw):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trainer = Trainer(task, device=device, **kw)
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


HOOKED_TASK = """
import torch
from torch import nn
from torch.nn import functional as F

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(640, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    return {"train": (x[:384], y[:384]), "valid": (x[384:], y[384:])}

def model(hp):
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

class Tripled(nn.Module):
    def forward(self, out, y):
        return 3.0 * F.cross_entropy(out, y)

def loss():
    return Tripled()

def metric(outputs, targets):
    return torch.tensor(0.25)
"""


def test_the_task_hooks_loss_metric_and_data_as_a_dict(task, tmp_path):
    hooked = tmp_path / "hooked.py"
    hooked.write_text(HOOKED_TASK)
    # A learning rate too small to move the weights: the same model, so the loss ratio is exact.
    still = Hyperparams(batch_size=64, learning_rate=1e-12, epochs=1, base_learning_rate=1e-12)
    plain, _ = _train(task, still)
    run, frozen = _train(load_task(hooked), still)
    assert frozen.user_attrs["samples_seen"] == 384  # the dict's training part, one epoch
    assert [p.metric for p in run.curve] == [0.25] * len(run.curve)  # metric() is what is reported
    assert frozen.value == 0.25
    # loss(): the training loss is three times plain cross-entropy on the same weights (the
    # first report averages the same first batches in both: the same seed, the same order).
    ratio = run.curve[0].loss / plain.curve[0].loss
    assert ratio == pytest.approx(3.0, rel=0.05)


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


@pytest.mark.parametrize("slow_from", [19.5, 19.8])
def test_a_trial_ends_within_one_step_of_its_budget_when_steps_slow_down(task, monkeypatch, slow_from):
    """Steps of 0.01 s until the machine gets busy near the end of a 20 s budget, then 0.2 s (fake
    clock): the trial stops at most one step past its budget, not after the steps planned at the old
    pace (up to 40 of them between two checks, 8 s past the budget)."""
    clock = FakeClock()
    real_step = torch.optim.AdamW.step
    steps: list[float] = []

    def step(self, *a, **k):
        d = 0.01 if clock() < slow_from else 0.2
        clock.advance(d)
        steps.append(d)
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    study = optuna.create_study(direction="maximize")
    with Run(study.ask(), TimeBudget(20.0), hp(batch=16, epochs=10**6), clock=clock) as run:
        Trainer(task, device="cpu")(hp(batch=16, epochs=10**6), run)
    assert run.stop_reason == "budget"
    assert run.train_seconds <= 20.0 + steps[-1] + 1e-9
    # and it used its budget: no step started with more than half a step (at the pace measured) left
    assert run.train_seconds >= 20.0 - 0.2


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


def test_evaluation_costs_at_most_its_share_of_training(task, monkeypatch):
    """Each evaluation costs 0.1 s and each step 0.01 s (fake clock): evaluations are spaced so that
    they cost at most a tenth of training, plus the last one, which the value needs."""
    clock = FakeClock()
    real_step = torch.optim.AdamW.step
    real_eval = Trainer._evaluate

    def step(self, *a, **k):
        clock.advance(0.01)
        return real_step(self, *a, **k)

    def evaluate(self, *a, **k):
        clock.advance(0.1)
        return real_eval(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with Run(trial, TimeBudget(12.0), hp(batch=16, epochs=1000), clock=clock) as run:
        Trainer(task, device="cpu")(hp(batch=16, epochs=1000), run)
    assert run.stop_reason == "budget"
    assert run.eval_seconds <= 0.1 * run.train_seconds + 0.1 + 1e-9
    gaps = [b.train_s - a.train_s for a, b in zip(run.curve, run.curve[1:], strict=False)]
    assert min(gaps[:-1]) >= 1.0 - 0.011  # 0.1 s / 0.1, to within a step
    assert len(run.curve) >= 8  # still enough reports for the pruners
    # With evaluation free, it follows evals_per_epoch as before: 512 samples / 4 = 8 steps apart.
    cheap = Trainer(task, device="cpu", eval_share=1.0)
    monkeypatch.setattr(Trainer, "_evaluate", real_eval)
    clock2 = FakeClock()
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (clock2.advance(0.01), real_step(self, *a, **k))[1])
    with Run(study.ask(), TimeBudget(1.0), hp(batch=16, epochs=1000), clock=clock2) as run2:
        cheap(hp(batch=16, epochs=1000), run2)
    assert [round(p.samples_seen) for p in run2.curve][:3] == [128, 256, 384]


def test_learning_rates_are_written_only_when_they_change(task, monkeypatch):
    """The schedule is read every few steps and the rates written when they move by more than a
    rounding, yet the rate still follows the schedule down to (nearly) zero at the budget."""
    clock = FakeClock()
    writes = []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        clock.advance(0.001)
        writes.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    study = optuna.create_study(direction="maximize")
    with Run(study.ask(), TimeBudget(2.0), hp(batch=16, epochs=1000, lr=0.1), clock=clock) as run:
        Trainer(task, device="cpu")(hp(batch=16, epochs=1000, lr=0.1), run)
    assert len(writes) == pytest.approx(2000, abs=2)
    changes = sum(1 for a, b in zip(writes, writes[1:], strict=False) if a != b)
    assert 100 <= changes <= 1100  # hundreds of distinct rates, not one per step
    assert max(writes) == pytest.approx(0.095, rel=0.02)  # the peak, after the 5% warm-up
    assert writes[-1] < 0.002
    for i in range(0, 2000, 200):  # within a rounding of the schedule everywhere
        assert writes[i] == pytest.approx(0.1 * _lr_multiplier(i * 0.001 / 2.0), abs=0.1 * 6e-3)


def test_default_optimizer_is_fused_on_cuda_only(task):
    from bstune.train import default_optimizer_options

    assert default_optimizer_options(torch.device("cuda", 0)) == {"fused": True}
    assert default_optimizer_options(torch.device("cpu")) == {}
    run, frozen = _train(task, hp(epochs=1))
    assert frozen.user_attrs["fused_optimizer"] is False and frozen.user_attrs["compiled"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_default_optimizer_is_fused_on_a_gpu(task):
    _run, frozen = _train(task, hp(epochs=1), device="cuda")
    assert frozen.user_attrs["fused_optimizer"] is True and frozen.user_attrs["amp"] == "bf16"
    _run, frozen = _train(task, hp(epochs=1), device="cuda", amp=False)
    assert frozen.user_attrs["fused_optimizer"] is True and frozen.user_attrs["amp"] == "off"


@pytest.mark.slow
def test_compile_on_the_cpu_counts_compilation_as_overhead(task):
    plain, _ = _train(task, hp(epochs=1), seed=1)
    compiled, frozen = _train(task, hp(epochs=1), seed=1, compile=True)
    assert frozen.user_attrs["compiled"] is True
    assert frozen.user_attrs["stop_reason"] == "epochs" and len(compiled.curve) == len(plain.curve)
    # The same model and data: it learns as the plain one does.
    assert compiled.curve[-1].metric == pytest.approx(plain.curve[-1].metric, abs=0.05)


def test_compile_and_eval_share_are_checked(task):
    with pytest.raises(ValueError, match=r"'eval_share' parameter of Trainer must be a number in the range \(0, 1\]. Got 0"):
        Trainer(task, device="cpu", eval_share=0)
