"""bstune in a Hugging Face ``transformers.Trainer``: a callback bound to a ``bstune.Run``.

The minimal change to an existing Hugging Face script is a ``train(hp, run)`` function that takes
its batch size, learning rate and epochs from ``hp`` and adds the callback::

    from transformers import Trainer, TrainingArguments
    from bstune.integrations.transformers import BstuneCallback

    def train(hp, run):
        callback = BstuneCallback(run, metric="eval_accuracy")  # a key of trainer.evaluate()
        args = TrainingArguments("out", eval_strategy="epoch", save_strategy="no", report_to="none",
                                 **callback.training_args())
        trainer = Trainer(model=make_model(), args=args, train_dataset=train_set, eval_dataset=valid_set,
                          compute_metrics=accuracy, callbacks=[callback])
        trainer.train()

``training_args()`` gives ``per_device_train_batch_size``, ``gradient_accumulation_steps`` (when
the batch is larger than the micro-batch, ``--micro-batch-size``), ``learning_rate`` and
``num_train_epochs`` from ``hp``.

What the callback does:

- Training time runs from the start of an optimizer step to its end, and on to the next step
  unless the step ends in an evaluation or a save; evaluation is evaluation time; saving, logging
  and start-up are in neither (they show in wall time).
- Each evaluation (``eval_strategy`` decides when, and in budget mode also a tenth of the budget
  after the last one, see ``evaluate_every_s``) reports ``metric`` at step = elapsed training
  milliseconds, with ``eval_loss`` as the loss for the divergence check (the Trainer keeps its
  training loss to itself between logging steps), the epochs done and the samples seen.
- After every optimizer step it checks the budget and stops training within one step of it, with
  one last evaluation, so the trial's last point is at its end; training that ends for any other
  reason also ends with an evaluation. A reached target, a pruner's decision or a non-finite
  metric or loss stop it at that report: pruned and diverged trials leave ``trainer.train()`` with
  ``optuna.TrialPruned``, exactly as with the built-in trainer.
- Out of memory inside ``train()`` leaves it as the original error; ``bstune optimize`` (and
  ``bstune.make_objective``) record it as the ``out_of_memory`` constraint and go on.

``search_kwargs`` plugs bstune's study, space, sampler and pruners into
``Trainer.hyperparameter_search(backend="optuna")``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("bstune.integrations.transformers needs transformers: pip install 'bstune[transformers]'") from e

import optuna

from bstune.integrations._common import Regions, accumulation
from bstune.memory import record_peak_memory, reset_peak_memory
from bstune.objectives import Mode
from bstune.run import Run
from bstune.space import SearchSpace

__all__ = ["BstuneCallback", "search_kwargs"]


class BstuneCallback(TrainerCallback):
    """Times, reports and stops a Hugging Face ``Trainer`` for one bstune trial.

    Args:
        run: The trial's run (the second argument of ``train(hp, run)``); with
            ``search_kwargs``, leave it out: each trial binds its own.
        metric: The key of the evaluation metrics to report (``"eval_"`` plus the name your
            ``compute_metrics`` returns).
        evaluate_every_s: Also evaluate after this many training seconds since the last
            evaluation, so pruners see a curve even when an epoch is long; ``"auto"`` (default)
            is a tenth of the time budget (never in target mode), ``None`` leaves it to
            ``eval_strategy``. Either way an evaluation waits until training has run ten times
            what the last one cost, as the built-in trainer does.
    """

    def __init__(
        self, run: Run | None = None, metric: str = "eval_accuracy", *, evaluate_every_s: float | str | None = "auto"
    ) -> None:
        if evaluate_every_s not in ("auto", None) and not (
            isinstance(evaluate_every_s, (int, float)) and not isinstance(evaluate_every_s, bool) and evaluate_every_s > 0
        ):
            raise ValueError(f"evaluate_every_s must be 'auto', None or a positive number; got {evaluate_every_s!r}")
        self.metric = metric
        self.evaluate_every_s = evaluate_every_s
        self.run: Run | None = None
        if run is not None:
            self.bind(run)

    def bind(self, run: Run, *, owned: bool = False) -> None:
        """Bind the callback to a new trial's run; an ``owned`` run is ended (recorded) when training ends."""
        self.run = run
        self._owned = owned
        self._regions = Regions(run)
        self._n_train: int | None = None
        self._reported_at: int | None = None  # the global step of the last report
        self._last_eval_train_s = 0.0
        self._eval_gap_s = 0.0  # the last evaluation's cost x 10: evaluation stays under a tenth of training
        self._eval_s_before = 0.0
        every = self.evaluate_every_s
        if every == "auto":
            budget = getattr(run.mode, "budget", None)
            every = budget / 10 if budget else None
        self._every_s: float | None = every  # type: ignore[assignment]
        hp = run.hp
        self.batch_size, self.gradient_accumulation_steps = (
            accumulation(hp.batch_size, run.micro_batch_size) if hp is not None else (0, 1)
        )

    def training_args(self) -> dict[str, Any]:
        """``TrainingArguments`` fields from the trial's hyperparameters (pass them with ``**``)."""
        hp = self._bound().hp
        if hp is None:
            raise ValueError("the run has no hyperparameters: make it with bstune.Run(trial, mode, hp)")
        return {
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "learning_rate": hp.learning_rate,
            "num_train_epochs": hp.epochs,
        }

    def _bound(self) -> Run:
        if self.run is None:
            raise RuntimeError("BstuneCallback is not bound to a run: pass run=, or use search_kwargs()")
        return self.run

    # ------------------------------------------------------------------ hooks

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        reset_peak_memory(args.device)
        loader = kwargs.get("train_dataloader")
        try:
            self._n_train = len(loader.dataset)  # type: ignore[union-attr]
        except (AttributeError, TypeError):
            self._n_train = None

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._regions.enter("training")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        run = self._bound()
        run.count(args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1))
        if run.should_stop:  # the budget is spent
            control.should_training_stop = True
        if control.should_training_stop:
            control.should_evaluate = True  # the last point of the curve is at the end
        elif self._every_s is not None and not control.should_evaluate:
            since = run.train_seconds - self._last_eval_train_s
            control.should_evaluate = since >= max(self._every_s, self._eval_gap_s)
        if control.should_evaluate:
            self._eval_s_before = run.eval_seconds
            self._regions.enter("evaluating")
        elif control.should_save or control.should_log:
            self._regions.leave()

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._reported_at == state.global_step:
            control.should_evaluate = False  # already evaluated at this step
        if control.should_evaluate:
            self._eval_s_before = self._bound().eval_seconds
            self._regions.enter("evaluating")
        else:
            self._regions.leave()

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        run = self._bound()
        self._regions.leave()
        self._eval_gap_s = (run.eval_seconds - self._eval_s_before) * 10
        self._last_eval_train_s = run.train_seconds
        metrics: dict[str, float] = kwargs.get("metrics") or {}
        if self.metric not in metrics:
            raise KeyError(
                f"BstuneCallback(metric={self.metric!r}): evaluation returned {', '.join(sorted(metrics)) or 'nothing'}"
            )
        epoch = float(state.epoch or 0.0)
        samples = round(epoch * self._n_train) if self._n_train else None
        self._reported_at = state.global_step
        loss = metrics.get("eval_loss")
        run.report(float(metrics[self.metric]), loss=loss, epoch=epoch, samples=samples)  # may raise TrialPruned
        if run.should_stop:
            control.should_training_stop = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._regions.leave()
        record_peak_memory(self._bound(), args.device)
        if self._owned:
            self._bound().__exit__(None, None, None)  # records the trial, as leaving `with Run(...)` does


class _OwnReports:
    """The trial as the run sees it: the Trainer's own reports to it (at global steps) are muted.

    ``Trainer.hyperparameter_search`` reports every evaluation at step = global step and prunes on
    its own; bstune's pruners read steps in training milliseconds, so only the run may report.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial
        trial.report = lambda value, step: None  # type: ignore[method-assign]
        trial.should_prune = lambda: False  # type: ignore[method-assign]

    def report(self, value: float, step: int) -> None:
        type(self._trial).report(self._trial, value, step)

    def should_prune(self) -> bool:
        return type(self._trial).should_prune(self._trial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def search_kwargs(
    callback: BstuneCallback,
    mode: Mode,
    space: SearchSpace | None = None,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    pruner: str | optuna.pruners.BasePruner = "default",
    seed: int | None = None,
    micro_batch_size: int | None = None,
    clock: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Keyword arguments that make ``Trainer.hyperparameter_search`` run a bstune study.

    The study is made (or resumed) with ``bstune.create_study``, so it carries the same
    attributes as one from ``bstune optimize``, and the search uses bstune's sampler for the mode,
    the named pruner (``bstune.pruners.make_pruner``) and ``space``. ``callback`` must be among
    the Trainer's callbacks; each trial binds it to a new ``Run``. Out of memory fails
    the trial there (pass ``catch=(torch.OutOfMemoryError,)`` to go on); ``bstune optimize`` on a
    ``train(hp, run)`` script records it as a constraint instead.

    Example::

        trainer = Trainer(model_init=make_model, args=args, ..., callbacks=[callback])
        trainer.hyperparameter_search(n_trials=20, **search_kwargs(callback, bstune.TimeBudget(60)))
    """
    from bstune.objective import _guess_device, _guess_sync
    from bstune.pruners import make_pruner
    from bstune.space import load_space
    from bstune.study import create_study

    space = space or load_space("default")
    the_pruner = make_pruner(pruner, mode) if isinstance(pruner, str) else pruner
    study = create_study(mode, space=space, storage=storage, study_name=study_name, pruner=the_pruner, seed=seed)

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        hp = space.suggest(trial)
        micro = min(hp.batch_size, micro_batch_size or space.micro_batch_size or hp.batch_size)
        run = Run(
            _OwnReports(trial),  # type: ignore[arg-type]
            mode,
            hp,
            clock=clock or time.perf_counter,
            sync=_guess_sync(),
            device=_guess_device(),
            micro_batch_size=micro,
        )
        callback.bind(run, owned=True)
        return callback.training_args()

    def compute_objective(metrics: dict[str, float]) -> float:
        return callback._bound().value

    out: dict[str, Callable[..., Any] | Any] = {
        "backend": "optuna",
        "direction": mode.study_direction,
        "hp_space": hp_space,
        "compute_objective": compute_objective,
        "storage": study._storage,
        "study_name": study.study_name,
        "load_if_exists": True,
        "sampler": study.sampler,
        "pruner": study.pruner,
    }
    return out
