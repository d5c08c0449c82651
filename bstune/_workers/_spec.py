"""What a worker needs to rebuild the command's objective: one typed description, built once."""

from __future__ import annotations

from typing import Any, TypedDict


class WorkerSpec(TypedDict, total=False):
    """The options of a tuning run that a worker needs, sent as one JSON line on its standard input.

    ``bstune.tuning.tune`` fills every key from its own arguments (their defaults are declared
    there, once); ``space`` and ``micro_batch_size`` once the space is loaded; the coordinator adds
    each worker's ``index``, ``n_workers`` and ``plan``. The worker reads every key as given: it
    keeps no defaults of its own. It may hold a storage password: it travels on standard input only.
    """

    script: str
    task_options: dict[str, str]
    mode: dict[str, Any]
    storage: str
    study_name: str
    seed: int
    micro_batch_size: int | None
    heartbeat_interval: int | None
    storage_retry: float
    debug: bool
    pruner: str
    compile: bool
    amp: bool | None
    retry_disturbed: bool
    space: dict[str, Any]
    index: int
    n_workers: int
    plan: dict[str, Any]
