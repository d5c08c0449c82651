"""What a worker needs to rebuild the command's objective: one typed description, built once."""

from __future__ import annotations

from typing import Any, TypedDict


class WorkerSpec(TypedDict, total=False):
    """What a worker gets, as one JSON line on its standard input.

    ``options`` are the run's ``bstune.options.TuneOptions`` as ``tune`` resolved them (storage,
    study name, precision, micro-batch filled in), written by ``TuneOptions.to_dict`` and read back
    with ``TuneOptions.from_dict``: the worker keeps no defaults of its own. ``mode`` and ``space``
    are the ones the coordinator resolved; the coordinator adds each worker's ``index``,
    ``n_workers`` and ``plan``. It may hold a storage password: it travels on standard input only.
    """

    script: str
    options: dict[str, Any]
    mode: dict[str, Any]
    space: dict[str, Any]
    index: int
    n_workers: int
    plan: dict[str, Any]
