"""An LSTM text classifier: which batch size, learning rate and epochs, on your corpus?

Run it with::

    bstune optimize examples/lstm.py                       # names corpus, 10 s per trial
    bstune optimize examples/lstm.py --task-option corpus=reviews.tsv --time-budget 120

Default data: the first-name dictionary shipped inside the ``gender-guesser`` package (about 40,000
names labelled male or female by Jörg Michael's ``nam_dict.txt``), read character by character.
Nothing is downloaded.

Your own corpus: a UTF-8 text file with one example per line, ``label<TAB>text``. Labels may be any
strings; texts are split into lower-cased words (``level=word``, the default for a corpus) or
characters (``level=char``), cut or left-padded to ``max_len`` tokens. 10% of the lines, chosen
with a fixed seed, are held out for validation.

Task options (``--task-option KEY=VALUE``): ``corpus``, ``level`` (word or char), ``max_len``,
``vocab`` (largest vocabulary for word level), ``limit`` (use only the first N examples).
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from pathlib import Path

import torch
from torch import nn

# float32 on CUDA too: on an H200 this LSTM trained 1.2 to 1.55x faster without bf16 autocast, at
# the same accuracy (benchmarks/RESULTS_trainer.md); --amp turns autocast back on.
DEFAULTS = {"space": "lstm", "time_budget": 10, "n_trials": 12, "amp": False}

_PAD, _UNK = 0, 1


def _names() -> list[tuple[str, str]]:
    """(label, name) pairs from gender-guesser's dictionary; unisex names are left out."""
    try:
        import gender_guesser
    except ImportError:
        raise RuntimeError(
            "the default corpus comes from the gender-guesser package: pip install 'bstune[examples]', "
            "or pass --task-option corpus=FILE.tsv"
        ) from None
    path = Path(gender_guesser.__file__).parent / "data" / "nam_dict.txt"
    labels = {"M": "male", "1M": "male", "?M": "male", "F": "female", "1F": "female", "?F": "female"}
    seen: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line or line[0] in "#=":
                continue
            parts = line.split()
            if len(parts) < 2 or parts[0] not in labels:
                continue
            name = parts[1].replace("+", "-").lower()
            seen.setdefault(name, labels[parts[0]])
    return [(label, name) for name, label in seen.items()]


def _read_corpus(path: str) -> list[tuple[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"corpus {path!r}: no such file")
    pairs = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            label, sep, text = line.partition("\t")
            if not sep:
                raise ValueError(f"corpus {path!r} line {i}: expected 'label<TAB>text'")
            pairs.append((label.strip(), text))
    counts = Counter(lab for lab, _ in pairs)
    if pairs and _looks_like_header(pairs[0][0], counts):
        label, text = pairs.pop(0)
        counts[label] -= 1
        print(f"corpus {path!r}: line 1 ({label!r}, {text!r}) looks like a header; skipped", file=sys.stderr)
    counts = +counts
    if len(counts) < 2:
        raise ValueError(f"corpus {path!r}: needs at least two different labels")
    rare = sorted(lab for lab, n in counts.items() if n < 2)
    if rare:
        shown = ", ".join(repr(lab) for lab in rare[:5]) + (f" and {len(rare) - 5} more" if len(rare) > 5 else "")
        which = f"label {shown} has" if len(rare) == 1 else f"labels {shown} have"
        raise ValueError(
            f"corpus {path!r}: {which} a single example; every label needs at least two (fix or drop those lines)"
        )
    return pairs


_HEADER_LABELS = {"label", "labels", "class", "category", "target", "y", "sentiment", "polarity"}


def _looks_like_header(label: str, counts: Counter) -> bool:
    """A first line whose label is a column name, or appears once while every other label repeats."""
    if label.strip().lower() in _HEADER_LABELS:
        return True
    return counts[label] == 1 and all(n >= 2 for lab, n in counts.items() if lab != label)


def _tokens(text: str, level: str) -> list[str]:
    return list(text.lower()) if level == "char" else re.findall(r"[\w']+|[^\w\s]", text.lower())


def data(
    corpus: str | None = None,
    level: str | None = None,
    max_len: str | None = None,
    vocab: str = "20000",
    limit: str | None = None,
):
    pairs = _read_corpus(corpus) if corpus else _names()
    level = level or ("word" if corpus else "char")
    if level not in ("word", "char"):
        raise ValueError(f"level must be 'word' or 'char'; got {level!r}")
    rng = random.Random(0)
    rng.shuffle(pairs)
    if limit:
        pairs = pairs[: int(limit)]
    texts = [_tokens(t, level) for _, t in pairs]
    length = int(max_len) if max_len else min(max(len(t) for t in texts), 16 if level == "char" else 48)

    n_valid = max(len(pairs) // 10, 1)
    counts = Counter(tok for t in texts[n_valid:] for tok in t)  # vocabulary from training data only
    itos = [tok for tok, _ in counts.most_common(int(vocab) - 2)]
    stoi = {tok: i + 2 for i, tok in enumerate(itos)}
    labels = sorted({lab for lab, _ in pairs})
    ltoi = {lab: i for i, lab in enumerate(labels)}

    x = torch.zeros(len(texts), length, dtype=torch.long)  # left-padded: the last step sees text
    for i, t in enumerate(texts):
        ids = [stoi.get(tok, _UNK) for tok in t[-length:]]
        if ids:
            x[i, length - len(ids) :] = torch.tensor(ids)
    y = torch.tensor([ltoi[lab] for lab, _ in pairs])
    global _N_TOKENS, _N_CLASSES
    _N_TOKENS, _N_CLASSES = len(itos) + 2, len(labels)
    return x[n_valid:], y[n_valid:], x[:n_valid], y[:n_valid]


_N_TOKENS, _N_CLASSES = 64, 2


class LSTMClassifier(nn.Module):
    def __init__(self, n_tokens: int, n_classes: int, embedding: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(n_tokens, embedding, padding_idx=_PAD)
        self.lstm = nn.LSTM(embedding, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(self.drop(out[:, -1]))


def model(hp):
    return LSTMClassifier(
        _N_TOKENS,
        _N_CLASSES,
        embedding=int(hp.get("embedding", 32)),
        hidden=int(hp.get("hidden", 64)),
        dropout=float(hp.get("dropout", 0.1)),
    )
