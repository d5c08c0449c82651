"""``bstune optimize --pruner NAME`` through the real command."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest


def test_cli_rejects_an_unknown_pruner(capsys: pytest.CaptureFixture[str]) -> None:
    from bstune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", "examples/mlp_blobs.py", "--pruner", "asha"])
    assert exit_info.value.code == 1
    assert "--pruner must be one of default, none," in capsys.readouterr().err


@pytest.mark.parametrize("name", ["none", "default", "median"])
def test_cli_optimize_with_a_pruner(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bstune import pruners
    from bstune.cli import main

    made: list[tuple[str, optuna.pruners.BasePruner]] = []
    asked = []
    real = pruners.make_pruner

    def spy(pruner_name: str, mode: object) -> optuna.pruners.BasePruner:
        p = real(pruner_name, mode)  # type: ignore[arg-type]
        inner = p.prune
        p.prune = lambda study, trial: asked.append(trial.number) or inner(study, trial)  # type: ignore[method-assign]
        made.append((pruner_name, p))
        return p

    monkeypatch.setattr(pruners, "make_pruner", spy)
    root = Path(__file__).resolve().parents[1]
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    main(
        [
            "optimize",
            str(root / "examples" / "mlp_blobs.py"),
            "--time-budget",
            "0.2",
            "--n-trials",
            "3",
            "--storage",
            db,
            "--pruner",
            name,
            "--task-option",
            "n_samples=3000",
        ]
    )
    assert "Best configurations" in capsys.readouterr().out
    # The named pruner was made, and it is the one the study asked at the trials' reports.
    assert [n for n, _ in made] == [name]
    assert asked and set(asked) <= {0, 1, 2}
    study = optuna.load_study(study_name="mlp_blobs-budget-0.2s", storage=db)
    assert len(study.trials) == 3
    assert all(t.user_attrs["stop_reason"] in ("budget", "epochs", "pruned") for t in study.trials)
