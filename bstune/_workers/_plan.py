"""Which device, GPU and CPU cores each worker process gets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from bstune.errors import BstuneError, check_option

__all__ = ["WorkerPlan", "plan_workers", "visible_gpus"]


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker process gets: its device, its GPU or its CPU cores, its torch threads."""

    index: int
    device: str
    gpu: str | None
    cpu_cores: tuple[int, ...]
    threads: int

    def env(self) -> dict[str, str]:
        """Environment variables the worker starts with (threads are fixed before torch loads)."""
        out = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpu is not None:
            out["CUDA_VISIBLE_DEVICES"] = self.gpu
        return out


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (empty without CUDA)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    n = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:n] if listed else [str(i) for i in range(n)]


def plan_workers(
    n_workers: int,
    device: str = "auto",
    *,
    cpu_cores: Sequence[int] | None = None,
    gpus: Sequence[str] | None = None,
) -> list[WorkerPlan]:
    """One plan per worker: one GPU each, or an equal share of the CPU cores.

    Args:
        n_workers: Worker processes to start.
        device: ``auto`` (GPUs if any, else CPU), ``cpu`` or ``cuda``. A single GPU
            (``cuda:N``) cannot host several workers.
        cpu_cores: The cores this process may run on (default: its affinity).
        gpus: The visible GPUs (default: ``visible_gpus``, asked only when needed).

    Raises:
        BstuneError: More workers than GPUs, or one GPU named for several workers.

    Examples:
        >>> [p.cpu_cores for p in plan_workers(2, "cpu", cpu_cores=[0, 1, 2, 3])]
        [(0, 1), (2, 3)]
    """
    check_option("--workers", n_workers, "an integer of at least 1", lambda v: isinstance(v, int) and v >= 1)
    if device.startswith("cuda:") and n_workers > 1:
        raise BstuneError(
            f"--device {device} names one GPU, and two trials never share one; "
            f"use --device cuda to give each of the {n_workers} workers its own GPU"
        )
    check_option("--device", device, "auto, cpu, cuda or cuda:N",
                 lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), number=False)
    cores = sorted(cpu_cores if cpu_cores is not None else _affinity())
    if device == "cpu":
        gpu_list: list[str] = []
    else:
        gpu_list = list(gpus) if gpus is not None else visible_gpus()
        if device == "cuda" and not gpu_list:
            raise BstuneError("--device cuda: no GPU is visible to this process")
    if gpu_list and n_workers > len(gpu_list):
        raise BstuneError(
            f"--workers {n_workers} needs {n_workers} GPUs "
            "(one trial per GPU, so timings stay honest), "
            f"but {len(gpu_list)} {'is' if len(gpu_list) == 1 else 'are'} visible; "
            f"use --workers {len(gpu_list)}, or --device cpu"
        )
    share = max(len(cores) // n_workers, 1)
    plans = []
    for i in range(n_workers):
        # With fewer cores than workers, nobody is pinned: the scheduler shares them.
        mine = tuple(cores[i * share : (i + 1) * share]) if len(cores) >= n_workers else ()
        if gpu_list:
            plans.append(WorkerPlan(i, "cuda", gpu_list[i], mine, share))
        else:
            plans.append(WorkerPlan(i, "cpu", None, mine, share))
    return plans


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))
