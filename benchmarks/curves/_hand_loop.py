"""A training loop written by hand, as most people's loops are, for the recorded search tasks.

The recorded tasks that use it own their loop (``train(hp, run)``), so their curves are not shaped
by bstune's trainer: the learning-rate schedule runs over the *planned* epochs (cosine, a step
decay, or none) whatever the time budget, and the model is evaluated once an epoch (or a few times)
as Lightning, Hugging Face and most hand-written loops do by default. bstune only times the
training, takes the reports and says when the budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import bstune

_LSTM = Path(__file__).resolve().parents[2] / "examples" / "lstm.py"
_TEXT: dict[str | None, tuple] = {}


def text_data(corpus: str | None = None) -> tuple:
    """``examples/lstm.py``'s data (its names, character level; or ``corpus``, a label<TAB>text
    file, word level) and its vocabulary size, loaded once per process."""
    if corpus not in _TEXT:
        module = bstune.load_task(_LSTM).module
        _TEXT[corpus] = (*module.data(corpus=corpus), module._N_TOKENS)
    return _TEXT[corpus]


def schedule(kind: str, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier after ``step`` optimizer steps of ``total_steps`` planned."""
    if kind == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))
    if kind == "step":  # a tenth at half the planned steps, a hundredth at three quarters
        return lambda step: 1.0 if step < total_steps // 2 else 0.1 if step < 3 * total_steps // 4 else 0.01
    if kind == "constant":
        return lambda step: 1.0
    raise ValueError(f"schedule must be cosine, step or constant; got {kind!r}")


def fit(
    hp: bstune.Hyperparams,
    run: bstune.Run,
    net: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    optimizer: str,
    schedule_kind: str,
    evals_per_epoch: int = 1,
    weight_decay: float = 5e-4,
) -> None:
    """Train ``net`` with ``hp`` until its planned epochs end or ``run`` says stop."""
    xt, yt, xv, yv = data
    n = len(xt)
    b = min(hp.batch_size, n)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            net.parameters(), lr=hp.learning_rate, momentum=0.9, weight_decay=weight_decay
        )
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=hp.learning_rate, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / b)
    lr_at = schedule(schedule_kind, hp.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(0)
    eval_every = math.ceil(steps_per_epoch / evals_per_epoch)
    seen = 0
    for _epoch in range(hp.epochs):
        perm = torch.randperm(n, generator=gen)
        starts = list(range(0, n, b))
        for chunk in range(0, len(starts), eval_every):
            total, count = 0.0, 0
            net.train()
            with run.training():
                for i in starts[chunk : chunk + eval_every]:
                    idx = perm[i : i + b]
                    opt.zero_grad(set_to_none=True)
                    loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += loss.item()
                    count += 1
                    seen += len(idx)
                    run.count(len(idx))
                    if run.should_stop:
                        break
            net.eval()
            with run.evaluating(), torch.no_grad():
                acc = (net(xv).argmax(1) == yv).float().mean().item()
            run.report(acc, loss=total / max(count, 1), epoch=seen / n)
            if run.should_stop:
                return
