"""A Hugging Face Trainer tuned by bstune: a small transformer classifying first names by gender.

Run it with::

    pip install 'bstune[transformers,examples]'     # examples: the names corpus
    bstune optimize examples/hf_names.py

The model is a two-layer BERT built from a config (no download), reading names character by
character; the data is the first-name dictionary shipped inside the ``gender-guesser`` package, the
same corpus as ``examples/lstm.py`` (whose loader this script reuses), its first 8,000 names in a
fixed shuffle, a tenth held out for validation.

The model, data set and metric below are ordinary Hugging Face code; what bstune needs is the
``train(hp, run)`` function at the end: ``TrainingArguments`` get their batch size, learning rate
and epochs from ``callback.training_args()``, and the Trainer gets ``BstuneCallback``.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, PrinterCallback, Trainer, TrainingArguments

from bstune.integrations.transformers import BstuneCallback

DEFAULTS = {"space": "default", "time_budget": 10, "n_trials": 6}


def _lstm_example():
    """examples/lstm.py, beside this file: its names corpus and tokenizer."""
    spec = importlib.util.spec_from_file_location("bstune_example_lstm", Path(__file__).with_name("lstm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Names(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.x[i]
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": self.y[i]}


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float(np.mean(np.argmax(prediction.predictions, axis=-1) == prediction.label_ids))}


LIMIT = 8000
_DATA: list[tuple] = []


def _data() -> tuple:
    if not _DATA:  # loaded once per process, not once per trial
        lstm = _lstm_example()
        xt, yt, xv, yv = lstm.data(limit=str(LIMIT))
        _DATA.append((Names(xt, yt), Names(xv, yv), lstm._N_TOKENS, lstm._N_CLASSES, xt.shape[1]))
    return _DATA[0]


# --8<-- [start:train]
def train(hp, run) -> None:
    """The change bstune needs: TrainingArguments from hp, the callback into the Trainer."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    train_set, valid_set, n_tokens, n_classes, length = _data()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=n_tokens, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=length, num_labels=n_classes,
    )
    callback = BstuneCallback(run, metric="eval_accuracy")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out,
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            per_device_eval_batch_size=512,
            dataloader_pin_memory=torch.cuda.is_available(),
            **callback.training_args(),
        )
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=train_set,
            eval_dataset=valid_set,
            compute_metrics=accuracy,
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # bstune prints one line per trial
        trainer.train()
# --8<-- [end:train]
