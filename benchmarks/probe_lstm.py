"""Time ``bstune probe examples/lstm.py`` end to end and print a Markdown table.

Run from the repository root::

    python benchmarks/probe_lstm.py [--runs N] [-- extra probe options]

Each run is a fresh process (torch import, data loading, the whole probe), so the wall time is what
a user waits. The table also shows the CPU time the process used and the one-minute load average
before and after, because throughput figures and wall time on a shared machine depend on them.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(extra: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="bstune-probe-bench-") as out:
        load0 = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bstune", "probe", "examples/lstm.py", "--output-dir", out, *extra],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COLUMNS": "140"},
        )
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load1 = os.getloadavg()[0]
        if proc.returncode != 0:
            raise SystemExit(f"probe failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        files = sorted(p.name for p in Path(out).iterdir())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    phases = re.search(r"probe took [\d.]+ s \((.*)\)", proc.stdout)
    crit = re.search(r"B_simple = ([\d.]+)", proc.stdout)
    space = re.search(r"narrowed space: (.*)", proc.stdout)
    return {
        "wall s": f"{wall:.1f}",
        "cpu s": f"{cpu:.1f}",
        "load before/after": f"{load0:.1f} / {load1:.1f}",
        "phases": phases.group(1) if phases else "?",
        "B_simple": crit.group(1) if crit else "-",
        "narrowed": space.group(1) if space else "?",
        "files": ", ".join(files),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = [one_run(extra) for _ in range(args.runs)]
    cols = list(rows[0])
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for i, r in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(r[c] for c in cols) + " |")


if __name__ == "__main__":
    main()
