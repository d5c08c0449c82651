"""``bstune probe``: memory, throughput and the critical batch size, measured before the search.

On the task's own model, data and device (built by the :class:`~bstune.train.Trainer`, so the
probe measures the very step a trial runs), :func:`run_probe` measures

* the largest batch that fits: doubling, then bisection, with a safety margin, bounded by the data
  set size and a maximum (:func:`bstune.memory.find_max_batch_size`);
* throughput (samples per second, one warm-up step left out, the device synchronised around the
  timed steps) and the peak memory of a training step, for powers of two and for sizes between
  them (2^k + 1 and 3 * 2^(k-1), such as 17 and 48), so the table shows whether powers of two are
  faster on this hardware;
* the gradient noise scale B_simple (:mod:`bstune.noise`), the estimate of the critical batch size;

and narrows the search space from what it found (:func:`narrow_space`). :func:`probe_table`,
:func:`plot_probe` and :func:`write_space` only render the :class:`ProbeResult`.

Memory. On CUDA the peak is ``torch.cuda.max_memory_allocated`` and the limit is the device's
memory: running out raises ``torch.OutOfMemoryError``. On the CPU nothing raises before the
operating system kills the process, so the probe keeps to a budget (``memory_limit``, by default
half the memory available when it starts): the peak of a step is the model's resting state
(parameters, gradients, optimizer state) plus the largest excess of tensor allocations during the
step, read from the torch profiler's memory events; a size whose peak, measured or extrapolated
linearly from the last size that fitted, exceeds the budget counts as out of memory.
``memory_limit`` on CUDA stands for a smaller card: a size whose measured peak exceeds it counts as
out of memory there too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bstune.errors import BstuneError, invalid
from bstune.memory import BatchSearch, find_max_batch_size, free_memory
from bstune.noise import NoiseScale, measure_noise_scale
from bstune.space import Hyperparams, SearchSpace, load_space
from bstune.task import Task

if TYPE_CHECKING:
    import torch
    from rich.table import Table

    from bstune.train import Trainer

__all__ = [
    "BatchMeasurement",
    "ProbeResult",
    "narrow_space",
    "plot_probe",
    "predicted_cost",
    "probe_hyperparams",
    "probe_sizes",
    "probe_table",
    "run_probe",
    "summary_lines",
    "write_space",
]

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
    """Everything :func:`run_probe` measured and the space it narrowed; plain data for the renderers."""

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


# ------------------------------------------------------------------ choices


def probe_sizes(low: int, high: int) -> list[int]:
    """Powers of two from ``low`` to ``high`` and, in each octave, 2^k + 1 and 3 * 2^(k-1).

    Example:
        >>> probe_sizes(16, 100)
        [16, 17, 24, 32, 33, 48, 64, 65, 96, 100]
    """
    sizes = {high}
    k = 0
    while 2**k <= high:
        p = 2**k
        for s in (p, p + 1, 3 * p // 2):
            if low <= s <= high and (s > 2 or s == p):
                sizes.add(s)
        k += 1
    return sorted(s for s in sizes if s >= low)


def probe_hyperparams(space: SearchSpace, overrides: Mapping[str, Any] | None = None) -> Hyperparams:
    """The configuration the probe builds its model with.

    Integer extras at the top of their range (widths and depths: the largest model, so the memory
    bounds hold for every trial), float extras at the middle of theirs (geometric for log ranges),
    categorical extras at their first choice; ``overrides`` win. The learning rate is the
    geometric middle of the space's range.
    """
    params: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "categorical":
            params[p.name] = p.choices[0]
        elif p.kind == "int":
            params[p.name] = int(p.high)  # type: ignore[arg-type]
        else:
            lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
            params[p.name] = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
    params.update(overrides or {})
    base = math.sqrt(space.lr_low * space.lr_high)
    return Hyperparams(
        batch_size=space.reference_batch_size,
        learning_rate=space.scaled_learning_rate(base, space.reference_batch_size),
        epochs=1,
        base_learning_rate=base,
        params=params,
    )


def _pow2_floor(x: float) -> int:
    return 2 ** max(0, math.floor(math.log2(max(x, 1.0))))


def _pow2_ceil(x: float) -> int:
    return 2 ** max(0, math.ceil(math.log2(max(x, 1.0))))


def predicted_cost(throughput: Mapping[int, float], critical: float, sizes: list[int]) -> dict[int, float]:
    """Training seconds to a given result, up to a constant, for each batch size in ``sizes``.

    McCandlish et al. (2018): the steps to a result go as ``1 + B_crit / B``, so the time goes as
    ``(B + B_crit) / throughput(B)``. A size above the largest measured one trains as
    micro-batches of that size, at its throughput. Sizes below the smallest measured are left out.
    """
    if not throughput:
        return {}
    measured = sorted(throughput)
    top = measured[-1]
    out = {}
    for b in sizes:
        if b < measured[0]:
            continue
        thr = throughput.get(b) or (throughput[top] if b > top else None)
        if thr is None:  # between measured sizes: the nearest one below
            thr = throughput[max(m for m in measured if m <= b)]
        out[b] = (b + critical) / thr
    return out


def narrow_space(
    base: SearchSpace,
    *,
    search: BatchSearch,
    critical: float | None,
    n_train: int,
    throughput: Mapping[int, float] | None = None,
) -> tuple[SearchSpace, tuple[str, ...]]:
    """The search space the measurements suggest, and the reasons, one line each.

    Batch bounds: with a noise scale and throughputs, the batch sizes whose predicted time to a
    result (:func:`predicted_cost`) is within ``TIME_SLACK`` of the best one, rounded out to powers
    of two; with a noise scale alone, ``B_crit / 4`` to ``4 * B_crit`` (``CRITICAL_FACTOR``);
    without one (or an infinite one), the base space's. The top is at most the largest power of
    two in the data set, and at least four times the bottom, so the search keeps three sizes. A
    top above what fits in memory trains with gradient accumulation: the space gets
    ``micro_batch_size`` = the memory limit after the safety margin (also when memory bounded the
    search, so evaluation keeps to it). Learning rate, epochs and extras stay as in ``base``.
    """
    reasons = []
    data_top = _pow2_floor(n_train)
    finite = critical is not None and math.isfinite(critical) and critical > 0
    cost = {}
    if finite and throughput:
        sizes = sorted({*throughput, *(2**k for k in range(int(math.log2(data_top)) + 1))})
        cost = predicted_cost(throughput, critical, [b for b in sizes if b <= max(data_top, min(throughput))])  # type: ignore[arg-type]
    if cost:
        best = min(cost, key=lambda b: cost[b])
        kept = [b for b, c in cost.items() if c <= TIME_SLACK * cost[best]]
        low, high = _pow2_floor(min(kept)), min(_pow2_ceil(max(kept)), data_top)
        reasons.append(
            f"batch sizes {low} to {high}: predicted time to a result, (B + B_crit) / throughput(B) with "
            f"B_crit ~ {critical:.0f}, is within {TIME_SLACK:g}x of the best (at batch {best}) from {min(kept)} to "
            f"{max(kept)}; rounded out to powers of two"
            + (f", capped at the data set ({n_train} samples)" if high == data_top else "")
        )
    elif finite:
        low = _pow2_floor(critical / CRITICAL_FACTOR)  # type: ignore[operator]
        high = min(_pow2_ceil(critical * CRITICAL_FACTOR), data_top)  # type: ignore[operator]
        reasons.append(
            f"batch sizes {low} to {high}: from B_crit/{CRITICAL_FACTOR} to {CRITICAL_FACTOR} B_crit "
            f"(B_crit ~ {critical:.0f}), powers of two"
            + (f", capped at the data set ({n_train} samples)" if high == data_top else "")
        )
    else:
        low, high = base.batch_low, min(base.batch_high, max(data_top, base.batch_low))
        reasons.append(f"batch sizes {low} to {high}: the base space's (no finite noise scale measured)")
    if high < 4 * low:  # keep three powers of two to search
        high = min(4 * low, max(data_top, low))
    low = min(low, max(1, high // 4))
    if not base.powers_of_two:
        low, high = max(1, low), max(low, high)
    micro = None
    if high > search.limit:
        micro = search.limit
        reasons.append(
            f"micro-batch {micro}: batches above it accumulate gradients "
            f"(largest that fits {search.largest}"
            + (", less the safety margin)" if search.memory_bound else ", the bound of the search)")
        )
    elif search.memory_bound:
        # No batch in range needs accumulation, but evaluation chunks must keep to what fits too.
        micro = search.limit
        reasons.append(f"micro-batch {micro}: the memory limit; every batch in range fits, no accumulation")
    else:
        reasons.append(f"no gradient accumulation: {high} fits in memory (up to {search.limit} measured)")
    ref = base.reference_batch_size
    if base.scaling != "none" and not low <= ref <= high:
        # The searched base rate is the rate at the reference; keep the reference meaningful.
        reasons.append(f"learning-rate reference batch size {ref} kept from the base space")
    space = replace(
        base,
        batch_low=low,
        batch_high=high,
        reference_batch_size=ref if base.scaling != "none" else low,
        micro_batch_size=micro,
        name=f"{base.name}-probed",
        description=f"{base.name} narrowed by bstune probe: " + "; ".join(reasons),
        source="<probe>",
    )
    return SearchSpace.from_dict(space.to_dict(), source="<probe>"), tuple(reasons)


# ------------------------------------------------------------------ measuring


def _resting_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes held between steps: parameters, gradients and optimizer state (counted once each)."""
    import torch

    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.element_size() * t.nelement()

    for p in model.parameters():
        add(p)
        add(p.grad)
    for state in opt.state.values():
        for v in state.values():
            add(v)
    for b in model.buffers():
        add(b)
    return total


def _host_available() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging bypasses ``sys.stderr``) for a short window."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Meter:
    """Peak memory of one training step on the trainer's device."""

    _primed = False

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.excess = 0  # on the CPU: the peak above the resting state

    @contextmanager
    def measure(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> Iterator[None]:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            torch.cuda.synchronize(self.device)  # sync point
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
            return
        if self.device.type != "cpu":
            yield
            self.peak = None
            return
        from torch.profiler import ProfilerActivity, profile

        resting = _resting_bytes(model, opt)
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        # Freeing a block allocated before profiling started warns once; spend that warning here.
        old = None if _Meter._primed else torch.empty(1024)
        with _quiet_stderr():  # the profiler logs a line to stderr at every start and stop
            prof.__enter__()
            if old is not None:
                _Meter._primed = True
                del old
        try:
            yield
        finally:
            with _quiet_stderr():
                prof.__exit__(None, None, None)
        # Replaying each op's net allocation in start order gives the step's peak excess at op
        # granularity; the optimizer state a first step allocates shows up in it too.
        current = excess = 0
        for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
            current += int(ev.self_cpu_memory_usage)
            excess = max(excess, current)
        self.excess = excess
        self.peak = resting + excess


def _memory_error(message: str) -> BaseException:
    import torch

    cls = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return cls(message)


def run_probe(
    task: Task,
    *,
    space: SearchSpace | str | None = None,
    trainer: Trainer | None = None,
    device: str = "auto",
    params: Mapping[str, Any] | None = None,
    max_batch_size: int | None = None,
    min_batch_size: int = 8,
    safety_margin: float = 0.1,
    memory_limit: int | None = None,
    step_seconds: float = 0.25,
    noise_steps: int = 30,
    noise_seconds: float = 30.0,
    noise_batch_sizes: tuple[int, int] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ProbeResult:
    """Measure memory, throughput and the noise scale of ``task``'s training step; narrow ``space``.

    Args:
        task: A task with ``data()`` and ``model(hp)`` (the built-in trainer's kind).
        space: The base space (name, path or object); default: the task's ``DEFAULTS["space"]``,
            else ``default``.
        trainer: The trainer whose data, model, optimizer, loss and device are probed; default
            ``Trainer(task, device=device, seed=seed)``.
        device: The device when no trainer is given.
        params: Extra model parameters for the probe's model (see :func:`probe_hyperparams`).
        max_batch_size: The largest batch size the memory search tries; default 4096 on the CPU
            (where memory rarely limits and each try costs seconds), 65536 elsewhere.
        min_batch_size: The smallest batch size whose throughput is measured.
        safety_margin: Fraction taken off the largest batch that fits, when memory stopped it.
        memory_limit: Bytes; a step whose peak exceeds it counts as out of memory (default: the
            device's memory on CUDA, half the available host memory on the CPU).
        step_seconds: Least timed seconds per batch size (and at least two steps).
        noise_steps: Steps to average the noise scale over (0 skips it); a fixed count, so the
            estimate and the narrowed space do not depend on the machine's speed.
        noise_seconds: The most seconds the noise scale may take (it stops early, and says so).
        noise_batch_sizes: ``(b_small, b_big)`` for the noise scale; default ``(32, 1024)`` cut to
            the data and the memory found.
        seed: Seeds the models and the sampled batches.
        log: Receives every decision as one line.
        clock: A monotonic clock (seconds).

    Raises:
        BstuneError: The task owns its loop (``train(hp, run)``): there is no step to measure.
    """
    import torch

    if task.owns_loop:
        raise BstuneError(
            f"task script {str(task.path)!r} defines train(hp, run); bstune probe needs data() and model(hp) "
            "so that it can run the training step itself"
        )
    for name, value in (("max_batch_size", max_batch_size), ("min_batch_size", min_batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise invalid(name, "probe", "an int in the range [1, inf)", value)
    if not 0.0 <= safety_margin < 1.0:
        raise invalid("safety_margin", "probe", "a number in the range [0, 1)", safety_margin)
    if memory_limit is not None and memory_limit <= 0:
        raise invalid("memory_limit", "probe", "a number of bytes greater than 0", memory_limit)
    if not step_seconds > 0:
        raise invalid("step_seconds", "probe", "a number greater than 0", step_seconds)
    if isinstance(noise_steps, bool) or not isinstance(noise_steps, int) or noise_steps < 0:
        raise invalid("noise_steps", "probe", "an int in the range [0, inf)", noise_steps)
    if not noise_seconds > 0:
        raise invalid("noise_seconds", "probe", "a number greater than 0", noise_seconds)
    say = log or (lambda s: None)
    seconds: dict[str, float] = {}
    t_start = clock()

    from bstune.train import Trainer

    trainer = trainer or Trainer(task, seed=seed, device=device)
    base = space if isinstance(space, SearchSpace) else load_space(space or task.defaults.get("space", "default"))
    data = trainer.data()
    n = data.n_train
    hp = probe_hyperparams(base, params)
    dev = trainer.device
    sync = trainer.sync or (lambda: None)
    seconds["data"] = clock() - t_start

    if dev.type == "cuda":
        total = int(torch.cuda.mem_get_info(dev)[1])
        limit_bytes, source = (memory_limit, "set") if memory_limit and memory_limit < total else (total, "device")
    else:
        avail = _host_available()
        if memory_limit is not None:
            limit_bytes, source = memory_limit, "set"
        elif avail is not None:
            limit_bytes, source = avail // 2, "host budget"
        else:
            limit_bytes, source = None, "none"
    extras = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.params.items())
    say(
        f"probing {task.name} on {trainer.device_name}: {n:,} training samples"
        + (f", model with {extras}" if extras else "")
        + (f", memory limit {limit_bytes / MIB:,.0f} MiB ({source})" if limit_bytes else "")
    )

    torch.manual_seed(seed)
    model, opt, loss_fn = trainer.parts(hp)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    meter = _Meter(dev)

    def step(b: int) -> None:
        idx = torch.randint(0, n, (b,), generator=gen)
        if not trainer.data_on_device:
            idx = idx.to("cpu")
        else:
            idx = idx.to(data.x_train.device)
        xb, yb = trainer.batch(idx)
        opt.zero_grad(set_to_none=True)
        with trainer.autocast():
            loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()

    # ---- the largest batch that fits
    last_fit: list[tuple[int, int]] = []  # (batch, peak above resting) of the largest size that fitted
    peaks: dict[int, int] = {}

    def try_batch(b: int) -> None:
        if dev.type == "cpu" and limit_bytes and last_fit:
            b0, excess0 = last_fit[-1]
            predicted = _resting_bytes(model, opt) + excess0 * b / b0  # activations grow with the batch
            if predicted > limit_bytes:
                # Trying it could get the process killed rather than raise.
                raise _memory_error(
                    f"predicted peak {predicted / MIB:,.0f} MiB (from {b0}) exceeds the limit {limit_bytes / MIB:,.0f} MiB"
                )
        with meter.measure(model, opt):
            step(b)
        peak = meter.peak
        if peak is not None:
            peaks[b] = peak
            if limit_bytes and peak > limit_bytes:
                raise _memory_error(f"peak {peak / MIB:,.0f} MiB exceeds the limit {limit_bytes / MIB:,.0f} MiB")
        if not last_fit or b > last_fit[-1][0]:
            last_fit.append((b, meter.excess))
        if peak is not None:
            say(f"batch size {b}: peak {peak / MIB:,.1f} MiB")

    if max_batch_size is None:
        max_batch_size = 4096 if dev.type == "cpu" else 65536
    bound = min(n, max_batch_size)
    t = clock()
    try:
        step(1)  # allocates gradients and optimizer state, so later peaks count them as resting
    except Exception as e:
        from bstune.memory import is_oom

        if not is_oom(e):
            raise
    free_memory()
    search = find_max_batch_size(try_batch, bound=bound, safety_margin=safety_margin, log=say)
    seconds["memory"] = clock() - t
    why = "memory" if search.memory_bound else ("the data set size" if bound == n else "--max-batch-size")
    say(f"largest batch that fits: {search.largest} (set by {why}); micro-batch limit {search.limit}")

    # ---- throughput and peak memory per batch size
    t = clock()
    raw: list[tuple[int, float, float, int, int | None]] = []
    for b in probe_sizes(min(min_batch_size, search.largest), search.largest):
        try:
            with meter.measure(model, opt):
                step(b)  # warm-up, not timed: first-call costs, allocator growth
            peak = meter.peak
            # Three blocks of steps, each closed by a sync; the fastest block counts, as timeit
            # advises: slower blocks measure other processes that took the processor, not the step.
            rates, k = [], 0
            for _ in range(3):
                sync()
                t0 = clock()
                kb = 0
                while kb < 1 or (clock() - t0 < step_seconds / 3 and kb < 100):
                    step(b)
                    kb += 1
                sync()  # sync point: the clock must see finished work
                rates.append(kb * b / (clock() - t0))
                k += kb
            rate = max(rates)
        except Exception as e:
            from bstune.memory import is_oom

            if not is_oom(e):
                raise
            free_memory()
            say(f"batch size {b}: out of memory while timing; left out")
            continue
        raw.append((b, rate, b / rate, k, peak))
        say(f"batch size {b}: {rate:,.0f} samples/s (fastest of 3 blocks, {k} steps)")
    measurements = _with_power_of_two_ratios(raw)
    seconds["throughput"] = clock() - t
    del model, opt
    free_memory()

    # ---- the gradient noise scale
    noise = None
    t = clock()
    if noise_steps > 0:
        b_small, b_big = noise_batch_sizes or (min(32, search.limit), 1024)
        b_big = min(b_big, n)
        if b_big // b_small >= 2:
            hp_noise = replace(hp, batch_size=b_big, learning_rate=base.scaled_learning_rate(hp.base_learning_rate, b_big))
            torch.manual_seed(seed)
            model, opt, loss_fn = trainer.parts(hp_noise)
            model.train()
            perm_gen = torch.Generator().manual_seed(seed + 1)
            state = {"perm": torch.randperm(n, generator=perm_gen), "pos": 0}

            def sample(size: int) -> tuple[torch.Tensor, torch.Tensor]:
                if state["pos"] + size > n:  # type: ignore[operator]
                    state["perm"], state["pos"] = torch.randperm(n, generator=perm_gen), 0
                pos = int(state["pos"])  # type: ignore[call-overload]
                idx = state["perm"][pos : pos + size]  # type: ignore[index]
                state["pos"] = pos + size
                if trainer.data_on_device:
                    idx = idx.to(data.x_train.device)
                return trainer.batch(idx)

            say(
                f"gradient noise scale: micro-batches of {b_small} in batches of {b_big // b_small * b_small}, "
                f"training at learning rate {hp_noise.learning_rate:.3g} for {noise_steps} steps"
            )
            noise = measure_noise_scale(
                model,
                loss_fn,
                sample,
                b_small=b_small,
                b_big=b_big,
                n_steps=noise_steps,
                optimizer=opt,
                autocast=trainer.autocast,
                time_limit=noise_seconds,
                clock=clock,
                sync=trainer.sync,
                burn_in_fraction=NOISE_BURN_IN,
            )
            if noise.n_steps < noise_steps:
                say(f"noise scale: stopped after {noise.n_steps} of {noise_steps} steps at the {noise_seconds:g} s limit")
            say(
                f"B_simple = tr(Sigma)/|G|^2 = {noise.trace_sigma:.4g}/{noise.grad_sq:.4g} = {noise.b_simple:.1f} "
                f"averaged over steps {noise.n_burn_in + 1} to {noise.n_steps}"
            )
            del model, opt
            free_memory()
        else:
            say(f"noise scale skipped: batches of {b_big} hold fewer than two micro-batches of {b_small}")
    seconds["noise"] = clock() - t

    narrowed, reasons = narrow_space(
        base,
        search=search,
        critical=noise.b_simple if noise is not None else None,
        n_train=n,
        throughput={m.batch_size: m.samples_per_s for m in measurements},
    )
    for r in reasons:
        say(r)
    seconds["total"] = clock() - t_start
    busy = _busy()
    if busy:
        say(f"the machine was busy ({busy}): throughput figures are noisy; probe again on a quiet machine")
    return ProbeResult(
        task=task.name,
        device=trainer.device_name,
        n_train=n,
        hp=hp,
        base_space=base,
        search=search,
        memory_limit_bytes=limit_bytes,
        memory_limit_source=source,
        measurements=measurements,
        noise=noise,
        space=narrowed,
        reasons=reasons,
        seconds=seconds,
        busy=busy,
    )


def _busy() -> str:
    """'load 6.1 on 2 cores' when the one-minute load average exceeds the processors, else ''."""
    import os

    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return ""
    cpus = os.cpu_count() or 1
    return f"load {load:.1f} on {cpus} cores" if load > cpus + 0.5 else ""


def _with_power_of_two_ratios(
    raw: list[tuple[int, float, float, int, int | None]],
) -> tuple[BatchMeasurement, ...]:
    pow2 = {b: s for b, s, *_ in raw if b & (b - 1) == 0}
    out = []
    for b, sps, step_s, k, peak in raw:
        ratio = None
        if b & (b - 1):
            lo, hi = _pow2_floor(b), _pow2_ceil(b)
            if lo in pow2 and hi in pow2:
                # Log-linear interpolation between the neighbouring powers of two.
                w = (math.log2(b) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
                expected = math.exp((1 - w) * math.log(pow2[lo]) + w * math.log(pow2[hi]))
                ratio = sps / expected
        out.append(BatchMeasurement(b, sps, step_s, k, peak, ratio))
    return tuple(out)


# ------------------------------------------------------------------ rendering


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def probe_table(result: ProbeResult) -> Table:
    """The measurements as a rich table, one row per batch size."""
    from rich.table import Table

    table = Table(title=f"bstune probe: {result.task} on {result.device}", title_justify="left")
    table.add_column("batch", justify="right")
    table.add_column("step ms", justify="right")
    table.add_column("samples/s", justify="right")
    table.add_column("vs 2^k", justify="right")
    table.add_column("peak MiB", justify="right")
    table.add_column("note")
    best = max((m.samples_per_s for m in result.measurements), default=0.0)
    crit = result.critical_batch_size
    for m in result.measurements:
        notes = []
        if m.samples_per_s == best:
            notes.append("fastest")
        if m.batch_size == result.search.largest:
            notes.append("largest that fits" if result.search.memory_bound else "largest tried")
        if crit is not None and math.isfinite(crit) and _pow2_floor(crit) <= m.batch_size < 2 * _pow2_floor(crit) and m.power_of_two:
            notes.append(f"B_crit ~ {crit:.0f}")
        vs = "" if m.vs_powers_of_two is None else f"{100 * (m.vs_powers_of_two - 1):+.0f}%"
        table.add_row(
            f"[bold]{m.batch_size}[/]" if m.power_of_two else str(m.batch_size),
            f"{1000 * m.step_s:,.1f}",
            f"{m.samples_per_s:,.0f}",
            vs,
            _fmt_bytes(m.peak_memory_bytes),
            ", ".join(notes),
        )
    return table


def summary_lines(result: ProbeResult) -> list[str]:
    """The findings in a few sentences, for the terminal and the space file's header."""
    s = result.search
    lines = []
    if s.memory_bound:
        lines.append(f"largest batch that fits: {s.largest} (fails at {s.first_failure}); micro-batch limit {s.limit}")
    else:
        lines.append(f"largest batch tried: {s.largest} (the bound: data set size or --max-batch-size); memory never ran out")
    if result.memory_limit_bytes:
        lines.append(f"memory limit: {result.memory_limit_bytes / MIB:,.0f} MiB ({result.memory_limit_source})")
    if result.busy:
        lines.append(f"the machine was busy during the probe ({result.busy}): throughput figures are noisy")
    ratios = [m.vs_powers_of_two for m in result.measurements if m.vs_powers_of_two is not None]
    if ratios:
        mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))  # geometric: ratios
        lines.append(
            f"sizes between powers of two run at {100 * mean:.0f}% of the throughput interpolated from their "
            f"neighbouring powers of two (range {100 * min(ratios):.0f}% to {100 * max(ratios):.0f}%, {len(ratios)} sizes)"
        )
    if result.noise is not None:
        nz = result.noise
        lines.append(
            f"gradient noise scale B_simple = {nz.b_simple:.1f} (critical batch size estimate; averaged over "
            f"steps {nz.n_burn_in + 1} to {nz.n_steps} of training, micro-batches of {nz.b_small} in batches of {nz.b_big})"
        )
    sp = result.space
    lines.append(
        f"narrowed space: batch sizes {sp.batch_low} to {sp.batch_high}"
        + (f", micro-batch {sp.micro_batch_size} (gradient accumulation above it)" if sp.micro_batch_size else "")
    )
    return lines


def write_space(result: ProbeResult, path: str | Path) -> Path:
    """Write the narrowed space as a YAML file that ``bstune optimize --space FILE`` accepts.

    The findings go in comments at the top; the file is loaded back to check it.
    """
    import yaml

    p = Path(path)
    header = [f"Written by bstune probe for {result.task} on {result.device}.", *summary_lines(result)]
    header += [f"reason: {r}" for r in result.reasons]
    body = yaml.safe_dump(result.space.to_dict(), sort_keys=False, width=100)
    p.write_text("".join(f"# {h}\n" for h in header) + body, encoding="utf-8")
    load_space(p)
    return p


def plot_probe(result: ProbeResult, path: str | Path) -> Path:
    """Draw throughput and peak memory against batch size (log2 axis) to a PNG at ``path``.

    The largest batch that fits, the memory limit, the critical batch size and the narrowed batch
    range (with the part that needs gradient accumulation) are marked; a third panel shows how the
    noise-scale estimate settled over its steps. Needs matplotlib (imported here, not with bstune).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    ms = result.measurements
    s = result.search
    sp = result.space
    crit = result.critical_batch_size or 0.0
    crit_ok = math.isfinite(crit) and crit > 0
    fig = plt.figure(figsize=(10, 9.5))
    grid = fig.add_gridspec(3, 1, height_ratios=[3.2, 2.2, 1.4], hspace=0.08)
    ax1 = fig.add_subplot(grid[0])
    ax2 = fig.add_subplot(grid[1], sharex=ax1)
    ax3 = fig.add_subplot(grid[2])
    title = f"bstune probe: {result.task} on {result.device}, {result.n_train:,} training samples"
    if result.hp.params:
        title += "\nmodel: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.hp.params.items()
        )
    if result.busy:
        title += f"  (machine busy during the probe: {result.busy})"
    fig.suptitle(title, fontsize=11, x=0.07, y=0.985, ha="left")

    # Throughput: powers of two filled, sizes between them hollow.
    xs = [m.batch_size for m in ms]
    p2 = [m for m in ms if m.power_of_two]
    other = [m for m in ms if not m.power_of_two]
    ax1.plot([m.batch_size for m in p2], [m.samples_per_s for m in p2], color="C0", lw=1.2, alpha=0.6, zorder=2)
    ax1.scatter([m.batch_size for m in p2], [m.samples_per_s for m in p2], s=40, color="C0", zorder=3,
                label="power of two")
    ax1.scatter([m.batch_size for m in other], [m.samples_per_s for m in other], s=40, facecolor="white",
                edgecolor="C1", lw=1.6, marker="s", zorder=3, label="between powers of two (2^k+1, 3·2^(k-1))")
    if ms:
        best = max(ms, key=lambda m: m.samples_per_s)
        ax1.annotate(f"fastest: {best.batch_size}, {best.samples_per_s:,.0f}/s", (best.batch_size, best.samples_per_s),
                     xytext=(0, -30), textcoords="offset points", ha="center", fontsize=8, color="0.2",
                     arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.8})
        ax1.set_ylim(0, best.samples_per_s * 1.15)
    ax1.set_ylabel("training samples / s")
    ax1.grid(True, alpha=0.3)
    ax1.tick_params(labelbottom=False)

    # Memory: log-log, so the line is straight where memory grows with the batch.
    mem = [(m.batch_size, m.peak_memory_bytes / MIB) for m in ms if m.peak_memory_bytes]
    if mem:
        ax2.plot([b for b, _ in mem], [v for _, v in mem], color="C2", marker="o", ms=4, lw=1.2,
                 label="peak memory of a training step")
    limit_mib = result.memory_limit_bytes / MIB if result.memory_limit_bytes else None
    top_mib = max((v for _, v in mem), default=1.0)
    if limit_mib is not None and limit_mib <= 30 * top_mib:
        ax2.axhline(limit_mib, color="C3", lw=1.6,
                    label=f"memory limit: {limit_mib:,.0f} MiB ({result.memory_limit_source})")
    elif limit_mib is not None:
        # A limit far above every peak would flatten the curve; name it instead of drawing it.
        ax2.text(0.99, 0.95, f"memory limit {limit_mib:,.0f} MiB ({result.memory_limit_source}): "
                 f"{limit_mib / top_mib:,.0f}x the largest peak, off the chart ↑",
                 transform=ax2.transAxes, ha="right", va="top", fontsize=8, color="C3")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if mem and max(v for _, v in mem) < 10 * min(v for _, v in mem):  # under a decade: label minor ticks
        ax2.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax2.set_ylabel("peak memory (MiB)")
    ax2.grid(True, which="major", alpha=0.3)

    for ax in (ax1, ax2):
        ax.axvspan(sp.batch_low, min(sp.batch_high, s.limit), color="C0", alpha=0.08, lw=0)
        if sp.batch_high > s.limit:
            ax.axvspan(s.limit, sp.batch_high, facecolor=(0.58, 0.40, 0.74, 0.08),
                       edgecolor=(0.58, 0.40, 0.74, 0.35), lw=0, hatch="//")
        ax.axvline(s.largest, color="C3", ls="-" if s.memory_bound else ":", lw=1.3)
        if crit_ok:
            ax.axvline(crit, color="C4", ls="--", lw=1.6)
    lo = min([*xs, sp.batch_low]) / 1.25
    hi = max([*xs, sp.batch_high, crit if crit_ok else 1.0]) * 1.25
    box = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85}
    ax2.text(s.largest, 0.04, f"{'largest that fits' if s.memory_bound else 'largest tried'}: {s.largest} ",
             transform=ax2.get_xaxis_transform(), color="C3", ha="right", va="bottom", fontsize=8, bbox=box)
    if crit_ok:
        right_half = math.log(crit / lo) > 0.5 * math.log(hi / lo)  # label on the side with room
        ax1.text(crit, 0.97, f" critical batch ≈ {crit:.0f} (B_simple) ", transform=ax1.get_xaxis_transform(),
                 color="C4", ha="right" if right_half else "left", va="top", fontsize=9, bbox=box)
    handles, labels = ax1.get_legend_handles_labels()
    handles.append(Patch(color="C0", alpha=0.25, label=f"narrowed search: batch {sp.batch_low} to {sp.batch_high}"))
    if sp.batch_high > s.limit:
        handles.append(Patch(facecolor=(0.58, 0.40, 0.74, 0.08), edgecolor=(0.58, 0.40, 0.74, 0.5), hatch="//",
                             label=f"gradient accumulation (micro-batch {s.limit})"))
    ax1.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.95)
    ax2.legend(loc="upper left", fontsize=8, framealpha=0.95)

    ax2.set_xscale("log", base=2)
    ax2.set_xlim(lo, hi)
    ticks = [2**k for k in range(64) if lo <= 2**k <= hi]
    ax2.xaxis.set_major_locator(FixedLocator(ticks))
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}"))
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.set_xlabel("batch size (log2 scale)")

    # How the noise-scale estimate settled.
    nz = result.noise
    if nz is not None and nz.running:
        steps = list(range(1, len(nz.running) + 1))
        finite = [(i, v) for i, v in zip(steps, nz.running, strict=True) if math.isfinite(v) and v > 0]
        if finite:
            ax3.plot([i for i, _ in finite], [v for _, v in finite], color="C4", marker=".", lw=1.2,
                     label="moving estimate")
        if nz.n_burn_in:
            ax3.axvspan(0.5, nz.n_burn_in + 0.5, color="0.5", alpha=0.12, lw=0, label="left out (burn-in)")
        if math.isfinite(nz.b_simple):
            ax3.hlines(nz.b_simple, nz.n_burn_in + 0.5, nz.n_steps + 0.5, color="C4", ls="--", lw=1.2,
                       label=f"estimate: {nz.b_simple:.0f}")
        ax3.set_xlim(0.5, nz.n_steps + 0.5)
        ax3.legend(loc="upper left", fontsize=8, framealpha=0.95)
        ax3.set_xlabel(f"noise-scale training step (batches of {nz.b_big}, micro-batches of {nz.b_small})")
        ax3.set_ylabel("B_simple")
        ax3.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax3.grid(True, alpha=0.3)
    else:
        ax3.text(0.5, 0.5, "noise scale not measured", ha="center", va="center", transform=ax3.transAxes)
        ax3.set_axis_off()
    fig.subplots_adjust(left=0.09, right=0.97, top=0.91 if result.hp.params else 0.94, bottom=0.06)
    grid.update(hspace=0.12)
    fig.align_ylabels([ax1, ax2, ax3])
    # The third panel has its own x axis: set it apart from the two that share one.
    pos = ax3.get_position()
    ax3.set_position((pos.x0, pos.y0, pos.width, pos.height * 0.85))
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
