"""The batch-size study on the examples, against the default search's time: does it answer within
twice the time of the default study, with an exponent interval at most 0.6 wide?

For each task: ``bstune optimize SCRIPT`` (the default study) and ``bstune study-batch SCRIPT``
(the batch-size study, defaults) run one after the other, never side by side, each in a fresh
SQLite file under ``--out``; the table gives their wall times, the ratio, the exponent of the best
learning rate with its 95% interval and the batch-size answer with seed bands. A run whose
database already exists is read, not run again (delete the file to measure it afresh).

    python benchmarks/batch_study.py --out benchmarks/batch_study_runs
    python benchmarks/batch_study.py --synthetic 20      # known exponents: coverage and error
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("lstm", "mlp_blobs")


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd``, its output into ``log``; the wall seconds, also written beside the log."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    log.with_suffix(".seconds").write_text(f"{wall:.1f}\n")
    return wall


def measured(out: Path, task: str, kind: str) -> float:
    db = out / f"{task}-{kind}.db"
    log = out / f"{task}-{kind}.log"
    if db.exists() and log.with_suffix(".seconds").exists():
        return float(log.with_suffix(".seconds").read_text())
    db.unlink(missing_ok=True)
    command = "optimize" if kind == "default" else "study-batch"
    cmd = [sys.executable, "-m", "bstune", command, str(ROOT / "examples" / f"{task}.py"),
           "--storage", f"sqlite:///{db.name}"]
    print(f"$ bstune {command} examples/{task}.py --storage sqlite:///{db.name}", flush=True)
    return run(cmd, log)


def report(out: Path, task: str) -> dict:
    db = out / f"{task}-design.db"
    text = subprocess.run([sys.executable, "-m", "bstune", "report", "--storage", f"sqlite:///{db.name}",
                           "--format", "json"], capture_output=True, text=True, cwd=out, check=True).stdout
    return json.loads(text)


def synthetic(seeds: int) -> None:
    """The design on :class:`bstune.testing.SyntheticTask` with a known exponent: how often the
    interval holds the truth and excludes the other rules, and how far the estimate lands."""
    import optuna

    import bstune
    from bstune.analysis import analyze
    from bstune.confirmation import without_pruning
    from bstune.design import plan_design, run_design
    from bstune.space import load_space
    from bstune.study import make_objective, optimize
    from bstune.testing import FakeClock, SyntheticTask

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space({"batch_size": {"low": 16, "high": 1024}, "learning_rate": {"low": 1e-5, "high": 1.0},
                        "epochs": {"low": 1, "high": 4}})
    print("| true exponent | run noise | runs | median estimate | largest error | interval holds it | "
          "excludes the other rules | median width |")
    print("|---|---|---|---|---|---|---|---|")
    for exponent in (0.0, 0.5, 1.0):
        for noise in (0.002, 0.01):
            est, held, excl, widths = [], 0, 0, []
            for seed in range(seeds):
                clock = FakeClock()
                task = SyntheticTask(n_train=4000, steps_min=60, evals_per_epoch=3, lr_exponent=exponent,
                                     run_noise=noise, seed=seed, clock=clock)
                mode = bstune.TimeBudget(5)
                study = bstune.create_study(mode, space=space, seed=seed)
                objective = make_objective(task, space, mode, clock=clock)
                design = plan_design(study, space)
                run_design(study, design, space, lambda n, s=study, o=objective: optimize(without_pruning(s), o, n_trials=n),
                           log=lambda line: None)
                law = analyze(study, importance=False).design.law
                if law is None:
                    continue
                est.append(law.exponent)
                widths.append(law.high - law.low)
                held += law.low <= exponent <= law.high
                excl += all(not law.low <= k <= law.high for k in (0.0, 0.5, 1.0) if k != exponent)
            est.sort()
            print(f"| {exponent:g} | {noise:g} | {len(est)} | {est[len(est) // 2]:.3f} | "
                  f"{max(abs(e - exponent) for e in est):.3f} | {held}/{len(est)} | {excl}/{len(est)} | "
                  f"{sorted(widths)[len(widths) // 2]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "batch_study_runs")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--synthetic", type=int, metavar="SEEDS",
                    help="instead: the design on synthetic tasks of known exponent, SEEDS runs each")
    a = ap.parse_args()
    if a.synthetic:
        synthetic(a.synthetic)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in a.tasks:
        t_default = measured(a.out, task, "default")
        t_design = measured(a.out, task, "design")
        r = report(a.out, task)
        d = r["design"]
        law = d["law"]
        rows.append((task, r["n_trials"], t_default, t_design, law, d, r))
    print()
    print("| task | default study s | batch-size study: trials, s | ratio | exponent (95% interval) | width |")
    print("|---|---|---|---|---|---|")
    for task, _n, t0, t1, law, d, _ in rows:
        exp = f"{law['exponent']:.2f} ({law['low']:.2f} to {law['high']:.2f})" if law else "none"
        width = f"{law['high'] - law['low']:.2f}" if law else "-"
        print(f"| {task} | {t0:.0f} | {d['n_trials']}, {t1:.0f} | {t1 / t0:.2f} | {exp} | {width} |")
    print()
    print("| task | batch | best rate (fitted) | 95% interval | runs | mean | seed sd | against the best |")
    print("|---|---|---|---|---|---|---|---|")
    for task, *_, d, _r in rows:
        peaks = {p["batch_size"]: p for p in d["peaks"]}
        for x in d["results"]:
            p = peaks.get(x["batch_size"], {})
            iv = f"{p['low']:.2e} - {p['high']:.2e}" if p.get("low") else "not bracketed"
            against = "best" if x["within_noise"] is None else "within noise" if x["within_noise"] else "behind"
            sd = f"{x['std']:.4f}" if x["std"] is not None and math.isfinite(x["std"]) else "-"
            print(f"| {task} | {x['batch_size']} | {p.get('learning_rate', float('nan')):.2e} | {iv} | "
                  f"{len(x['values'])} | {x['mean']:.4f} | {sd} | {against} |")
    print()
    for task, *_, r in rows:
        for ans in r["answers"]:
            if ans["evidence"] == "Batch-size study":
                print(f"- {task}: **{ans['question']}** {ans['answer']}")


if __name__ == "__main__":
    main()
