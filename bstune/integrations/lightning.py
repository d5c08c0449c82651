"""bstune in a Lightning ``Trainer``: a callback bound to a ``bstune.Run``.

The minimal change to an existing Lightning script is a ``train(hp, run)`` function that builds the
module and data with ``hp`` and adds the callback::

    import lightning as L
    from bstune.integrations.lightning import BstuneCallback

    def train(hp, run):
        callback = BstuneCallback(run, monitor="val_acc")       # a metric your module logs
        data = MyDataModule(batch_size=callback.batch_size)     # the batch per forward pass
        model = MyModule(lr=hp.learning_rate)
        trainer = L.Trainer(**callback.trainer_kwargs(), enable_progress_bar=False)
        trainer.fit(model, data)

``trainer_kwargs()`` sets ``max_epochs`` from ``hp.epochs``, ``accumulate_grad_batches`` when the
batch is larger than the micro-batch (``--micro-batch-size``), and adds the callback.

What the callback does:

- Training time runs from the first training batch to the start of validation; validation is
  evaluation time, the sanity check is overhead, and checkpointing, logging and start-up are in
  neither (they show in wall time).
- Each validation (``val_check_interval`` and ``check_val_every_n_epoch`` decide when) reports the
  logged metric ``monitor`` at step = elapsed training milliseconds, with the mean training loss
  since the last report for the divergence check, the epochs done and the samples seen.
- After every training batch it checks the budget, and stops the trainer within one batch of it;
  Lightning then validates once more, so the trial's last point is at its end. A reached target,
  a pruner's decision or a non-finite loss or metric stop it at that report: pruned and diverged
  trials leave ``fit`` with ``optuna.TrialPruned``, exactly as with the built-in trainer.
- Out of memory inside ``fit`` leaves it as the original error; ``bstune optimize`` (and
  ``bstune.make_objective``) record it as the ``out_of_memory`` constraint and go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.data import extract_batch_size
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("bstune.integrations.lightning needs Lightning: pip install 'bstune[lightning]'") from e

from bstune.integrations._common import LossSum, Regions, accumulation
from bstune.memory import record_peak_memory, reset_peak_memory
from bstune.run import Run

__all__ = ["BstuneCallback"]


class BstuneCallback(pl.Callback):
    """Times, reports and stops a Lightning ``Trainer`` for one bstune trial.

    Args:
        run: The trial's run (the second argument of ``train(hp, run)``).
        monitor: The validation metric the module logs (``self.log("val_acc", ...)``), higher is
            better unless the study's mode says otherwise.
    """

    def __init__(self, run: Run, monitor: str = "val_acc") -> None:
        self.run = run
        self.monitor = monitor
        self._regions = Regions(run)
        self._loss = LossSum()
        self._batches_this_epoch = 0
        hp = run.hp
        self.batch_size, self.accumulate_grad_batches = (
            accumulation(hp.batch_size, run.micro_batch_size) if hp is not None else (0, 1)
        )

    def trainer_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """Keyword arguments for ``lightning.Trainer``: epochs, accumulation and this callback.

        ``kwargs`` are passed through; a ``callbacks`` list is kept and this callback added to it.
        """
        callbacks = [*(kwargs.pop("callbacks", None) or []), self]
        out: dict[str, Any] = {"callbacks": callbacks, "accumulate_grad_batches": self.accumulate_grad_batches}
        if self.run.hp is not None:
            out["max_epochs"] = self.run.hp.epochs
        out.update(kwargs)
        return out

    # ------------------------------------------------------------------ regions

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._regions.enter("overhead")

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._regions.leave()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reset_peak_memory(pl_module.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches_this_epoch = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._regions.enter("training")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.run.count(extract_batch_size(batch))
        self._batches_this_epoch = batch_idx + 1
        self._loss.add(outputs.get("loss") if isinstance(outputs, Mapping) else outputs)
        if self.run.should_stop:  # the budget is spent: Lightning validates once more, then stops
            trainer.should_stop = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._regions.enter("evaluating")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._regions.leave()
        if self.monitor not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise KeyError(
                f"BstuneCallback(monitor={self.monitor!r}): the module did not log {self.monitor!r} "
                f"in validation (logged: {logged})"
            )
        n = trainer.num_training_batches
        fraction = self._batches_this_epoch / n if n and n != float("inf") else 0.0
        self.run.report(
            float(trainer.callback_metrics[self.monitor]),
            loss=self._loss.mean(),
            epoch=trainer.current_epoch + min(fraction, 1.0),
        )  # raises optuna.TrialPruned when pruned or diverged
        if self.run.should_stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._regions.leave()
        record_peak_memory(self.run, pl_module.device)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._regions.leave()
