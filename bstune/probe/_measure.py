"""Measuring on the task's own model and device: the largest batch, throughput, peak memory, noise scale."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bstune.errors import BstuneError, check, check_int
from bstune.memory import find_max_batch_size, free_memory
from bstune.noise import measure_noise_scale
from bstune.probe._narrow import narrow_space, pow2_ceil, pow2_floor, probe_hyperparams, probe_sizes
from bstune.probe._result import MIB, NOISE_BURN_IN, BatchMeasurement, ProbeResult
from bstune.space import SearchSpace, load_space
from bstune.task import Task

if TYPE_CHECKING:
    import torch

    from bstune.memory import BatchSearch
    from bstune.noise import NoiseScale
    from bstune.space import Hyperparams
    from bstune.train import Trainer


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
        params: Extra model parameters for the probe's model (see ``probe_hyperparams``).
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
        seed: Seeds the models and the sampled batches. log: receives every decision as one line.
        clock: A monotonic clock (seconds).

    Raises:
        BstuneError: The task owns its loop (``train(hp, run)``): there is no step to measure.
    """
    _check_probe_arguments(task, locals())
    from bstune.train import Trainer

    t_start = clock()
    trainer = trainer or Trainer(task, seed=seed, device=device)
    base = space if isinstance(space, SearchSpace) else load_space(space or task.defaults.get("space", "default"))
    p = _Probe(trainer, seed, log or (lambda s: None), clock, t_start)
    hp = probe_hyperparams(base, params)
    p.seconds["data"] = p.clock() - p.t_start
    limit_bytes, source = _memory_limit(p.trainer.device, memory_limit)
    p.build(task, hp, limit_bytes, source)
    if max_batch_size is None:
        max_batch_size = 4096 if p.trainer.device.type == "cpu" else 65536
    search = p.largest_batch(bound=min(p.n, max_batch_size), safety_margin=safety_margin, limit_bytes=limit_bytes)
    measurements = p.throughput(min(min_batch_size, search.largest), search.largest, step_seconds)
    t = p.clock()
    noise = p.noise_scale(base, hp, noise_batch_sizes or (min(32, search.limit), 1024), noise_steps, noise_seconds)
    p.seconds["noise"] = p.clock() - t
    narrowed, reasons = narrow_space(
        base, search=search, critical=noise.b_simple if noise is not None else None, n_train=p.n,
        throughput={m.batch_size: m.samples_per_s for m in measurements},
    )
    for r in reasons:
        p.say(r)
    p.seconds["total"] = p.clock() - p.t_start
    if busy := _busy():
        p.say(f"the machine was busy ({busy}): throughput figures are noisy; probe again on a quiet machine")
    return ProbeResult(
        task=task.name, device=p.trainer.device_name, n_train=p.n, hp=hp, base_space=base, search=search,
        memory_limit_bytes=limit_bytes, memory_limit_source=source, measurements=measurements, noise=noise,
        space=narrowed, reasons=reasons, seconds=p.seconds, busy=busy,
    )


def _check_probe_arguments(task: Task, a: dict[str, Any]) -> None:
    if task.owns_loop:
        raise BstuneError(
            f"task script {str(task.path)!r} defines train(hp, run); bstune probe needs data() and model(hp) "
            "so that it can run the training step itself"
        )
    check_int("probe", "max_batch_size", a["max_batch_size"], 1, none=True)
    check_int("probe", "min_batch_size", a["min_batch_size"], 1, none=True)
    check("probe", "safety_margin", a["safety_margin"], "a number in the range [0, 1)", lambda v: 0 <= v < 1)
    check("probe", "memory_limit", a["memory_limit"], "a number of bytes greater than 0", lambda v: v > 0, none=True)
    check("probe", "step_seconds", a["step_seconds"], "a number greater than 0", lambda v: v > 0)
    check_int("probe", "noise_steps", a["noise_steps"], 0)
    check("probe", "noise_seconds", a["noise_seconds"], "a number greater than 0", lambda v: v > 0)


def _memory_limit(dev: torch.device, memory_limit: int | None) -> tuple[int | None, str]:
    """Bytes a step may use and where that figure comes from (set, device, host budget, none)."""
    import torch

    if dev.type == "cuda":
        total = int(torch.cuda.mem_get_info(dev)[1])
        return (memory_limit, "set") if memory_limit and memory_limit < total else (total, "device")
    if memory_limit is not None:
        return memory_limit, "set"
    avail = _host_available()
    return (avail // 2, "host budget") if avail is not None else (None, "none")


class _Probe:
    """One probe's trainer, model and clocks, and its three measurements in the order they run."""

    def __init__(
        self, trainer: Trainer, seed: int, say: Callable[[str], None], clock: Callable[[], float], t_start: float
    ) -> None:
        self.trainer, self.seed, self.say, self.clock, self.t_start = trainer, seed, say, clock, t_start
        self.seconds: dict[str, float] = {}
        self.data = trainer.data()
        self.n = self.data.n_train
        self.sync = trainer.sync or (lambda: None)
        self.meter = _Meter(trainer.device)

    def build(self, task: Task, hp: Hyperparams, limit_bytes: int | None, source: str) -> None:
        """The model and optimizer whose step is measured, and the sampler of its batches."""
        import torch

        extras = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.params.items())
        self.say(
            f"probing {task.name} on {self.trainer.device_name}: {self.n:,} training samples"
            + (f", model with {extras}" if extras else "")
            + (f", memory limit {limit_bytes / MIB:,.0f} MiB ({source})" if limit_bytes else "")
        )
        torch.manual_seed(self.seed)
        self.model, self.opt, self.loss_fn = self.trainer.parts(hp)
        self.model.train()
        self.gen = torch.Generator().manual_seed(self.seed)

    def step(self, b: int) -> None:
        import torch

        idx = torch.randint(0, self.n, (b,), generator=self.gen)
        idx = idx.to(self.data.x_train.device) if self.trainer.data_on_device else idx.to("cpu")
        xb, yb = self.trainer.batch(idx)
        self.opt.zero_grad(set_to_none=True)
        with self.trainer.autocast():
            loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        self.opt.step()

    def largest_batch(self, *, bound: int, safety_margin: float, limit_bytes: int | None) -> BatchSearch:
        """The largest batch whose step fits in ``limit_bytes``, by doubling then bisection."""
        dev = self.trainer.device
        last_fit: list[tuple[int, int]] = []  # (batch, peak above resting) of the largest size that fitted

        def try_batch(b: int) -> None:
            if dev.type == "cpu" and limit_bytes and last_fit:
                b0, excess0 = last_fit[-1]
                predicted = _resting_bytes(self.model, self.opt) + excess0 * b / b0  # activations grow with the batch
                if predicted > limit_bytes:
                    # Trying it could get the process killed rather than raise.
                    raise _memory_error(
                        f"predicted peak {predicted / MIB:,.0f} MiB (from {b0}) exceeds the limit {limit_bytes / MIB:,.0f} MiB"
                    )
            with self.meter.measure(self.model, self.opt):
                self.step(b)
            peak = self.meter.peak
            if peak is not None and limit_bytes and peak > limit_bytes:
                raise _memory_error(f"peak {peak / MIB:,.0f} MiB exceeds the limit {limit_bytes / MIB:,.0f} MiB")
            if not last_fit or b > last_fit[-1][0]:
                last_fit.append((b, self.meter.excess))
            if peak is not None:
                self.say(f"batch size {b}: peak {peak / MIB:,.1f} MiB")

        t = self.clock()
        try:
            self.step(1)  # allocates gradients and optimizer state, so later peaks count them as resting
        except Exception as e:
            from bstune.memory import is_oom

            if not is_oom(e):
                raise
        free_memory()
        search = find_max_batch_size(try_batch, bound=bound, safety_margin=safety_margin, log=self.say)
        self.seconds["memory"] = self.clock() - t
        why = "memory" if search.memory_bound else ("the data set size" if bound == self.n else "--max-batch-size")
        self.say(f"largest batch that fits: {search.largest} (set by {why}); micro-batch limit {search.limit}")
        return search

    def throughput(self, smallest: int, largest: int, step_seconds: float) -> tuple[BatchMeasurement, ...]:
        """Samples per second and peak memory per batch size; frees the model afterwards."""
        t = self.clock()
        raw: list[tuple[int, float, float, int, int | None]] = []
        for b in probe_sizes(smallest, largest):
            try:
                with self.meter.measure(self.model, self.opt):
                    self.step(b)  # warm-up, not timed: first-call costs, allocator growth
                peak = self.meter.peak
                rate, k = self._timed(b, step_seconds)
            except Exception as e:
                from bstune.memory import is_oom

                if not is_oom(e):
                    raise
                free_memory()
                self.say(f"batch size {b}: out of memory while timing; left out")
                continue
            raw.append((b, rate, b / rate, k, peak))
            self.say(f"batch size {b}: {rate:,.0f} samples/s (fastest of 3 blocks, {k} steps)")
        self.seconds["throughput"] = self.clock() - t
        del self.model, self.opt
        free_memory()
        return _with_power_of_two_ratios(raw)

    def _timed(self, b: int, step_seconds: float) -> tuple[float, int]:
        """(samples/s, steps): three blocks of steps, each closed by a sync; the fastest counts,
        as timeit advises: slower blocks measure other processes that took the processor."""
        rates, k = [], 0
        for _ in range(3):
            self.sync()
            t0 = self.clock()
            kb = 0
            while kb < 1 or (self.clock() - t0 < step_seconds / 3 and kb < 100):
                self.step(b)
                kb += 1
            self.sync()  # sync point: the clock must see finished work
            rates.append(kb * b / (self.clock() - t0))
            k += kb
        return max(rates), k

    def noise_scale(
        self, base: SearchSpace, hp: Hyperparams, sizes: tuple[int, int], steps: int, time_limit: float
    ) -> NoiseScale | None:
        """The gradient noise scale, training a fresh model at the big batch; None if skipped."""
        import torch

        if steps == 0:
            return None
        b_small, b_big = sizes[0], min(sizes[1], self.n)
        if b_big // b_small < 2:
            self.say(f"noise scale skipped: batches of {b_big} hold fewer than two micro-batches of {b_small}")
            return None
        hp_noise = replace(hp, batch_size=b_big, learning_rate=base.scaled_learning_rate(hp.base_learning_rate, b_big))
        torch.manual_seed(self.seed)
        model, opt, loss_fn = self.trainer.parts(hp_noise)
        model.train()
        perm_gen = torch.Generator().manual_seed(self.seed + 1)
        state = {"perm": torch.randperm(self.n, generator=perm_gen), "pos": 0}

        def sample(size: int) -> tuple[torch.Tensor, torch.Tensor]:
            if state["pos"] + size > self.n:  # type: ignore[operator]
                state["perm"], state["pos"] = torch.randperm(self.n, generator=perm_gen), 0
            pos = int(state["pos"])  # type: ignore[call-overload]
            idx = state["perm"][pos : pos + size]  # type: ignore[index]
            state["pos"] = pos + size
            if self.trainer.data_on_device:
                idx = idx.to(self.data.x_train.device)
            return self.trainer.batch(idx)

        self.say(
            f"gradient noise scale: micro-batches of {b_small} in batches of {b_big // b_small * b_small}, "
            f"training at learning rate {hp_noise.learning_rate:.3g} for {steps} steps"
        )
        noise = measure_noise_scale(
            model, loss_fn, sample, b_small=b_small, b_big=b_big, n_steps=steps, optimizer=opt,
            autocast=self.trainer.autocast, time_limit=time_limit, clock=self.clock, sync=self.trainer.sync,
            burn_in_fraction=NOISE_BURN_IN,
        )
        if noise.n_steps < steps:
            self.say(f"noise scale: stopped after {noise.n_steps} of {steps} steps at the {time_limit:g} s limit")
        self.say(
            f"B_simple = tr(Sigma)/|G|^2 = {noise.trace_sigma:.4g}/{noise.grad_sq:.4g} = {noise.b_simple:.1f} "
            f"averaged over steps {noise.n_burn_in + 1} to {noise.n_steps}"
        )
        del model, opt
        free_memory()
        return noise


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
            lo, hi = pow2_floor(b), pow2_ceil(b)
            if lo in pow2 and hi in pow2:
                # Log-linear interpolation between the neighbouring powers of two.
                w = (math.log2(b) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
                expected = math.exp((1 - w) * math.log(pow2[lo]) + w * math.log(pow2[hi]))
                ratio = sps / expected
        out.append(BatchMeasurement(b, sps, step_s, k, peak, ratio))
    return tuple(out)
