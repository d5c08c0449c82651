"""Run the README's test command several times, quiet and beside CPU-busy processes, and print a
summary line per run: a test that passes or fails with the machine's speed shows up here.

    python tests/suite_under_load.py                 # 3 quiet runs, then 3 beside 2 busy processes
    python tests/suite_under_load.py --quiet 1 --loaded 1 -- -x tests/test_train.py

Each run is ``python -m pytest -q`` (plus what follows ``--``) in a fresh process, in a random
order (pytest-randomly prints its seed, which the summary repeats). The busy processes spin in
pure Python, one per core by default, and are stopped when their run ends. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def run_once(extra: list[str], n_busy: int) -> tuple[int, str, str, float]:
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(n_busy)]
    for p in busy:
        p.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *extra], cwd=ROOT, capture_output=True, text=True, check=False,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal, even when started with &
        )  # fmt: skip
    finally:
        stop.set()
        for p in busy:
            p.join()
    out = proc.stdout + proc.stderr
    seed = re.search(r"--randomly-seed=(\d+)", out)  # tests/conftest.py prints it under -q
    lines = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED") or ln.startswith("ERROR")]
    summary = (lines[-1] if lines else "no summary line") + ("".join("\n    " + f for f in failed))
    return proc.returncode, summary, seed.group(1) if seed else "?", time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", type=int, default=3, help="runs with nothing beside them (default 3)")
    parser.add_argument("--loaded", type=int, default=3, help="runs beside busy processes (default 3)")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside a loaded run (default 2)")
    parser.add_argument("extra", nargs="*", help="arguments for pytest, after --")
    args = parser.parse_args()
    plan = [("quiet", 0)] * args.quiet + [(f"beside {args.busy} busy processes", args.busy)] * args.loaded
    worst = 0
    print(f"{len(plan)} runs of python -m pytest -q {' '.join(args.extra)} on {os.cpu_count()} cores", flush=True)
    for i, (label, n_busy) in enumerate(plan, 1):
        rc, summary, seed, seconds = run_once(args.extra, n_busy)
        worst = max(worst, rc)
        print(f"run {i} ({label}, seed {seed}, {seconds:.0f} s, exit {rc}): {summary}", flush=True)
    sys.exit(worst)


if __name__ == "__main__":
    main()
