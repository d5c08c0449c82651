"""An MLP on scikit-learn's bundled breast-cancer table (569 rows, 30 features), in a hand-written loop.

SGD with momentum 0.9 and a step decay (a tenth at half the planned epochs, a hundredth at three
quarters), evaluated once an epoch; a trial sees up to hundreds of epochs within its budget.
Features are standardised with the training rows' mean and spread; a quarter of the rows, chosen
with a fixed seed, are held out. A recorded task of the search benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hand_loop import fit  # noqa: E402

DEFAULTS = {"time_budget": 1, "n_trials": 12}
_DATA = None


def _data():
    global _DATA
    if _DATA is None:
        x, y = load_breast_cancer(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(x))
        x, y = x[order], y[order]
        n_valid = len(x) // 4
        mu, sd = x[n_valid:].mean(0), x[n_valid:].std(0) + 1e-8
        x = torch.tensor(((x - mu) / sd).astype(np.float32))
        y = torch.tensor(y)
        _DATA = (x[n_valid:], y[n_valid:], x[:n_valid], y[:n_valid])
    return _DATA


def train(hp, run):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    fit(hp, run, net, _data(), optimizer="sgd", schedule_kind="step")
