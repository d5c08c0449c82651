"""A fake clock and a synthetic training task, for tests and simulations that never sleep.

:class:`SyntheticTask` is a ``train(hp, run)`` function whose learning curves follow the shapes
the batch-size literature measures, so studies, pruners and analysis can be exercised in
milliseconds without torch:

* time per step = fixed overhead + per-sample cost, so larger batches process more samples per
  second until the per-sample cost dominates;
* steps to a given accuracy follow S(B) = S_min (1 + B_noise / B) (McCandlish et al. 2018):
  perfect scaling below the critical batch size, diminishing returns above it;
* the best learning rate grows with sqrt(B) (Hoffer et al. 2017) and accuracy falls off with the
  log-distance from it; rates far above it diverge (NaN loss);
* large batches generalise slightly worse (Keskar et al. 2017);
* the end of the learning-rate schedule brings a last gain (annealing), so curves of trials with
  different planned lengths cross.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from bstune.run import Run
from bstune.space import Hyperparams

__all__ = ["FakeClock", "SyntheticTask"]


class FakeClock:
    """A clock that moves only when told to.

    Example:
        >>> clock = FakeClock()
        >>> clock.advance(1.5)
        >>> clock()
        1.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back; got seconds={seconds!r}")
        self.now += seconds


@dataclass
class SyntheticTask:
    """A simulated training job; call it as ``task(hp, run)`` with a run on :attr:`clock`.

    Args:
        n_train: Training samples per epoch.
        steps_min: Steps to converge with an infinitely large batch (S_min).
        critical_batch: The gradient noise scale B_noise: where batches stop paying.
        best_lr_at_64: The best learning rate at batch size 64.
        peak_accuracy: The best accuracy any configuration can reach.
        chance: Accuracy before training.
        step_overhead_s: Seconds per optimizer step regardless of batch size.
        per_sample_s: Seconds per training sample.
        evals_per_epoch: Evaluations (reports) per epoch.
        noise: Standard deviation of the evaluation noise.
        seed: Seed of the evaluation noise.
    """

    n_train: int = 20_000
    steps_min: float = 300.0
    critical_batch: float = 256.0
    best_lr_at_64: float = 3e-3
    peak_accuracy: float = 0.92
    chance: float = 0.5
    step_overhead_s: float = 4e-3
    per_sample_s: float = 2e-5
    evals_per_epoch: int = 4
    noise: float = 0.002
    seed: int = 0
    clock: FakeClock = field(default_factory=FakeClock)

    def best_lr(self, batch_size: int) -> float:
        return self.best_lr_at_64 * math.sqrt(batch_size / 64)

    def ceiling(self, hp: Hyperparams) -> float:
        """The accuracy this configuration converges to."""
        distance = math.log(hp.learning_rate / self.best_lr(hp.batch_size))
        lr_factor = math.exp(-(distance**2) / 2.0)
        generalisation = 1.0 - 0.02 * max(math.log2(hp.batch_size / 256), 0.0)
        return self.chance + (self.peak_accuracy - self.chance) * lr_factor * generalisation

    def accuracy(self, hp: Hyperparams, samples: float, progress: float) -> float:
        """Accuracy after ``samples`` training samples at schedule position ``progress``."""
        steps = samples / hp.batch_size
        needed = self.steps_min * (1 + self.critical_batch / hp.batch_size)
        top = self.ceiling(hp)
        reached = self.chance + 0.9 * (top - self.chance) * (1 - math.exp(-steps / needed))
        # Annealing at the end of the schedule closes part of the remaining gap.
        return reached + 0.6 * (top - reached) * progress**3

    def step_seconds(self, batch_size: int) -> float:
        return self.step_overhead_s + self.per_sample_s * batch_size

    def diverges(self, hp: Hyperparams) -> bool:
        return hp.learning_rate > 20 * self.best_lr(hp.batch_size)

    def __call__(self, hp: Hyperparams, run: Run) -> None:
        rng = random.Random(self.seed * 1_000_003 + hp.batch_size * 7919 + int(hp.learning_rate * 1e9))
        planned = hp.epochs * self.n_train
        chunk = max(self.n_train // self.evals_per_epoch, hp.batch_size)
        steps_per_chunk = max(chunk // hp.batch_size, 1)
        while run.samples_seen < planned and not run.should_stop:
            with run.training():
                for _ in range(steps_per_chunk):
                    self.clock.advance(self.step_seconds(hp.batch_size))
                    run.count(hp.batch_size)
                    if run.should_stop or run.samples_seen >= planned:
                        break
            progress = run.progress(planned)
            if self.diverges(hp):
                run.report(self.chance, loss=math.nan, epoch=run.samples_seen / self.n_train)
            acc = self.accuracy(hp, run.samples_seen, progress) + rng.gauss(0.0, self.noise)
            loss = -math.log(max(acc, 1e-6))
            run.report(acc, loss=loss, epoch=run.samples_seen / self.n_train)
