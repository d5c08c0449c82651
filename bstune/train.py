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
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bstune.errors import TaskError, invalid
from bstune.run import Run
from bstune.space import Hyperparams
from bstune.task import Task

__all__ = ["TaskData", "Trainer", "as_task_data", "pick_device"]

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
        evals_per_epoch: Evaluations per epoch.
        amp: bf16 autocast; ``None`` means on for CUDA, off for the CPU.
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
    ) -> None:
        if micro_batch_size is not None and micro_batch_size < 1:
            raise invalid("micro_batch_size", "Trainer", "an int in the range [1, inf)", micro_batch_size)
        if evals_per_epoch < 1:
            raise invalid("evals_per_epoch", "Trainer", "an int in the range [1, inf)", evals_per_epoch)
        self.task = task
        self.device = pick_device(device)
        self.seed = seed
        self.micro_batch_size = micro_batch_size
        self.evals_per_epoch = evals_per_epoch
        self.amp = self.device.type == "cuda" if amp is None else amp
        self._data: TaskData | None = None
        self.data_on_device = False

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

    def __call__(self, hp: Hyperparams, run: Run) -> None:
        trial_number = getattr(run.trial, "number", 0)
        torch.manual_seed(self.seed + trial_number)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        with run.overhead():
            data = self.data()
            model, opt, loss_fn = self.parts(hp)
        metric_fn = self.task.get("metric") or _accuracy
        autocast = self.autocast()
        base_lrs = [g["lr"] for g in opt.param_groups]

        n = data.n_train
        batch = min(hp.batch_size, n)
        micro = self.micro_batch_for(batch)
        run.micro_batch_size = micro
        planned = hp.epochs * n
        eval_every = max(n // self.evals_per_epoch, batch)
        budget = getattr(run.mode, "budget", None)
        eval_every_s = budget / 10 if budget else math.inf
        gen = torch.Generator(device=self.device if self.data_on_device else "cpu").manual_seed(self.seed + trial_number)
        loss_sum = torch.zeros((), device=self.device)
        n_loss = 0
        since_eval = 0
        last_eval_t = 0.0
        step_s = 0.0

        while not run.should_stop and run.samples_seen < planned:
            perm = torch.randperm(n, device=gen.device, generator=gen)
            pos = 0
            while pos + batch <= n and not run.should_stop and run.samples_seen < planned:
                model.train()
                with run.training():
                    while pos + batch <= n:
                        # Stop rather than start a step that would end mostly past the budget:
                        # on average the budget is then met, for large and small batches alike.
                        if run.time_left() < 0.5 * step_s:
                            run.stop("budget")
                            break
                        t_step = run.train_seconds
                        mult = _lr_multiplier(run.progress(planned))
                        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
                            g["lr"] = lr * mult
                        idx = perm[pos : pos + batch]
                        pos += batch
                        opt.zero_grad(set_to_none=True)
                        for start in range(0, batch, micro):
                            xb, yb = self._batch(data, idx[start : start + micro])
                            with autocast:
                                loss = loss_fn(model(xb), yb) * (xb.shape[0] / batch)
                            loss.backward()
                            loss_sum += loss.detach().float()
                        opt.step()
                        step_s = run.train_seconds - t_step  # host-side; the GPU may lag a little
                        n_loss += 1
                        run.count(batch)
                        since_eval += batch
                        if (
                            run.should_stop
                            or run.samples_seen >= planned
                            or since_eval >= eval_every
                            or run.train_seconds - last_eval_t >= eval_every_s
                        ):
                            break
                with run.evaluating():
                    metric = self._evaluate(model, data, metric_fn, autocast)
                    train_loss = (loss_sum / max(n_loss, 1)).item()  # sync point
                loss_sum.zero_()
                n_loss = 0
                since_eval = 0
                last_eval_t = run.train_seconds
                self._record_memory(run)
                run.report(metric, loss=train_loss, epoch=run.samples_seen / n)
        run.extra_attrs["data_on_device"] = self.data_on_device
        run.extra_attrs["amp"] = "bf16" if self.amp and cuda else "off"

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
            return torch.optim.AdamW(model.parameters(), lr=hp.learning_rate)
        opt = hook(model.parameters(), hp)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TaskError(f"optimizer(parameters, hp) must return a torch.optim.Optimizer; got {type(opt).__name__}")
        return opt

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, data: TaskData, metric_fn: Callable[..., Any], autocast: Any) -> float:
        model.eval()
        n = int(data.x_valid.shape[0])
        chunk = min(2048, self.micro_batch_size or 2048)  # evaluation must fit where training does
        total = torch.zeros((), device=self.device)
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(start + chunk, n), device=data.x_valid.device)
            xb, yb = self._batch(data, idx, train=False)
            with autocast:
                out = model(xb)
            total += torch.as_tensor(metric_fn(out.float(), yb), device=self.device).float() * xb.shape[0]
        return float((total / n).item())  # sync point

    def _record_memory(self, run: Run) -> None:
        if self.device.type == "cuda":
            run.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            # The process's peak resident memory: an upper bound for this trial on the CPU.
            scale = 1 if sys.platform == "darwin" else 1024
            run.extra_attrs["peak_rss_bytes"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _lr_multiplier(progress: float) -> float:
    """Linear warm-up over the first 5% of the schedule, then linear decay to zero at its end."""
    warm = min(1.0, 0.1 + progress / WARMUP_FRACTION)
    return warm * max(1.0 - progress, 0.0)
