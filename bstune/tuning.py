"""The whole job of ``bstune optimize`` as one library call: ``tune``.

It owns what sits above a single study: reading the task script, choosing the mode from the
arguments or the script's ``DEFAULTS``, naming the study, probing first, loading the data before
anything is written, running the trials in this process or on several workers, the confirmation
runs, and the closing report. ``bstune optimize`` and ``bstune confirm`` are thin commands over it;
the Python API offers it as ``bstune.tune``.

Argument errors name the ``bstune optimize`` option they come from, so the command and the library
say the same thing.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bstune.errors import BstuneError

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from bstune._progress import Progress
    from bstune._workers import WorkerPlan
    from bstune._workers._spec import WorkerSpec
    from bstune.objectives import Target, TimeBudget
    from bstune.probe import ProbeResult
    from bstune.space import SearchSpace
    from bstune.task import Task
    from bstune.train import Trainer

__all__ = ["check_positive", "resolve_mode", "tune"]

CLOCKS = ("train", "wall")


def check_positive(name: str, value: float | None, *, integer: bool = False) -> None:
    """Refuse a value that is not a finite number above 0 (``None`` passes: not given)."""
    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        kind = "an integer of at least 1" if integer else "a number greater than 0"
        raise BstuneError(f"{name} must be {kind}; got {value:g}")


def resolve_mode(
    task: Task, *, time_budget: float | None = None, target: float | None = None, clock: str = "train"
) -> TimeBudget | Target:
    """The mode the arguments ask for, else the script's ``DEFAULTS``, else a 60 s time budget.

    ``target`` with ``time_budget`` is a target study whose trials train at most ``time_budget``
    seconds each (``Target``'s ``limit``).
    """
    from bstune.objectives import Target, TimeBudget

    defaults = task.defaults
    kw: dict[str, Any] = {k: defaults[k] for k in ("metric_name", "metric_direction") if k in defaults}
    kw["clock"] = clock
    if target is not None:
        mode: TimeBudget | Target = Target(target, **kw, limit=time_budget)
    elif time_budget is not None:
        mode = TimeBudget(time_budget, **kw)
    elif "target" in defaults:
        mode = Target(float(defaults["target"]), **kw)
    else:
        mode = TimeBudget(float(defaults.get("time_budget", 60.0)), **kw)
    if isinstance(mode, Target):
        mode.check_range("--target" if target is not None else f"{str(task.path)!r}: DEFAULTS target")
    return mode


def default_study_name(task: Task, mode: TimeBudget | Target, *, probe: bool = False) -> str:
    """The study ``bstune optimize`` and ``bstune study-batch`` use unless told: script and mode."""
    from bstune.objectives import Target

    tag = f"budget-{mode.budget:g}s" if hasattr(mode, "budget") else f"target-{mode.target:g}"
    if isinstance(mode, Target) and mode.limit is not None:
        tag += f"-limit-{mode.limit:g}s"
    return f"{task.name}-{tag}" + ("-probe" if probe else "")


def _check_arguments(a: dict[str, Any]) -> None:
    """Every refusal before anything is loaded or written."""
    check_positive("--time-budget", a["time_budget"])
    if not (a["n_trials"] == 0 and (a["confirm"] or a["design"])):  # --n-trials 0: confirm or design only
        check_positive("--n-trials", a["n_trials"], integer=True)
    check_positive("--timeout", a["timeout"])
    check_positive("--micro-batch-size", a["micro_batch_size"], integer=True)
    if a["confirm"] < 0:
        raise BstuneError(f"--confirm must be an integer of at least 0; got {a['confirm']}")
    check_positive("--confirm-top", a["confirm_top"], integer=True)
    if a["target"] is not None and not math.isfinite(a["target"]):
        raise BstuneError(f"--target must be a finite number; got {a['target']}")
    if a["clock"] not in CLOCKS:
        raise BstuneError(f"--clock must be 'train' or 'wall'; got {a['clock']!r}")
    from bstune.pruners import PRUNER_NAMES

    if a["pruner"] not in PRUNER_NAMES:
        raise BstuneError(f"--pruner must be one of {', '.join(PRUNER_NAMES)}; got {a['pruner']!r}")
    check_positive("--max-consecutive-failures", a["max_consecutive_failures"], integer=True)
    check_positive("--heartbeat-interval", a["heartbeat_interval"], integer=True)
    if not (isinstance(a["storage_retry"], (int, float)) and math.isfinite(a["storage_retry"]) and a["storage_retry"] >= 0):
        raise BstuneError(f"--storage-retry must be a number of seconds of at least 0; got {a['storage_retry']:g}")
    if a["design"] not in (None, "batch"):
        raise BstuneError(f"design must be None or 'batch'; got {a['design']!r}")
    for b in a["batch_sizes"] or ():
        check_positive("--batch-sizes", b, integer=True)
    check_positive("--seeds", a["seeds"], integer=True)
    check_positive("--max-trials", a["max_trials"], integer=True)
    if a["design"] is not None:
        from bstune.design import DEFAULT_MAX_TRIALS, check_design_options

        check_design_options(a["batch_sizes"], a["seeds"], a["max_trials"] or DEFAULT_MAX_TRIALS)


@dataclass
class _Job:
    """What the phases of one ``tune`` call share."""

    console: Console
    progress: Progress
    study: optuna.Study
    plans: list[WorkerPlan] | None
    spec: WorkerSpec
    objective: Any
    n_trials: int
    timeout: float | None = None
    max_consecutive_failures: int = 3


def tune(
    script: str | Path,
    *,
    time_budget: float | None = None,
    target: float | None = None,
    space: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    clock: str = "train",
    device: str = "auto",
    micro_batch_size: int | None = None,
    seed: int = 0,
    compile: bool = False,
    amp: bool | None = None,
    pruner: str = "default",
    task_options: Mapping[str, str] | None = None,
    artifact_dir: str | Path | None = None,
    workers: int = 1,
    max_consecutive_failures: int = 3,
    heartbeat_interval: int = 10,
    storage_retry: float = 60.0,
    probe: bool = False,
    confirm: int = 0,
    confirm_top: int = 3,
    design: str | None = None,
    batch_sizes: Sequence[int] | None = None,
    seeds: int = 2,
    max_trials: int | None = None,
    retry_disturbed: bool = False,
    debug: bool = False,
    console: Console | None = None,
) -> optuna.Study:
    """Search batch size, learning rate and epochs for the task in ``script``; what ``bstune optimize`` does.

    Trials are added to the study in ``storage`` (created, or resumed when the same study exists)
    with progress printed on ``console``, and the report is printed and stored on the study at the
    end, also when the search stops early (Ctrl-C, too many failures). Each argument is the
    ``bstune optimize`` option of the same name (see ``bstune optimize --help``); ``probe`` is
    ``--probe``, ``compile`` is ``--compile``, ``amp`` is ``--amp``/``--no-amp`` (``None``: the
    script's ``DEFAULTS["amp"]``, else bf16 autocast on CUDA and off on the CPU).

    ``design="batch"`` runs the batch-size study (``bstune.design``; ``bstune study-batch``)
    after the ``n_trials`` of the search (0 for none): ``batch_sizes`` (default: spread over the
    space), ``seeds`` more runs at each batch size's chosen rate, at most ``max_trials`` trials
    (default ``bstune.design.DEFAULT_MAX_TRIALS``), pruning off.

    ``storage_retry`` is how many seconds every storage call (here and in the workers) waits out a
    lost connection before the command stops (``bstune.storage``); 0 stops at the first error.

    ``retry_disturbed`` queues the configuration of a trial that trained far slower than its batch
    size's other trials (``bstune.analysis._disturbed``) again, once.

    Returns:
        The study.

    Raises:
        BstuneError: A bad argument (one line naming the option), a bad script, or a search
            stopped after ``max_consecutive_failures`` failed trials in a row.
    """
    from bstune.task import load_task

    _check_arguments(locals())
    plans = None
    if workers != 1:
        from bstune._workers import plan_workers

        plans = plan_workers(workers, device)
    storage = storage or ("journal:bstune.log" if plans else "sqlite:///bstune.db")
    task = load_task(script, dict(task_options or {}))
    amp = _check_precision(task, compile=compile, amp=amp, plans=plans)
    mode = resolve_mode(task, time_budget=time_budget, target=target, clock=clock)
    study_name = study_name if study_name is not None else default_study_name(task, mode, probe=probe)
    spec: WorkerSpec = {
        "script": str(Path(script).resolve()), "task_options": task.options, "mode": mode.to_attrs(),
        "storage": storage, "study_name": study_name, "seed": seed, "micro_batch_size": micro_batch_size,
        "heartbeat_interval": heartbeat_interval, "debug": debug, "pruner": pruner, "compile": compile,
        "amp": amp, "retry_disturbed": retry_disturbed, "storage_retry": storage_retry,
    }
    if design is not None and n_trials is None:
        n_trials = 0  # the design alone unless a search is asked for too
    job = _open(task, mode, spec, space=space, n_trials=n_trials, device=device, probe=probe, plans=plans,
                console=console if console is not None else _default_console())
    job.timeout, job.max_consecutive_failures = timeout, max_consecutive_failures
    aborted = False
    try:
        if job.n_trials:
            _search(job, job.n_trials)
        if design == "batch":
            _design_phase(job, batch_sizes=batch_sizes, seeds=seeds, max_trials=max_trials)
        if confirm:
            _confirm_phase(job, confirm, confirm_top)
    except KeyboardInterrupt as e:
        aborted = type(e).__name__ == "Interrupted"  # the second Ctrl-C: out at once
        raise
    finally:
        if not aborted:
            _close(job, artifact_dir)
    return job.study


def _check_precision(task: Task, *, compile: bool, amp: bool | None, plans: list[WorkerPlan] | None) -> bool | None:
    """Refuse --compile and --amp where they cannot apply; the precision to train in."""
    script = str(task.path)
    if compile and task.owns_loop:
        raise BstuneError(f"--compile: {script!r} defines train(hp, run) and owns its loop; compile the model there instead")
    if amp is not None and task.owns_loop:
        raise BstuneError(f"--amp/--no-amp: {script!r} defines train(hp, run) and owns its loop; set its precision there instead")
    if amp and plans is not None and any(p.device != "cuda" for p in plans):
        # The workers build their trainers; say it here, before a study or a worker exists.
        raise BstuneError("bf16 autocast (--amp, Trainer(amp=True)) runs on CUDA only; these workers run on cpu")
    if amp is None and task.defaults.get("amp") is False:
        return False  # the script's DEFAULTS: float32 on CUDA too (True is the default on CUDA already)
    return amp


def _open(
    task: Task, mode: TimeBudget | Target, spec: WorkerSpec, *, space: str | Path | None, n_trials: int | None,
    device: str, probe: bool, plans: list[WorkerPlan] | None, console: Console,
) -> _Job:
    """The space (probed if asked), the data, the study and the objective, in that order.

    The data is loaded before the study is made, so bad data leaves no study behind. Fills in
    ``spec`` (what a worker needs) with the space and the micro-batch the space may set.
    """
    import optuna

    from bstune import _progress
    from bstune.objective import make_objective
    from bstune.objectives import Target
    from bstune.pruners import make_pruner
    from bstune.space import load_space
    from bstune.storage import mask_url, resolve_storage
    from bstune.study import create_study

    n_trials = n_trials if n_trials is not None else int(task.defaults.get("n_trials", 20))
    the_space = load_space(space or task.defaults.get("space", "default"))
    probed = None
    if probe:
        the_space, probed = _probed_space(console, task, the_space, spec["storage"], spec["study_name"],
                                          device=device, seed=spec["seed"])
    optuna.logging.set_verbosity(optuna.logging.WARNING if spec["debug"] else optuna.logging.ERROR)
    if spec["micro_batch_size"] is None:
        spec["micro_batch_size"] = the_space.micro_batch_size  # a probed space's memory limit
    spec["space"] = the_space.to_dict()
    trainer = None
    if not task.owns_loop and plans is None:
        trainer = _loaded_trainer(console, task, device=device, seed=spec["seed"],
                                  micro_batch_size=spec["micro_batch_size"], compile=spec["compile"],
                                  amp=spec["amp"])
    storage = resolve_storage(spec["storage"], heartbeat_interval=spec["heartbeat_interval"],
                              retry=spec["storage_retry"] or None)
    study = create_study(mode, space=the_space, storage=storage, study_name=spec["study_name"], seed=spec["seed"],
                         pruner=make_pruner(spec["pruner"], mode))
    before = len(study.trials)
    if probed is not None:
        study.set_user_attr("probe", probed.to_dict())
    what = f"time budget {mode.budget:g} s per trial" if hasattr(mode, "budget") else f"target {mode.metric_name} {mode.target:g}"
    if isinstance(mode, Target) and mode.limit is not None:
        what += f" within {mode.limit:g} s per trial"
    resumed = f", resuming after {before} trials" if before else ""
    console.print(f"study {spec['study_name']!r} in {mask_url(spec['storage'])}: {what}, space {the_space.name!r}, "
                  f"{n_trials} trials{resumed}")
    if before and trainer is not None:
        _say_if_trained_otherwise(console, study, trainer)
    progress = _progress.Progress(console, mode, n_trials)
    objective = None
    if plans is None:
        objective = make_objective(task, the_space, mode, trainer=trainer, on_report=progress.on_report,
                                   micro_batch_size=spec["micro_batch_size"], retry_disturbed=spec["retry_disturbed"])
    return _Job(console, progress, study, plans, spec, objective, n_trials)


def _say_if_trained_otherwise(console: Console, study: optuna.Study, trainer: Trainer) -> None:
    """On resume: say so when the study's completed trials were compiled or ran in float32 and this
    run's trainer differs, since their times and accuracies would not compare alike."""
    from bstune.confirmation import recorded_settings

    n, compiled, amps = recorded_settings(study)
    if not n or len(compiled) != 1 or len(amps) != 1 or None in compiled | amps:
        return  # nothing trained by the built-in trainer yet, or trials trained more than one way
    (was_compiled,), (was_amp,) = compiled, amps
    now_amp = trainer.precision
    differ = []
    if was_compiled != trainer.compile:
        differ.append("add --compile" if was_compiled else "drop --compile")
    if was_amp != now_amp:
        differ.append("add --amp" if was_amp == "bf16" else "add --no-amp")
    if differ:
        trials = f"{n} completed trial" + ("s" if n != 1 else "")
        console.print(f"note: the study's {trials} trained {'compiled' if was_compiled else 'not compiled'}, "
                      f"amp {was_amp}; this run trains {'compiled' if trainer.compile else 'not compiled'}, "
                      f"amp {now_amp} (to measure alike, {' and '.join(differ)})")


def _default_console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and pipes: keep each trial on one line
    return console


def _probed_space(
    console: Console, task: Task, base: SearchSpace, storage: str, study_name: str, **kwargs: Any
) -> tuple[SearchSpace, ProbeResult | None]:
    """``probe=True``: the space an earlier probe of this study narrowed, else a fresh probe's."""
    from bstune.space import load_space

    stored = _stored_probe(storage, study_name)
    if stored is not None:  # resuming: the same space, not a fresh probe that may differ
        space = load_space(stored["space"])
        console.print(f"resuming a probed study: its space from the earlier probe ({space.name})")
        return space, None
    probed = probe_and_report(console, task, base, output_dir=Path("."), **kwargs)
    return probed.space, probed


def _stored_probe(storage: str, study_name: str) -> dict[str, Any] | None:
    """The probe findings stored on an existing study of that name, if any."""
    import optuna

    from bstune.storage import resolve_storage

    store = resolve_storage(storage)
    if study_name not in optuna.study.get_all_study_names(storage=store):  # type: ignore[arg-type]
        return None
    found = optuna.load_study(study_name=study_name, storage=store).user_attrs.get("probe")  # type: ignore[arg-type]
    return found if isinstance(found, dict) and isinstance(found.get("space"), dict) else None


def probe_and_report(console: Console, task: Task, base_space: SearchSpace, *, output_dir: Path, **kwargs: Any) -> ProbeResult:
    """Run the probe, print its log, table and findings, and write its space file and picture."""
    from bstune.probe import plot_probe, probe_table, run_probe, summary_lines, write_space

    result = run_probe(task, space=base_space, log=lambda line: console.print(f"[dim]{line}[/]"), **kwargs)
    console.print(probe_table(result))
    for line in summary_lines(result):
        console.print(line)
    output_dir.mkdir(parents=True, exist_ok=True)
    space_file = write_space(result, output_dir / f"{task.name}-probe.yaml")
    picture = plot_probe(result, output_dir / f"{task.name}-probe.png")
    console.print(f"wrote {space_file} (bstune optimize {task.path} --space {space_file}) and {picture}")
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if k != "total")
    console.print(f"probe took {result.seconds['total']:.1f} s ({parts})")
    return result


def _loaded_trainer(console: Console, task: Task, **kwargs: Any) -> Trainer:
    """The built-in trainer with the task's data loaded (so bad data fails before a study exists)."""
    from bstune.train import Trainer

    trainer = Trainer(task, **kwargs)
    data = trainer.data()
    console.print(
        f"data: {data.n_train:,} training and {data.x_valid.shape[0]:,} validation samples "
        f"on {trainer.device_name}" + ("" if trainer.data_on_device else " (streamed from pinned host memory)")
    )
    return trainer


def _search(job: _Job, n_trials: int) -> None:
    """The trials of the search, in this process or on the workers."""
    if job.plans is None:
        from bstune.study import optimize

        optimize(job.study, job.objective, n_trials=n_trials, timeout=job.timeout,
                 callbacks=[job.progress.on_trial_end], max_consecutive_failures=job.max_consecutive_failures)
    else:
        _run_workers(job, n_trials=n_trials, timeout=job.timeout, spec=job.spec)


def _confirm_phase(job: _Job, seeds: int, top: int) -> None:
    """``confirm=K``: train the best configurations again with K other seeds, pruning off."""
    from bstune.confirmation import enqueue_confirmations, without_pruning
    from bstune.study import optimize

    queued = enqueue_confirmations(job.study, seeds, top)
    if not queued:
        job.console.print(f"confirm: the best {top} configurations already have {seeds} confirmation runs each"
                          if job.study.trials else "confirm: no finished trial to confirm")
        return
    firsts = ", ".join(f"#{n}" for n in dict.fromkeys(queued))
    job.console.print(f"confirming {firsts} with {seeds} more seed(s) each: {len(queued)} runs, not pruned")
    job.progress.n_trials, job.progress.done = len(queued), 0
    if job.plans is None:
        optimize(without_pruning(job.study), job.objective, n_trials=len(queued),
                 callbacks=[job.progress.on_trial_end], max_consecutive_failures=job.max_consecutive_failures)
    else:
        _run_workers(job, n_trials=len(queued), timeout=None, spec={**job.spec, "pruner": "none"})


def _design_phase(job: _Job, *, batch_sizes: Sequence[int] | None, seeds: int, max_trials: int | None) -> None:
    """``design="batch"``: the batch-size study, its cost said first, pruning off."""
    from bstune.confirmation import without_pruning
    from bstune.design import DEFAULT_MAX_TRIALS, next_round, plan_design, run_design
    from bstune.space import load_space
    from bstune.study import optimize

    space = load_space(job.spec["space"])
    design = plan_design(job.study, space, batch_sizes=batch_sizes, seeds=seeds,
                         max_trials=max_trials or DEFAULT_MAX_TRIALS)
    first = next_round(job.study, design, space)
    fixed = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in design.fixed.items())
    per = _seconds_per_trial(job)
    expected = design.expected_trials()
    cost = f"about {per * expected / 60:.0f} min" if per is not None else "time unknown until a trial finishes"
    if per is not None and per * expected < 90:
        cost = f"about {per * expected:.0f} s"
    job.console.print(
        f"batch-size study: batch sizes {', '.join(map(str, design.batch_sizes))}, each at 3 or more learning rates "
        f"a factor {design.step:g} apart, then {design.seeds + 1} runs at its best; fixed: {fixed}. "
        f"Expected {expected} trials ({cost}), at most {design.max_trials} (--max-trials)"
        + (f"; {len(first)} to run in the first round" if first else "; already complete"),
        soft_wrap=True, markup=False,
    )
    if not first:
        return

    def run_trials(n: int) -> None:
        job.progress.n_trials, job.progress.done = n, 0
        if job.plans is None:
            optimize(without_pruning(job.study), job.objective, n_trials=n, callbacks=[job.progress.on_trial_end],
                     max_consecutive_failures=job.max_consecutive_failures)
        else:
            _run_workers(job, n_trials=n, timeout=None, spec={**job.spec, "pruner": "none"})

    run_design(job.study, design, space, run_trials,
               log=lambda line: job.console.print(line, markup=False, soft_wrap=True))


def _seconds_per_trial(job: _Job) -> float | None:
    """Wall seconds a trial of this study is expected to take: the median of its finished trials,
    else the budget (or a target's limit) plus a quarter and a second for evaluation and start-up."""
    import statistics

    import optuna

    done = [(t.datetime_complete - t.datetime_start).total_seconds()
            for t in job.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.datetime_start is not None and t.datetime_complete is not None]
    if done:
        return statistics.median(done)
    limit = job.progress.mode.trial_limit
    return 1.25 * limit + 1.0 if limit else None


def _run_workers(job: _Job, *, n_trials: int, timeout: float | None, spec: WorkerSpec) -> None:
    """``workers > 1``: this process coordinates the workers (bstune/_workers/)."""
    from bstune import _workers

    assert job.plans is not None
    job.console.print(f"{len(job.plans)} workers: " + ", ".join(
        f"#{p.index} on GPU {p.gpu}" if p.gpu is not None else f"#{p.index} on {p.threads} CPU thread(s)"
        for p in job.plans
    ))

    def lost(number: int, reason: str) -> None:
        job.console.print(f"trial #{number} lost: {reason}", highlight=False, markup=False)

    try:
        outcome = _workers.run_workers(job.study, spec, job.plans, n_trials=n_trials, timeout=timeout,
                                       max_consecutive_failures=job.max_consecutive_failures,
                                       on_trial_end=job.progress.on_trial_end, on_lost=lost)
    except _workers.Interrupted:
        print("bstune: interrupted twice: the workers were killed; with RDB storage their running trials "
              "are failed and retried after the heartbeat grace period", file=sys.stderr)
        raise
    if outcome.error:
        raise BstuneError(outcome.error)


def _close(job: _Job, artifact_dir: str | Path | None) -> None:
    """The best configurations, the report (printed and stored on the study) and where to look next."""
    from bstune import _progress
    from bstune.analysis import best_configurations, publish_report
    from bstune.storage import mask_url

    rows = best_configurations(job.study, k=5)
    if rows:
        job.console.print(_progress.best_table(rows, job.progress.mode))
    else:
        job.console.print("no trial finished with a feasible value yet")
    publish_report(job.study, console=job.console, artifact_dir=artifact_dir)
    job.console.print(
        f"inspect it: bstune dashboard --storage {mask_url(job.spec['storage'])} "
        f"--study-name {shlex.quote(job.spec['study_name'])}"
    )
