"""A character CNN on the first-names corpus of ``examples/lstm.py``, in a hand-written loop.

AdamW at a constant learning rate (no schedule), evaluated once an epoch: small batches have not
been evaluated at all for much of their budget. A recorded task of the search benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hand_loop import fit, text_data  # noqa: E402

DEFAULTS = {"time_budget": 4, "n_trials": 12}
_data = text_data  # the names, as examples/lstm.py reads them, and the vocabulary size


class CharCNN(nn.Module):
    def __init__(self, n_tokens: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_tokens, 32, padding_idx=0)
        self.conv = nn.Conv1d(32, 64, 3, padding=1)
        self.out = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embed(x).transpose(1, 2)))
        return self.out(h.amax(dim=2))


def train(hp, run):
    *data, n_tokens = _data()
    torch.manual_seed(0)
    fit(hp, run, CharCNN(n_tokens), tuple(data), optimizer="adamw", schedule_kind="constant", weight_decay=0.01)
