from __future__ import annotations

import math

import optuna
import pytest
import yaml

import bstune
from bstune.errors import SpaceError
from bstune.space import SearchSpace, builtin_spaces, load_space

BASE = {
    "batch_size": {"low": 16, "high": 256},
    "learning_rate": {"low": 1e-3, "high": 1e-1},
    "epochs": {"low": 1, "high": 5},
}


def test_builtin_spaces_load_by_name():
    names = builtin_spaces()
    assert {"default", "lstm", "lstm_sqrt", "linear_scaling", "mlp"} <= set(names)
    for name in names:
        space = load_space(name)
        assert space.batch_low <= space.batch_high


def test_powers_of_two_are_searched_in_log2_and_recorded():
    space = SearchSpace.from_dict(BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        hp = space.suggest(trial)
        assert hp.batch_size in (16, 32, 64, 128, 256)
        assert trial.params["log2_batch_size"] == int(math.log2(hp.batch_size))
        assert study._storage.get_trial_user_attrs(trial._trial_id)["batch_size"] == hp.batch_size
        seen.add(hp.batch_size)
        study.tell(trial, 0.0)
    assert seen == {16, 32, 64, 128, 256}


def test_any_integer_batch_sizes():
    space = SearchSpace.from_dict({**BASE, "batch_size": {"low": 10, "high": 300, "powers_of_two": False}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sizes = {space.suggest(study.ask()).batch_size for _ in range(50)}
    assert any(s & (s - 1) for s in sizes)  # some are not powers of two
    assert all(10 <= s <= 300 for s in sizes)


@pytest.mark.parametrize(("rule", "exponent"), [("linear", 1.0), ("sqrt", 0.5), ("none", 0.0)])
def test_learning_rate_follows_batch_size(rule, exponent):
    raw = {**BASE, "learning_rate": {"low": 1e-3, "high": 1e-1, "scaling": rule, "reference_batch_size": 32}}
    space = SearchSpace.from_dict(raw)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        hp = space.suggest(trial)
        expected = hp.base_learning_rate * (hp.batch_size / 32) ** exponent
        assert hp.learning_rate == pytest.approx(expected)
        name = "learning_rate" if rule == "none" else "base_learning_rate"
        assert trial.params[name] == pytest.approx(hp.base_learning_rate)


def test_extra_params_reach_the_model():
    raw = {
        **BASE,
        "params": {
            "hidden": {"type": "int", "low": 8, "high": 64, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "cell": {"type": "categorical", "choices": ["lstm", "gru"]},
        },
    }
    hp = SearchSpace.from_dict(raw).suggest(optuna.create_study().ask())
    assert 8 <= hp["hidden"] <= 64 and 0.0 <= hp["dropout"] <= 0.5 and hp["cell"] in ("lstm", "gru")


def test_exponent_written_without_dot_is_accepted(tmp_path):
    # PyYAML reads 1e-4 as a string; people write it that way.
    f = tmp_path / "s.yaml"
    f.write_text("batch_size: {low: 8, high: 64}\nlearning_rate: {low: 1e-4, high: 1e-2}\nepochs: {low: 1, high: 3}\n")
    assert load_space(f).lr_low == pytest.approx(1e-4)


def test_round_trip_through_to_dict(tmp_path):
    space = load_space("lstm_sqrt")
    f = tmp_path / "copy.yaml"
    f.write_text(yaml.safe_dump(space.to_dict()))
    again = load_space(f)
    assert again.to_dict() == space.to_dict()


BAD = [
    (
        "batch_size: {low: 0, high: 8}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}",
        r"field 'batch_size.low' must be at least 1; got 0",
    ),
    (
        "batch_size: {low: 64, high: 8}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}",
        r"field 'batch_size' must have low <= high; got low=64, high=8",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: -1, high: 1}\nepochs: {low: 1, high: 2}",
        r"field 'learning_rate.low' must be greater than 0; got -1",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1, scaling: cubic}\nepochs: {low: 1, high: 2}",
        r"field 'learning_rate.scaling' must be one of none, linear, sqrt; got 'cubic'",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1, scaling: linear}\nepochs: {low: 1, high: 2}",
        r"field 'learning_rate.reference_batch_size' is required with scaling 'linear'",
    ),
    ("batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}", r"field 'epochs' is required but missing"),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2.5}",
        r"field 'epochs.high' must be an integer; got 2.5",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\nbatchsize: 3",
        r"field 'batchsize' is not a known field",
    ),
    (
        "batch_size: {low: 9, high: 15}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}",
        r"field 'batch_size' must contain a power of two",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {h: {type: integer, low: 1, high: 2}}",
        r"field 'params.h.type' must be one of int, float, categorical; got 'integer'",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {epochs: {type: int, low: 1, high: 2}}",
        r"field 'params.epochs' is reserved",
    ),
    (
        "batch_size: [8, 64]\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}",
        r"field 'batch_size' must be a mapping; got \[8, 64\]",
    ),
    ("batch_size: {low: 8, high: 64\n", r"not valid YAML at line 2"),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {c: {type: categorical, choices: []}}",
        r"field 'params.c.choices' must be a non-empty list; got \[\]",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {c: {type: categorical, choices: a}}",
        r"field 'params.c.choices' must be a non-empty list; got 'a'",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {c: {type: categorical, choices: [a], low: 1}}",
        r"field 'params.c.low' is not a known field",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {c: 3}",
        r"field 'params.c' must be a mapping; got 3",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {h: {type: int, low: 0, high: 8, log: true}}",
        r"field 'params.h.low' must be at least 1; got 0",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {h: {type: int, low: 1, high: 8.5}}",
        r"field 'params.h.high' must be an integer; got 8.5",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {h: {type: int, low: 9, high: 8}}",
        r"field 'params.h' must have low <= high; got low=9, high=8",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {d: {type: float, low: 0, high: 1, log: true}}",
        r"field 'params.d.low' must be greater than 0; got 0",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {d: {type: float, low: 0.1, high: 1, log: true, step: 0.1}}",
        r"field 'params.d.step' cannot be combined with log: true",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {d: {type: float, low: 0, high: 1, step: 0}}",
        r"field 'params.d.step' must be greater than 0; got 0",
    ),
    (
        "batch_size: {low: 8, high: 64}\nlearning_rate: {low: 0.1, high: 1}\nepochs: {low: 1, high: 2}\n"
        "params: {d: {type: float, low: 0, high: 1, log: maybe}}",
        r"field 'params.d.log' must be true or false; got 'maybe'",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_name_file_field_rule_and_value(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(f)
    assert str(f) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_name_lists_the_builtins():
    with pytest.raises(SpaceError, match=r"'nope': no such file, and not a built-in space \(default, "):
        load_space("nope")


def test_suggest_accepts_a_name():
    hp = bstune.suggest(optuna.create_study().ask(), "default")
    assert 16 <= hp.batch_size <= 512


def test_extra_params_round_trip_and_suggest_on_their_grid():
    raw = {
        **BASE,
        "params": {
            "width": {"type": "int", "low": 16, "high": 64, "step": 16},
            "drop": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
            "wd": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "act": {"type": "categorical", "choices": ["relu", "gelu"]},
        },
    }
    space = SearchSpace.from_dict(raw)
    assert space.to_dict()["params"] == {
        "width": {"type": "int", "low": 16, "high": 64, "step": 16},
        "drop": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
        "wd": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "act": {"type": "categorical", "choices": ["relu", "gelu"]},
    }
    assert SearchSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"width": set(), "drop": set(), "act": set()}
    for _ in range(40):
        trial = study.ask()
        hp = space.suggest(trial)
        assert set(trial.params) >= {"width", "drop", "wd", "act"}  # recorded under their own names
        for k in seen:
            seen[k].add(hp[k])
        assert 1e-5 <= hp["wd"] <= 1e-2
        study.tell(trial, 0.0)
    assert seen == {"width": {16, 32, 48, 64}, "drop": {0.0, 0.25, 0.5}, "act": {"relu", "gelu"}}
    assert all(isinstance(w, int) for w in seen["width"])


def test_a_file_space_is_named_after_its_file_and_keeps_its_micro_batch(tmp_path):
    raw = {**BASE, "batch_size": {**BASE["batch_size"], "micro_batch_size": 32}}
    f = tmp_path / "probed.yaml"
    f.write_text(yaml.safe_dump(raw))
    space = load_space(f)
    assert space.name == "probed" and space.micro_batch_size == 32
    assert space.to_dict()["batch_size"]["micro_batch_size"] == 32
    assert "micro_batch_size" not in SearchSpace.from_dict(BASE).to_dict()["batch_size"]


_B, _L, _E = "batch_size: {low: 8, high: 64}\n", "learning_rate: {low: 0.1, high: 1}\n", "epochs: {low: 1, high: 2}\n"
EXACT = [
    ("- 1\n- 2\n", "field 'the file' must be a mapping; got [1, 2]"),
    ("batch_size: {low: 8, high: 0}\n" + _L + _E, "field 'batch_size.high' must be at least 1; got 0"),
    ("batch_size: {low: 8, high: 64, step: 8}\n" + _L + _E,
     "field 'batch_size.step' is not a known field (known: high, low, micro_batch_size, powers_of_two)"),
    ("batch_size: {low: 8, high: 64, micro_batch_size: 0}\n" + _L + _E,
     "field 'batch_size.micro_batch_size' must be at least 1; got 0"),
    ("batch_size: {low: 8, high: 64, powers_of_two: maybe}\n" + _L + _E,
     "field 'batch_size.powers_of_two' must be true or false; got 'maybe'"),
    ("batch_size: {low: 3, high: 4}\n" + _L + _E, None),  # 4 is a power of two: accepted
    ("batch_size: {low: 4, high: 7}\n" + _L + _E, None),
    (_B + "learning_rate: 3\n" + _E, "field 'learning_rate' must be a mapping; got 3"),
    (_B + "learning_rate: {low: 0.1, high: 0}\n" + _E, "field 'learning_rate.high' must be greater than 0; got 0"),
    (_B + "learning_rate: {low: 1, high: 0.1}\n" + _E, "field 'learning_rate' must have low <= high; got low=1.0, high=0.1"),
    (_B + "learning_rate: {low: 0.1, high: 1, warmup: 3}\n" + _E,
     "field 'learning_rate.warmup' is not a known field (known: high, low, reference_batch_size, scaling)"),
    (_B + "learning_rate: {low: 0.1, high: 1, scaling: sqrt, reference_batch_size: 0}\n" + _E,
     "field 'learning_rate.reference_batch_size' must be at least 1; got 0"),
    (_B + _L + "epochs: 3\n", "field 'epochs' must be a mapping; got 3"),
    (_B + _L + "epochs: {low: 0, high: 2}\n", "field 'epochs.low' must be at least 1; got 0"),
    (_B + _L + "epochs: {low: 1, high: 0}\n", "field 'epochs.high' must be at least 1; got 0"),
    (_B + _L + "epochs: {low: 3, high: 2}\n", "field 'epochs' must have low <= high; got low=3, high=2"),
    (_B + _L + "epochs: {low: 1, high: 2, max: 3}\n", "field 'epochs.max' is not a known field (known: high, low)"),
    (_B + _L + _E + "params: 3\n", "field 'params' must be a mapping; got 3"),
] + [
    (_B + _L + _E + f"params: {{{name}: {{type: int, low: 1, high: 2}}}}\n", f"field 'params.{name}' is reserved")
    for name in ("batch_size", "learning_rate", "base_learning_rate", "epochs", "log2_batch_size")
]


@pytest.mark.parametrize(("text", "message"), EXACT)
def test_each_field_is_named_in_full_when_refused(tmp_path, text, message):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    if message is None:
        assert load_space(f).name == "s"
        return
    with pytest.raises(SpaceError) as info:
        load_space(f)
    assert str(info.value).startswith(f"search space {f}: {message}")


def test_name_and_description_come_from_the_file_or_a_default():
    named = SearchSpace.from_dict({**BASE, "name": "mine", "description": "Small batches only."})
    assert (named.name, named.description) == ("mine", "Small batches only.")
    plain = SearchSpace.from_dict(BASE)
    assert (plain.name, plain.description) == ("custom", "")


def test_hyperparams_read_like_a_mapping():
    from bstune.space import Hyperparams

    hp = Hyperparams(batch_size=64, learning_rate=0.02, epochs=3, base_learning_rate=0.01, params={"hidden": 32})
    assert hp["hidden"] == 32 and hp.get("hidden") == 32
    assert hp.get("dropout") is None and hp.get("dropout", 0.1) == 0.1
    assert hp.as_dict() == {"batch_size": 64, "learning_rate": 0.02, "epochs": 3, "base_learning_rate": 0.01, "hidden": 32}
