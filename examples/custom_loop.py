"""bstune inside your own training code: a plain Optuna objective with a hand-written loop.

Two ways to use this file:

    python examples/custom_loop.py                  # a plain Optuna study, bstune as a library
    bstune optimize examples/custom_loop.py         # bstune runs the study, calling train(hp, run)

The data is scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels).
"""

from __future__ import annotations

import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn

import bstune

DEFAULTS = {"space": "default", "time_budget": 2, "n_trials": 8}


def load():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    n_valid = len(x) // 5
    return x[perm[n_valid:]], y[perm[n_valid:]], x[perm[:n_valid]], y[perm[:n_valid]]


def train(hp: bstune.Hyperparams, run: bstune.Run) -> None:
    """Your loop: bstune only needs training marked, evaluations reported, and stops obeyed."""
    xt, yt, xv, yv = load()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=hp.learning_rate)
    for epoch in range(hp.epochs):
        perm = torch.randperm(len(xt))
        with run.training():
            for i in range(0, len(xt), hp.batch_size):
                idx = perm[i : i + hp.batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                run.count(len(idx))
                if run.should_stop:  # the time budget is spent
                    break
        with run.evaluating(), torch.no_grad():
            acc = (net(xv).argmax(1) == yv).float().mean().item()
        run.report(acc, loss=loss.item(), epoch=epoch + 1)
        if run.should_stop:
            break


def main() -> None:
    mode = bstune.TimeBudget(2.0)
    space = bstune.load_space("default")

    def objective(trial: optuna.Trial) -> float:
        hp = bstune.suggest(trial, space)
        with bstune.Run(trial, mode, hp) as run:
            train(hp, run)
        return run.value

    study = bstune.create_study(mode, space=space, storage="sqlite:///custom_loop.db", study_name="digits")
    study.optimize(objective, n_trials=6)
    best = study.best_trial
    print(
        f"best accuracy {best.value:.4f} with batch {best.user_attrs['batch_size']}, "
        f"lr {best.user_attrs['learning_rate']:.2e}, {best.user_attrs['epochs_done']:.0f} epochs"
    )


if __name__ == "__main__":
    main()
