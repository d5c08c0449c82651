"""Out-of-memory detection and recovery, in one place.

An out-of-memory error is recognised by its type first (``torch.OutOfMemoryError`` for CUDA and
MPS, Python's ``MemoryError`` for CPU allocations), then by the message of a ``RuntimeError`` from
older torch builds that raise no dedicated type. Any other error is left alone. This module imports
torch only if the caller already has.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["free_memory", "is_oom"]

_OOM_MESSAGES = ("out of memory", "CUDA error: out of memory", "MPS backend out of memory")


def is_oom(exc: BaseException | None) -> bool:
    """Whether ``exc`` means the device or the host ran out of memory.

    Example:
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
