"""A bag-of-words classifier (fastText-like) on sentence polarity, in a hand-written loop.

Word embeddings averaged (``nn.EmbeddingBag``) and one linear layer; SGD with momentum 0.9 and a
cosine schedule over the planned epochs, evaluated once an epoch. The corpus is
``../shared/data/sentence_polarity`` (as the TSV ``record_curves.py`` writes), read at word
level by ``examples/lstm.py``'s ``data()``; the recorder sets ``CORPUS``. A recorded task of the search benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hand_loop import fit, text_data  # noqa: E402

DEFAULTS = {"time_budget": 3, "n_trials": 12}
CORPUS = ""  # the corpus as label<TAB>text, set by the recorder
data_for = text_data  # the corpus at word level, as examples/lstm.py reads it, and the vocabulary size


class Bag(nn.Module):
    def __init__(self, n_tokens: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(n_tokens, 64, mode="mean", padding_idx=0)
        self.out = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bag(x))


def train(hp, run):
    *d, n_tokens = data_for(CORPUS)
    torch.manual_seed(0)
    fit(hp, run, Bag(n_tokens), tuple(d), optimizer="sgd", schedule_kind="cosine", weight_decay=0.0)


