"""A small MLP on scikit-learn's bundled handwritten digits (8x8 pixels, 1,797 images).

A recorded task of the search benchmark (``benchmarks/record_curves.py``): the data ship inside
scikit-learn, so nothing is downloaded. A quarter of the images, chosen with a fixed seed, are
held out for validation.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from torch import nn

DEFAULTS = {"time_budget": 2, "n_trials": 12}


def data():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n_valid = len(x) // 4
    return x[n_valid:], y[n_valid:], x[:n_valid], y[:n_valid]


def model(hp):
    width = int(hp.get("hidden", 128))
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
