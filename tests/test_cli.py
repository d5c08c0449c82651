"""The bstune command, end to end: real training, real SQLite files, a real dashboard server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, shared_data

import bstune
from bstune.errors import TaskError

LSTM = ROOT / "examples" / "lstm.py"
BLOBS = ROOT / "examples" / "mlp_blobs.py"
CUSTOM = ROOT / "examples" / "custom_loop.py"


def _load(tmp_path, name="s", db="x.db"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / db}")


def test_lstm_time_budget_end_to_end(cli, tmp_path):
    code, out, err = cli(
        "optimize",
        LSTM,
        "--time-budget",
        "1.5",
        "--n-trials",
        "3",
        "--storage",
        "sqlite:///x.db",
        "--study-name",
        "s",
        "--task-option",
        "limit=6000",
    )
    assert code == 0, err
    study = _load(tmp_path)
    assert len(study.trials) == 3
    for t in study.trials:
        assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        ua = t.user_attrs
        assert ua["stop_reason"] in ("budget", "epochs", "pruned")
        # How far past 1.5 s the last step ran depends on this machine's speed (an LSTM step beside
        # busy processes took up to 0.9 s): the bound, one step, is tested on a fake clock in test_train.py.
        assert ua["train_s"] > 0
        assert ua["throughput"] > 0 and ua["batch_size"] >= 16 and ua["micro_batch_size"] == ua["batch_size"]
        steps = sorted(t.intermediate_values)
        # Steps are elapsed training milliseconds, matching the curve.
        curve_ms = [int(s * 1000) for s in ua["curve"]["train_s"]]
        assert steps == pytest.approx(curve_ms, abs=1)
        assert steps[-1] == pytest.approx(ua["train_s"] * 1000, abs=1)  # the last report ends the training
    assert "[3/3]" in out and "Best configurations" in out and "bstune dashboard --storage sqlite:///x.db --study-name s" in out


def test_target_mode_values_are_seconds_to_target(cli, tmp_path):
    code, out, err = cli(
        "optimize",
        BLOBS,
        "--target",
        "0.6",
        "--n-trials",
        "3",
        "--storage",
        "sqlite:///x.db",
        "--study-name",
        "s",
        "--task-option",
        "n_samples=4000",
    )
    assert code == 0, err
    study = _load(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    hits = [t for t in study.trials if t.user_attrs.get("reached_target")]
    assert hits, "blobs reach 60% accuracy within an epoch"
    for t in hits:
        assert t.user_attrs["stop_reason"] == "target"
        first = next(i for i, m in enumerate(t.user_attrs["curve"]["metric"]) if m >= 0.6)
        assert t.value == pytest.approx(t.user_attrs["curve"]["train_s"][first])


def test_target_with_a_time_budget_limits_each_trial(cli, tmp_path):
    """--target with --time-budget: a trial that has not reached the target after the budget stops
    there, a miss; bstune's default pruning stays the same bounds (no ranking at the limit's rungs)."""
    code, out, err = cli(
        "optimize", BLOBS, "--target", "0.999", "--time-budget", "0.3", "--n-trials", "2",
        "--storage", "sqlite:///x.db", "--task-option", "n_samples=2000", "--pruner", "none",
    )  # fmt: skip
    assert code == 0, err
    assert "target accuracy 0.999 within 0.3 s per trial" in out
    study = _load(tmp_path, name="mlp_blobs-target-0.999-limit-0.3s")
    assert study.user_attrs["limit"] == 0.3 and study.direction == optuna.study.StudyDirection.MINIMIZE
    # Blobs do not reach 99.9% accuracy: unpruned, every trial ends at the limit, or sooner where its
    # planned epochs fit into it (on a fast machine); how far past the limit the last step may run is
    # tested on a fake clock (tests/test_train.py), since it depends on the machine's speed here.
    ends = [(t.user_attrs["stop_reason"], t.user_attrs["train_s"]) for t in study.trials]
    assert all(reason in ("budget", "epochs") for reason, _ in ends), ends
    assert all(not t.user_attrs["reached_target"] and t.constraints["target_shortfall"] > 0 for t in study.trials)
    from bstune.pruners import AsyncHalvingPruner, make_pruner

    assert not any(isinstance(p, AsyncHalvingPruner) for p in make_pruner("default", bstune.Target(0.9, limit=1)).pruners)
    assert not any(isinstance(p, AsyncHalvingPruner) for p in make_pruner("default", bstune.Target(0.9)).pruners)


def test_same_command_resumes(cli, tmp_path):
    args = (
        "optimize",
        BLOBS,
        "--time-budget",
        "0.3",
        "--n-trials",
        "2",
        "--storage",
        "sqlite:///x.db",
        "--task-option",
        "n_samples=2000",
    )
    assert cli(*args)[0] == 0
    code, out, _ = cli(*args)
    assert code == 0 and "resuming after 2 trials" in out
    study = _load(tmp_path, name="mlp_blobs-budget-0.3s")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]


def test_a_script_that_owns_its_loop(cli, tmp_path):
    code, _, err = cli(
        "optimize",
        CUSTOM,
        "--time-budget",
        "0.5",
        "--n-trials",
        "2",
        "--storage",
        "sqlite:///x.db",
        "--study-name",
        "s",
        "--pruner",
        "none",  # pruning may stop the second trial (the slow-trial pruner, on a busy machine)
    )
    assert code == 0, err
    trials = _load(tmp_path).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(t.user_attrs["stop_reason"] in ("budget", "epochs") and t.user_attrs["train_s"] > 0 for t in trials)


def test_library_use_in_a_plain_optuna_objective(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import custom_loop

        custom_loop.main()
    finally:
        sys.path.remove(str(ROOT / "examples"))
    study = optuna.load_study(study_name="digits", storage="sqlite:///custom_loop.db")
    assert len(study.trials) == 6 and study.best_value > 0.5


def test_tune_is_the_command_from_python(tmp_path, monkeypatch):
    from rich.console import Console

    import bstune

    monkeypatch.chdir(tmp_path)
    console = Console(record=True, width=150)
    # No pruning: on a busy machine the slow-trial pruner may stop a trial whose evaluations come
    # too seldom for the 0.3 s budget, and what is tested here is the road from Python, not pruning.
    study = bstune.tune(BLOBS, time_budget=0.3, n_trials=2, storage="sqlite:///t.db", console=console, pruner="none")
    assert study.study_name == "mlp_blobs-budget-0.3s"  # named as the command names it
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    text = console.export_text()
    assert "[2/2]" in text and "Best configurations" in text
    with pytest.raises(bstune.BstuneError, match="--n-trials must be an integer of at least 1; got 0"):
        bstune.tune(BLOBS, n_trials=0, storage="sqlite:///t.db")
    assert len(optuna.load_study(study_name=study.study_name, storage="sqlite:///t.db").trials) == 2


def test_lstm_on_a_users_corpus(cli, tmp_path):
    polarity = shared_data("sentence_polarity")
    lines = []
    for label in ("pos", "neg"):
        text = (polarity / f"rt-polarity.{label}").read_text(encoding="utf-8").splitlines()
        lines += [f"{label}\t{t}" for t in text]
    (tmp_path / "reviews.tsv").write_text("\n".join(lines), encoding="utf-8")
    code, out, err = cli(
        "optimize",
        LSTM,
        "--time-budget",
        "3",
        "--n-trials",
        "2",
        "--storage",
        "sqlite:///x.db",
        "--study-name",
        "s",
        "--task-option",
        "corpus=reviews.tsv",
    )
    assert code == 0, err
    assert "data: 9,596 training and 1,066 validation samples" in out
    assert all(t.user_attrs["samples_seen"] > 0 for t in _load(tmp_path).trials)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_INPUTS = [
    (["optimize", "missing.py"], r"task script 'missing.py': no such file"),
    (["optimize", "{empty}"], r"defines neither data\(\) and model\(hp\) nor train\(hp, run\)"),
    (["optimize", "{half}"], r"defines data\(\) but not model\(hp\)"),
    (["optimize", "{broken}"], r"importing it raised ZeroDivisionError"),
    (
        ["optimize", BLOBS, "--space", "{badspace}"],
        r"search space .*badspace.yaml: field 'epochs' is required but missing",
    ),
    (["optimize", BLOBS, "--space", "nosuch"], r"search space 'nosuch': no such file, and not a built-in space"),
    (["optimize", BLOBS, "--time-budget", "0"], r"--time-budget must be a number greater than 0; got 0"),
    (["optimize", BLOBS, "--time-budget", "-5"], r"--time-budget must be a number greater than 0; got -5"),
    (
        ["optimize", BLOBS, "--time-budget", "0", "--target", "0.9"],
        r"--time-budget must be a number greater than 0; got 0",
    ),
    (
        ["optimize", BLOBS, "--storage", "mongodb://u:pw@h/db"],
        r"storage 'mongodb://u:\*\*\*@h/db': unknown kind of storage",
    ),
    (["optimize", BLOBS, "--n-trials", "0"], r"--n-trials must be an integer of at least 1; got 0"),
    (["optimize", BLOBS, "--timeout", "-1"], r"--timeout must be a number greater than 0; got -1"),
    (["optimize", BLOBS, "--clock", "cpu"], r"--clock must be 'train' or 'wall'; got 'cpu'"),
    (["optimize", BLOBS, "--task-option", "novalue"], r"--task-option must look like KEY=VALUE; got 'novalue'"),
    (
        ["optimize", BLOBS, "--task-option", "colour=red"],
        r"data\(\) takes no option 'colour' \(it takes: n_samples, noise\)",
    ),
    (["optimize", BLOBS, "--time-budget", "abc"], r"Invalid value for '--time-budget'"),
    (["optimize", BLOBS, "--no-such-option"], r"No such option: --no-such-option"),
    (["nosuchcommand"], r"No such command 'nosuchcommand'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_a_nonzero_exit(cli, tmp_path, args, message):
    files = {
        "{empty}": _write(tmp_path, "empty.py", "x = 1\n"),
        "{half}": _write(tmp_path, "half.py", "def data():\n    return None\n"),
        "{broken}": _write(tmp_path, "broken.py", "1 / 0\n"),
        "{badspace}": _write(
            tmp_path, "badspace.yaml", "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\n"
        ),
    }
    code, out, err = cli(*[files.get(str(a), a) for a in args])
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bstune: error: ")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not list(tmp_path.glob("*.db")) and not list(tmp_path.glob("*.log"))  # nothing written on bad input


def test_spaces_lists_every_built_in_space_with_its_description(cli):
    import yaml

    code, out, _ = cli("spaces")
    assert code == 0
    files = sorted((ROOT / "search_spaces").glob("*.yaml"))
    assert len(files) >= 3 and len(out.strip().splitlines()) == len(files)
    for f in files:
        description = yaml.safe_load(f.read_text(encoding="utf-8")).get("description", "")
        assert f"{f.stem:16} {description}".strip() in out


def test_seed_timeout_clock_and_micro_batch_options_take_effect(cli, tmp_path):
    code, out, err = cli(
        "optimize", BLOBS, "--time-budget", "0.3", "--n-trials", "40", "--timeout", "3", "--seed", "7",
        "--clock", "wall", "--micro-batch-size", "8", "--storage", "sqlite:///x.db", "--study-name", "s",
    )
    assert code == 0, err
    study = _load(tmp_path)
    trials = study.trials
    # --timeout: 40 trials of at least 0.3 s each cannot start within 3 s.
    assert 1 <= len(trials) < 40
    # --seed: the trainer seeds trial n with seed + n.
    assert [t.user_attrs["seed"] for t in trials] == [7 + t.number for t in trials]
    # --clock wall: the study's mode counts the wall clock (what a wall-clock budget does to each
    # trial is tested on a fake clock, tests/test_run.py: here a trial may stop a fraction of a
    # step short of 0.3 s, by how fast this machine is).
    assert study.user_attrs["clock"] == "wall"
    # --micro-batch-size: larger batches accumulate micro-batches of 8.
    big = [t for t in trials if t.user_attrs["batch_size"] > 8]
    assert big and all(t.user_attrs["micro_batch_size"] == 8 for t in big)


def test_debug_shows_the_traceback(cli, tmp_path):
    with pytest.raises(TaskError, match="no such file"):
        cli("optimize", "missing.py", "--debug")


def test_import_does_not_pull_torch_or_plotly():
    code = (
        "import bstune, sys; bstune.Run; bstune.create_study; bstune.suggest; "
        "assert not {'torch', 'plotly', 'optuna_dashboard'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "bstune", "--version"], check=True, capture_output=True, text=True, cwd=ROOT
    )
    assert out.stdout.startswith("bstune 0.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_with_intermediate_values(cli, tmp_path):
    code, _, err = cli(
        "optimize",
        BLOBS,
        "--time-budget",
        "0.5",
        "--n-trials",
        "2",
        "--storage",
        "sqlite:///x.db",
        "--study-name",
        "s",
        "--task-option",
        "n_samples=3000",
    )
    assert code == 0, err
    port = _free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "optuna_dashboard"]
    server = subprocess.Popen(
        [*cmd, f"sqlite:///{tmp_path / 'x.db'}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    summaries = json.load(r)["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(
                        f"optuna-dashboard did not start: {server.stderr.read() if server.poll() is not None else ''}"
                    ) from None
                time.sleep(0.2)
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == "s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10) as r:
            detail = json.load(r)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert detail["objective_names"] == ["best validation accuracy within 0.5 s"]
    assert len(detail["trials"]) == 2
    stored = {t.number: t for t in _load(tmp_path).trials}
    for trial in detail["trials"]:
        steps = [p["step"] for p in trial["intermediate_values"]]
        assert steps and steps == sorted(steps)
        # milliseconds of training: the last report ends the trial's training
        assert steps[-1] == pytest.approx(stored[trial["number"]].user_attrs["train_s"] * 1000, abs=1)


def test_lstm_corpus_header_is_skipped_and_single_example_labels_refused(cli, tmp_path):
    names = ["anna", "maria", "julia", "sofia", "laura", "emma", "paul", "peter", "jakob", "lukas", "felix", "jonas"]
    rows = [f"{'female' if i < 6 else 'male'}\t{n}" for i, n in enumerate(names)] * 5
    (tmp_path / "names.tsv").write_text("label\tname\n" + "\n".join(rows) + "\n", encoding="utf-8")
    args = ("optimize", LSTM, "--time-budget", "0.2", "--n-trials", "1", "--study-name", "s")
    code, out, err = cli(*args, "--storage", "sqlite:///ok.db", "--task-option", "corpus=names.tsv")
    assert code == 0, err
    assert "line 1 ('label', 'name') looks like a header; skipped" in err
    assert "data: 54 training and 6 validation samples" in out  # 60 rows, the header not among them

    (tmp_path / "rare.tsv").write_text("\n".join(rows) + "\nchild\tkim\n", encoding="utf-8")
    code, out, err = cli(*args, "--storage", "sqlite:///rare.db", "--task-option", "corpus=rare.tsv")
    assert code == 1
    assert "label 'child' has a single example; every label needs at least two" in err
    assert not (tmp_path / "rare.db").exists()  # refused before a study was made


def test_the_scripts_amp_default_and_the_option_reach_the_trainer(tmp_path, monkeypatch, trainer_calls):
    from rich.console import Console

    import bstune

    monkeypatch.chdir(tmp_path)
    script = tmp_path / "float32.py"
    script.write_text(BLOBS.read_text().replace("DEFAULTS = {", "DEFAULTS = {'amp': False, ", 1))
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    for amp, expected in ((None, False), (True, True), (False, False)):
        bstune.tune(script, time_budget=0.2, n_trials=1, storage="sqlite:///t.db", study_name=f"s{amp}", amp=amp,
                    device="cpu", console=quiet)
        assert trainer_calls[-1].get("amp") is expected
    bstune.tune(BLOBS, time_budget=0.2, n_trials=1, storage="sqlite:///t.db", device="cpu", console=quiet)
    assert trainer_calls[-1].get("amp") is None  # no DEFAULTS: the trainer's own default (bf16 on CUDA, off on the CPU)
