"""bstune/_workers/: several worker processes on one study, lost trials, Ctrl-C, heartbeats.

The end-to-end tests start real ``bstune optimize --workers N`` processes on a journal file and on
a private PostgreSQL server, with a synthetic task that trains in milliseconds. A trial sleeps only
where a test needs a real process caught mid-trial (to kill or interrupt it).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import _postgres
import optuna
import pytest
from _processes import running, workers_in

from bstune._workers import WorkerPlan, plan_workers, retry_trial
from bstune.errors import BstuneError

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "tests" / "data" / "synthetic_task.py"
STUDY = "synthetic_task-budget-10s"
State = optuna.trial.TrialState


# --------------------------------------------------------------------------- planning


def test_one_gpu_per_worker() -> None:
    plans = plan_workers(2, "auto", cpu_cores=range(8), gpus=["3", "5"])
    assert [(p.device, p.gpu) for p in plans] == [("cuda", "3"), ("cuda", "5")]
    assert plans[1].env()["CUDA_VISIBLE_DEVICES"] == "5"
    assert [p.cpu_cores for p in plans] == [(0, 1, 2, 3), (4, 5, 6, 7)]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from bstune._workers import visible_gpus

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", " 3, 5 ,7")  # as CUDA reads it: the first two exist
    assert visible_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert visible_gpus() == []


def test_more_workers_than_gpus_is_refused() -> None:
    with pytest.raises(BstuneError, match=r"--workers 3 needs 3 GPUs .* but 2 are visible"):
        plan_workers(3, "auto", cpu_cores=range(8), gpus=["0", "1"])


def test_one_named_gpu_cannot_host_several_workers() -> None:
    with pytest.raises(BstuneError, match=r"--device cuda:1 names one GPU"):
        plan_workers(2, "cuda:1", cpu_cores=range(8), gpus=["0", "1"])


def test_cpu_workers_share_the_cores_and_set_threads() -> None:
    plans = plan_workers(3, "cpu", cpu_cores=[0, 1, 2, 3, 4, 5, 6])
    assert [p.cpu_cores for p in plans] == [(0, 1), (2, 3), (4, 5)]
    assert {p.env()["OMP_NUM_THREADS"] for p in plans} == {"2"}
    assert all(p.gpu is None and "CUDA_VISIBLE_DEVICES" not in p.env() for p in plans)


def test_more_workers_than_cores_are_not_pinned() -> None:
    plans = plan_workers(4, "cpu", cpu_cores=[0, 1])
    assert plans[3] == WorkerPlan(3, "cpu", None, (), 1)


def test_cpu_device_never_asks_for_gpus() -> None:
    plans = plan_workers(2, "cpu", cpu_cores=[0, 1], gpus=["0", "1"])
    assert [p.gpu for p in plans] == [None, None]


def test_retry_copies_the_parameters_and_marks_the_retry() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("curve", [1, 2])
    study.tell(trial, state=State.FAIL)
    retry_trial(study, study.trials[0])
    retry_trial(study, study.trials[0])  # a second loss of the same trial: its own retry
    again = study.ask()
    frozen = study.trials[again.number]
    assert again.params == trial.params
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(frozen) == 0
    assert frozen.system_attrs["retry_history"] == [0]
    assert frozen.user_attrs == {}  # what the lost run recorded is not carried over


# --------------------------------------------------------------------------- end to end


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path):
    """A fresh storage URL of each kind (a new database on the private server)."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t{uuid.uuid4().hex[:16]}")


def _env(**extra: str) -> dict[str, str]:
    # The repository first, then whatever the caller's path holds (dependencies installed beside it).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", **extra}
    for k in ("BSTUNE_TEST_MARKERS", "BSTUNE_TEST_SLEEP", "BSTUNE_TEST_STUBBORN", "BSTUNE_TEST_FAIL",
              "BSTUNE_STORAGE"):
        if k not in extra:
            env.pop(k, None)
    return env


def _default_sigint() -> None:
    # As from a terminal: a shell starts background jobs with SIGINT ignored, children inherit
    # that, and the Ctrl-C tests would then wait out their timeout (pytest started with `&`).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _optimize(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    # No pruning unless a test asks: whether the gain bound has three finished trials to judge by
    # when a trial reports depends on how the workers interleave, and these tests count states.
    pruning = () if "--pruner" in args else ("--pruner", "none")
    cmd = [sys.executable, "-m", "bstune", "optimize", str(TASK), "--device", "cpu", *pruning, *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _states(url: str) -> collections.Counter[str]:
    study = optuna.load_study(study_name=STUDY, storage=_storage(url))
    return collections.Counter(t.state.name for t in study.trials)


def _storage(url: str) -> optuna.storages.BaseStorage | str:
    from bstune.study import resolve_storage

    return resolve_storage(url)  # type: ignore[return-value]


def _load(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=_storage(url))


def _first_marker(markers: Path, timeout: float = 60, n: int = 1) -> tuple[int, int]:
    """(pid, trial number) of the first trial that announced itself, once ``n`` trials have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(markers.iterdir())
        if len(found) >= n:
            pid, number = found[0].name.split("-")
            return int(pid), int(number)
        time.sleep(0.02)  # polling for the situation, not timing anything
    raise AssertionError(f"{n} trials did not start")


def test_four_workers_reach_exactly_the_requested_count(storage: str, tmp_path: Path) -> None:
    k = 3
    rc, out = _finish(_optimize(tmp_path, "--workers", "4", "--n-trials", str(4 * k), "--storage", storage))
    assert rc == 0, out
    study = _load(storage)
    states = collections.Counter(t.state for t in study.trials)
    assert states == {State.COMPLETE: 4 * k}, states  # 0 lost, 0 extra, 0 left RUNNING
    assert len({t.number for t in study.trials}) == 4 * k
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4 * k  # none duplicated
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert {t.user_attrs["workers"] for t in study.trials} == {4} and len(workers) >= 2
    assert all(t.user_attrs["cpu_threads"] >= 1 and t.user_attrs["gpu"] is None for t in study.trials)
    # The study shows the concurrency: some trials ran at the same time.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert f"[{4 * k}/{4 * k}]" in out


def test_running_again_resumes_the_same_study(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    for _ in range(2):
        rc, out = _finish(_optimize(tmp_path, "--workers", "2", "--n-trials", "3", "--storage", url))
        assert rc == 0, out
    assert "resuming after 3 trials" in out
    assert _states(url) == {"COMPLETE": 6}
    # Two workers on this machine's cores: each pinned to its own share, torch threads to match.
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // 2
    for t in _load(url).trials:
        mine = t.user_attrs["test_affinity"]
        assert t.user_attrs["test_omp_threads"] == str(max(share, 1)) == str(t.user_attrs["cpu_threads"])
        if share:
            assert mine == cores[t.user_attrs["worker"] * share:][:share]


def test_default_storage_for_several_workers_is_a_journal_file(tmp_path: Path) -> None:
    rc, out = _finish(_optimize(tmp_path, "--workers", "2", "--n-trials", "2"))
    assert rc == 0, out
    assert (tmp_path / "bstune.log").is_file() and not (tmp_path / "bstune.db").exists()
    assert "bstune dashboard --storage journal:bstune.log" in out


def test_a_killed_worker_trial_is_retried_and_the_count_still_reached(storage: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _optimize(tmp_path, "--workers", "4", "--n-trials", "8", "--storage", storage,
                     BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="0.3")
    pid, number = _first_marker(markers)
    os.kill(pid, signal.SIGKILL)
    rc, out = _finish(proc)
    assert rc == 0, out
    study = _load(storage)
    states = collections.Counter(t.state for t in study.trials)
    assert states == {State.COMPLETE: 8, State.FAIL: 1}, states
    lost = study.trials[number]
    assert lost.state == State.FAIL and lost.user_attrs["stop_reason"] == "lost"
    assert "killed by SIGKILL" in lost.user_attrs["stop_detail"]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1 and retries[0].state == State.COMPLETE
    assert retries[0].params == lost.params
    assert f"trial #{number} lost: worker" in out


def test_heartbeat_fails_and_retries_the_trial_of_a_dead_command(postgres, tmp_path: Path) -> None:
    url = postgres.create_database("heartbeat")
    markers = tmp_path / "markers"
    markers.mkdir()
    # The whole command dies (as when its machine goes down): nobody is left to fail its trial.
    proc = _optimize(tmp_path, "--n-trials", "4", "--storage", url, "--heartbeat-interval", "1",
                     BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="5")
    _, number = _first_marker(markers)
    proc.kill()
    proc.communicate()
    assert _states(url) == {"RUNNING": 1}
    # The same command again (short trials that span the 2 s grace period) finds it stale.
    rc, out = _finish(_optimize(tmp_path, "--n-trials", "6", "--storage", url, "--heartbeat-interval", "1",
                                BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="0.6"))
    assert rc == 0, out
    study = _load(url)
    assert study.trials[number].state == State.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert [t.state for t in retries] == [State.COMPLETE]
    assert _states(url) == {"COMPLETE": 6, "FAIL": 1}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_records_the_running_trials_and_leaves_a_loadable_study(
    storage: str, tmp_path: Path, workers: str
) -> None:
    url = storage
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _optimize(tmp_path, "--workers", workers, "--n-trials", "20", "--storage", url,
                     BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="30")
    _first_marker(markers)
    proc.send_signal(signal.SIGINT)
    rc, out = _finish(proc)
    assert rc == 130, out
    assert "bstune: interrupted" in out
    study = _load(url)
    assert not [t for t in study.trials if t.state in (State.RUNNING, State.WAITING)]
    interrupted = [t for t in study.trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert interrupted and all(t.state == State.FAIL for t in interrupted)
    from bstune.analysis import best_configurations

    assert best_configurations(study) == []  # loadable and readable, nothing finished


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _optimize(tmp_path, "--workers", "2", "--n-trials", "4", "--storage", url,
                     BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="60", BSTUNE_TEST_STUBBORN="1")
    pid, _ = _first_marker(markers)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # let the first Ctrl-C reach the workers before the second
    proc.send_signal(signal.SIGINT)
    rc, out = _finish(proc, timeout=30)  # the stubborn trial would hold it for 60 s
    assert rc == 130, out
    assert "interrupted twice" in out
    with pytest.raises(ProcessLookupError, match=r"No such process"):
        os.kill(pid, 0)  # the worker is gone too, and reaped


def test_workers_of_a_killed_command_finish_their_trial_and_exit(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _optimize(tmp_path, "--workers", "2", "--n-trials", "20", "--storage", url,
                     BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="0.5")
    _first_marker(markers)
    pids = workers_in(tmp_path)
    assert len(pids) == 2
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 30
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the workers to notice, not timing anything
    assert not any(running(p) for p in pids)
    study = _load(url)
    assert 1 <= len(study.trials) <= 3
    assert {t.state for t in study.trials} == {State.COMPLETE}  # recorded, none left RUNNING


def test_running_again_reclaims_the_trials_of_a_command_killed_whole(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _optimize(tmp_path, "--workers", "2", "--n-trials", "4", "--storage", url,
                     BSTUNE_TEST_MARKERS=str(markers), BSTUNE_TEST_SLEEP="30")
    _first_marker(markers, n=2)  # both workers mid-trial
    pids = workers_in(tmp_path)
    for pid in (proc.pid, *pids):  # a journal file has no heartbeats to notice this
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    while any(running(p) for p in pids):
        time.sleep(0.02)  # polling for the kernel, not timing anything
    orphans = [t.number for t in _load(url).trials if t.state == State.RUNNING]
    assert len(orphans) == 2
    rc, out = _finish(_optimize(tmp_path, "--workers", "2", "--n-trials", "2", "--storage", url))
    assert rc == 0, out
    study = _load(url)
    for number in orphans:
        assert study.trials[number].state == State.FAIL and f"trial #{number} lost" in out
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
        assert [t.state for t in retries] == [State.COMPLETE]
    assert _states(url) == {"FAIL": len(orphans), "COMPLETE": 2}


def test_failing_user_code_fails_the_trial_then_stops_the_study(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    rc, out = _finish(_optimize(tmp_path, "--workers", "2", "--n-trials", "10", "--storage", url,
                                "--max-consecutive-failures", "3", BSTUNE_TEST_FAIL="1"))
    assert rc == 1, out
    assert "bstune: error: stopped after 3 failed trials in a row" in out
    assert "RuntimeError: the task broke on purpose" in out
    study = _load(url)
    assert 3 <= len(study.trials) <= 4  # the other worker's trial, already running, finishes
    assert {t.state for t in study.trials} == {State.FAIL}
    assert all("the task broke on purpose" in t.user_attrs["traceback"] for t in study.trials)


def test_a_worker_that_cannot_start_reports_one_line_without_the_password(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bstune import TimeBudget, create_study, load_space
    from bstune._workers import run_workers
    from bstune._workers._spec import WorkerSpec
    from bstune.options import TuneOptions

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    space = load_space("default")
    study = create_study(TimeBudget(10), space=space, storage=f"journal:{tmp_path / 's.log'}", study_name="s")
    # The coordinator's storage is fine; the workers' (as on a machine that cannot reach it) is not.
    options = TuneOptions(storage="postgresql://ann:s3cret@127.0.0.1:1/x", study_name="s", storage_retry=0)
    spec: WorkerSpec = {"script": str(TASK), "options": options.to_dict(), "space": space.to_dict(),
                        "mode": TimeBudget(10).to_attrs()}
    result = run_workers(study, spec, plan_workers(2, "cpu"), n_trials=4)
    assert result.error is not None
    assert result.error.startswith("storage 'postgresql://ann:***@127.0.0.1:1/x': ")
    assert result.finished == 0 and study.trials == []
    out, err = capfd.readouterr()
    assert "s3cret" not in out + err + result.error


def test_no_password_in_any_output(postgres, tmp_path: Path) -> None:
    secrets = (_postgres.PASSWORD, postgres.url().split(":")[2].split("@")[0])  # raw and quoted
    good = postgres.create_database("secret")
    runs = [
        ("--workers", "2", "--n-trials", "4", "--storage", good),
        ("--n-trials", "2", "--storage", good),
        ("--n-trials", "2", "--storage", postgres.url("secret", password=_postgres.PASSWORD + "x")),
        ("--n-trials", "2", "--storage", good.replace(str(postgres.port), str(postgres.port + 1))),
        ("--n-trials", "2", "--storage", postgres.url("no_such_db"), "--debug"),
        ("--workers", "2", "--n-trials", "2", "--storage", postgres.url("no_such_db")),
    ]
    for i, args in enumerate(runs):
        rc, out = _finish(_optimize(tmp_path, *args))
        assert rc == (0 if i < 2 else 1), out  # two good runs, then four refused storages
        for secret in secrets:
            assert secret not in out, (args, out)
        assert "***" in out, out
    # From the environment, where README step 4 puts it, with two workers.
    rc, out = _finish(_optimize(tmp_path, "--workers", "2", "--n-trials", "2", BSTUNE_STORAGE=good))
    assert rc == 0 and "***" in out and not any(secret in out for secret in secrets), out
    study = _load(good)
    assert _states(good) == {"COMPLETE": 8}
    # Nor is it stored in the study, where reports and dashboards read from.
    stored = repr((study.user_attrs, [(t.user_attrs, t.system_attrs) for t in study.trials]))
    assert not any(secret in stored for secret in secrets)
    assert study.user_attrs["mode"] == "time_budget"


@pytest.mark.gpu
def test_each_worker_sees_only_its_own_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    n = torch.cuda.device_count()
    url = f"journal:{tmp_path / 'study.log'}"
    rc, out = _finish(_optimize(tmp_path, "--workers", str(n + 1), "--storage", url, "--device", "cuda"))
    assert rc == 1 and f"--workers {n + 1} needs {n + 1} GPUs" in out
    if n < 2:  # --workers 1 trains in this process: no worker, no GPU of its own to check
        pytest.skip(f"one worker per GPU needs two GPUs; this machine has {n}")
    rc, out = _finish(_optimize(tmp_path, "--workers", str(n), "--n-trials", str(2 * n), "--storage", url,
                                "--device", "cuda"))
    assert rc == 0, out
    trials = _load(url).trials
    assert {t.user_attrs["gpu"] for t in trials} <= {str(i) for i in range(n)}
    assert all(t.user_attrs["test_visible_gpus"] == 1 for t in trials)


def test_a_worker_builds_its_trainer_as_the_command_asked(tmp_path: Path, trainer_calls: list[dict]) -> None:
    import torch

    from bstune import TimeBudget
    from bstune._workers._spec import WorkerSpec
    from bstune._workers._worker import _build
    from bstune.options import TuneOptions
    from bstune.space import load_space

    options = TuneOptions(storage=f"sqlite:///{tmp_path / 'w.db'}", study_name="w", compile=True, amp=False)
    spec: WorkerSpec = {
        "script": str(REPO / "examples" / "mlp_blobs.py"), "options": options.to_dict(),
        "space": load_space("mlp").to_dict(), "mode": TimeBudget(0.3).to_attrs(), "index": 0,
        "plan": {"device": "cpu", "gpu": None, "cpu_cores": [], "threads": 1},
    }
    threads = torch.get_num_threads()
    try:
        _build(spec)
    finally:
        torch.set_num_threads(threads)  # the worker sets its own; this process keeps its own
    seen = trainer_calls[-1]
    assert seen["compile"] is True and seen["amp"] is False and seen["device"] == "cpu"


def test_the_readme_postgresql_url_opens_in_bstune_optuna_and_optuna_dashboard(postgres, tmp_path: Path) -> None:
    """The several-machines recipe as written: BSTUNE_STORAGE='postgresql://...' for bstune, then
    the same URL in optuna.load_study and in the optuna-dashboard command; and an explicit
    postgresql+psycopg2:// URL still works for bstune."""
    import json
    import socket
    import urllib.request

    url = postgres.create_database("recipe")
    assert url.startswith("postgresql://")
    done = subprocess.run([sys.executable, "-m", "bstune", "optimize", str(TASK), "--n-trials", "2",
                           "--study-name", "shared"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_env(BSTUNE_STORAGE=url))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(optuna.load_study(study_name="shared", storage=url).trials) == 2  # no bstune in between
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import shutil

    command = Path(sys.executable).parent / "optuna-dashboard"  # the command pip installed beside this Python
    command_path = str(command) if command.exists() else shutil.which("optuna-dashboard")
    assert command_path, "the optuna-dashboard command is not installed"
    dashboard = subprocess.Popen([command_path, url, "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 60
        while True:
            try:
                with opener.open(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    studies = json.loads(resp.read())["study_summaries"]
                break
            except OSError:
                assert dashboard.poll() is None, dashboard.stdout.read() if dashboard.stdout else ""
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["shared"]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    old = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    done = subprocess.run([sys.executable, "-m", "bstune", "report", "--storage", old, "--study-name", "shared",
                           "--format", "json"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["n_trials"] == 2
    assert _postgres.PASSWORD not in done.stdout + done.stderr
