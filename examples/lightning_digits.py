"""A Lightning module tuned by bstune: which batch size, learning rate and epochs for an MLP on digits?

Run it with::

    pip install 'bstune[lightning]'
    bstune optimize examples/lightning_digits.py

The data is scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels, a fifth held
out for validation). Nothing is downloaded.

The module and data module below are ordinary Lightning code; what bstune needs is the
``train(hp, run)`` function at the end: the data module takes the batch size, the module the
learning rate, and the Trainer gets ``BstuneCallback`` (which also sets ``max_epochs`` and
gradient accumulation).
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bstune.integrations.lightning import BstuneCallback

DEFAULTS = {"space": "default", "time_budget": 3, "n_trials": 8}


class Digits(L.LightningDataModule):
    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x / 16.0, dtype=torch.float32)
        y = torch.tensor(y)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        n_valid = len(x) // 5
        self.train_set = TensorDataset(x[perm[n_valid:]], y[perm[n_valid:]])
        self.valid_set = TensorDataset(x[perm[:n_valid]], y[perm[:n_valid]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.valid_set, batch_size=512)


class MLP(L.LightningModule):
    def __init__(self, lr: float = 1e-3, hidden: int = 128) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


# --8<-- [start:train]
def train(hp, run) -> None:
    """The change bstune needs: hp into the module and data, the callback into the Trainer."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no start-up banner per trial
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13, once per trial
    torch.manual_seed(0)
    callback = BstuneCallback(run, monitor="val_acc")
    trainer = L.Trainer(
        **callback.trainer_kwargs(),
        accelerator="auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(MLP(lr=hp.learning_rate, hidden=int(hp.get("hidden", 128))), Digits(batch_size=callback.batch_size))
# --8<-- [end:train]
