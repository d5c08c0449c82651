"""The built-in PyTorch training loop for task scripts that define ``data()`` and ``model(hp)``.

What it does, and why:

* The device is chosen once (CUDA, else CPU). Data that fits in a quarter of the free device memory
  is moved there once; batches are then slices of a device-side permutation, with no host work
  per step. Otherwise batches are gathered on the host from pinned memory and copied with
  ``non_blocking=True``.
* The step never syncs: the training loss accumulates on the device and is read at report points
  only (marked ``# sync point``). On CUDA the forward pass runs under bf16 autocast.
* The effective batch is ``hp.batch_size``. When a micro-batch size smaller than that is set
  (it fits in memory, the effective batch does not), gradients are accumulated over micro-batches
  so the optimizer sees the same effective batch; both sizes are recorded.
* The learning rate follows a budget-aware schedule: a short linear warm-up, then a linear decay
  that reaches zero when the time budget or the planned epochs end, whichever comes first.
* Under a time budget, a step is not started when less than half of the previous step's time is
  left, so the budget is met on average whatever the batch size, instead of always overrun.
* Evaluation runs ``evals_per_epoch`` times per epoch and, under a time budget, at least every
  tenth of the budget, outside the training clock.
* Each trial is seeded (``seed + trial number``).

A task's ``data()`` returns ``(x_train, y_train, x_valid, y_valid)`` or
``{"train": (x, y), "valid": (x, y)}`` as tensors or numpy arrays. Optional hooks: ``loss()``
returns the loss module (default cross-entropy), ``metric(outputs, targets)`` returns the batch mean
of the validation metric (default accuracy), ``optimizer(parameters, hp)`` returns the optimizer
(default AdamW at ``hp.learning_rate``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bstune.errors import BstuneError, TaskError, check, check_int, invalid
from bstune.memory import record_peak_memory, reset_peak_memory
from bstune.run import Run
from bstune.space import Hyperparams
from bstune.task import Task

__all__ = ["TaskData", "Trainer", "as_task_data", "default_optimizer_options", "pick_device"]

WARMUP_FRACTION = 0.05


@dataclass
class TaskData:
    """Training and validation tensors, on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.x_train, self.y_train, self.x_valid, self.y_valid))

    def to(self, device: torch.device, *, pin: bool = False) -> TaskData:
        def move(t: torch.Tensor) -> torch.Tensor:
            if pin and device.type == "cpu":
                return t.pin_memory()
            return t.to(device)

        return TaskData(*(move(t) for t in (self.x_train, self.y_train, self.x_valid, self.y_valid)))


def _tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TaskError(f"data() must return tensors or numpy arrays; {what} is a {type(x).__name__}")


def as_task_data(raw: Any) -> TaskData:
    """Accept what ``data()`` returns and check the shapes agree."""
    if isinstance(raw, TaskData):
        return raw
    if isinstance(raw, dict):
        if "train" not in raw or "valid" not in raw:
            raise TaskError("data() returned a dict without both 'train' and 'valid' keys")
        parts = (*raw["train"], *raw["valid"])
    elif isinstance(raw, (tuple, list)) and len(raw) == 4:
        parts = tuple(raw)
    else:
        raise TaskError("data() must return (x_train, y_train, x_valid, y_valid) or {'train': (x, y), 'valid': (x, y)}")
    names = ("x_train", "y_train", "x_valid", "y_valid")
    xt, yt, xv, yv = (_tensor(p, n) for p, n in zip(parts, names, strict=True))
    if xt.shape[0] != yt.shape[0] or xv.shape[0] != yv.shape[0]:
        raise TaskError(
            f"data(): inputs and targets differ in length (train {xt.shape[0]} vs {yt.shape[0]}, "
            f"valid {xv.shape[0]} vs {yv.shape[0]})"
        )
    if xt.shape[0] == 0 or xv.shape[0] == 0:
        raise TaskError("data(): the training and validation sets must not be empty")
    return TaskData(xt, yt, xv, yv)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise invalid("device", "Trainer", "'auto', 'cpu' or an available CUDA device", name)
    try:
        return torch.device(name)
    except RuntimeError:
        raise invalid("device", "Trainer", "'auto', 'cpu' or 'cuda[:N]'", name) from None


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(dim=-1) == targets).float().mean()


class Trainer:
    """The built-in loop: call it as ``trainer(hp, run)``.

    Args:
        task: A task with ``data()`` and ``model(hp)``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: Base seed; trial ``n`` trains with ``seed + n``.
        micro_batch_size: The largest batch to put through the model at once; larger effective
            batches accumulate gradients. ``None`` means no limit.
        evals_per_epoch: The most evaluations per epoch.
        amp: bf16 autocast of the forward passes (CUDA only); ``None`` means on for CUDA, off for
            the CPU. Each trial records it as ``amp`` (``bf16`` or ``off``).
        eval_share: The most evaluation may cost, as a share of training time: after each
            evaluation the next waits until training has run ``cost / eval_share`` seconds.
        compile: Run the model through ``torch.compile``; the compilation (a warm-up on one
            batch) is counted as overhead, not training.
    """

    def __init__(
        self,
        task: Task,
        *,
        device: str = "auto",
        seed: int = 0,
        micro_batch_size: int | None = None,
        evals_per_epoch: int = 4,
        amp: bool | None = None,
        eval_share: float = 0.1,
        compile: bool = False,
    ) -> None:
        check_int("Trainer", "micro_batch_size", micro_batch_size, 1, none=True)
        check_int("Trainer", "evals_per_epoch", evals_per_epoch, 1)
        check("Trainer", "eval_share", eval_share, "a number in the range (0, 1]", lambda v: 0 < v <= 1)
        self.task = task
        self.device = pick_device(device)
        self.seed = seed
        self.micro_batch_size = micro_batch_size
        self.evals_per_epoch = evals_per_epoch
        if amp and self.device.type != "cuda":
            raise BstuneError(f"bf16 autocast (--amp, Trainer(amp=True)) runs on CUDA only; this trainer runs on {self.device}")
        self.amp = self.device.type == "cuda" if amp is None else bool(amp)
        self.eval_share = float(eval_share)
        self.compile = bool(compile)
        self._data: TaskData | None = None
        self.data_on_device = False

    @property
    def precision(self) -> str:
        """What each trial records as ``amp``: ``bf16`` (autocast on CUDA) or ``off`` (float32)."""
        return "bf16" if self.amp and self.device.type == "cuda" else "off"

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    @property
    def sync(self) -> Callable[[], None] | None:
        if self.device.type == "cuda":
            return lambda: torch.cuda.synchronize(self.device)
        return None

    def micro_batch_for(self, batch_size: int) -> int:
        return min(batch_size, self.micro_batch_size or batch_size)

    def data(self) -> TaskData:
        """Load the task's data once per process, on the device when it fits."""
        if self._data is None:
            data_fn = self.task.get("data")
            assert data_fn is not None  # checked by load_task
            try:
                raw = data_fn(**self.task.options)
            except TaskError:
                raise
            except Exception as e:
                raise TaskError(f"task script {str(self.task.path)!r}: data() raised {type(e).__name__}: {e}") from e
            data = as_task_data(raw)
            fits = True
            if self.device.type == "cuda":
                free, _total = torch.cuda.mem_get_info(self.device)
                fits = data.nbytes() < free / 4
            self.data_on_device = fits
            self._data = data.to(self.device) if fits else data.to(torch.device("cpu"), pin=True)
        return self._data

    def _batch(self, data: TaskData, idx: torch.Tensor, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = (data.x_train, data.y_train) if train else (data.x_valid, data.y_valid)
        if self.data_on_device:
            return x[idx], y[idx]
        idx = idx.cpu()
        return x[idx].to(self.device, non_blocking=True), y[idx].to(self.device, non_blocking=True)

    # One long function on purpose: the loop's per-step locals stay in one frame, since a call per
    # step costs Python time that benchmarks/trainer.py counts (tests/test_layout.py lists it).
    def __call__(self, hp: Hyperparams, run: Run) -> None:
        trial_number = getattr(run.trial, "number", 0)
        torch.manual_seed(self.seed + trial_number)
        run.extra_attrs["seed"] = self.seed + trial_number  # initial weights and batch order
        reset_peak_memory(self.device)
        with run.overhead():
            data = self.data()
            model, opt, loss_fn = self.parts(hp)
        n = data.n_train
        batch = min(hp.batch_size, n)
        micro = self.micro_batch_for(batch)
        run.micro_batch_size = micro
        metric_fn = self.task.get("metric") or _accuracy
        autocast = self.autocast()
        if self.compile:
            with run.overhead():  # compiling is a one-off cost, not training
                model = self._compiled(model, data, loss_fn, micro, autocast)
        base_lrs = [g["lr"] for g in opt.param_groups]
        x_train, y_train = data.x_train, data.y_train
        on_device = self.data_on_device

        planned = hp.epochs * n
        budget = getattr(run.mode, "budget", None)
        eval_every_s = budget / 10 if budget else math.inf
        gen = torch.Generator(device=self.device if on_device else "cpu").manual_seed(self.seed + trial_number)
        losses: list[torch.Tensor] = []  # per-step losses, summed on the device at report points
        n_loss = 0
        samples = 0  # counted here and handed to the run at check points
        last_eval_t = 0.0
        eval_gap_s = 0.0  # the least training time between evaluations: their measured cost / eval_share
        step_s = 0.0  # mean seconds per step, measured between checks
        stop_at = math.inf  # on the mode's clock: past it, the next step is checked first
        mult_set = -1.0
        p_check = 0.0
        done = False
        perm = torch.randperm(n, device=gen.device, generator=gen)
        pos = 0
        while not done:
            model.train()
            eval_at = samples + max(n // self.evals_per_epoch, batch)
            with run.training():
                unchecked = 0  # steps to run before the clock, budget and schedule are read again
                t_check, steps_since = run.train_seconds, 0
                while True:
                    # Besides the planned checks, one clock read a step (a fraction of a
                    # microsecond): when steps slow down (a busy machine), the check still comes
                    # before a step would start with less than half a step of budget left, so a
                    # trial ends at most one step past its limit.
                    if unchecked <= 0 or samples >= eval_at or run.elapsed >= stop_at:
                        run.count(samples - run.samples_seen)
                        now = run.train_seconds
                        if steps_since:
                            step_s = (now - t_check) / steps_since
                            t_check, steps_since = now, 0
                        since = now - last_eval_t
                        if samples >= eval_at and since < eval_gap_s:
                            # Due by samples, but evaluating now would cost more than its share.
                            eval_at = samples + batch * max(1, int((eval_gap_s - since) / max(step_s, 1e-9)))
                        elif samples >= eval_at or (since >= eval_every_s and since >= eval_gap_s):
                            break
                        if run.should_stop:
                            done = True
                            break
                        # Stop rather than start a step that would end mostly past the budget:
                        # on average the budget is then met, for large and small batches alike.
                        left = run.time_left()
                        if left < 0.5 * step_s:
                            run.stop("budget")
                            done = True
                            break
                        p_check = run.progress(planned)
                        unchecked = _steps_to_next_check(left, step_s, budget)
                        stop_at = run.elapsed + left - 0.5 * step_s if math.isfinite(left) else math.inf
                    # Between checks the schedule's position is extrapolated (plain arithmetic); the
                    # rates are written only when they move by more than a rounding.
                    p = max(p_check + steps_since * step_s / budget if budget else p_check, samples / planned)
                    mult = _lr_multiplier(min(p, 1.0))
                    if abs(mult - mult_set) > 1e-3:
                        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
                            g["lr"] = lr * mult
                        mult_set = mult
                    if pos + batch > n:  # a new epoch: a new order
                        perm = torch.randperm(n, device=gen.device, generator=gen)
                        pos = 0
                    idx = perm[pos : pos + batch]
                    pos += batch
                    opt.zero_grad(set_to_none=True)
                    if micro == batch:
                        if on_device:
                            xb, yb = x_train[idx], y_train[idx]
                        else:
                            xb, yb = self._batch(data, idx)
                        with autocast:
                            loss = loss_fn(model(xb), yb)
                        loss.backward()
                        losses.append(loss.detach())
                    else:
                        for start in range(0, batch, micro):
                            xb, yb = self._batch(data, idx[start : start + micro])
                            with autocast:
                                loss = loss_fn(model(xb), yb) * (xb.shape[0] / batch)
                            loss.backward()
                            losses.append(loss.detach())
                    opt.step()
                    n_loss += 1
                    samples += batch
                    steps_since += 1
                    unchecked -= 1
                    if len(losses) >= 1024:  # fold, so that a long interval holds few tensors
                        losses = [torch.stack(losses).sum()]
                    if samples >= planned:
                        done = True
                        break
                run.count(samples - run.samples_seen)
            eval_before = run.eval_seconds
            with run.evaluating():
                metric = self._evaluate(model, data, metric_fn, autocast)
                total = torch.stack(losses).sum().float() if losses else torch.zeros(())
                train_loss = (total / max(n_loss, 1)).item()  # sync point
            eval_gap_s = (run.eval_seconds - eval_before) / self.eval_share
            losses = []
            n_loss = 0
            last_eval_t = run.train_seconds
            record_peak_memory(run, self.device)
            run.report(metric, loss=train_loss, epoch=run.samples_seen / n)
            done = done or run.should_stop
        run.extra_attrs["data_on_device"] = self.data_on_device
        run.extra_attrs["amp"] = self.precision
        run.extra_attrs["compiled"] = self.compile
        run.extra_attrs["fused_optimizer"] = bool(getattr(opt, "defaults", {}).get("fused"))

    def _compiled(
        self, model: nn.Module, data: TaskData, loss_fn: Callable[..., torch.Tensor], micro: int, autocast: Any
    ) -> nn.Module:
        """``torch.compile(model)``, warmed up on one training and one evaluation batch so that the
        compilation happens here (counted as overhead) and not in the first timed step. The warm-up
        gradients are thrown away; no weight changes."""
        compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
        idx = torch.arange(min(micro, data.n_train), device=data.x_train.device)
        xb, yb = self._batch(data, idx)
        compiled.train()
        with autocast:
            loss_fn(compiled(xb), yb).backward()
        model.zero_grad(set_to_none=True)
        compiled.eval()
        with torch.no_grad(), autocast:
            n_valid = int(data.x_valid.shape[0])
            compiled(self._batch(data, torch.arange(min(self._eval_chunk(), n_valid), device=data.x_valid.device), train=False)[0])
        if self.sync is not None:
            self.sync()
        return compiled

    def parts(self, hp: Hyperparams) -> tuple[nn.Module, torch.optim.Optimizer, Callable[..., torch.Tensor]]:
        """The model, optimizer and loss a trial with ``hp`` trains with, built as the loop builds
        them (``bstune probe`` measures the same step)."""
        model = self._build(hp)
        loss_hook = self.task.get("loss")
        return model, self._optimizer(model, hp), loss_hook() if loss_hook is not None else nn.CrossEntropyLoss()

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples at ``idx``, on the device, gathered as the loop gathers them."""
        return self._batch(self.data(), idx)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The mixed-precision context the loop runs forward passes in."""
        if self.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _build(self, hp: Hyperparams) -> nn.Module:
        model_fn = self.task.get("model")
        assert model_fn is not None
        model = model_fn(hp)
        if not isinstance(model, nn.Module):
            raise TaskError(f"model(hp) must return a torch.nn.Module; got {type(model).__name__}")
        return model.to(self.device)

    def _optimizer(self, model: nn.Module, hp: Hyperparams) -> torch.optim.Optimizer:
        hook = self.task.get("optimizer")
        if hook is None:
            return torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, **default_optimizer_options(self.device))
        opt = hook(model.parameters(), hp)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TaskError(f"optimizer(parameters, hp) must return a torch.optim.Optimizer; got {type(opt).__name__}")
        return opt

    def _eval_chunk(self) -> int:
        return min(2048, self.micro_batch_size or 2048)  # evaluation must fit where training does

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, data: TaskData, metric_fn: Callable[..., Any], autocast: Any) -> float:
        model.eval()
        n = int(data.x_valid.shape[0])
        chunk = self._eval_chunk()
        total = torch.zeros((), device=self.device)
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(start + chunk, n), device=data.x_valid.device)
            xb, yb = self._batch(data, idx, train=False)
            with autocast:
                out = model(xb)
            total += torch.as_tensor(metric_fn(out.float(), yb), device=self.device).float() * xb.shape[0]
        return float((total / n).item())  # sync point


def default_optimizer_options(device: torch.device) -> dict[str, Any]:
    """Options of the default AdamW: the fused kernel on CUDA (one launch for all parameters
    instead of several per tensor), the default elsewhere.

    Examples:
        >>> default_optimizer_options(torch.device("cuda")), default_optimizer_options(torch.device("cpu"))
        ({'fused': True}, {})
    """
    return {"fused": True} if device.type == "cuda" else {}


def _steps_to_next_check(left: float, step_s: float, budget: float | None) -> int:
    """How many steps may run before the clock and the stop conditions are read again.

    Half of the steps that still fit into the time left (so a check comes before the budget's last
    step), at most a 50th of the budget (so time-based evaluations and the pace stay current), at
    least one. Reading the clock and the stop conditions costs tens of microseconds: more than a
    small step on the CPU.
    """
    if step_s <= 0:
        return 1
    by_time = (left / step_s - 1.0) / 2.0 if math.isfinite(left) else math.inf
    by_budget = budget / step_s / 50.0 if budget else math.inf
    return max(1, int(min(by_time, by_budget, 1e6)))


def _lr_multiplier(progress: float) -> float:
    """Linear warm-up over the first 5% of the schedule, then linear decay to zero at its end."""
    warm = min(1.0, 0.1 + progress / WARMUP_FRACTION)
    return warm * max(1.0 - progress, 0.0)
