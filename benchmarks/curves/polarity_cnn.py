"""A word CNN (Kim 2014, one filter width) on sentence polarity, in a hand-written loop.

Word embeddings, a convolution over three words, max over time and one linear layer; AdamW and a
cosine schedule over the planned epochs, evaluated twice an epoch. The corpus is
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

DEFAULTS = {"time_budget": 4, "n_trials": 12}
CORPUS = ""  # the corpus as label<TAB>text, set by the recorder
data_for = text_data  # the corpus at word level, as examples/lstm.py reads it, and the vocabulary size


class WordCNN(nn.Module):
    def __init__(self, n_tokens: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_tokens, 48, padding_idx=0)
        self.conv = nn.Conv1d(48, 64, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embed(x).transpose(1, 2)))
        return self.out(self.drop(h.amax(dim=2)))


def train(hp, run):
    *d, n_tokens = data_for(CORPUS)
    torch.manual_seed(0)
    fit(hp, run, WordCNN(n_tokens), tuple(d), optimizer="adamw", schedule_kind="cosine", evals_per_epoch=2, weight_decay=0.01)


