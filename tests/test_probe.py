"""bstune probe: the largest batch under a fake memory limit, throughput, the narrowed space, and
the space file driving a real study (real torch training on the CPU, a real SQLite file)."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from bstune.cli import app
from bstune.errors import BstuneError, InvalidParameterError
from bstune.memory import BatchSearch
from bstune.probe import (
    narrow_space,
    plot_probe,
    predicted_cost,
    probe_hyperparams,
    probe_sizes,
    probe_table,
    run_probe,
    summary_lines,
    write_space,
)
from bstune.space import SearchSpace, load_space
from bstune.task import load_task

LIMIT = 37

# A blobs classifier whose model raises torch.OutOfMemoryError above LIMIT samples per forward
# pass: a fake memory limit on the CPU.
def _task_source(limit: int) -> str:
    return TASK.replace(f"LIMIT = {LIMIT}\n", f"LIMIT = {limit}\n", 1)


TASK = f'''
import torch
from torch import nn

LIMIT = {LIMIT}
DEFAULTS = {{"time_budget": 0.3, "n_trials": 3}}


def data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 3
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + torch.randn(600, 8, generator=g)
    return x[:500], y[:500], x[500:], y[500:]


class Limited(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        if x.shape[0] > LIMIT:
            raise torch.OutOfMemoryError(f"fake limit: batch {{x.shape[0]}} > {{LIMIT}}")
        return self.net(x)


def model(hp):
    return Limited(int(hp.get("hidden", 8)))
'''

SPACE = {
    "name": "blobs",
    "batch_size": {"low": 4, "high": 256, "powers_of_two": True},
    "learning_rate": {"low": 1.0e-3, "high": 1.0e-1},
    "epochs": {"low": 1, "high": 2},
    "params": {"hidden": {"type": "int", "low": 4, "high": 16, "log": True}},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    # Models this small gain nothing from a second thread and lose a lot on a busy machine.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def task_path(tmp_path: Path) -> Path:
    p = tmp_path / "limited.py"
    p.write_text(TASK, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    p = tmp_path_factory.mktemp("probe") / "limited.py"
    p.write_text(TASK, encoding="utf-8")
    lines: list[str] = []
    result = run_probe(
        load_task(p),
        space=SearchSpace.from_dict(SPACE),
        device="cpu",
        step_seconds=0.03,
        noise_steps=20,
        log=lines.append,
    )
    return result, lines


def test_probe_finds_exactly_the_fake_limit(probed) -> None:  # type: ignore[no-untyped-def]
    result, lines = probed
    s = result.search
    assert s.largest == LIMIT
    assert s.first_failure == LIMIT + 1
    assert s.memory_bound
    assert s.limit == math.floor(LIMIT * 0.9)
    assert s.bound == 500  # the data set size: under the CPU default maximum
    assert [b for b, ok in s.tries if not ok] == [64, 48, 40, 38]
    assert any("batch size 64 does not fit (fake limit: batch 64 > 37)" in line for line in lines)
    assert "largest batch that fits: 37 (set by memory); micro-batch limit 33" in lines
    # The model is built with the integer extra at the top of its range.
    assert result.hp.params == {"hidden": 16}


def test_probe_measures_throughput_and_memory_up_to_the_limit(probed) -> None:  # type: ignore[no-untyped-def]
    result, _ = probed
    sizes = [m.batch_size for m in result.measurements]
    assert sizes == probe_sizes(8, LIMIT) == [8, 9, 12, 16, 17, 24, 32, 33, 37]
    for m in result.measurements:
        assert m.samples_per_s > 0 and m.n_steps >= 3
        assert m.step_s == pytest.approx(m.batch_size / m.samples_per_s)
        assert m.peak_memory_bytes is not None and m.peak_memory_bytes > 0
        assert (m.vs_powers_of_two is None) == (m.power_of_two or m.batch_size > 32)
    # A bigger batch holds bigger activations.
    peaks = {m.batch_size: m.peak_memory_bytes for m in result.measurements}
    assert peaks[32] > peaks[8]
    assert result.noise is not None and result.noise.n_steps == 20
    assert result.noise.b_small == 32 and result.noise.b_big == 480  # 15 micro-batches of 32 in 500 samples
    assert result.noise.b_simple > 0


def test_narrowed_space_follows_the_measurements(probed) -> None:  # type: ignore[no-untyped-def]
    result, _ = probed
    crit = result.critical_batch_size
    thr = {m.batch_size: m.samples_per_s for m in result.measurements}
    space, reasons = narrow_space(result.base_space, search=result.search, critical=crit, n_train=500, throughput=thr)
    assert space == result.space
    assert space.batch_high <= 256  # the largest power of two in the data set
    assert space.batch_high >= 4 * space.batch_low or space.batch_low == 1
    assert space.micro_batch_size == 33  # memory bounded the search
    assert (space.lr_low, space.lr_high, space.params) == (1e-3, 1e-1, result.base_space.params)
    assert reasons[0].startswith(f"batch sizes {space.batch_low} to {space.batch_high}: ")
    assert "predicted time to a result" in reasons[0]


def test_predicted_cost() -> None:
    thr = {8: 100.0, 16: 200.0, 32: 400.0, 37: 400.0}
    cost = predicted_cost(thr, 100.0, [4, 8, 16, 32, 64, 128])
    assert 4 not in cost  # below what was measured
    assert cost[8] == pytest.approx(108 / 100)
    assert cost[32] == pytest.approx(132 / 400)
    assert cost[128] == pytest.approx(228 / 400)  # accumulation at the largest measured size's throughput


def test_narrow_space_rules() -> None:
    base = SearchSpace.from_dict(SPACE)
    search = BatchSearch(largest=37, limit=33, bound=500, first_failure=38, tries=())
    # Throughput grows with the batch up to the limit, then accumulation: the best predicted time is
    # at the limit, and with a large B_crit sizes well beyond it stay close.
    thr = {b: 10.0 * b for b in (8, 16, 24, 32, 37)}
    space, reasons = narrow_space(base, search=search, critical=1000.0, n_train=500, throughput=thr)
    # Kept: (B + 1000) / thr(B) <= 1.5 * 1037 / 370, i.e. B from 32 (24 is out) to 555, capped at 256.
    assert (space.batch_low, space.batch_high, space.micro_batch_size) == (32, 256, 33)
    assert "within 1.5x of the best (at batch 37) from 32 to 256" in reasons[0]
    assert "capped at the data set (500 samples)" in reasons[0]
    assert reasons[1].startswith("micro-batch 33: batches above it accumulate gradients")
    # Flat throughput and a small B_crit: the smallest batches win.
    flat = {b: 1000.0 for b in (8, 16, 32, 37)}
    space, reasons = narrow_space(base, search=search, critical=5.0, n_train=500, throughput=flat)
    assert (space.batch_low, space.batch_high, space.micro_batch_size) == (8, 32, 33)
    assert reasons[1] == "micro-batch 33: the memory limit; every batch in range fits, no accumulation"
    # One batch size far faster than the rest: kept 24 alone, 16 to 32 in powers of two, widened to
    # three powers of two, and the first reason names the range searched.
    peak = {8: 100.0, 16: 200.0, 24: 1000.0, 32: 300.0, 37: 300.0}
    space, reasons = narrow_space(base, search=search, critical=5.0, n_train=500, throughput=peak)
    assert (space.batch_low, space.batch_high) == (16, 64)
    assert reasons[0].startswith(
        "batch sizes 16 to 64: widened from 16 to 32 to keep three powers of two to search; predicted time "
        "to a result, (B + B_crit) / throughput(B) with B_crit ~ 5, is within 1.5x of the best (at batch 24) "
        "from 24 to 24; rounded out to powers of two"
    )
    assert space.description.endswith(reasons[-1]) and reasons[0] in space.description
    # Without throughputs: B_crit / 4 to 4 B_crit.
    space, reasons = narrow_space(base, search=search, critical=100.0, n_train=500)
    assert (space.batch_low, space.batch_high) == (16, 256)
    assert reasons[0].startswith("batch sizes 16 to 256: from B_crit/4 to 4 B_crit")
    unbound = replace(search, first_failure=None, largest=500, limit=500)
    space, reasons = narrow_space(base, search=unbound, critical=5.0, n_train=500)
    assert space.micro_batch_size is None
    assert reasons[1] == "no gradient accumulation: 32 fits in memory (up to 500 measured)"
    space, reasons = narrow_space(base, search=search, critical=math.inf, n_train=500, throughput=thr)
    assert (space.batch_low, space.batch_high, space.micro_batch_size) == (4, 256, 33)
    assert "the base space's" in reasons[0]


def test_space_file_loads_and_drives_a_study(probed, task_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result, _ = probed
    # Effective batches beyond the fake limit: only gradient accumulation lets them train.
    space = replace(result.space, batch_low=64, batch_high=256, micro_batch_size=33)
    path = write_space(replace(result, space=space), tmp_path / "probed.yaml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Written by bstune probe for limited on cpu.")
    assert yaml.safe_load(text)["batch_size"] == {"low": 64, "high": 256, "powers_of_two": True, "micro_batch_size": 33}
    assert load_space(path) == replace(space, source=str(path))

    db = tmp_path / "study.db"
    out = CliRunner().invoke(
        app,
        ["optimize", str(task_path), "--space", str(path), "--n-trials", "3", "--time-budget", "0.3",
         "--storage", f"sqlite:///{db}", "--device", "cpu", "--pruner", "none"],  # every trial to its end
    )
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name="limited-budget-0.3s", storage=f"sqlite:///{db}")
    assert len(study.trials) == 3
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE, t.user_attrs.get("stop_detail")
        assert 64 <= t.user_attrs["batch_size"] <= 256
        assert t.user_attrs["micro_batch_size"] == 33  # both sizes on the trial
        assert t.user_attrs["stop_reason"] in ("budget", "epochs")
    assert study.user_attrs["space"]["batch_size"]["micro_batch_size"] == 33


def test_cli_probe_writes_table_space_and_picture(task_path: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    space_file = tmp_path / "blobs.yaml"
    space_file.write_text(yaml.safe_dump(SPACE), encoding="utf-8")
    res = CliRunner().invoke(
        app,
        ["probe", str(task_path), "--space", str(space_file), "--output-dir", str(out_dir), "--device", "cpu",
         "--noise-steps", "5", "--max-batch-size", "40", "--param", "hidden=4"],
    )
    assert res.exit_code == 0, res.output
    assert "largest batch that fits: 37 (fails at 38); micro-batch limit 33" in res.output
    assert "samples/s" in res.output and "peak MiB" in res.output
    assert "gradient noise scale B_simple = " in res.output
    png = (out_dir / "limited-probe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert load_space(out_dir / "limited-probe.yaml").name == "blobs-probed"


def test_optimize_with_probe_searches_the_narrowed_space(task_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    space_file = tmp_path / "blobs.yaml"
    space_file.write_text(yaml.safe_dump(SPACE), encoding="utf-8")
    db = tmp_path / "p.db"
    res = CliRunner().invoke(
        app,
        ["optimize", str(task_path), "--probe", "--space", str(space_file), "--n-trials", "2",
         "--time-budget", "0.2", "--storage", f"sqlite:///{db}", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="limited-budget-0.2s-probe", storage=f"sqlite:///{db}")
    facts = study.user_attrs["probe"]
    assert facts["largest_batch"] == LIMIT and facts["batch_limit"] == 33
    space = study.user_attrs["space"]
    assert space == facts["space"] and space["name"] == "blobs-probed"
    assert (tmp_path / "limited-probe.yaml").is_file() and (tmp_path / "limited-probe.png").is_file()
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert space["batch_size"]["low"] <= t.user_attrs["batch_size"] <= space["batch_size"]["high"]
        assert t.user_attrs["micro_batch_size"] == min(t.user_attrs["batch_size"], 33)
    # Resuming reuses the stored probe instead of probing again (a new probe could differ).
    (tmp_path / "limited-probe.yaml").unlink()
    res = CliRunner().invoke(
        app,
        ["optimize", str(task_path), "--probe", "--space", str(space_file), "--n-trials", "1",
         "--time-budget", "0.2", "--storage", f"sqlite:///{db}", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    assert "resuming a probed study: its space from the earlier probe (blobs-probed)" in res.output
    assert not (tmp_path / "limited-probe.yaml").exists()
    assert len(optuna.load_study(study_name="limited-budget-0.2s-probe", storage=f"sqlite:///{db}").trials) == 3


def test_cpu_memory_limit_counts_as_out_of_memory(tmp_path: Path) -> None:
    path = tmp_path / "unlimited.py"
    path.write_text(_task_source(10**9), encoding="utf-8")
    task = load_task(path)
    kw = {"space": SearchSpace.from_dict(SPACE), "device": "cpu", "step_seconds": 0.01, "noise_steps": 0,
          "max_batch_size": 256, "min_batch_size": 64}
    free = run_probe(task, **kw)
    peaks = {m.batch_size: m.peak_memory_bytes for m in free.measurements}
    assert free.noise is None and not free.search.memory_bound and free.search.largest == 256
    limit = (peaks[128] + peaks[256]) // 2
    lines: list[str] = []
    capped = run_probe(task, memory_limit=limit, log=lines.append, **kw)
    assert capped.memory_limit_source == "set"
    assert capped.search.memory_bound and 128 <= capped.search.largest < 256
    # Measured again while timing: the same step, the same peak (to allocator noise).
    assert all(m.peak_memory_bytes <= 1.02 * limit for m in capped.measurements)
    assert any("exceeds the limit" in line for line in lines)


def test_probe_rejects_what_it_cannot_measure(tmp_path: Path, task_path: Path) -> None:
    own = tmp_path / "own.py"
    own.write_text("def train(hp, run):\n    run.report(0.5)\n", encoding="utf-8")
    with pytest.raises(BstuneError, match="defines train\\(hp, run\\); bstune probe needs data\\(\\) and model\\(hp\\)"):
        run_probe(load_task(own))
    with pytest.raises(InvalidParameterError, match="'safety_margin' parameter of probe"):
        run_probe(load_task(task_path), safety_margin=1.5)
    res = CliRunner().invoke(app, ["probe", str(task_path), "--memory-limit", "0"])
    assert res.exit_code != 0


def test_probe_hyperparams_and_sizes() -> None:
    space = SearchSpace.from_dict(
        {**SPACE, "params": {"hidden": {"type": "int", "low": 4, "high": 16},
                             "drop": {"type": "float", "low": 0.0, "high": 0.4},
                             "wd": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                             "act": {"type": "categorical", "choices": ["relu", "gelu"]}}}
    )
    hp = probe_hyperparams(space, {"act": "gelu"})
    assert hp.params == {"hidden": 16, "drop": pytest.approx(0.2), "wd": pytest.approx(1e-3), "act": "gelu"}
    assert hp.learning_rate == pytest.approx(1e-2)
    assert probe_sizes(1, 8) == [1, 2, 3, 4, 5, 6, 8]
    assert probe_sizes(16, 100) == [16, 17, 24, 32, 33, 48, 64, 65, 96, 100]


def test_table_summary_and_plot(probed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    result, _ = probed
    console = Console(width=120, record=True)
    console.print(probe_table(result))
    text = console.export_text()
    assert "largest that fits" in text and "37" in text
    lines = summary_lines(result)
    assert lines[0] == "largest batch that fits: 37 (fails at 38); micro-batch limit 33"
    assert any(line.startswith("sizes between powers of two run at") for line in lines)
    png = plot_probe(result, tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_stays_light() -> None:
    code = "import sys, bstune, bstune.probe; bstune.run_probe; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"
