"""A fast synthetic task for the worker tests: train(hp, run) on SyntheticTask's curves.

Two reports per trial, no sleeping, unless a test must catch a real process mid-trial:
BSTUNE_TEST_MARKERS=DIR writes DIR/PID-TRIAL when a trial starts, then waits BSTUNE_TEST_SLEEP
seconds; BSTUNE_TEST_STUBBORN=1 ignores the first Ctrl-C while waiting; BSTUNE_TEST_FAIL=1
raises in every trial. BSTUNE_TEST_REPORTS=N reports N times instead of twice, each after
BSTUNE_TEST_STEP_S seconds of "training" (a trial that spans a storage outage).
"""

import os
import time

from bstune.testing import SyntheticTask

DEFAULTS = {"time_budget": 10, "n_trials": 8}
_task = SyntheticTask(noise=0.0)


def train(hp, run):
    marker_dir = os.environ.get("BSTUNE_TEST_MARKERS")
    if marker_dir:
        # A real process must be mid-trial for the kill tests: announce, then wait a moment.
        open(os.path.join(marker_dir, f"{os.getpid()}-{run.trial.number}"), "w").close()
        try:
            time.sleep(float(os.environ.get("BSTUNE_TEST_SLEEP", "0.5")))
        except KeyboardInterrupt:
            if not os.environ.get("BSTUNE_TEST_STUBBORN"):
                raise
            time.sleep(float(os.environ.get("BSTUNE_TEST_SLEEP", "0.5")))
    if os.environ.get("BSTUNE_TEST_FAIL"):
        raise RuntimeError("the task broke on purpose")
    # Where this process may run, as its worker was told (tests check the share of the cores).
    run.extra_attrs["test_affinity"] = sorted(os.sched_getaffinity(0))
    run.extra_attrs["test_omp_threads"] = os.environ.get("OMP_NUM_THREADS")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        import torch

        run.extra_attrs["test_visible_gpus"] = torch.cuda.device_count()
    planned = hp.epochs * _task.n_train
    n = int(os.environ.get("BSTUNE_TEST_REPORTS", "2"))
    step_s = float(os.environ.get("BSTUNE_TEST_STEP_S", "0"))
    for i in range(1, n + 1):
        with run.training():
            if step_s:
                time.sleep(step_s)
            run.count(planned // n)
        run.report(_task.accuracy(hp, run.samples_seen, i / n), loss=0.5, epoch=hp.epochs * i / n)
