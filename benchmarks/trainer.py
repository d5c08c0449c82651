"""Benchmark: what a study costs beyond its training time.

Not a test: it prints Markdown tables (committed with the command in ``RESULTS_trainer.md``).

    python benchmarks/trainer.py                  # all three parts, about 8 minutes on two cores
    python benchmarks/trainer.py --part step      # the training step only (about 2 minutes)
    python benchmarks/trainer.py --part storage   # a storage write on SQLite (about 20 seconds)
    python benchmarks/trainer.py --part wall      # bstune optimize's wall time only
    python benchmarks/trainer.py --part wall --time-budget 30   # names only, longer trials
    python benchmarks/trainer.py --part fast      # the fast paths on the LSTM example (CUDA: fused, bf16, compile)
    python benchmarks/trainer.py --part step --device cuda      # the step on a GPU, synchronised

Part 1, the step: the same MLP (64-128-128-10) on scikit-learn's digits, SGD with momentum 0.9,
20 epochs, one torch thread, trained three ways: bstune's built-in ``Trainer`` (its training
seconds, evaluation excluded as bstune excludes it; at its default of four evaluations an epoch,
and at one, since each evaluation ends a timed interval and the next starts on cold caches), a
hand-written loop that slices batches from a permutation (what fast training loops do), and a
``DataLoader`` loop (what most tutorials do).
Interleaved, best of ``--repeats`` runs of each; the ratios are throughput against the hand loop.

Part 2, the storage: a running trial's writes (a report, then the curve attribute, as bstune's
run makes them) on a SQLite file opened with Optuna's defaults and as bstune opens it.

Part 3, the wall: ``bstune optimize`` with default settings on ``examples/lstm.py`` (its names)
and on the sentence-polarity corpus (``../shared/data/sentence_polarity``), in a fresh folder. The
wall time of the command against the sum of its trials' training seconds plus the one-off data load
(timed here in-process, as ``data()`` runs in the command).

Part 4, the fast paths: the built-in ``Trainer`` on ``examples/lstm.py`` (its names; hidden
``--hidden``, 128 by default, embedding half of it, 2 epochs, batch 64 and 256) with its defaults against each fast path turned off or
on: on CUDA the default fused AdamW against the per-tensor (``foreach``) one, bf16 autocast against
float32, and ``compile=True`` (its compilation reported apart, as the overhead bstune counts it);
on the CPU only the last. Training samples per second, best of ``--repeats``, interleaved.

``--device cuda`` runs parts 1, 3 and 4 on the GPU: the hand-written loops keep their data on the
device (the DataLoader loop moves each batch there, as tutorials do) and every timed region ends
with ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK = textwrap.dedent(
    """
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    def data():
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        order = np.random.default_rng(0).permutation(len(x))
        x, y = x[order], y[order]
        return x[450:], y[450:], x[:450], y[:450]

    def model(hp):
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))

    def optimizer(parameters, hp):
        return torch.optim.SGD(parameters, lr=hp.learning_rate, momentum=0.9)
    """
)
EPOCHS = 20
LR = 0.05


def _task_module(folder: Path):  # type: ignore[no-untyped-def]
    from bstune.task import load_task

    path = folder / "digits_sgd.py"
    path.write_text(TASK)
    return load_task(path)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def run_trainer(task, batch: int, device: str = "cpu", evals_per_epoch: int = 4) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The built-in Trainer: training seconds for EPOCHS epochs (evaluation excluded)."""
    import optuna

    from bstune import Run, Target
    from bstune.space import Hyperparams
    from bstune.train import Trainer

    hp = Hyperparams(batch_size=batch, learning_rate=LR, epochs=EPOCHS, base_learning_rate=LR)
    # float32, as the hand-written loops
    trainer = Trainer(task, device=device, seed=0, amp=False, evals_per_epoch=evals_per_epoch)
    trainer.data()
    trial = optuna.trial.FixedTrial({}, number=0)
    with Run(trial, Target(2.0), hp) as run:  # a target no accuracy reaches: all epochs run
        trainer(hp, run)
    return run.train_seconds, run.samples_seen


def _parts(seed: int, device: str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    model = model.to(device)
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    return torch.from_numpy(x[order][450:]), torch.from_numpy(y[order][450:])


def run_slicing(batch: int, device: str = "cpu") -> tuple[float, int]:
    """A hand-written loop: batches are slices of a permutation; no schedule, no checks."""
    x, y = (t.to(device) for t in _digits())
    model, opt = _parts(0, device)
    loss_fn = nn.CrossEntropyLoss()
    n, seen = x.shape[0], 0
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(n, device=device)
        for i in range(0, n - batch + 1, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            seen += batch
    _sync(device)
    return time.perf_counter() - t0, seen


def run_dataloader(batch: int, device: str = "cpu") -> tuple[float, int]:
    """The tutorial loop: a DataLoader over a TensorDataset, shuffled, in the main process; each
    batch is moved to the device."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _digits()
    model, opt = _parts(0, device)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    seen = 0
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            seen += xb.shape[0]
    _sync(device)
    return time.perf_counter() - t0, seen


def part_step(repeats: int, device: str = "cpu") -> None:
    torch.set_num_threads(1)
    batches = (16, 64, 256)
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as d:
        task = _task_module(Path(d))
        loops: dict[str, Callable[[int, str], tuple[float, int]]] = {
            "bstune Trainer": lambda b, dev: run_trainer(task, b, dev),
            "bstune Trainer, one evaluation an epoch": lambda b, dev: run_trainer(task, b, dev, evals_per_epoch=1),
            "hand-written slicing loop": run_slicing,
            "DataLoader loop": run_dataloader,
        }
        for rep in range(repeats):
            for batch in batches:
                for name, fn in loops.items():
                    secs, seen = fn(batch, device)
                    rate = seen / secs
                    best[(name, batch)] = max(best.get((name, batch), 0.0), rate)
            print(f"  repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    print(f"\n### The training step on {_device_name(device)}: samples per second, best of {repeats} "
          f"(digits MLP, SGD, {EPOCHS} epochs, 1 thread)\n")
    print("| loop | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---" * (len(batches) + 1) + "|")
    for name in loops:
        cells = []
        for b in batches:
            rate, ref = best[(name, b)], best[("hand-written slicing loop", b)]
            cells.append(f"{rate:,.0f} ({rate / ref:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nTrainer against the DataLoader loop: " + ", ".join(
        f"batch {b} {best[('bstune Trainer', b)] / best[('DataLoader loop', b)]:.2f}x" for b in batches
    ))


def _polarity_tsv(folder: Path) -> Path | None:
    src = ROOT.parent / "shared" / "data" / "sentence_polarity"
    if not src.is_dir():
        return None
    out = folder / "sentence_polarity.tsv"
    with open(out, "w", encoding="utf-8") as f:
        for label in ("neg", "pos"):
            for line in (src / f"rt-polarity.{label}").read_bytes().decode("latin-1").splitlines():
                if line.strip():
                    f.write(f"{label}\t{line.strip()}\n")
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "the CPU"


def _data_load_s(options: dict[str, str], device: str = "cpu") -> float:
    from bstune.task import load_task
    from bstune.train import Trainer

    t0 = time.perf_counter()
    Trainer(load_task(ROOT / "examples" / "lstm.py", options), device=device).data()
    _sync(device)
    return time.perf_counter() - t0


def part_wall(time_budget: float | None = None, corpora: bool = True, device: str = "cpu") -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        runs = [("examples/lstm.py (names)", {})]
        tsv = _polarity_tsv(folder) if corpora else None
        if tsv is not None:
            runs.append(("examples/lstm.py, sentence_polarity", {"corpus": str(tsv)}))
        elif corpora:
            print("sentence_polarity: ../shared/data/sentence_polarity is missing; skipped", file=sys.stderr)
        for i, (label, options) in enumerate(runs):
            load_s = _data_load_s(options, device)
            db = folder / f"w{i}.db"
            cmd = [sys.executable, "-m", "bstune", "optimize", str(ROOT / "examples" / "lstm.py"),
                   "--storage", f"sqlite:///{db}", "--study-name", "wall"]
            if device != "cpu":
                cmd += ["--device", device]
            for k, v in options.items():
                cmd += ["--task-option", f"{k}={v}"]
            if time_budget is not None:
                cmd += ["--time-budget", str(time_budget)]
            t0 = time.perf_counter()
            started = datetime.datetime.now()  # Optuna stamps trials with the local wall clock
            subprocess.run(cmd, check=True, cwd=folder, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            ended = datetime.datetime.now()
            import optuna

            study = optuna.load_study(study_name="wall", storage=f"sqlite:///{db}")
            trials = study.trials
            ua = [t.user_attrs for t in trials]
            train = sum(u.get("train_s", 0.0) for u in ua)
            evals = sum(u.get("eval_s", 0.0) for u in ua)
            over = sum(u.get("overhead_s", 0.0) for u in ua)
            first = min(t.datetime_start for t in trials)
            last = max(t.datetime_complete for t in trials)
            in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
            split = {
                "before the first trial": (first - started).total_seconds(),
                "in trials, outside training, evaluation and one-off work": in_trials - train - evals - over,
                "between trials (sampler, storage)": (last - first).total_seconds() - in_trials,
                "after the last trial (report, exit)": (ended - last).total_seconds(),
            }
            rows.append((label, len(ua), wall, train, evals, over, load_s, split))
            print(f"  {label}: {wall:.1f} s", file=sys.stderr, flush=True)
    print(f"\n### bstune optimize with default settings on {_device_name(device)}: wall time against training time\n")
    print("| run | trials | wall s | training s | evaluation s | one-off s (in trials) | data load s | wall / (training + data load) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, wall, train, evals, over, load_s, _ in rows:
        print(f"| {label} | {n} | {wall:.1f} | {train:.1f} | {evals:.1f} | {over:.1f} | {load_s:.1f} | {wall / (train + load_s):.3f} |")
    print("\n### Where the rest of the wall time went (seconds, from the trials' start and end stamps)\n")
    print("| run | " + " | ".join(rows[0][7]) + " |")
    print("|---|" + "---:|" * len(rows[0][7]))
    for label, *_, split in rows:
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in split.values()) + " |")


def _storage_ms(url: str, fast: bool) -> float:
    """Milliseconds per storage write of a running trial (a report, then the curve attribute)."""
    import optuna

    from bstune.study import resolve_storage

    storage = resolve_storage(url) if fast else optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    curve = [0.5] * 50
    t0 = time.perf_counter()
    for i in range(100):
        trial.report(0.5, i)
        trial.set_user_attr("curve", curve)
    return (time.perf_counter() - t0) / 200 * 1000


def part_storage(repeats: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kinds = {"Optuna's SQLite defaults (rollback journal, full sync)": False,
             "bstune's SQLite (write-ahead log, synchronous=NORMAL)": True}
    ms: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for name, fast in kinds.items():
            with tempfile.TemporaryDirectory() as d:
                ms[name].append(_storage_ms(f"sqlite:///{d}/s.db", fast))
    print(f"\n### A storage write on a SQLite file: ms per write, {repeats} runs of 200 writes, interleaved\n")
    print("| storage | median ms | best ms |")
    print("|---|---:|---:|")
    for name, v in ms.items():
        print(f"| {name} | {np.median(v):.2f} | {min(v):.2f} |")
    a, b = (np.median(v) for v in ms.values())
    print(f"\nbstune's against Optuna's defaults: {b / a:.2f}x the time per write (medians)")


FAST_EPOCHS = 2


def _fast_configs(device: str) -> dict[str, dict[str, Any]]:
    """name -> Trainer settings; ``foreach`` swaps the default fused AdamW for the per-tensor one."""
    if device.startswith("cuda"):
        return {
            "defaults (fused AdamW, bf16 autocast)": {},
            "AdamW not fused (foreach)": {"foreach": True},
            "float32 (no autocast)": {"amp": False},
            "compile=True": {"compile": True},
        }
    return {"defaults (AdamW, float32)": {}, "compile=True": {"compile": True}}


def run_fast(trainer, batch: int, settings: dict[str, Any], hidden: int) -> tuple[float, int, float, float, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """One run of the LSTM example: training seconds, samples, overhead seconds, accuracy, attrs."""
    import optuna

    import bstune.train as train_module
    from bstune import Run, Target
    from bstune.space import Hyperparams

    hp = Hyperparams(batch_size=batch, learning_rate=3e-3, epochs=FAST_EPOCHS, base_learning_rate=3e-3,
                     params={"hidden": hidden, "embedding": hidden // 2, "dropout": 0.1})
    default_options = train_module.default_optimizer_options
    trainer.amp = settings.get("amp", trainer.device.type == "cuda")
    trainer.compile = settings.get("compile", False)
    if settings.get("foreach"):
        train_module.default_optimizer_options = lambda device: {"foreach": True}  # type: ignore[assignment]
    try:
        trial = optuna.trial.FixedTrial({}, number=0)
        with Run(trial, Target(2.0), hp) as run:  # a target no accuracy reaches: both epochs run
            trainer(hp, run)
    finally:
        train_module.default_optimizer_options = default_options  # type: ignore[assignment]
    return run.train_seconds, run.samples_seen, run.overhead_seconds, run.curve[-1].metric, dict(run.extra_attrs)


def part_fast(repeats: int, device: str = "cpu", hidden: int = 128) -> None:
    from bstune.task import load_task
    from bstune.train import Trainer

    trainer = Trainer(load_task(ROOT / "examples" / "lstm.py", {}), device=device, seed=0)
    trainer.data()
    configs = _fast_configs(device)
    batches = (64, 256)
    best: dict[tuple[str, int], float] = {}
    extra: dict[tuple[str, int], tuple[float, float, dict[str, Any]]] = {}
    for rep in range(repeats):
        for batch in batches:
            for name, settings in configs.items():
                secs, seen, over, acc, attrs = run_fast(trainer, batch, settings, hidden)
                rate = seen / secs
                if rate > best.get((name, batch), 0.0):
                    best[(name, batch)] = rate
                    extra[(name, batch)] = (over, acc, attrs)
        print(f"  repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    print(f"\n### The fast paths on {_device_name(device)}: training samples per second, best of {repeats} "
          f"(examples/lstm.py names, hidden {hidden}, embedding {hidden // 2}, {FAST_EPOCHS} epochs)\n")
    print("| settings | " + " | ".join(f"batch {b}" for b in batches) + " | one-off s (batch 64) | accuracy (batch 64) | recorded on the trial |")
    print("|---" * (len(batches) + 4) + "|")
    ref = next(iter(configs))
    for name in configs:
        cells = [f"{best[(name, b)]:,.0f} ({best[(name, b)] / best[(ref, b)]:.2f}x)" for b in batches]
        over, acc, attrs = extra[(name, batches[0])]
        rec = ", ".join(f"{k}={attrs.get(k)}" for k in ("fused_optimizer", "amp", "compiled"))
        print(f"| {name} | " + " | ".join(cells) + f" | {over:.1f} | {acc:.4f} | {rec} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("step", "wall", "storage", "fast", "all"), default="all")
    parser.add_argument("--hidden", type=int, default=128, help="fast part: the LSTM's width (embedding: half of it)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the step, wall and fast parts run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="wall part: this per-trial budget instead of the example's default, names only")
    args = parser.parse_args()
    print(json.dumps({"torch": torch.__version__, "cpus": os.cpu_count(), "load": os.getloadavg()[0],
                      "device": _device_name(args.device)}))
    if args.part in ("step", "all"):
        part_step(args.repeats, args.device)
    if args.part in ("storage", "all"):
        part_storage(args.repeats)
    if args.part in ("wall", "all"):
        part_wall(args.time_budget, corpora=args.time_budget is None, device=args.device)
    if args.part in ("fast", "all"):
        part_fast(args.repeats, args.device, args.hidden)


if __name__ == "__main__":
    main()
