"""Out-of-memory detection and recovery, in one place.

An out-of-memory error is recognised by its type first (``torch.OutOfMemoryError`` for CUDA and
MPS, Python's ``MemoryError`` for CPU allocations), then by the message of a ``RuntimeError`` from
older torch builds that raise no dedicated type. Any other error is left alone. This module imports
torch only if the caller already has.

It also owns the search for the largest batch that fits (doubling, then bisection, with a safety
margin) and the gradient-accumulation plan for effective batches beyond it.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bstune.errors import BstuneError, check, check_int, invalid

__all__ = [
    "BatchSearch",
    "accumulation_plan",
    "find_max_batch_size",
    "free_memory",
    "is_oom",
    "peak_rss_bytes",
    "record_peak_memory",
    "reset_peak_memory",
]

_logger = logging.getLogger("bstune.memory")

_OOM_MESSAGES = ("out of memory", "CUDA error: out of memory", "MPS backend out of memory")


def is_oom(exc: BaseException | None) -> bool:
    """Whether ``exc`` means the device or the host ran out of memory.

    Examples:
        >>> is_oom(MemoryError()), is_oom(ValueError("out of memory"))
        (True, False)
    """
    if exc is None:
        return False
    if isinstance(exc, MemoryError):
        return True
    for cls in type(exc).__mro__:
        if cls.__name__ == "OutOfMemoryError" and cls.__module__.startswith("torch"):
            return True
    return type(exc) is RuntimeError and any(m in str(exc) for m in _OOM_MESSAGES)


def free_memory() -> None:
    """Release what a failed trial held: Python garbage, then the device allocators' caches."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()


# ------------------------------------------------------------------ the largest batch that fits


@dataclass(frozen=True)
class BatchSearch:
    """What the search for the largest batch that fits found.

    Attributes:
        largest: The largest batch size that fitted.
        limit: ``largest`` less the safety margin, when memory stopped the search; else ``largest``.
            Use it as the micro-batch size: a batch that barely fitted once may not fit every time
            (fragmentation, longer inputs).
        bound: The most that was allowed: the data set size or the maximum, whichever is smaller.
        first_failure: The smallest batch size that did not fit, or ``None`` if none failed.
        tries: Every batch size tried, in order, with whether it fitted.
    """

    largest: int
    limit: int
    bound: int
    first_failure: int | None
    tries: tuple[tuple[int, bool], ...]

    @property
    def memory_bound(self) -> bool:
        """Whether memory, rather than the data set size or the maximum, set the largest batch."""
        return self.first_failure is not None


def find_max_batch_size(
    try_batch: Callable[[int], None],
    *,
    bound: int,
    start: int = 1,
    safety_margin: float = 0.1,
    log: Callable[[str], None] | None = None,
) -> BatchSearch:
    """Find the largest batch size for which ``try_batch`` does not run out of memory.

    Doubling from ``start`` until a size fails or ``bound`` is reached, then bisection between the
    last size that fitted and the first that did not, so the result is exact when fitting is
    monotone in the batch size. Memory is freed after every try. An error that is not
    out-of-memory (see ``is_oom``) propagates untouched.

    Args:
        try_batch: Runs one training step at the given batch size; raises on out of memory.
        bound: The largest size to try (the data set size, or a maximum).
        start: The first size to try.
        safety_margin: Fraction taken off the largest size when memory stopped the search.
        log: Receives one line per decision (default: the ``bstune.memory`` logger).

    Raises:
        BstuneError: Not even a batch of one fits.

    Examples:
        >>> def step(b):
        ...     if b > 37:
        ...         raise MemoryError(f"batch {b}")
        >>> find_max_batch_size(step, bound=1000, log=lambda s: None).largest
        37
    """
    check_int("find_max_batch_size", "bound", bound, 1)
    check_int("find_max_batch_size", "start", start, 1, high=bound)
    check("find_max_batch_size", "safety_margin", safety_margin, "a number in the range [0, 1)", lambda v: 0 <= v < 1)
    say = log or _logger.info
    tries: list[tuple[int, bool]] = []

    def fits(b: int) -> bool:
        try:
            try_batch(b)
            ok = True
        except Exception as e:
            if not is_oom(e):
                raise
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            say(f"batch size {b} does not fit ({reason})")
            ok = False
        finally:
            free_memory()
        tries.append((b, ok))
        return ok

    # Doubling: the first size that does not fit, or the bound.
    lo, hi, b = 0, None, start
    while True:
        if fits(b):
            lo = b
            if b >= bound:
                say(f"batch size {b} fits and is the bound; stopping")
                break
            nxt = min(2 * b, bound)
            say(f"batch size {b} fits; trying {nxt}")
            b = nxt
        else:
            hi = b
            break
    # Bisection between the last that fitted and the first that did not.
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        say(f"bisecting between {lo} (fits) and {hi} (does not): trying {mid}")
        if fits(mid):
            lo = mid
        else:
            hi = mid
    if lo == 0:
        raise BstuneError(f"not even a batch of 1 fits in memory (tried {', '.join(str(t) for t, _ in tries)})")
    limit = lo
    if hi is not None:
        limit = max(1, math.floor(lo * (1.0 - safety_margin)))
        say(f"largest batch that fits: {lo}; with a {safety_margin:.0%} safety margin: {limit}")
    else:
        say(f"largest batch tried: {lo} (the bound); no safety margin, memory never ran out")
    return BatchSearch(largest=lo, limit=limit, bound=bound, first_failure=hi, tries=tuple(tries))


def peak_rss_bytes() -> int:
    """The process's peak resident memory in bytes: an upper bound for a trial on the CPU."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def reset_peak_memory(device: Any) -> None:
    """Start counting the peak of allocated memory on a CUDA ``device`` (nothing elsewhere)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def record_peak_memory(run: Any, device: Any) -> None:
    """Record a trial's peak memory on its ``Run`` (typed loosely: run.py imports this
    module): CUDA allocations since ``reset_peak_memory`` on a CUDA ``device``, else the
    process's peak resident memory, an upper bound for the trial on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        run.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    else:
        run.extra_attrs["peak_rss_bytes"] = peak_rss_bytes()


def accumulation_plan(batch_size: int, micro_limit: int | None) -> tuple[int, int]:
    """The micro-batch size and number of micro-batches for an effective ``batch_size``.

    The micro-batch is the largest that fits (``micro_limit``); the last micro-batch of a step may
    be smaller, so the effective batch is exact.

    Examples:
        >>> accumulation_plan(1024, 300), accumulation_plan(64, 300)
        ((300, 4), (64, 1))
    """
    if batch_size < 1:
        raise invalid("batch_size", "accumulation_plan", "an int in the range [1, inf)", batch_size)
    micro = min(batch_size, micro_limit or batch_size)
    return micro, math.ceil(batch_size / micro)
