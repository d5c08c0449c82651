"""How bstune optimize --workers scales on each storage: trials per hour and storage time per report.

Runs the real command (``python -m bstune optimize --workers N``) on a fast synthetic task that
trains for no time at all and reports ``--reports`` times per trial, so what is measured is
bstune's and Optuna's own cost per trial: sampling, the storage writes of each report (the
intermediate value and the learning curve), recording the trial, and the workers' coordination.

For each storage (SQLite file, journal file, PostgreSQL) and each number of workers it prints:

* trials/hour: finished trials divided by the time from the first trial's start to the last
  one's end (as the storage recorded them), and over the whole command including start-up;
* ms/report: mean wall time of one ``run.report()`` call inside the trials (mostly storage);
* failed: trials that did not complete (SQLite under contention can refuse writes);
* load: the machine's 1-minute load average after the run (the highest of the repeats), since
  other work on the machine moves these numbers a lot.

PostgreSQL: pass ``--postgres URL``, or let the script start a private server on 127.0.0.1 the
way the tests do (needs Debian's ``postgresql`` package and the ``postgres`` extra).

Usage:
    python benchmarks/scale.py --trials 48 --reports 10 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TASK = '''
import os, time
from bstune.testing import SyntheticTask

DEFAULTS = {"time_budget": 1000}
_task = SyntheticTask(noise=0.0)
REPORTS = int(os.environ["BSTUNE_BENCH_REPORTS"])


def train(hp, run):
    planned = hp.epochs * _task.n_train
    spent = []
    for i in range(1, REPORTS + 1):
        with run.training():
            run.count(planned // REPORTS)
        t = time.perf_counter()
        run.report(_task.accuracy(hp, run.samples_seen, i / REPORTS), loss=0.5, epoch=hp.epochs * i / REPORTS)
        spent.append(time.perf_counter() - t)
    run.extra_attrs["report_s"] = sum(spent) / len(spent)
'''


def measure(storage: str, workers: int, trials: int, reports: int, folder: Path) -> dict[str, float]:
    import optuna

    from bstune.study import resolve_storage

    task = folder / "bench_task.py"
    task.write_text(TASK)
    name = f"bench-{workers}-{folder.name}"
    cmd = [sys.executable, "-m", "bstune", "optimize", str(task), "--device", "cpu", "--storage", storage,
           "--study-name", name, "--n-trials", str(trials), "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "BSTUNE_BENCH_REPORTS": str(reports)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    command_s = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=resolve_storage(storage))
    ok = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not ok:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise SystemExit(f"{storage} x{workers}: no trial completed: {tail}")
    span = (max(t.datetime_complete for t in ok) - min(t.datetime_start for t in study.trials)).total_seconds()
    return {
        "trials_per_hour": len(ok) / span * 3600,
        "command_trials_per_hour": len(ok) / command_s * 3600,
        "report_ms": 1000 * statistics.mean(t.user_attrs["report_s"] for t in ok),
        "failed": len(study.trials) - len(ok),
        "completed": len(ok),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=48, help="trials per run (default 48)")
    ap.add_argument("--reports", type=int, default=10, help="reports per trial (default 10)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--storages", nargs="+", default=["sqlite", "journal", "postgresql"])
    ap.add_argument("--postgres", help="a PostgreSQL URL to use instead of a private server")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows the median")
    args = ap.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "tests")]

    server = None
    rows = []
    try:
        for kind in args.storages:
            for n in args.workers:
                runs = []
                for _ in range(args.repeat):
                    folder = Path(tempfile.mkdtemp(prefix="bstune-scale-"))
                    if kind == "sqlite":
                        url = f"sqlite:///{folder / 'bench.db'}"
                    elif kind == "journal":
                        url = f"journal:{folder / 'bench.log'}"
                    elif args.postgres:
                        url = args.postgres  # each run has a study of its own name
                    else:
                        if server is None:
                            import _postgres

                            server = _postgres.start()
                        url = server.create_database(f"bench_{folder.name.replace('-', '_').lower()}")
                    runs.append(measure(url, n, args.trials, args.reports, folder))
                    runs[-1]["load"] = os.getloadavg()[0]
                    print(f"  {kind} x{n}: {runs[-1]['trials_per_hour']:,.0f} trials/h, "
                          f"load {runs[-1]['load']:.1f}", file=sys.stderr, flush=True)
                runs.sort(key=lambda r: r["trials_per_hour"])
                median = dict(runs[len(runs) // 2])
                median["low"], median["high"] = runs[0]["trials_per_hour"], runs[-1]["trials_per_hour"]
                median["max_load"] = max(r["load"] for r in runs)
                rows.append((kind, n, median))
    finally:
        if server is not None:
            server.stop()

    print(f"\n{args.trials} trials per run, {args.reports} reports per trial, {os.cpu_count()} CPU cores, "
          f"median of {args.repeat} run(s)\n")
    print("| storage | workers | trials/hour (trials) | range | trials/hour (whole command) | ms per report "
          "| completed | failed | load (1 min) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, n, r in rows:
        print(f"| {kind} | {n} | {r['trials_per_hour']:,.0f} | {r['low']:,.0f}-{r['high']:,.0f} | "
              f"{r['command_trials_per_hour']:,.0f} | {r['report_ms']:.2f} | {r['completed']} | {r['failed']} | "
              f"{r['max_load']:.1f} |")


if __name__ == "__main__":
    main()
