"""What a probe found: one batch size's measurement, and the whole result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bstune.memory import BatchSearch
from bstune.noise import NoiseScale
from bstune.space import Hyperparams, SearchSpace

if TYPE_CHECKING:
    pass


MIB = 2**20
#: Batch bounds around the critical batch size: below B_crit / 4 steps barely get cheaper per
#: sample; above 4 B_crit they barely get fewer (McCandlish et al. 2018: steps ~ S_min (1 + B_crit / B)).
CRITICAL_FACTOR = 4
#: The narrowed batch range keeps the sizes whose predicted time to a result is within this factor
#: of the best one.
TIME_SLACK = 1.5
#: The noise-scale steps train the model from its initialisation; the first half is left out of the
#: estimate, which then describes the model after those steps rather than the random start.
NOISE_BURN_IN = 0.5


@dataclass(frozen=True)
class BatchMeasurement:
    """Throughput and memory of one batch size.

    Attributes:
        batch_size: Samples per step.
        samples_per_s: Training samples per second over the timed steps (the warm-up step left out).
        step_s: Mean seconds per step.
        n_steps: Timed steps.
        peak_memory_bytes: Peak memory of a step (see the module docstring), or ``None``.
        vs_powers_of_two: For a size between two measured powers of two, its throughput divided by
            the throughput interpolated between them (log-linear); ``None`` for powers of two.
    """

    batch_size: int
    samples_per_s: float
    step_s: float
    n_steps: int
    peak_memory_bytes: int | None
    vs_powers_of_two: float | None = None

    @property
    def power_of_two(self) -> bool:
        return self.batch_size & (self.batch_size - 1) == 0


@dataclass(frozen=True)
class ProbeResult:
    """Everything ``run_probe`` measured and the space it narrowed; plain data for the renderers."""

    task: str
    device: str
    n_train: int
    hp: Hyperparams
    base_space: SearchSpace
    search: BatchSearch
    memory_limit_bytes: int | None
    memory_limit_source: str
    measurements: tuple[BatchMeasurement, ...]
    noise: NoiseScale | None
    space: SearchSpace
    reasons: tuple[str, ...]
    seconds: Mapping[str, float] = field(default_factory=dict)
    busy: str = ""  # set when other work loaded the processors during the probe

    @property
    def critical_batch_size(self) -> float | None:
        return self.noise.b_simple if self.noise is not None else None

    @property
    def micro_batch_size(self) -> int | None:
        """The micro-batch the narrowed space trains with, when its batches exceed memory."""
        return self.space.micro_batch_size

    def to_dict(self) -> dict[str, Any]:
        """The facts, as JSON-ready data (stored on a study by ``bstune optimize --probe``)."""
        return {
            "task": self.task,
            "device": self.device,
            "n_train": self.n_train,
            "params": dict(self.hp.params),
            "largest_batch": self.search.largest,
            "batch_limit": self.search.limit,
            "memory_bound": self.search.memory_bound,
            "memory_limit_bytes": self.memory_limit_bytes,
            "memory_limit_source": self.memory_limit_source,
            "noise": self.noise.to_dict() if self.noise is not None else None,
            "throughput": {str(m.batch_size): round(m.samples_per_s, 3) for m in self.measurements},
            "peak_memory_bytes": {str(m.batch_size): m.peak_memory_bytes for m in self.measurements},
            "space": self.space.to_dict(),
            "reasons": list(self.reasons),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "busy": self.busy,
        }
