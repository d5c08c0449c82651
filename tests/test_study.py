from __future__ import annotations

import math

import optuna
import pytest

import bstune
from bstune.errors import BstuneError, StorageError
from bstune.run import Run
from bstune.space import Hyperparams, SearchSpace, load_space
from bstune.study import create_study, make_objective, mask_url, optimize, resolve_storage
from bstune.testing import FakeClock, SyntheticTask


def test_study_records_what_it_means(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    space = load_space("default")
    create_study(bstune.TimeBudget(7), space=space, storage=url, study_name="a")
    again = optuna.load_study(study_name="a", storage=url)
    attrs = again.user_attrs
    assert attrs["mode"] == "time_budget" and attrs["budget"] == 7 and attrs["clock"] == "train"
    assert attrs["space"] == space.to_dict() and attrs["bstune_version"] == bstune.__version__
    assert again.metric_names == ["best validation accuracy within 7 s"]
    assert again.direction == optuna.study.StudyDirection.MAXIMIZE


def _synthetic_objective(mode, space="default", task=None):
    task = task or SyntheticTask(n_train=4000)
    return make_objective(task, load_space(space), mode, clock=task.clock)


def test_same_command_resumes_and_adds_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    mode = bstune.TimeBudget(3)
    for _ in range(2):
        study = create_study(mode, space=load_space("default"), storage=url, study_name="r", seed=1)
        optimize(study, _synthetic_objective(mode), n_trials=3)
    study = optuna.load_study(study_name="r", storage=url)
    assert len(study.trials) == 6
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state.is_finished() for t in study.trials)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (bstune.TimeBudget(4), r"study 'r' was made for a time budget of 3 s, not a time budget of 4 s"),
        (
            bstune.Target(0.8),
            r"was made for a time budget of 3 s, not the target accuracy 0.8; choose another --study-name",
        ),
        (
            bstune.Target(0.8, limit=3),
            r"was made for a time budget of 3 s, not the target accuracy 0.8 within 3 s per trial;",
        ),
    ],
)
def test_resuming_with_another_mode_is_refused_and_nothing_changes(tmp_path, second, message):
    url = f"sqlite:///{tmp_path}/s.db"
    first = create_study(bstune.TimeBudget(3), storage=url, study_name="r")
    optimize(first, _synthetic_objective(bstune.TimeBudget(3)), n_trials=2)
    with pytest.raises(BstuneError, match=message):
        create_study(second, storage=url, study_name="r")
    again = optuna.load_study(study_name="r", storage=url)
    assert len(again.trials) == 2 and again.user_attrs["budget"] == 3


def test_a_target_study_keeps_its_limit_and_resumes_only_with_it(tmp_path):
    from bstune.objectives import mode_from_attrs

    url = f"sqlite:///{tmp_path}/s.db"
    create_study(bstune.Target(0.8, limit=5), storage=url, study_name="t")
    create_study(bstune.Target(0.8, limit=5), storage=url, study_name="t")  # the same: resumes
    study = optuna.load_study(study_name="t", storage=url)
    assert study.user_attrs["limit"] == 5.0
    assert mode_from_attrs(study.user_attrs) == bstune.Target(0.8, limit=5)
    with pytest.raises(
        BstuneError, match=r"made for the target accuracy 0.8 within 5 s per trial, not the target accuracy 0.8;"
    ):
        create_study(bstune.Target(0.8), storage=url, study_name="t")
    # A target study made before limits existed has no "limit": it has none.
    old = {k: v for k, v in bstune.Target(0.8).to_attrs().items()}
    assert "limit" not in old and mode_from_attrs(old) == bstune.Target(0.8)


def test_resuming_with_another_space_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    create_study(bstune.TimeBudget(3), space=load_space("default"), storage=url, study_name="r")
    with pytest.raises(BstuneError, match=r"made with search space 'default' and different bounds"):
        create_study(bstune.TimeBudget(3), space=load_space("mlp"), storage=url, study_name="r")


def test_a_foreign_study_with_trials_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    other = optuna.create_study(storage=url, study_name="theirs", direction="maximize")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with pytest.raises(BstuneError, match=r"already has trials and was not made by bstune"):
        create_study(bstune.TimeBudget(3), storage=url, study_name="theirs")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://h/db", r"storage 'mongodb://h/db': unknown kind of storage; use sqlite:///FILE.db"),
        ("bstune.db", r"unknown kind of storage"),
        ("sqlite:////no/such/dir/x.db", r"the folder '/no/such/dir' does not exist"),
        ("journal:", r"journal storage needs a file path"),
    ],
)
def test_bad_storage_urls(url, message):
    with pytest.raises(StorageError, match=message):
        resolve_storage(url)


def test_passwords_never_show():
    assert mask_url("postgresql://u:hunter2@127.0.0.1:1/db") == "postgresql://u:***@127.0.0.1:1/db"
    with pytest.raises(StorageError) as info:
        resolve_storage("postgresql+nosuchdriver://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_sqlite_files_get_write_ahead_logging_and_memory_databases_keep_their_tables(tmp_path):
    storage = resolve_storage(f"sqlite:///{tmp_path}/w.db")
    mode = bstune.TimeBudget(2)
    optimize(create_study(mode, storage=storage, study_name="w"), _synthetic_objective(mode), n_trials=2)
    with storage.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    # Optuna alone opens the file as before, and sees the trials.
    assert len(optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path}/w.db").trials) == 2
    memory = resolve_storage("sqlite:///:memory:")
    optimize(create_study(mode, storage=memory, study_name="m"), _synthetic_objective(mode), n_trials=2)
    assert len(optuna.load_study(study_name="m", storage=memory).trials) == 2


def test_journal_storage(tmp_path):
    mode = bstune.TimeBudget(2)
    study = create_study(mode, storage=f"journal:{tmp_path}/j.log", study_name="j")
    optimize(study, _synthetic_objective(mode), n_trials=2)
    assert len(optuna.load_study(study_name="j", storage=resolve_storage(f"{tmp_path}/j.log")).trials) == 2


def test_missed_targets_repel_the_sampler():
    """Large batches are fast but plateau below the target; small ones reach it.

    If a miss looked like its (short) training time, TPE would crowd into the large batches.
    """

    space = SearchSpace.from_dict(
        {
            "batch_size": {"low": 16, "high": 1024},
            "learning_rate": {"low": 1e-3, "high": 1e-1},
            "epochs": {"low": 1, "high": 3},
        }
    )
    clock = FakeClock()

    def train(hp: Hyperparams, run: Run) -> None:
        plateau = 0.7 if hp.batch_size >= 128 else 0.95
        rate = 1.0 / (1 + abs(math.log10(hp.learning_rate) + 2))  # best near 1e-2
        for i in range(1, 6):
            with run.training():
                clock.advance(4.0 * (64 / hp.batch_size) ** 0.5)  # larger batches are faster
            run.report(plateau * (1 - math.exp(-i * rate)))
            if run.should_stop:
                return

    mode = bstune.Target(0.8)
    study = create_study(mode, space=space, seed=0)
    optimize(study, make_objective(train, space, mode, clock=clock), n_trials=40)
    later = [t.user_attrs["batch_size"] for t in study.trials[15:]]
    share_large = sum(b >= 128 for b in later) / len(later)
    # The prior puts 4 of 7 batch sizes at 128 or more (57%).
    assert share_large < 0.25, later
    assert study.best_trial.user_attrs["reached_target"] is True


def test_failures_in_a_row_stop_the_study_with_one_message():
    space = load_space("default")

    def broken(hp, run):
        raise ValueError("the model cannot be built")

    study = create_study(bstune.TimeBudget(1), space=space)
    with pytest.raises(
        BstuneError, match=r"stopped after 3 failed trials in a row; .*ValueError: the model cannot be built"
    ):
        optimize(study, make_objective(broken, space, bstune.TimeBudget(1)), n_trials=10)
    assert len(study.trials) == 3
    assert study.trials[0].user_attrs["stop_reason"] == "failed"


def test_out_of_memory_is_an_infeasible_outcome_and_the_study_goes_on():
    torch = pytest.importorskip("torch")
    space = load_space("default")
    clock = FakeClock()

    def train(hp, run):
        if hp.batch_size >= 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        with run.training():
            clock.advance(1.0)
        run.report(0.5)

    study = create_study(bstune.TimeBudget(1), space=space, seed=0)
    optimize(study, make_objective(train, space, bstune.TimeBudget(1), clock=clock), n_trials=12)
    assert len(study.trials) == 12
    oom = [t for t in study.trials if t.user_attrs.get("batch_size", 0) >= 256]
    assert oom, "the seed must draw some large batches"
    for t in oom:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["stop_reason"] == "oom"
        assert t.constraints["out_of_memory"] == 1.0


@pytest.mark.parametrize(
    ("n_trials", "timeout", "message"),
    [
        (0, None, r"'n_trials' parameter of optimize must be an int in the range \[1, inf\). Got 0 instead."),
        (None, -1.0, r"'timeout' parameter of optimize must be a number of seconds greater than 0. Got -1.0"),
    ],
)
def test_optimize_validates(n_trials, timeout, message):
    study = create_study(bstune.TimeBudget(1))
    with pytest.raises(ValueError, match=message):
        optimize(study, lambda t: 0.0, n_trials=n_trials, timeout=timeout)


@pytest.mark.parametrize(("space", "expected"), [
    ("lstm", [128, 64, 256, 32, 512, 16, 1024]),
    ("default", [64, 128, 32, 256, 16, 512]),
    ("linear_scaling", [86, 190, 39, 420, 18, 927, 8, 2048]),
])
def test_fresh_studies_start_with_batch_sizes_spread(space, expected):
    mode = bstune.TimeBudget(1)
    study = create_study(mode, space=load_space(space), seed=0)
    optimize(study, _synthetic_objective(mode, space), n_trials=len(expected) + 4)
    sizes = [t.user_attrs["batch_size"] for t in study.trials]
    assert sizes[: len(expected)] == expected
    assert len(study.trials) == len(expected) + 4  # nothing left waiting
    # Learning rates spread over the range (log scale): the middle first, then the quarters, ...
    the_space = load_space(space)
    lo, hi = math.log(the_space.lr_low), math.log(the_space.lr_high)
    lr_name = "learning_rate" if the_space.scaling == "none" else "base_learning_rate"
    quantiles = [(math.log(t.params[lr_name]) - lo) / (hi - lo) for t in study.trials[: len(expected)]]
    assert quantiles == pytest.approx([0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875, 0.0625][: len(expected)])
    # The other parameters still vary during the sweep, and TPE takes over after it.
    assert len({t.params["epochs"] for t in study.trials[: len(expected)]}) > 1
    assert study.sampler.base._n_startup_trials == len(expected)


def test_a_sweep_is_shared_by_workers_and_not_restarted(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    mode = bstune.TimeBudget(1)
    space = load_space("lstm")
    for seed in (1, 2):  # two "workers" with their own samplers, one after the other
        study = create_study(mode, space=space, storage=url, study_name="w", seed=seed)
        optimize(study, _synthetic_objective(mode, "lstm"), n_trials=4)
    assert [t.user_attrs["batch_size"] for t in study.trials][:7] == [128, 64, 256, 32, 512, 16, 1024]
