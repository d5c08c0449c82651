"""The options of a tuning run: declared once in bstune.options, the same in the command, tune() and the workers."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import optuna
import pytest
import typer
from conftest import ROOT

import bstune
from bstune.cli import app
from bstune.errors import BstuneError
from bstune.options import OPTIMIZE, STUDY_BATCH, TuneOptions, command_fields

BLOBS = ROOT / "examples" / "mlp_blobs.py"
FIELDS = {f.name: f for f in dataclasses.fields(TuneOptions)}


def _click_params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [OPTIMIZE, STUDY_BATCH])
def test_each_command_option_is_a_field_with_its_flag_and_default(command: str) -> None:
    params = _click_params(command)
    fields = command_fields(command)
    assert list(params) == ["script"] + [f.name for f in fields]  # nothing else, in the field order
    for f in fields:
        p = params[f.name]
        flags = f.metadata["flag"].split("/")
        assert p.opts == [flags[0]], f.name  # type: ignore[attr-defined]
        assert p.help == f.metadata["help"]  # type: ignore[attr-defined]
        assert p.default == f.default or (p.default is None and f.default is None), f.name  # type: ignore[attr-defined]


def test_tune_takes_every_field_as_a_keyword_with_the_fields_default() -> None:
    params = inspect.signature(bstune.tune).parameters
    options = {n: p for n, p in params.items() if n not in ("script", "options", "console")}
    assert list(options) == list(FIELDS)
    assert all(p.default == FIELDS[n].default and p.kind is p.KEYWORD_ONLY for n, p in options.items())


def test_study_batch_fixes_the_design_and_turns_pruning_off() -> None:
    assert "pruner" not in _click_params(STUDY_BATCH) and "n_trials" not in _click_params(STUDY_BATCH)
    given = {f.name: f.default for f in command_fields(STUDY_BATCH)}
    options = TuneOptions.from_command(STUDY_BATCH, {**given, "batch_sizes": "16, 64,256"},
                                       design="batch", n_trials=0, pruner="none")
    assert options.batch_sizes == (16, 64, 256) and options.design == "batch" and options.pruner == "none"


def test_the_command_line_and_the_keywords_make_the_same_options() -> None:
    given = {f.name: f.default for f in command_fields(OPTIMIZE)}
    given.update(time_budget=2.5, task_options=["n=3", "kind=a=b"], artifact_dir=Path("art"), seed=7)
    from_cli = TuneOptions.from_command(OPTIMIZE, given)
    assert from_cli == TuneOptions(time_budget=2.5, task_options={"n": "3", "kind": "a=b"}, artifact_dir=Path("art"),
                                   seed=7)
    with pytest.raises(BstuneError, match="--task-option must look like KEY=VALUE; got 'n'"):
        TuneOptions.from_command(OPTIMIZE, {**given, "task_options": ["n"]})


def test_the_options_a_worker_reads_are_the_ones_written() -> None:
    options = TuneOptions(target=0.9, time_budget=30, batch_sizes=[8, 32, 128], design="batch", n_trials=0,
                          task_options={"n": "1"}, artifact_dir=Path("a"), space=Path("s.yaml"), amp=False,
                          storage="journal:x.log", study_name="s", micro_batch_size=64, storage_retry=5)
    carried = json.loads(json.dumps(options.to_dict()))
    back = TuneOptions.from_dict(carried)
    assert back.to_dict() == options.to_dict()
    assert back.replace(artifact_dir=Path("a"), space=Path("s.yaml")) == options


def test_the_options_are_frozen_and_keep_their_own_copy() -> None:
    mine = {"n": "1"}
    options = TuneOptions(task_options=mine)
    mine["n"] = "2"
    assert options.task_options == {"n": "1"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 3  # type: ignore[misc]
    assert options.replace(seed=3).seed == 3 and options.seed == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"time_budget": 0}, "--time-budget must be a number greater than 0; got 0"),
        ({"n_trials": 0}, "--n-trials must be an integer of at least 1; got 0"),
        ({"confirm": -1}, "--confirm must be an integer of at least 0; got -1"),
        ({"clock": "cpu"}, "--clock must be 'train' or 'wall'; got 'cpu'"),
        ({"pruner": "medain"}, "--pruner must be one of default, none,"),
        ({"storage_retry": -1}, "--storage-retry must be a number of seconds of at least 0; got -1"),
        ({"design": "lr"}, "design must be None or 'batch'; got 'lr'"),
        ({"design": "batch", "max_trials": 5}, "--max-trials 5 is too few for three batch sizes"),
        ({"time_budget": "5"}, "--time-budget must be a number greater than 0; got '5'"),
        ({"workers": 2.0}, "--workers must be an integer of at least 1; got 2"),
        ({"seeds": True}, "--seeds must be an integer of at least 1; got True"),
    ],
)
def test_a_bad_value_is_refused_when_the_options_are_made(values: dict[str, object], message: str) -> None:
    with pytest.raises(BstuneError, match=message.replace("(", r"\(")):
        TuneOptions(**values)  # type: ignore[arg-type]
    with pytest.raises(BstuneError, match=message.replace("(", r"\(")):
        TuneOptions().replace(**values)


def test_tune_refuses_a_keyword_that_is_no_option_before_reading_the_script(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown tuning option 'n_trial'"):
        bstune.tune(tmp_path / "missing.py", n_trial=3)


def test_tune_runs_the_options_it_is_given_with_keywords_changing_them(tmp_path: Path, monkeypatch) -> None:
    from rich.console import Console

    monkeypatch.chdir(tmp_path)
    options = TuneOptions(time_budget=0.3, n_trials=5, storage="sqlite:///t.db", study_name="s", pruner="none", seed=3)
    study = bstune.tune(BLOBS, options, n_trials=2, console=Console(file=open(tmp_path / "out.txt", "w")))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.user_attrs["seed"] for t in study.trials] == [3, 4]  # the options' seed, the keyword's count
    assert options.n_trials == 5  # the caller's options are not changed


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # seeds 2: 3 learning rates + 3 seed runs = 6 trials per batch size, 18 for the three at least
        ({"max_trials": 18}, None),
        ({"max_trials": 17}, "--max-trials 17 is too few for three batch sizes with 2 more seed(s) each (18 trials"),
        ({"max_trials": 24, "batch_sizes": [1, 2, 4, 8]}, None),
        ({"max_trials": 23, "batch_sizes": [1, 2, 4, 8]}, "--max-trials 23 is too few for 4 batch sizes with 2 more seed(s) each (24 trials"),
        ({"batch_sizes": [8, 8, 16]}, "--batch-sizes must list three or more positive batch sizes; got [8, 8, 16]"),
        ({"seeds": 0}, "--seeds must be an integer of at least 1; got 0"),
    ],
)
def test_the_batch_size_study_is_refused_exactly_when_no_plan_fits(values: dict[str, object], message: str | None) -> None:
    from bstune.options import check_design_options

    given = {"batch_sizes": None, "seeds": 2, "max_trials": 24, **values}
    for make in (lambda: TuneOptions(design="batch", n_trials=0, **values),  # type: ignore[arg-type]
                 lambda: check_design_options(given["batch_sizes"], given["seeds"], given["max_trials"])):  # type: ignore[arg-type]
        if message is None:
            make()
        else:
            with pytest.raises(BstuneError, match=re.escape(message)):
                make()
    with pytest.raises(BstuneError, match=re.escape("--max-trials must be an integer of at least 1; got True")):
        check_design_options(None, 2, True)  # type: ignore[arg-type]
    with pytest.raises(BstuneError, match=re.escape("--batch-sizes must list three or more positive batch sizes; got [0, 2, 4]")):
        check_design_options([0, 2, 4], 2, 24)
    with pytest.raises(BstuneError, match=re.escape("--batch-sizes must be an integer of at least 1; got 0")):
        TuneOptions(design="batch", n_trials=0, batch_sizes=[0, 2, 4])
