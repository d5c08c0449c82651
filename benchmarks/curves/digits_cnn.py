"""A small CNN on scikit-learn's bundled handwritten digits (8x8 pixels), in a hand-written loop.

SGD with momentum 0.9 and a cosine schedule over the planned epochs, evaluated once an epoch; a
trial sees tens of epochs within its budget. A quarter of the 1,797 images, chosen with a fixed
seed, are held out. A recorded task of the search benchmark (``benchmarks/record_curves.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hand_loop import fit  # noqa: E402

DEFAULTS = {"time_budget": 3, "n_trials": 12}
_DATA = None


def _data():
    global _DATA
    if _DATA is None:
        x, y = load_digits(return_X_y=True)
        x = torch.tensor((x / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
        y = torch.tensor(y)
        order = torch.tensor(np.random.default_rng(0).permutation(len(x)))
        x, y = x[order], y[order]
        n_valid = len(x) // 4
        _DATA = (x[n_valid:], y[n_valid:], x[:n_valid], y[:n_valid])
    return _DATA


def train(hp, run):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    fit(hp, run, net, _data(), optimizer="sgd", schedule_kind="cosine")
