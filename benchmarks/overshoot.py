"""Benchmark: how far past its time budget a trial trains, on a quiet and on a busy machine.

Not a test: it prints a Markdown table (committed with the command in ``RESULTS_trainer.md``).

    python benchmarks/overshoot.py                       # about 4 minutes on two cores
    python benchmarks/overshoot.py --budget 1 --repeats 3
    python benchmarks/overshoot.py --threads 0            # torch's own thread count, as bstune optimize trains

bstune's built-in ``Trainer`` reads the clock and its stop conditions every few steps, planned
from the step times it measured. When the machine gets busy (here: ``--busy`` processes spinning in
pure Python, one torch thread for training) the steps slow down and a plan made at the old pace
can run past the budget. Each row trains one configuration of ``examples/mlp_blobs.py`` or
``examples/lstm.py`` (its names) under a time budget, ``--repeats`` times, with the trainer as it
is and with the rule it had before (``--before REV``, read from git: checks planned from the
measured pace only), interleaved, quiet and beside the busy processes. Overshoot = training
seconds past the budget; "steps" = the trial's mean step time (training seconds / steps), so
"overshoot / step" below 1 means the trial ended within one step of its budget.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _spin(stop) -> None:  # type: ignore[no-untyped-def]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def _trainer_before(rev: str):  # type: ignore[no-untyped-def]
    """bstune.train's Trainer as it was at ``rev``, imported from a temporary file."""
    src = subprocess.run(["git", "show", f"{rev}:bstune/train.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "train_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("bstune_train_before", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.Trainer


def one(trainer_cls, task, batch: int, budget: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    import bstune
    from bstune.run import Run
    from bstune.space import Hyperparams

    hp = Hyperparams(batch_size=batch, learning_rate=1e-3, epochs=10**4, base_learning_rate=1e-3)
    trainer = trainer_cls(task, device="cpu", seed=0)
    with Run(optuna.trial.FixedTrial({}, number=0), bstune.TimeBudget(budget), hp, device="cpu") as run:
        trainer(hp, run)
    steps = max(run.samples_seen / batch, 1)
    return run.train_seconds - budget, run.train_seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of training per trial (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the loaded rows (default 2)")
    parser.add_argument("--before", default="847dbcd", help="the revision whose trainer is the 'before' column")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1; 0: torch's own choice)")
    args = parser.parse_args()
    import torch

    from bstune import load_task
    from bstune.train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    before = _trainer_before(args.before)
    tasks = {
        "mlp_blobs": load_task(ROOT / "examples" / "mlp_blobs.py"),
        "lstm (names)": load_task(ROOT / "examples" / "lstm.py"),
    }
    for t in tasks.values():  # data loads and first-call imports outside the timed runs
        one(Trainer, t, 64, 0.05)
    print(
        f"budget {args.budget:g} s, {args.repeats} repeats each, medians (max in brackets); busy = {args.busy} spinning "
        f"processes; {torch.get_num_threads()} torch threads\n"
    )
    print("| task | batch | machine | overshoot before, s | overshoot now, s | mean step now, s | overshoot / step now |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for load in (0, args.busy):
        stop = multiprocessing.Event()
        procs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(load)]
        for p in procs:
            p.start()
        try:
            for name, task in tasks.items():
                for batch in (16, 1024):
                    old, new, steps = [], [], []
                    for _ in range(args.repeats):
                        old.append(one(before, task, batch, args.budget)[0])
                        o, s = one(Trainer, task, batch, args.budget)
                        new.append(o)
                        steps.append(s)
                    ratio = [o / s for o, s in zip(new, steps, strict=True)]
                    print(
                        f"| {name} | {batch} | {'busy' if load else 'quiet'} | {statistics.median(old):.4f} ({max(old):.4f}) | "
                        f"{statistics.median(new):.4f} ({max(new):.4f}) | {statistics.median(steps):.4f} | "
                        f"{statistics.median(ratio):.2f} ({max(ratio):.2f}) |",
                        flush=True,
                    )
        finally:
            stop.set()
            for p in procs:
                p.join()


if __name__ == "__main__":
    main()
