"""``bstune optimize`` on the Lightning and Hugging Face examples makes the study the built-in trainer makes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from bstune.run import curve_from_attrs

from .conftest import need

ROOT = Path(__file__).resolve().parents[2]
#: Attributes that describe the built-in trainer's own loop (its AMP, compile and fused-optimizer
#: switches, whether it put the data set on the device, the seed it chose): a framework's loop, seeded
#: by the user's script, has none of them.
BUILTIN_LOOP_ONLY = {"amp", "compiled", "data_on_device", "fused_optimizer", "seed"}


def _study(cli, script: str, name: str, *extra: str) -> optuna.Study:
    code, out, err = cli(
        "optimize", ROOT / "examples" / script, "--time-budget", "0.6", "--n-trials", "2",
        "--storage", "sqlite:///s.db", "--study-name", name, *extra,
    )  # fmt: skip
    assert code == 0, err + out
    assert "Best configurations" in out
    return optuna.load_study(study_name=name, storage="sqlite:///s.db")


def _check_like_builtin(study: optuna.Study, builtin: optuna.Study) -> None:
    assert set(study.user_attrs) == set(builtin.user_attrs)
    reference = next(t for t in builtin.trials if t.state == optuna.trial.TrialState.COMPLETE)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done, [t.user_attrs.get("stop_detail") for t in study.trials]
    for t in done:
        assert set(reference.user_attrs) - BUILTIN_LOOP_ONLY <= set(t.user_attrs)
        assert set(t.user_attrs["curve"]) == set(reference.user_attrs["curve"])
        curve = curve_from_attrs(t)
        assert curve and sorted(t.intermediate_values) == [int(p.train_s * 1000) for p in curve]
        assert t.user_attrs["stop_reason"] in ("budget", "epochs")
        assert 0 < t.user_attrs["train_s"] < t.user_attrs["wall_s"]


@pytest.fixture
def builtin(cli) -> optuna.Study:
    return _study(cli, "mlp_blobs.py", "builtin")


def test_the_lightning_example(cli, builtin):
    need("lightning.pytorch", "lightning")
    _check_like_builtin(_study(cli, "lightning_digits.py", "lightning"), builtin)


def test_the_hugging_face_example(cli, builtin):
    need("transformers", "transformers")
    need("gender_guesser", "examples")
    _check_like_builtin(_study(cli, "hf_names.py", "hf"), builtin)


def test_importing_bstune_imports_neither_framework(python):
    import subprocess

    code = "import bstune, bstune.cli, bstune.analysis, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'transformers')))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
