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
from bstune.tuning import check_positive

__all__ = ["app", "main"]

app = typer.Typer(
    name="bstune",
    help="Search batch size jointly with learning rate and epochs, under a time budget or toward a target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bstune {__version__}")
        raise typer.Exit()


# Options several commands share, declared once.
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda or cuda:N.")]
TaskOptions = Annotated[
    Optional[list[str]], typer.Option("--task-option", help="KEY=VALUE passed to the script's data(); repeatable.")
]
ScriptArgument = Annotated[
    Path, typer.Argument(help="The task script: defines data() and model(hp), or train(hp, run).")
]


def _storage_option(default: str) -> typer.models.OptionInfo:
    """--storage, read from $BSTUNE_STORAGE when not given (keeps a database password off the command line)."""
    return typer.Option(
        "--storage",
        envvar="BSTUNE_STORAGE",
        show_envvar=False,
        help=f"Where the study lives: sqlite:///FILE.db, postgresql://..., journal:FILE.log, or $BSTUNE_STORAGE (default: {default}).",
    )


StorageOption = Annotated[str, _storage_option("sqlite:///bstune.db")]
ExistingStudyName = Annotated[
    Optional[str], typer.Option("--study-name", help="The study (default: the storage's only study).")
]


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """bstune: which batch size, learning rate and epochs, measured on your model and hardware."""


def _parse_options(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BstuneError(f"--task-option must look like KEY=VALUE; got {item!r}")
        out[key] = value
    return out


# The options of bstune optimize; bstune confirm shares several.
TimeBudgetOption = Annotated[
    Optional[float],
    typer.Option(
        "--time-budget",
        help="Time-budget mode: each trial trains at most this many seconds; its value is the best "
        "validation metric reached. The default mode (with the script's budget, else 60 s). With --target: "
        "the most seconds a trial may train to reach the target (a miss after that; default: no limit).",
    ),
]
TargetOption = Annotated[
    Optional[float],
    typer.Option(
        "--target",
        help="Target mode: a trial stops when the validation metric reaches this value; its value "
        "is the training seconds it took. Add --time-budget to limit each trial's training.",
    ),
]
SpaceOption = Annotated[
    Optional[str], typer.Option("--space", help="A built-in search space name (default, lstm, ...) or a YAML file.")
]
NTrialsOption = Annotated[
    Optional[int], typer.Option("--n-trials", help="Trials to add to the study (script default, else 20).")
]
TimeoutOption = Annotated[
    Optional[float], typer.Option("--timeout", help="Stop starting trials after this many seconds.")
]
NewStorageOption = Annotated[
    Optional[str], _storage_option("sqlite:///bstune.db; journal:bstune.log with --workers above 1")
]
NewStudyName = Annotated[
    Optional[str], typer.Option("--study-name", help="Study to create or resume (default: script name and mode).")
]
ClockOption = Annotated[
    str, typer.Option("--clock", help="'train' counts training steps only; 'wall' counts everything.")
]
MicroBatchOption = Annotated[
    Optional[int],
    typer.Option("--micro-batch-size", help="Largest batch through the model at once; larger batches accumulate gradients."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the sampler and of each trial's training.")]
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Run the model through torch.compile (built-in trainer); compile time counts as overhead, not training.",
    ),
]
AmpOption = Annotated[
    Optional[bool],
    typer.Option(
        "--amp/--no-amp",
        help="bf16 autocast in the built-in trainer's forward passes (CUDA only). Default: the script's "
        "DEFAULTS['amp'], else on for CUDA and off on the CPU. It is not always faster (small recurrent models "
        "can train faster without it): measure both. Each trial records it.",
        show_default=False,
    ),
]
PrunerOption = Annotated[
    str,
    typer.Option(
        "--pruner",
        help="default (bstune's for the mode: divergence, slow or target-time, and gain-bound: stops only "
        "what a stated bound says cannot win, ranks nothing), none, "
        "divergence, gain-bound, time-aligned, async-halving, target-time, slow, or Optuna's median, "
        "successive-halving, hyperband.",
    ),
]
ArtifactDirOption = Annotated[
    Optional[Path],
    typer.Option("--artifact-dir", help="Also save the report files (HTML, JSON, PNG) as Optuna artifacts here."),
]
WorkersOption = Annotated[
    int,
    typer.Option("--workers", help="Worker processes on this machine: one per GPU, or a share of the CPU cores each."),
]
MaxFailuresOption = Annotated[
    int,
    typer.Option("--max-consecutive-failures", help="Stop after this many trials in a row fail in the task's code."),
]
HeartbeatOption = Annotated[
    int,
    typer.Option(
        "--heartbeat-interval",
        help="RDB storage: seconds between a running trial's heartbeats; a trial silent for twice "
        "that long (its process died) is failed and retried.",
    ),
]
StorageRetryOption = Annotated[
    float,
    typer.Option(
        "--storage-retry",
        help="Seconds to wait out a storage that went away (a database restart, a lost connection, a "
        "journal file that cannot be locked) before stopping; every call is tried again meanwhile. 0: stop at once.",
    ),
]
ProbeFirstOption = Annotated[
    bool,
    typer.Option(
        "--probe",
        help="Run bstune probe first (memory, throughput, noise scale) and search the space it narrows; "
        "writes SCRIPT-probe.yaml and SCRIPT-probe.png.",
    ),
]
ConfirmOption = Annotated[
    int,
    typer.Option(
        "--confirm",
        help="After the search, train the best --confirm-top configurations again with K other seeds each "
        "(never pruned); the report then shows mean and spread and which are within noise of the best.",
        metavar="K",
    ),
]
RetryDisturbedOption = Annotated[
    bool,
    typer.Option("--retry-disturbed", help="Train a trial's configuration again, once, when it trained at under a fifth "
                 "of the throughput its batch size's other trials reached (the machine was busy)."),
]
ConfirmTopOption = Annotated[
    int, typer.Option("--confirm-top", help="How many of the best configurations --confirm trains again.")
]


@app.command()
def optimize(
    script: ScriptArgument,
    time_budget: TimeBudgetOption = None,
    target: TargetOption = None,
    space: SpaceOption = None,
    n_trials: NTrialsOption = None,
    timeout: TimeoutOption = None,
    storage: NewStorageOption = None,
    study_name: NewStudyName = None,
    clock: ClockOption = "train",
    device: DeviceOption = "auto",
    micro_batch_size: MicroBatchOption = None,
    seed: SeedOption = 0,
    compile_model: CompileOption = False,
    amp: AmpOption = None,
    pruner: PrunerOption = "default",
    task_option: TaskOptions = None,
    artifact_dir: ArtifactDirOption = None,
    workers: WorkersOption = 1,
    max_consecutive_failures: MaxFailuresOption = 3,
    heartbeat_interval: HeartbeatOption = 10,
    storage_retry: StorageRetryOption = 60,
    probe_first: ProbeFirstOption = False,
    confirm: ConfirmOption = 0,
    confirm_top: ConfirmTopOption = 3,
    retry_disturbed: RetryDisturbedOption = False,
    debug: DebugOption = False,
) -> None:
    """Search batch size, learning rate and epochs for the task in SCRIPT.

    Trials are added to the study in --storage (created, or resumed when the same study exists),
    with live progress, and the best configurations are printed at the end. Watch or inspect the
    study with: optuna-dashboard sqlite:///bstune.db
    """
    from bstune.tuning import tune

    tune(
        script, time_budget=time_budget, target=target, space=space, n_trials=n_trials, timeout=timeout,
        storage=storage, study_name=study_name, clock=clock, device=device, micro_batch_size=micro_batch_size,
        seed=seed, compile=compile_model, amp=amp, pruner=pruner, task_options=_parse_options(task_option or []),
        artifact_dir=artifact_dir, workers=workers, max_consecutive_failures=max_consecutive_failures,
        heartbeat_interval=heartbeat_interval, storage_retry=storage_retry, probe=probe_first, confirm=confirm, confirm_top=confirm_top,
        retry_disturbed=retry_disturbed, debug=debug,
    )


@app.command(name="study-batch")
def study_batch(
    script: ScriptArgument,
    time_budget: TimeBudgetOption = None,
    target: TargetOption = None,
    batch_sizes: Annotated[
        Optional[str],
        typer.Option("--batch-sizes", help="Comma-separated batch sizes to compare, three or more (default: powers "
                     "of two spread over the space, as many as --max-trials allows, none past a size that ran out of memory)."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Runs at each batch size's best learning rate beyond the first (the seed band).")] = 2,
    max_trials: Annotated[
        int, typer.Option("--max-trials", help="The most trials the batch-size study may use; a rerun with a larger one goes on.")
    ] = 24,
    space: SpaceOption = None,
    storage: NewStorageOption = None,
    study_name: NewStudyName = None,
    clock: ClockOption = "train",
    device: DeviceOption = "auto",
    micro_batch_size: MicroBatchOption = None,
    seed: SeedOption = 0,
    compile_model: CompileOption = False,
    amp: AmpOption = None,
    task_option: TaskOptions = None,
    artifact_dir: ArtifactDirOption = None,
    workers: WorkersOption = 1,
    max_consecutive_failures: MaxFailuresOption = 3,
    heartbeat_interval: HeartbeatOption = 10,
    storage_retry: StorageRetryOption = 60,
    retry_disturbed: RetryDisturbedOption = False,
    debug: DebugOption = False,
) -> None:
    """Measure how batch size matters for the task in SCRIPT, each batch size at its own best learning rate.

    For each batch size: a few learning rates around its best (bracketed, then the peak fitted),
    then more runs at that rate with other seeds. The report then answers with intervals: the best
    metric per batch size with its seed band, the exponent of the best learning rate against batch
    size (none, square root or linear?), and in target mode the steps to the target per batch size.
    The trials go into the same study as bstune optimize (same --study-name default), reusing its
    trials where they fit; the cost is printed before the first trial.
    """
    from bstune.tuning import tune

    sizes = None
    if batch_sizes is not None:
        try:
            sizes = [int(x) for x in batch_sizes.replace(" ", "").split(",") if x]
        except ValueError:
            raise BstuneError(f"--batch-sizes must be comma-separated integers, e.g. 16,64,256; got {batch_sizes!r}") from None
    tune(
        script, time_budget=time_budget, target=target, space=space, n_trials=0, storage=storage,
        study_name=study_name, clock=clock, device=device, micro_batch_size=micro_batch_size, seed=seed,
        compile=compile_model, amp=amp, pruner="none", task_options=_parse_options(task_option or []),
        artifact_dir=artifact_dir, workers=workers, max_consecutive_failures=max_consecutive_failures,
        heartbeat_interval=heartbeat_interval, storage_retry=storage_retry, design="batch", batch_sizes=sizes, seeds=seeds,
        max_trials=max_trials, retry_disturbed=retry_disturbed, debug=debug,
    )


@app.command(name="confirm")
def confirm_command(
    script: Annotated[Path, typer.Argument(help="The task script the study was made with.")],
    storage: StorageOption = "sqlite:///bstune.db",
    study_name: ExistingStudyName = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Confirmation runs per configuration (other seeds).")] = 2,
    top: Annotated[int, typer.Option("--top", help="How many of the best configurations to train again.")] = 3,
    space: Annotated[
        Optional[str], typer.Option("--space", help="The search space the study was made with, if not the script's.")
    ] = None,
    device: DeviceOption = "auto",
    micro_batch_size: MicroBatchOption = None,
    seed: Annotated[int, typer.Option("--seed", help="The seed the study was made with.")] = 0,
    compile_model: Annotated[
        Optional[bool],
        typer.Option("--compile/--no-compile", show_default=False,
                     help="torch.compile the model. Default: as the study's trials recorded it."),
    ] = None,
    amp: Annotated[
        Optional[bool],
        typer.Option("--amp/--no-amp", show_default=False,
                     help="bf16 autocast on CUDA. Default: as the study's trials recorded it (float32 if they all "
                     "trained without it), else the script's DEFAULTS, else on for CUDA."),
    ] = None,
    task_option: TaskOptions = None,
    debug: DebugOption = False,
) -> None:
    """Train the best configurations of an existing study again with other seeds.

    The runs are stored in the study (never pruned); the report then shows each configuration's
    mean and spread and says which are within noise of the best. Same as
    bstune optimize SCRIPT --n-trials 0 --confirm SEEDS on the study's own mode.
    """
    from bstune.analysis import load_existing_study
    from bstune.confirmation import trained_as
    from bstune.objectives import Target, mode_from_attrs
    from bstune.tuning import tune

    if seeds < 1:
        raise BstuneError(f"--seeds must be an integer of at least 1; got {seeds}")
    study = load_existing_study(storage, study_name)
    mode = mode_from_attrs(study.user_attrs)
    if mode is None:
        raise BstuneError(f"study {study.study_name!r} was not made by bstune; it has no mode to train in")
    recorded = trained_as(study)
    tune(
        script, time_budget=mode.trial_limit, target=mode.target if isinstance(mode, Target) else None,
        space=space, n_trials=0, storage=storage, study_name=study.study_name, clock=mode.clock, device=device,
        micro_batch_size=micro_batch_size, seed=seed, task_options=_parse_options(task_option or []),
        confirm=seeds, confirm_top=top, debug=debug,
        # Train as the study's trials trained, unless told otherwise: a confirmation measures the same thing.
        compile=bool(compile_model if compile_model is not None else recorded["compile"]),
        amp=amp if amp is not None else recorded["amp"],
    )


@app.command()
def report(
    storage: StorageOption = "sqlite:///bstune.db",
    study_name: ExistingStudyName = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or markdown, on standard output.")] = "table",
    html: Annotated[
        Optional[Path], typer.Option("--html", help="Also write one self-contained HTML file with interactive figures.")
    ] = None,
    png: Annotated[
        Optional[Path], typer.Option("--png", help="Also write PNG pictures (front, curves, batch sizes) into this folder.")
    ] = None,
    budget: Annotated[
        Optional[list[float]],
        typer.Option("--budget", help="Seconds to recommend a configuration for; repeatable (default: spread over the trials)."),
    ] = None,
    target: Annotated[
        Optional[float],
        typer.Option("--target", help="The metric for time-to-target against batch size (default: the study's target)."),
    ] = None,
) -> None:
    """Report on a study: Pareto front of time against metric, a recommendation per budget,
    batch-size effects and parameter importance."""
    from bstune.analysis import FORMATS, analyze, format_report, load_existing_study, print_report

    if fmt not in FORMATS:
        raise BstuneError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    for b in budget or []:
        check_positive("--budget", b)
    if target is not None and not math.isfinite(target):
        raise BstuneError(f"--target must be a finite number; got {target}")
    study = load_existing_study(storage, study_name)
    result = analyze(study, budgets=budget or None, target=target)
    if fmt == "table":
        from rich.console import Console

        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = max(console.width, 150)
        print_report(result, console)
    else:
        typer.echo(format_report(result, fmt), nl=False)
    if html is not None:
        from bstune.analysis import write_html

        typer.echo(f"wrote {write_html(result, html)}", err=True)
    if png is not None:
        from bstune.analysis import write_png

        for path in write_png(result, png):
            typer.echo(f"wrote {path}", err=True)


@app.command()
def dashboard(
    storage: StorageOption = "sqlite:///bstune.db",
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Open this study's page.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8080,
    artifact_dir: Annotated[
        Optional[Path],
        typer.Option("--artifact-dir", help="Optuna artifact directory (default: the one the study recorded)."),
    ] = None,
) -> None:
    """Start optuna-dashboard on the storage and print the address to open (Ctrl-C stops it)."""
    from bstune.analysis import make_dashboard_server
    from bstune.storage import mask_url

    if not 0 <= port <= 65535:
        raise BstuneError(f"--port must be an integer in [0, 65535]; got {port}")
    server, url = make_dashboard_server(storage, host=host, port=port, artifact_dir=artifact_dir, study_name=study_name)
    typer.echo(f"optuna-dashboard on {mask_url(storage)}: open {url}  (Ctrl-C to stop)")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _parse_params(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for key, value in _parse_options(items).items():
        try:
            out[key] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            out[key] = value
    return out


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
    device: DeviceOption = "auto",
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
    task_option: TaskOptions = None,
    debug: DebugOption = False,
) -> None:
    """Measure memory, throughput and the critical batch size of SCRIPT's training step.

    Prints a table of throughput and peak memory per batch size (powers of two and sizes between
    them), the largest batch that fits and the gradient noise scale, draws SCRIPT-probe.png and
    writes SCRIPT-probe.yaml, a narrowed search space for bstune optimize --space.
    """
    from rich.console import Console

    from bstune.space import load_space
    from bstune.task import load_task
    from bstune.tuning import probe_and_report

    check_positive("--max-batch-size", max_batch_size, integer=True)
    check_positive("--min-batch-size", min_batch_size, integer=True)
    check_positive("--memory-limit", memory_limit)
    if not 0 <= safety_margin < 1:
        raise BstuneError(f"--safety-margin must be in [0, 1); got {safety_margin:g}")
    check_positive("--noise-seconds", noise_seconds)
    if noise_steps < 0:
        raise BstuneError(f"--noise-steps must be an integer of at least 0; got {noise_steps}")
    task = load_task(script, _parse_options(task_option or []))
    base = load_space(space or task.defaults.get("space", "default"))
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)
    probe_and_report(
        console, task, base, output_dir=output_dir, device=device, params=_parse_params(param or []),
        max_batch_size=max_batch_size, min_batch_size=min_batch_size, safety_margin=safety_margin,
        memory_limit=int(memory_limit * 2**20) if memory_limit is not None else None,
        noise_steps=noise_steps, noise_seconds=noise_seconds, seed=seed,
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
        from bstune.storage import mask_url

        print(f"bstune: error: {type(e).__name__}: {mask_url(str(e).splitlines()[0] if str(e) else '')} "
              "(run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    if isinstance(rv, int) and rv != 0:
        if rv == 130:  # typer turns Ctrl-C into this exit code
            print("bstune: interrupted", file=sys.stderr)
        sys.exit(rv)


def _is_usage_error(e: Exception) -> bool:
    return any(c.__name__ in ("UsageError", "ClickException") for c in type(e).__mro__) and hasattr(
        e, "format_message"
    )
