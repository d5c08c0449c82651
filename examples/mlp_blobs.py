"""The blobs MLP people use to show batch-size effects, as a bstune task.

Three Gaussian blobs in two dimensions from scikit-learn (generated, nothing downloaded), a small
multilayer perceptron, and the question: how do batch size, learning rate and epochs trade off?

    bstune optimize examples/mlp_blobs.py
    bstune optimize examples/mlp_blobs.py --target 0.8      # seconds until 80% accuracy
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_blobs
from torch import nn

DEFAULTS = {"space": "mlp", "time_budget": 3, "n_trials": 12}


def data(n_samples: str = "20000", noise: str = "2.0"):
    x, y = make_blobs(n_samples=int(n_samples), centers=3, n_features=2, cluster_std=float(noise), random_state=2)
    x = x.astype(np.float32)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    n_valid = len(x) // 5
    return x[n_valid:], y[n_valid:], x[:n_valid], y[:n_valid]


def model(hp):
    width = int(hp.get("hidden", 50))
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 3))


def optimizer(parameters, hp):
    # Plain SGD with momentum, as in the classic batch-size demonstrations.
    return torch.optim.SGD(parameters, lr=hp.learning_rate, momentum=0.9)
