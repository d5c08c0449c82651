"""What a database outage costs a study: wall time with and without one outage, side by side.

Runs the real command (``python -m bstune optimize``) on a private PostgreSQL server on 127.0.0.1
(started the way the tests start it) with the synthetic task of the tests, whose trials report
``--reports`` times, ``--step`` seconds of "training" apart. For each number of workers it runs the
same study without an outage and with one: ``pg_ctl stop -m immediate`` once ``--after`` trials
have completed, ``--down`` seconds down, then started again. Runs alternate (plain, outage, plain,
outage, ...) so a drift of the machine falls on both.

It prints, per number of workers: the median wall time of the command without and with the outage,
the extra time, the extra time beyond the outage itself (what the retries cost: the pause until a
try finds the server back, the second look before a trial is failed as stale, trials the outage
made wait), and the seconds the trials recorded in ``storage_wait_s``.

Usage:
    python benchmarks/storage_outage.py --workers 1 4 --trials 16 --down 10 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import _postgres  # noqa: E402
import optuna  # noqa: E402

TASK = REPO / "tests" / "data" / "synthetic_task.py"
STUDY = "synthetic_task-budget-10s"


def _complete(url: str) -> int:
    try:
        study = optuna.load_study(study_name=STUDY, storage=url)
    except KeyError:
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def one_run(server: _postgres.Server, workers: int, args: argparse.Namespace, outage: bool, folder: Path) -> dict[str, float]:
    url = server.create_database(f"b{uuid.uuid4().hex[:16]}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "BSTUNE_TEST_REPORTS": str(args.reports),
           "BSTUNE_TEST_STEP_S": str(args.step)}
    cmd = [sys.executable, "-m", "bstune", "optimize", str(TASK), "--device", "cpu", "--workers", str(workers),
           "--n-trials", str(args.trials), "--pruner", "none", "--heartbeat-interval", "2", "--storage", url]
    log = folder / f"w{workers}-{'outage' if outage else 'plain'}-{uuid.uuid4().hex[:6]}.log"
    down_s = 0.0
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        if outage:
            while _complete(url) < args.after and proc.poll() is None:
                time.sleep(0.2)  # polling for the moment to cut the server, not timing anything
            server.halt()
            t_down = time.perf_counter()
            time.sleep(args.down)
            server.resume()
            down_s = time.perf_counter() - t_down
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"the command failed ({rc}); see {log}")
    study = optuna.load_study(study_name=STUDY, storage=url)
    waited = sum(float(t.user_attrs.get("storage_wait_s", 0.0)) for t in study.trials)
    failed = sum(t.state != optuna.trial.TrialState.COMPLETE for t in study.trials)
    return {"wall": wall, "down": down_s, "waited": waited, "failed": failed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--reports", type=int, default=8)
    p.add_argument("--step", type=float, default=0.25, help="seconds between two reports of a trial")
    p.add_argument("--after", type=int, default=4, help="completed trials before the outage")
    p.add_argument("--down", type=float, default=10.0, help="seconds the server is down")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    server = _postgres.start()
    folder = Path(__file__).resolve().parent / "storage_outage_runs"
    folder.mkdir(exist_ok=True)
    rows = []
    try:
        for workers in args.workers:
            plain, cut = [], []
            for _ in range(args.repeat):
                plain.append(one_run(server, workers, args, False, folder))
                cut.append(one_run(server, workers, args, True, folder))
                print(f"workers {workers}: plain {plain[-1]['wall']:.1f} s, with outage {cut[-1]['wall']:.1f} s "
                      f"(down {cut[-1]['down']:.1f} s)", flush=True)
            a = statistics.median(r["wall"] for r in plain)
            b = statistics.median(r["wall"] for r in cut)
            down = statistics.median(r["down"] for r in cut)
            rows.append((workers, a, b, b - a, b - a - down, statistics.median(r["waited"] for r in cut),
                         max(r["failed"] for r in plain + cut)))
    finally:
        server.stop()
    print()
    print(f"{args.trials} trials of {args.reports} reports {args.step:g} s apart, PostgreSQL down {args.down:g} s "
          f"once after {args.after} completed trials; median of {args.repeat} runs each")
    print()
    print("| workers | wall, no outage | wall, one outage | extra | extra beyond the outage | storage_wait_s summed | trials not completed |")
    print("|---|---|---|---|---|---|---|")
    for w, a, b, d, beyond, waited, failed in rows:
        print(f"| {w} | {a:.1f} s | {b:.1f} s | {d:+.1f} s | {beyond:+.1f} s | {waited:.1f} s | {failed} |")


if __name__ == "__main__":
    main()
