"""The ``bstune`` command: thin commands over the library.

A user error is one line on stderr (``bstune: error: ...``) and a non-zero exit; the traceback is
shown only with ``--debug``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bstune._version import __version__
from bstune.errors import BstuneError

__all__ = ["app", "main"]

app = typer.Typer(
    name="bstune",
    help="Search batch size jointly with learning rate and epochs, under a time budget or toward a target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_DEBUG = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bstune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """bstune: which batch size, learning rate and epochs, measured on your model and hardware."""


def _positive(name: str, value: float | None, *, integer: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        kind = "an integer of at least 1" if integer else "a number greater than 0"
        raise BstuneError(f"{name} must be {kind}; got {value:g}")


def _parse_options(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BstuneError(f"--task-option must look like KEY=VALUE; got {item!r}")
        out[key] = value
    return out


@app.command()
def optimize(
    script: Annotated[Path, typer.Argument(help="The task script: defines data() and model(hp), or train(hp, run).")],
    time_budget: Annotated[
        Optional[float],
        typer.Option(
            "--time-budget",
            help="Time-budget mode: each trial trains at most this many seconds; its value is the best "
            "validation metric reached. The default mode (with the script's budget, else 60 s).",
        ),
    ] = None,
    target: Annotated[
        Optional[float],
        typer.Option(
            "--target",
            help="Target mode: a trial stops when the validation metric reaches this value; its value "
            "is the training seconds it took.",
        ),
    ] = None,
    space: Annotated[
        Optional[str],
        typer.Option("--space", help="A built-in search space name (default, lstm, ...) or a YAML file."),
    ] = None,
    n_trials: Annotated[
        Optional[int], typer.Option("--n-trials", help="Trials to add to the study (script default, else 20).")
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option("--timeout", help="Stop starting trials after this many seconds.")
    ] = None,
    storage: Annotated[
        str, typer.Option("--storage", help="Where the study lives: sqlite:///FILE.db, postgresql://..., journal:FILE.log.")
    ] = "sqlite:///bstune.db",
    study_name: Annotated[
        Optional[str],
        typer.Option("--study-name", help="Study to create or resume (default: script name and mode)."),
    ] = None,
    clock: Annotated[
        str, typer.Option("--clock", help="'train' counts training steps only; 'wall' counts everything.")
    ] = "train",
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda or cuda:N.")] = "auto",
    micro_batch_size: Annotated[
        Optional[int],
        typer.Option("--micro-batch-size", help="Largest batch through the model at once; larger batches accumulate gradients."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler and of each trial's training.")] = 0,
    task_option: Annotated[
        Optional[list[str]],
        typer.Option("--task-option", help="KEY=VALUE passed to the script's data(); repeatable."),
    ] = None,
    probe_first: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Run bstune probe first (memory, throughput, noise scale) and search the space it narrows; "
            "writes SCRIPT-probe.yaml and SCRIPT-probe.png.",
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """Search batch size, learning rate and epochs for the task in SCRIPT.

    Trials are added to the study in --storage (created, or resumed when the same study exists),
    with live progress, and the best configurations are printed at the end. Watch or inspect the
    study with: optuna-dashboard sqlite:///bstune.db
    """
    import optuna
    from rich.console import Console

    from bstune import _progress
    from bstune.analysis import best_configurations
    from bstune.objectives import Target, TimeBudget
    from bstune.space import load_space
    from bstune.study import create_study, make_objective, mask_url
    from bstune.study import optimize as run_study
    from bstune.task import load_task

    if time_budget is not None and target is not None:
        raise BstuneError("give either --time-budget or --target, not both")
    _positive("--time-budget", time_budget)
    _positive("--n-trials", n_trials, integer=True)
    _positive("--timeout", timeout)
    _positive("--micro-batch-size", micro_batch_size, integer=True)
    if target is not None and not math.isfinite(target):
        raise BstuneError(f"--target must be a finite number; got {target}")
    if clock not in ("train", "wall"):
        raise BstuneError(f"--clock must be 'train' or 'wall'; got {clock!r}")

    task = load_task(script, _parse_options(task_option or []))
    defaults = task.defaults
    metric = {k: defaults[k] for k in ("metric_name", "metric_direction") if k in defaults}
    if target is not None:
        mode: TimeBudget | Target = Target(target, clock=clock, **metric)  # type: ignore[arg-type]
    elif time_budget is not None:
        mode = TimeBudget(time_budget, clock=clock, **metric)  # type: ignore[arg-type]
    elif "target" in defaults:
        mode = Target(float(defaults["target"]), clock=clock, **metric)  # type: ignore[arg-type]
    else:
        mode = TimeBudget(float(defaults.get("time_budget", 60.0)), clock=clock, **metric)  # type: ignore[arg-type]
    n_trials = n_trials if n_trials is not None else int(defaults.get("n_trials", 20))
    the_space = load_space(space or defaults.get("space", "default"))
    if study_name is None:
        tag = f"budget-{mode.budget:g}s" if isinstance(mode, TimeBudget) else f"target-{mode.target:g}"
        study_name = f"{task.name}-{tag}" + ("-probe" if probe_first else "")

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and pipes: keep each trial on one line
    probed = None
    if probe_first:
        stored = _stored_probe(storage, study_name)
        if stored is not None:  # resuming: the same space, not a fresh probe that may differ
            the_space = load_space(stored["space"])
            console.print(f"resuming a probed study: its space from the earlier probe ({the_space.name})")
        else:
            probed = _probe_and_report(console, task, the_space, device=device, seed=seed, output_dir=Path("."))
            the_space = probed.space
    optuna.logging.set_verbosity(optuna.logging.WARNING if debug else optuna.logging.ERROR)
    study = create_study(mode, space=the_space, storage=storage, study_name=study_name, seed=seed)
    before = len(study.trials)
    if probed is not None:
        study.set_user_attr("probe", probed.to_dict())

    trainer = None
    if not task.owns_loop:
        from bstune.train import Trainer

        if micro_batch_size is None:
            micro_batch_size = the_space.micro_batch_size  # a probed space's memory limit
        trainer = Trainer(task, device=device, seed=seed, micro_batch_size=micro_batch_size)
        data = trainer.data()
        console.print(
            f"data: {data.n_train:,} training and {data.x_valid.shape[0]:,} validation samples "
            f"on {trainer.device_name}" + ("" if trainer.data_on_device else " (streamed from pinned host memory)")
        )
    what = f"time budget {mode.budget:g} s per trial" if isinstance(mode, TimeBudget) else f"target {mode.metric_name} {mode.target:g}"
    resumed = f", resuming after {before} trials" if before else ""
    console.print(
        f"study {study_name!r} in {mask_url(storage)}: {what}, space {the_space.name!r}, {n_trials} trials{resumed}"
    )
    progress = _progress.Progress(console, mode, n_trials)
    objective = make_objective(task, the_space, mode, trainer=trainer, on_report=progress.on_report)
    try:
        run_study(study, objective, n_trials=n_trials, timeout=timeout, callbacks=[progress.on_trial_end])
    finally:
        rows = best_configurations(study, k=5)
        if rows:
            console.print(_progress.best_table(rows, mode))
        else:
            console.print("no trial finished with a feasible value yet")
        console.print(f"inspect it: optuna-dashboard {mask_url(storage)}")


def _stored_probe(storage: str, study_name: str) -> dict | None:  # type: ignore[type-arg]
    """The probe findings stored on an existing study of that name, if any."""
    import optuna

    from bstune.study import resolve_storage

    store = resolve_storage(storage)
    if study_name not in optuna.study.get_all_study_names(storage=store):  # type: ignore[arg-type]
        return None
    found = optuna.load_study(study_name=study_name, storage=store).user_attrs.get("probe")  # type: ignore[arg-type]
    return found if isinstance(found, dict) and isinstance(found.get("space"), dict) else None


def _parse_params(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for key, value in _parse_options(items).items():
        try:
            out[key] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            out[key] = value
    return out


def _probe_and_report(console, task, base_space, *, output_dir: Path, **kwargs):  # type: ignore[no-untyped-def]
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


@app.command()
def probe(
    script: Annotated[Path, typer.Argument(help="The task script: defines data() and model(hp).")],
    space: Annotated[
        Optional[str],
        typer.Option("--space", help="The search space to narrow: a built-in name or a YAML file (default: the script's)."),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where SCRIPT-probe.yaml and SCRIPT-probe.png go.")
    ] = Path("."),
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda or cuda:N.")] = "auto",
    max_batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--max-batch-size",
            help="The largest batch the memory search tries, also bounded by the data (default 4096 on the CPU, else 65536).",
        ),
    ] = None,
    min_batch_size: Annotated[
        int, typer.Option("--min-batch-size", help="The smallest batch whose throughput is measured.")
    ] = 8,
    safety_margin: Annotated[
        float, typer.Option("--safety-margin", help="Fraction taken off the largest batch that fits, for the micro-batch.")
    ] = 0.1,
    memory_limit: Annotated[
        Optional[float],
        typer.Option("--memory-limit", help="MiB a training step may use (default: the GPU's memory; on the CPU half the free memory)."),
    ] = None,
    noise_steps: Annotated[
        int, typer.Option("--noise-steps", help="Training steps the gradient noise scale is averaged over (0 skips it).")
    ] = 30,
    noise_seconds: Annotated[
        float, typer.Option("--noise-seconds", help="The most seconds the noise scale may take.")
    ] = 30.0,
    param: Annotated[
        Optional[list[str]],
        typer.Option("--param", help="KEY=VALUE model parameter for the probe's model (default: ints at the top of their range); repeatable."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the models and batches.")] = 0,
    task_option: Annotated[
        Optional[list[str]],
        typer.Option("--task-option", help="KEY=VALUE passed to the script's data(); repeatable."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """Measure memory, throughput and the critical batch size of SCRIPT's training step.

    Prints a table of throughput and peak memory per batch size (powers of two and sizes between
    them), the largest batch that fits and the gradient noise scale, draws SCRIPT-probe.png and
    writes SCRIPT-probe.yaml, a narrowed search space for bstune optimize --space.
    """
    from rich.console import Console

    from bstune.space import load_space
    from bstune.task import load_task

    _positive("--max-batch-size", max_batch_size, integer=True)
    _positive("--min-batch-size", min_batch_size, integer=True)
    _positive("--memory-limit", memory_limit)
    if not 0 <= safety_margin < 1:
        raise BstuneError(f"--safety-margin must be in [0, 1); got {safety_margin:g}")
    _positive("--noise-seconds", noise_seconds)
    if noise_steps < 0:
        raise BstuneError(f"--noise-steps must be an integer of at least 0; got {noise_steps}")
    task = load_task(script, _parse_options(task_option or []))
    base = load_space(space or task.defaults.get("space", "default"))
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)
    _probe_and_report(
        console,
        task,
        base,
        output_dir=output_dir,
        device=device,
        params=_parse_params(param or []),
        max_batch_size=max_batch_size,
        min_batch_size=min_batch_size,
        safety_margin=safety_margin,
        memory_limit=int(memory_limit * 2**20) if memory_limit is not None else None,
        noise_steps=noise_steps,
        noise_seconds=noise_seconds,
        seed=seed,
    )


@app.command()
def spaces() -> None:
    """List the built-in search spaces."""
    from bstune.space import builtin_spaces, load_space

    for name, _path in builtin_spaces().items():
        s = load_space(name)
        typer.echo(f"{name:16} {s.description}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bstune`` command and ``python -m bstune``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="bstune", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("bstune: interrupted", file=sys.stderr)
        sys.exit(130)
    except BstuneError as e:
        if debug:
            raise
        print(f"bstune: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        if debug:
            raise
        if _is_usage_error(e):  # click's, whether typer vendors it or not
            print(f"bstune: error: {e.format_message()}", file=sys.stderr)  # type: ignore[attr-defined]
            sys.exit(int(getattr(e, "exit_code", 2)))
        from bstune.study import mask_url

        print(f"bstune: error: {type(e).__name__}: {mask_url(str(e).splitlines()[0] if str(e) else '')} "
              "(run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    if isinstance(rv, int) and rv != 0:
        sys.exit(rv)


def _is_usage_error(e: Exception) -> bool:
    return any(c.__name__ in ("UsageError", "ClickException") for c in type(e).__mro__) and hasattr(
        e, "format_message"
    )
