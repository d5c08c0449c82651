"""A fake clock and a synthetic training task, for tests and simulations that never sleep.

``SyntheticTask`` is a ``train(hp, run)`` function whose learning curves follow the shapes
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

Synthetic curves are a unit test, not evidence. ``RecordedCurves`` replays learning curves
recorded from real training runs (``benchmarks/record_curves.py`` writes them) through the same
``train(hp, run)`` interface, so a search strategy can be judged on real curves in seconds.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bstune.run import Run
from bstune.space import Hyperparams, SearchSpace

__all__ = ["FakeClock", "RecordedCurve", "RecordedCurves", "RecordedTask", "SyntheticTask"]


class FakeClock:
    """A clock that moves only when told to.

    Examples:
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
    """A simulated training job; call it as ``task(hp, run)`` with a run on ``clock``.

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
        lr_exponent: The best learning rate goes as ``batch ** lr_exponent`` (0.5: square root).
        run_noise: Standard deviation of a per-run offset drawn from the seed and the trial's
            number: two runs of one configuration differ by it, as two seeds of real training do.
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
    lr_exponent: float = 0.5
    run_noise: float = 0.0
    clock: FakeClock = field(default_factory=FakeClock)

    def best_lr(self, batch_size: int) -> float:
        return self.best_lr_at_64 * (batch_size / 64) ** self.lr_exponent

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
        offset = 0.0
        if self.run_noise:
            offset = random.Random(f"{self.seed}-{run.trial.number}").gauss(0.0, self.run_noise)
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
            acc = self.accuracy(hp, run.samples_seen, progress) + rng.gauss(0.0, self.noise) + offset
            loss = -math.log(max(acc, 1e-6))
            run.report(acc, loss=loss, epoch=run.samples_seen / self.n_train)


Config = tuple[int, float, int]  # (batch size, learning rate, planned epochs)


@dataclass(frozen=True)
class RecordedCurve:
    """One configuration's learning curve as it was recorded: one entry per evaluation."""

    train_s: tuple[float, ...]
    epoch: tuple[float, ...]
    metric: tuple[float, ...]
    loss: tuple[float, ...]

    def best(self) -> float:
        """The best (highest) finite metric, NaN if none."""
        vals = [m for m in self.metric if math.isfinite(m)]
        return max(vals) if vals else math.nan

    def time_to(self, target: float) -> float | None:
        """Training seconds until the metric first reached ``target`` (``None``: never)."""
        for t, m in zip(self.train_s, self.metric, strict=True):
            if math.isfinite(m) and m >= target:
                return t
        return None


class RecordedCurves:
    """A grid of learning curves recorded from real training, read from a JSON-lines file.

    The first line is ``{"meta": {...}}`` with at least ``budget`` (the per-trial time budget it
    was recorded under); every other line is one configuration: ``batch_size``, ``learning_rate``,
    ``epochs`` and the lists ``train_s``, ``epoch``, ``metric``, ``loss`` (``null`` for NaN).

    Examples:
        >>> import json, tempfile
        >>> lines = [{"meta": {"budget": 2.0}},
        ...          {"batch_size": 32, "learning_rate": 0.01, "epochs": 2, "train_s": [1.0, 2.0],
        ...           "epoch": [0.5, 1.0], "metric": [0.6, 0.7], "loss": [0.9, 0.8]}]
        >>> path = tempfile.mktemp(suffix=".jsonl")
        >>> _ = open(path, "w").write("\\n".join(json.dumps(x) for x in lines))
        >>> curves = RecordedCurves(path)
        >>> curves.nearest(40, 0.02, 3), curves.best
        ((32, 0.01, 2), 0.7)
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if not rows or "meta" not in rows[0]:
            raise ValueError(f"{path}: the first line must be {{\"meta\": {{...}}}}")
        self.name = path.stem
        self.meta: dict[str, Any] = rows[0]["meta"]
        self.budget = float(self.meta["budget"])
        self.n_train = int(self.meta.get("n_train", 0))

        def floats(xs: list[float | None]) -> tuple[float, ...]:
            return tuple(math.nan if v is None else float(v) for v in xs)

        self.curves: dict[Config, RecordedCurve] = {
            (int(r["batch_size"]), float(r["learning_rate"]), int(r["epochs"])): RecordedCurve(
                floats(r["train_s"]), floats(r["epoch"]), floats(r["metric"]), floats(r["loss"])
            )
            for r in rows[1:]
        }
        if not self.curves:
            raise ValueError(f"{path}: no curves recorded")
        self.batch_sizes = sorted({k[0] for k in self.curves})
        self.learning_rates = sorted({k[1] for k in self.curves})
        self.epochs = sorted({k[2] for k in self.curves})
        self.best = max((c.best() for c in self.curves.values() if math.isfinite(c.best())), default=math.nan)

    def nearest(self, batch_size: int, learning_rate: float, epochs: int) -> Config:
        """The recorded configuration nearest in log space on each axis; where that one was not
        recorded, the nearest recorded one overall."""
        want = (batch_size, learning_rate, epochs)

        def near(values: list[Any], x: float) -> Any:
            return min(values, key=lambda v: abs(math.log(v) - math.log(x)))

        key = (near(self.batch_sizes, batch_size), near(self.learning_rates, learning_rate), near(self.epochs, epochs))
        if key in self.curves:
            return key
        return min(self.curves, key=lambda k: sum((math.log(a) - math.log(b)) ** 2 for a, b in zip(k, want, strict=True)))

    def best_time_to(self, target: float) -> float | None:
        """The fastest recorded time to reach ``target``."""
        times = [t for c in self.curves.values() if (t := c.time_to(target)) is not None]
        return min(times) if times else None

    def space(self, name: str | None = None) -> SearchSpace:
        """The search space the grid spans: powers of two, a log-uniform rate, the epochs range."""
        return SearchSpace.from_dict(
            {
                "name": name or f"recorded-{self.name}",
                "batch_size": {"low": self.batch_sizes[0], "high": self.batch_sizes[-1], "powers_of_two": True},
                "learning_rate": {"low": self.learning_rates[0], "high": self.learning_rates[-1]},
                "epochs": {"low": self.epochs[0], "high": self.epochs[-1]},
            }
        )

    def task(self, clock: FakeClock) -> RecordedTask:
        """A ``train(hp, run)`` that replays these curves on ``clock``."""
        return RecordedTask(self, clock)


class RecordedTask:
    """Replays, for each trial, the recorded curve nearest to its configuration.

    Training advances ``clock`` by the recorded training seconds between evaluations, and each
    evaluation is reported as recorded (metric, loss, epoch), so budgets, targets, pruners and stop
    reasons are bstune's own; only the training is looked up instead of run. The configuration
    replayed is recorded on the trial (user attribute ``replayed``).
    """

    def __init__(self, curves: RecordedCurves, clock: FakeClock) -> None:
        self.curves = curves
        self.clock = clock
        self.epoch = 0.0  # of the evaluation being reported

    def __call__(self, hp: Hyperparams, run: Run) -> None:
        key = self.curves.nearest(hp.batch_size, hp.learning_rate, hp.epochs)
        run.extra_attrs["replayed"] = list(key)
        c = self.curves.curves[key]
        before = 0.0
        for t, e, m, loss in zip(c.train_s, c.epoch, c.metric, c.loss, strict=True):
            with run.training():
                self.clock.advance(max(t - before, 0.0))
            before = t
            self.epoch = e
            samples = round(e * self.curves.n_train) if self.curves.n_train else None
            run.report(m, loss=loss, epoch=e, samples=samples)
            if run.should_stop:
                return
