"""Record real learning curves for the search benchmark (``benchmarks/search.py``).

Each configuration of a grid (batch size x learning rate x planned epochs) trains once with
bstune's own :class:`~bstune.train.Trainer` under one per-trial time budget, on this machine's CPU,
and its whole curve (training seconds, wall seconds, epochs, validation metric, training loss at
every evaluation) is appended as one JSON line to ``benchmarks/curves/TASK.jsonl``. The first line
holds what was recorded and how. Running the command again skips the configurations already there,
so a recording that was stopped resumes where it stopped.

    python benchmarks/record_curves.py names polarity digits      # all three, one after another
    python benchmarks/record_curves.py names --limit 20           # at most 20 new curves

Tasks trained by bstune's :class:`~bstune.train.Trainer` (AdamW, bstune's budget-aware schedule,
four evaluations an epoch): ``names`` (``examples/lstm.py`` on its first names), ``polarity`` (the
same LSTM on ``../shared/data/sentence_polarity``, word level) and ``digits`` (an MLP on
scikit-learn's digits, ``benchmarks/curves/digits_mlp.py``).

Tasks that own their loop (``train(hp, run)`` in ``benchmarks/curves/``, the hand-written loop of
``_hand_loop.py``: a schedule over the planned epochs, evaluation once or twice an epoch):
``digits_cnn`` (a CNN on the digits images, SGD with momentum and a cosine schedule, tens of
epochs), ``cancer_mlp`` (an MLP on scikit-learn's breast-cancer table, SGD with momentum and a step
decay, hundreds of epochs), ``names_cnn`` (a character CNN on the names, AdamW at a constant
rate, a few epochs), ``polarity_bow`` (averaged word embeddings on sentence polarity, SGD with
momentum and a cosine schedule) and ``polarity_cnn`` (a word CNN on sentence polarity, AdamW and a
cosine schedule, two evaluations an epoch).

Training runs on one thread (``--threads``) so that two recordings can share a two-core machine;
each curve records the load average it trained under.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CURVES = HERE / "curves"

BATCH_SIZES = [16, 24, 32, 48, 64, 96, 128, 256, 512, 1024]
POWERS_OF_TWO = [16, 32, 64, 128, 256, 512, 1024]  # what bstune's spaces search


def log_grid(lo: float, hi: float, n: int = 8) -> list[float]:
    a, b = math.log10(lo), math.log10(hi)
    return [round(10 ** (a + (b - a) * i / (n - 1)), 8) for i in range(n)]


LEARNING_RATES = log_grid(10**-3.5, 0.1)  # 3.2e-4 .. 1e-1, for AdamW
SGD_RATES = log_grid(1e-3, 1.0)  # SGD with momentum 0.9 wants larger rates

TASKS: dict[str, dict] = {
    "names": {"script": "examples/lstm.py", "budget": 6.0, "epochs": [1, 2, 4]},
    # The slowest task (about 11 s a curve on a shared machine): eight batch sizes, not ten.
    "polarity": {
        "script": "examples/lstm.py",
        "budget": 10.0,
        "epochs": [1, 3, 8],
        "corpus": "sentence_polarity",
        "batch_sizes": [16, 32, 48, 64, 128, 256, 512, 1024],
    },
    "digits": {"script": "benchmarks/curves/digits_mlp.py", "budget": 2.0, "epochs": [5, 15, 40]},
    # Own loops (train(hp, run)): the batch sizes bstune searches, powers of two.
    "digits_cnn": {
        "script": "benchmarks/curves/digits_cnn.py", "budget": 3.0, "epochs": [10, 25, 60],
        "batch_sizes": POWERS_OF_TWO, "learning_rates": SGD_RATES,
    },
    "cancer_mlp": {
        "script": "benchmarks/curves/cancer_mlp.py", "budget": 1.0, "epochs": [20, 60, 200],
        "batch_sizes": POWERS_OF_TWO, "learning_rates": SGD_RATES,
    },
    "names_cnn": {"script": "benchmarks/curves/names_cnn.py", "budget": 4.0, "epochs": [1, 3, 8], "batch_sizes": POWERS_OF_TWO},
    "polarity_bow": {
        "script": "benchmarks/curves/polarity_bow.py", "budget": 3.0, "epochs": [3, 10, 30],
        "batch_sizes": POWERS_OF_TWO, "learning_rates": log_grid(1e-2, 10.0), "corpus": "sentence_polarity",
    },
    "polarity_cnn": {
        "script": "benchmarks/curves/polarity_cnn.py", "budget": 4.0, "epochs": [2, 5, 15],
        "batch_sizes": POWERS_OF_TWO, "corpus": "sentence_polarity",
    },
}


def polarity_tsv(shared: Path) -> Path:
    """The sentence-polarity corpus (5,331 positive and 5,331 negative snippets) as label<TAB>text."""
    src = shared / "data" / "sentence_polarity"
    if not src.is_dir():
        sys.exit(f"record_curves: {src} is missing; the polarity task needs ../shared/data/sentence_polarity")
    out = Path(tempfile.gettempdir()) / "bstune_sentence_polarity.tsv"
    with open(out, "w", encoding="utf-8") as f:
        for label in ("neg", "pos"):
            text = (src / f"rt-polarity.{label}").read_bytes().decode("latin-1")
            for line in text.splitlines():
                if line.strip():
                    f.write(f"{label}\t{line.strip()}\n")
    return out


def grid(spec: dict) -> list[tuple[int, float, int]]:
    configs = [(b, lr, e) for b in BATCH_SIZES for lr in spec.get("learning_rates", LEARNING_RATES) for e in spec["epochs"]]
    # A fixed shuffle: a recording stopped early still covers the whole grid thinly.
    random.Random(0).shuffle(configs)
    sizes = spec.get("batch_sizes", BATCH_SIZES)
    return [c for c in configs if c[0] in sizes]


def done_keys(path: Path) -> set[tuple[int, float, int]]:
    keys = set()
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "meta" not in rec:
                keys.add((rec["batch_size"], rec["learning_rate"], rec["epochs"]))
    return keys


def record(name: str, limit: int | None, threads: int) -> None:
    import optuna
    import torch

    from bstune import TimeBudget, load_task
    from bstune.run import Run
    from bstune.space import Hyperparams
    from bstune.train import Trainer

    torch.set_num_threads(threads)
    spec = TASKS[name]
    options = {}
    if spec.get("corpus"):
        options["corpus"] = str(polarity_tsv(ROOT.parent / "shared"))
    own_loop = load_task(ROOT / spec["script"]).owns_loop
    if own_loop:  # the script's own train(hp, run); its corpus, if any, is a module setting
        task = load_task(ROOT / spec["script"])
        if "corpus" in options:
            task.module.CORPUS = options["corpus"]
        train = task.get("train")
        n_train = n_valid = None
    else:
        task = load_task(ROOT / spec["script"], options)
        train = Trainer(task, device="cpu", seed=0)
        data = train.data()
        n_train, n_valid = data.n_train, int(data.x_valid.shape[0])
    path = CURVES / f"{name}.jsonl"
    have = done_keys(path)
    if not path.exists():
        if own_loop:  # what the script trains on: its data as the loop sees it
            xt, _, xv, _ = (task.module.data_for(task.module.CORPUS) if "corpus" in options else task.module._data())[:4]
            n_train, n_valid = len(xt), len(xv)
        meta = {
            "task": name,
            "script": spec["script"],
            "options": {k: ("<sentence_polarity as TSV>" if k == "corpus" else v) for k, v in options.items()},
            "budget": spec["budget"],
            "n_train": n_train,
            "n_valid": n_valid,
            "batch_sizes": spec.get("batch_sizes", BATCH_SIZES),
            "learning_rates": spec.get("learning_rates", LEARNING_RATES),
            "epochs": spec["epochs"],
            "trainer": (
                "the script's train(hp, run) (benchmarks/curves/_hand_loop.py)"
                if own_loop
                else "bstune.train.Trainer(device='cpu', seed=0), defaults otherwise"
            ),
            "threads": threads,
            "torch": torch.__version__,
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "command": f"python benchmarks/record_curves.py {name}",
        }
        path.write_text(json.dumps({"meta": meta}) + "\n")
    todo = [c for c in grid(spec) if c not in have]
    if limit is not None:
        todo = todo[:limit]
    mode = TimeBudget(spec["budget"])
    print(f"{name}: {len(have)} curves recorded, {len(todo)} to go", flush=True)
    for i, (b, lr, e) in enumerate(todo, 1):
        hp = Hyperparams(batch_size=b, learning_rate=lr, epochs=e, base_learning_rate=lr)
        trial = optuna.trial.FixedTrial({}, number=0)
        run = Run(trial, mode, hp, device="cpu")
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        try:
            with run:
                train(hp, run)
        except optuna.TrialPruned:
            pass  # diverged: the curve up to the NaN is the record
        c = run.curve
        rec = {
            "batch_size": b,
            "learning_rate": lr,
            "epochs": e,
            "stop_reason": run.stop_reason,
            "train_s": [round(p.train_s, 4) for p in c],
            "wall_s": [round(p.wall_s, 4) for p in c],
            "epoch": [round(p.epoch, 4) for p in c],
            "metric": [round(p.metric, 5) if p.metric == p.metric else None for p in c],
            "loss": [round(p.loss, 5) if p.loss == p.loss and abs(p.loss) != float("inf") else None for p in c],
            "load": round(load, 2),
        }
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        best = max((m for m in rec["metric"] if m is not None), default=float("nan"))
        print(
            f"{name} {len(have) + i}/{len(have) + len(todo)}: batch {b} lr {lr:.2e} epochs {e}: "
            f"{run.stop_reason}, best {best:.4f}, {len(c)} points, {time.perf_counter() - t0:.1f} s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", choices=sorted(TASKS))
    parser.add_argument("--limit", type=int, default=None, help="record at most this many new curves per task")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    for name in args.tasks:
        record(name, args.limit, args.threads)


if __name__ == "__main__":
    main()
