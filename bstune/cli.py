"""The ``bstune`` command: thin commands over the library.

A user error is one line on stderr (``bstune: error: ...``) and a non-zero exit; the traceback is
shown only with ``--debug``.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_type_hints

import typer

from bstune._version import __version__
from bstune.errors import BstuneError, check_option
from bstune.options import (
    OPTIMIZE,
    STORAGE_HELP,
    STUDY_BATCH,
    TuneOptions,
    check_positive,
    command_fields,
    option_field,
    parse_task_options,
)

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


_FIELD_TYPES = get_type_hints(TuneOptions)


def _typer_option(name: str) -> Any:
    """The typer option of the ``TuneOptions`` field ``name``: its flag, help text and type."""
    meta = option_field(name).metadata
    kind = meta["cli_type"] if meta["cli_type"] is not None else _FIELD_TYPES[name]
    return Annotated[kind, typer.Option(meta["flag"], help=meta["help"], **meta["typer"])]


def _help(name: str) -> str:
    return str(option_field(name).metadata["help"])


# Options several commands share, declared once (flags and help in bstune.options).
DebugOption = Annotated[bool, typer.Option("--debug", help=_help("debug"))]
DeviceOption = Annotated[str, typer.Option("--device", help=_help("device"))]
TaskOptions = Annotated[Optional[list[str]], typer.Option("--task-option", help=_help("task_options"))]
MicroBatchOption = Annotated[Optional[int], typer.Option("--micro-batch-size", help=_help("micro_batch_size"))]
ScriptArgument = Annotated[
    Path, typer.Argument(help="The task script: defines data() and model(hp), or train(hp, run).")
]


# --storage of the commands that read a study; read from $BSTUNE_STORAGE when not given (keeps a
# database password off the command line).
StorageOption = Annotated[str, typer.Option("--storage", envvar="BSTUNE_STORAGE", show_envvar=False,
                                            help=STORAGE_HELP.format("sqlite:///bstune.db"))]
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


def _tuning_command(command: str, doc: str, **fixed: Any) -> Callable[..., None]:
    """The command ``command`` over ``tune``: SCRIPT and an option per ``TuneOptions`` field it
    takes (its flag, help, type and default from the field); ``fixed`` is what the command sets."""

    def run(script: Path, **values: Any) -> None:
        from bstune.tuning import tune

        tune(script, TuneOptions.from_command(command, values, **fixed))

    params = [inspect.Parameter("script", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ScriptArgument)]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                 annotation=_typer_option(f.name)) for f in command_fields(command)]
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = command.replace("-", "_")
    run.__doc__ = doc
    return run


optimize = app.command(name=OPTIMIZE)(_tuning_command(OPTIMIZE, """Search batch size, learning rate and epochs for the task in SCRIPT.

    Trials are added to the study in --storage (created, or resumed when the same study exists),
    with live progress, and the best configurations are printed at the end. Watch or inspect the
    study with: optuna-dashboard sqlite:///bstune.db
    """))

study_batch = app.command(name=STUDY_BATCH)(_tuning_command(STUDY_BATCH, """Measure how batch size matters for the task in SCRIPT, each batch size at its own best learning rate.

    For each batch size: a few learning rates around its best (bracketed, then the peak fitted),
    then more runs at that rate with other seeds. The report then answers with intervals: the best
    metric per batch size with its seed band, the exponent of the best learning rate against batch
    size (none, square root or linear?), and in target mode the steps to the target per batch size.
    The trials go into the same study as bstune optimize (same --study-name default), reusing its
    trials where they fit; the cost is printed before the first trial.
    """, design="batch", n_trials=0, pruner="none"))


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

    check_option("--seeds", seeds, "an integer of at least 1", lambda v: v >= 1)
    study = load_existing_study(storage, study_name)
    mode = mode_from_attrs(study.user_attrs)
    if mode is None:
        raise BstuneError(f"study {study.study_name!r} was not made by bstune; it has no mode to train in")
    recorded = trained_as(study)
    tune(
        script, time_budget=mode.trial_limit, target=mode.target if isinstance(mode, Target) else None,
        space=space, n_trials=0, storage=storage, study_name=study.study_name, clock=mode.clock, device=device,
        micro_batch_size=micro_batch_size, seed=seed, task_options=parse_task_options(task_option or []),
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

    check_option("--format", fmt, f"one of {', '.join(FORMATS)}", lambda v: v in FORMATS, number=False)
    for b in budget or []:
        check_positive("--budget", b)
    check_option("--target", target, "a finite number", math.isfinite)
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

    check_option("--port", port, "an integer in [0, 65535]", lambda v: 0 <= v <= 65535)
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
    for key, value in parse_task_options(items).items():
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
    check_option("--safety-margin", safety_margin, "in [0, 1)", lambda v: 0 <= v < 1)
    check_positive("--noise-seconds", noise_seconds)
    check_option("--noise-steps", noise_steps, "an integer of at least 0", lambda v: v >= 0)
    task = load_task(script, parse_task_options(task_option or []))
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
