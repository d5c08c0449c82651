"""Several worker processes on one study: planning (``_plan``), the coordinator (``_coordinator``),
the worker (``_worker``), lost trials (``_lost``).

``bstune optimize --workers N`` starts N worker processes (``python -m bstune._workers``) that
share one study through its storage. The command itself is the coordinator: it hands out one
ticket per trial, so the study gains exactly ``--n-trials`` finished trials (complete, pruned or
failed in the user's code), however the workers interleave.

* Devices. With GPUs, worker i sees only GPU i (``CUDA_VISIBLE_DEVICES``), so no two trials ever
  share an accelerator; asking for more workers than GPUs is an error. On CPU, worker i is pinned
  to its own share of the cores and torch uses that many threads. Every trial records ``worker``,
  ``workers``, ``cpu_threads`` and ``gpu`` in its user attributes.
* Lost trials. A worker that dies mid-trial (killed, out of host memory) leaves a RUNNING trial;
  the coordinator sees the process end, marks that trial FAIL (``stop_reason`` ``lost``) and
  enqueues a retry with the same parameters (``retry_trial``), and the ticket goes back to the
  pool, so the count is still reached. With RDB storage, heartbeats do the same for a worker on a
  machine whose coordinator died too; on a journal file, running the command again reclaims the
  trials of this machine's dead workers (``reclaim_orphans``).
* Ctrl-C. The first one asks every worker to stop: a running trial is recorded as FAIL with
  ``stop_reason`` ``interrupted`` and nothing is left RUNNING. A second one kills the workers and
  exits at once.
* Secrets. The storage URL reaches a worker on its standard input, never on its command line or
  in its environment, and everything printed goes through ``mask_url``.
"""

from __future__ import annotations

from bstune._workers._coordinator import Interrupted, WorkersResult, run_workers
from bstune._workers._lost import reclaim_orphans
from bstune._workers._plan import WorkerPlan, plan_workers, visible_gpus
from bstune.storage import retry_trial  # re-exported: workers retry their lost trials with it

__all__ = [
    "Interrupted",
    "WorkerPlan",
    "WorkersResult",
    "plan_workers",
    "reclaim_orphans",
    "retry_trial",
    "run_workers",
    "visible_gpus",
]
