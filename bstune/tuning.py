"""The whole job of ``bstune optimize`` as one library call: ``tune``.

It owns what sits above a single study: reading the task script, choosing the mode from the
arguments or the script's ``DEFAULTS``, naming the study, probing first, loading the data before
anything is written, running the trials in this process or on several workers, the confirmation
runs, and the closing report. ``bstune optimize`` and ``bstune confirm`` are thin commands over it;
the Python API offers it as ``bstune.tune``.

Its options are ``bstune.options.TuneOptions``: declared and checked there, shared with the
commands and the workers.
"""

from __future__ import annotations

import dataclasses
import inspect
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bstune.errors import BstuneError
from bstune.options import DEFAULT_MAX_TRIALS, TuneOptions, check_positive

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

__all__ = ["TuneOptions", "check_positive", "resolve_mode", "tune"]


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


@dataclass
class _Job:
    """What the phases of one ``tune`` call share."""

    console: Console
    progress: Progress
    study: optuna.Study
    plans: list[WorkerPlan] | None
    script: str
    options: TuneOptions  # resolved: storage, study name, precision, micro-batch and task options filled in
    mode: TimeBudget | Target
    space: SearchSpace
    objective: Any
    n_trials: int

    def worker_spec(self, **changes: Any) -> WorkerSpec:
        """What a worker needs to rebuild this job's objective, with ``changes`` to the options."""
        return {"script": self.script, "options": self.options.replace(**changes).to_dict(), "mode": self.mode.to_attrs(),
                "space": self.space.to_dict()}


def tune(
    script: str | Path, options: TuneOptions | None = None, *, console: Console | None = None, **overrides: Any
) -> optuna.Study:
    """Search batch size, learning rate and epochs for the task in ``script``; what ``bstune optimize`` does.

    Trials are added to the study in ``storage`` (created, or resumed when the same study exists)
    with progress printed on ``console``, and the report is printed and stored on the study at the
    end, also when the search stops early (Ctrl-C, too many failures).

    The options are the fields of ``bstune.options.TuneOptions``, each the ``bstune optimize``
    option of the same name (see ``bstune optimize --help``), given as keyword arguments
    (``tune("task.py", time_budget=30, n_trials=12)``), as a ``TuneOptions``, or both (the keywords
    then change the ones it holds). ``probe`` is ``--probe``, ``compile`` is ``--compile``,
    ``amp`` is ``--amp``/``--no-amp`` (``None``: the script's ``DEFAULTS["amp"]``, else bf16
    autocast on CUDA and off on the CPU).

    ``design="batch"`` runs the batch-size study (``bstune.design``; ``bstune study-batch``)
    after the ``n_trials`` of the search (0 for none): ``batch_sizes`` (default: spread over the
    space), ``seeds`` more runs at each batch size's chosen rate, at most ``max_trials`` trials,
    pruning off.

    ``storage_retry`` is how many seconds every storage call (here and in the workers) waits out a
    lost connection before the command stops (``bstune.storage``); 0 stops at the first error.

    ``retry_disturbed`` queues the configuration of a trial that trained far slower than its batch
    size's other trials (``bstune.analysis._disturbed``) again, once.

    Returns:
        The study.

    Raises:
        BstuneError: A bad option (one line naming the command-line option), a bad script, or a
            search stopped after ``max_consecutive_failures`` failed trials in a row.
        TypeError: A keyword that is not an option.
    """
    from bstune.task import load_task

    opts = (options or TuneOptions()).replace(**overrides)
    plans = None
    if opts.workers != 1:
        from bstune._workers import plan_workers

        plans = plan_workers(opts.workers, opts.device)
    task = load_task(script, dict(opts.task_options or {}))
    amp = _check_precision(task, compile=opts.compile, amp=opts.amp, plans=plans)
    mode = resolve_mode(task, time_budget=opts.time_budget, target=opts.target, clock=opts.clock)
    opts = opts.replace(
        task_options=task.options, amp=amp,
        storage=opts.storage or ("journal:bstune.log" if plans else "sqlite:///bstune.db"),
        study_name=opts.study_name if opts.study_name is not None else default_study_name(task, mode, probe=opts.probe),
        n_trials=0 if opts.design is not None and opts.n_trials is None else opts.n_trials,  # the design alone
    )
    job = _open(task, mode, opts, str(Path(script).resolve()), plans=plans,
                console=console if console is not None else _default_console())
    aborted = False
    try:
        if job.n_trials:
            _search(job, job.n_trials)
        if opts.design == "batch":
            _design_phase(job)
        if opts.confirm:
            _confirm_phase(job, opts.confirm, opts.confirm_top)
    except KeyboardInterrupt as e:
        aborted = type(e).__name__ == "Interrupted"  # the second Ctrl-C: out at once
        raise
    finally:
        if not aborted:
            _close(job, opts.artifact_dir)
    return job.study


def _signature_with_options() -> inspect.Signature:
    """``tune``'s signature with every option spelled out, for ``help(bstune.tune)`` and editors."""
    sig = inspect.signature(tune)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params[2:2] = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
                   for f in dataclasses.fields(TuneOptions)]
    return sig.replace(parameters=params)


tune.__signature__ = _signature_with_options()  # type: ignore[attr-defined]


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
    task: Task, mode: TimeBudget | Target, opts: TuneOptions, script: str, *, plans: list[WorkerPlan] | None,
    console: Console,
) -> _Job:
    """The space (probed if asked), the data, the study and the objective, in that order.

    The data is loaded before the study is made, so bad data leaves no study behind. The job's
    options get the micro-batch a probed space sets.
    """
    import optuna

    from bstune import _progress
    from bstune.objective import make_objective
    from bstune.objectives import Target
    from bstune.pruners import make_pruner
    from bstune.space import load_space
    from bstune.storage import mask_url, resolve_storage
    from bstune.study import create_study

    url, study_name = opts.storage, opts.study_name
    assert url is not None and study_name is not None  # tune() filled them in
    n_trials = opts.n_trials if opts.n_trials is not None else int(task.defaults.get("n_trials", 20))
    space = load_space(opts.space or task.defaults.get("space", "default"))
    probed = None
    if opts.probe:
        space, probed = _probed_space(console, task, space, url, study_name,
                                      device=opts.device, seed=opts.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING if opts.debug else optuna.logging.ERROR)
    if opts.micro_batch_size is None and space.micro_batch_size is not None:
        opts = opts.replace(micro_batch_size=space.micro_batch_size)  # a probed space's memory limit
    trainer = None
    if not task.owns_loop and plans is None:
        trainer = _loaded_trainer(console, task, device=opts.device, seed=opts.seed,
                                  micro_batch_size=opts.micro_batch_size, compile=opts.compile, amp=opts.amp)
    storage = resolve_storage(url, heartbeat_interval=opts.heartbeat_interval, retry=opts.storage_retry or None)
    study = create_study(mode, space=space, storage=storage, study_name=study_name, seed=opts.seed,
                         pruner=make_pruner(opts.pruner, mode))
    before = len(study.trials)
    if probed is not None:
        study.set_user_attr("probe", probed.to_dict())
    what = f"time budget {mode.budget:g} s per trial" if hasattr(mode, "budget") else f"target {mode.metric_name} {mode.target:g}"
    if isinstance(mode, Target) and mode.limit is not None:
        what += f" within {mode.limit:g} s per trial"
    resumed = f", resuming after {before} trials" if before else ""
    console.print(f"study {study_name!r} in {mask_url(url)}: {what}, space {space.name!r}, "
                  f"{n_trials} trials{resumed}")
    if before and trainer is not None:
        _say_if_trained_otherwise(console, study, trainer)
    progress = _progress.Progress(console, mode, n_trials)
    objective = None
    if plans is None:
        objective = make_objective(task, space, mode, trainer=trainer, on_report=progress.on_report,
                                   micro_batch_size=opts.micro_batch_size, retry_disturbed=opts.retry_disturbed)
    return _Job(console, progress, study, plans, script, opts, mode, space, objective, n_trials)


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

        optimize(job.study, job.objective, n_trials=n_trials, timeout=job.options.timeout,
                 callbacks=[job.progress.on_trial_end], max_consecutive_failures=job.options.max_consecutive_failures)
    else:
        _run_workers(job, n_trials=n_trials, timeout=job.options.timeout, spec=job.worker_spec())


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
                 callbacks=[job.progress.on_trial_end], max_consecutive_failures=job.options.max_consecutive_failures)
    else:
        _run_workers(job, n_trials=len(queued), timeout=None, spec=job.worker_spec(pruner="none"))


def _design_phase(job: _Job) -> None:
    """``design="batch"``: the batch-size study, its cost said first, pruning off."""
    from bstune.confirmation import without_pruning
    from bstune.design import next_round, plan_design, run_design
    from bstune.study import optimize

    opts, space = job.options, job.space
    design = plan_design(job.study, space, batch_sizes=opts.batch_sizes, seeds=opts.seeds,
                         max_trials=opts.max_trials or DEFAULT_MAX_TRIALS)
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
                     max_consecutive_failures=job.options.max_consecutive_failures)
        else:
            _run_workers(job, n_trials=n, timeout=None, spec=job.worker_spec(pruner="none"))

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
                                       max_consecutive_failures=job.options.max_consecutive_failures,
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
        f"inspect it: bstune dashboard --storage {mask_url(str(job.options.storage))} "
        f"--study-name {shlex.quote(str(job.options.study_name))}"
    )
