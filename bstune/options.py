"""The options of a tuning run, declared once: ``TuneOptions``.

``bstune optimize`` and ``bstune study-batch`` make their command-line options from its fields (the
flag and help text of each are in the field's metadata), ``bstune.tune`` takes the same fields as
keyword arguments, and a worker process gets the resolved options as one JSON object and reads
them back into a ``TuneOptions``. Each default is written here only, and every value is checked
here only, when the object is made: a bad value is one line that names the command-line option,
so the command and the library say the same thing.

Importing this module loads neither optuna nor torch (the command's ``--help`` stays fast).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bstune.errors import BstuneError, check_option, option_error

__all__ = [
    "DEFAULT_MAX_TRIALS", "FIRST_RATES", "OPTIMIZE", "STORAGE_HELP", "STUDY_BATCH", "TuneOptions", "check_design_options", "check_positive",
    "command_fields",
    "option_field", "parse_task_options",
]

#: The commands whose options come from ``TuneOptions``.
OPTIMIZE, STUDY_BATCH = "optimize", "study-batch"
_BOTH = (OPTIMIZE, STUDY_BATCH)
#: The batch-size study's default bound on the study's trials: about twice a default 12-trial search.
DEFAULT_MAX_TRIALS = 24
#: The batch-size study's learning rates per batch size before the peak is fitted (``bstune.design``).
FIRST_RATES = 3
CLOCKS = ("train", "wall")
#: The help of ``--storage``, with the command's default.
STORAGE_HELP = ("Where the study lives: sqlite:///FILE.db, postgresql://..., journal:FILE.log, or $BSTUNE_STORAGE "
                "(default: {}).")


def check_positive(name: str, value: float | None, *, integer: bool = False) -> None:
    """Refuse a value that is not a finite number above 0 (``None`` passes: not given)."""
    rule = "an integer of at least 1" if integer else "a number greater than 0"
    check_option(name, value, rule, lambda v: math.isfinite(v) and v > 0)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_design_options(batch_sizes: Sequence[int] | None, seeds: int, max_trials: int) -> None:
    """Refuse options no plan can meet, before anything is loaded or written."""
    check_option("--seeds", seeds, "an integer of at least 1", lambda v: _count(v) and v >= 1, number=False)
    check_option("--max-trials", max_trials, "an integer of at least 1", lambda v: _count(v) and v >= 1, number=False)
    per_batch = FIRST_RATES + seeds + 1
    if batch_sizes is not None:
        sizes = sorted({int(b) for b in batch_sizes})
        if any(b < 1 for b in sizes) or len(sizes) < 3:
            raise BstuneError(f"--batch-sizes must list three or more positive batch sizes; got {sorted(batch_sizes)}")
        if len(sizes) * per_batch > max_trials:
            raise BstuneError(
                f"--max-trials {max_trials} is too few for {len(sizes)} batch sizes with {seeds} more seed(s) each "
                f"({len(sizes) * per_batch} trials at the least); raise it, or pass fewer --batch-sizes or --seeds")
    elif 3 * per_batch > max_trials:
        raise BstuneError(f"--max-trials {max_trials} is too few for three batch sizes with {seeds} more seed(s) each "
                          f"({3 * per_batch} trials at the least); raise it, or pass fewer --seeds")


def parse_task_options(items: Sequence[str]) -> dict[str, str]:
    """``--task-option KEY=VALUE`` (repeatable) as a dict."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BstuneError(f"--task-option must look like KEY=VALUE; got {item!r}")
        out[key] = value
    return out


def _parse_batch_sizes(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise option_error("--batch-sizes", "comma-separated integers, e.g. 16,64,256", text) from None


def _option(
    default: Any,
    flag: str | None,
    help: str = "",
    *,
    commands: tuple[str, ...] = _BOTH,
    cli_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    **typer: Any,
) -> Any:
    """A field of ``TuneOptions`` and, when ``flag`` is given, the option of ``commands`` it is.

    ``cli_type`` is the type the command line reads when it differs from the field's (a comma list
    of batch sizes is one string there), and ``parse`` turns that into the field's value; ``typer``
    holds further arguments of ``typer.Option`` (``metavar``, ``envvar``, ...).
    """
    meta = {"flag": flag, "help": help, "commands": commands if flag else (), "cli_type": cli_type, "parse": parse,
            "typer": typer}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """Everything a ``bstune optimize`` or ``bstune study-batch`` run is told, with the defaults.

    Each field is the command-line option of the same name (``compile`` is ``--compile``, ``probe``
    is ``--probe``, ``task_options`` is ``--task-option KEY=VALUE``); ``bstune optimize --help``
    says what each does. Made from bad values it raises ``BstuneError`` naming that option.

    Examples:
        >>> from bstune.options import TuneOptions
        >>> TuneOptions(time_budget=30, n_trials=12).clock
        'train'
        >>> TuneOptions(n_trials=0)
        Traceback (most recent call last):
        ...
        bstune.errors.BstuneError: --n-trials must be an integer of at least 1; got 0
    """

    time_budget: float | None = _option(
        None, "--time-budget",
        "Time-budget mode: each trial trains at most this many seconds; its value is the best "
        "validation metric reached. The default mode (with the script's budget, else 60 s). With --target: "
        "the most seconds a trial may train to reach the target (a miss after that; default: no limit).")
    target: float | None = _option(
        None, "--target",
        "Target mode: a trial stops when the validation metric reaches this value; its value "
        "is the training seconds it took. Add --time-budget to limit each trial's training.")
    batch_sizes: Sequence[int] | None = _option(
        None, "--batch-sizes",
        "Comma-separated batch sizes to compare, three or more (default: powers of two spread over the space, "
        "as many as --max-trials allows, none past a size that ran out of memory).",
        commands=(STUDY_BATCH,), cli_type=str | None, parse=_parse_batch_sizes)
    seeds: int = _option(
        2, "--seeds", "Runs at each batch size's best learning rate beyond the first (the seed band).",
        commands=(STUDY_BATCH,))
    max_trials: int | None = _option(
        DEFAULT_MAX_TRIALS, "--max-trials",
        "The most trials the batch-size study may use; a rerun with a larger one goes on.",
        commands=(STUDY_BATCH,), cli_type=int)
    space: str | Path | None = _option(
        None, "--space", "A built-in search space name (default, lstm, ...) or a YAML file.", cli_type=str | None)
    n_trials: int | None = _option(
        None, "--n-trials", "Trials to add to the study (script default, else 20).", commands=(OPTIMIZE,))
    timeout: float | None = _option(
        None, "--timeout", "Stop starting trials after this many seconds.", commands=(OPTIMIZE,))
    storage: str | None = _option(
        None, "--storage", STORAGE_HELP.format("sqlite:///bstune.db; journal:bstune.log with --workers above 1"),
        envvar="BSTUNE_STORAGE", show_envvar=False)
    study_name: str | None = _option(
        None, "--study-name", "Study to create or resume (default: script name and mode).")
    clock: str = _option("train", "--clock", "'train' counts training steps only; 'wall' counts everything.")
    device: str = _option("auto", "--device", "auto (CUDA if present), cpu, cuda or cuda:N.")
    micro_batch_size: int | None = _option(
        None, "--micro-batch-size", "Largest batch through the model at once; larger batches accumulate gradients.")
    seed: int = _option(0, "--seed", "Seed of the sampler and of each trial's training.")
    compile: bool = _option(
        False, "--compile",
        "Run the model through torch.compile (built-in trainer); compile time counts as overhead, not training.")
    amp: bool | None = _option(
        None, "--amp/--no-amp",
        "bf16 autocast in the built-in trainer's forward passes (CUDA only). Default: the script's "
        "DEFAULTS['amp'], else on for CUDA and off on the CPU. It is not always faster (small recurrent models "
        "can train faster without it): measure both. Each trial records it.",
        show_default=False)
    pruner: str = _option(
        "default", "--pruner",
        "default (bstune's for the mode: divergence, slow or target-time, and gain-bound: stops only "
        "what a stated bound says cannot win, ranks nothing), none, "
        "divergence, gain-bound, time-aligned, async-halving, target-time, slow, or Optuna's median, "
        "successive-halving, hyperband.",
        commands=(OPTIMIZE,))
    task_options: Mapping[str, str] | None = _option(
        None, "--task-option", "KEY=VALUE passed to the script's data(); repeatable.",
        cli_type=list[str] | None, parse=parse_task_options)
    artifact_dir: str | Path | None = _option(
        None, "--artifact-dir", "Also save the report files (HTML, JSON, PNG) as Optuna artifacts here.",
        cli_type=Path | None)
    workers: int = _option(
        1, "--workers", "Worker processes on this machine: one per GPU, or a share of the CPU cores each.")
    max_consecutive_failures: int = _option(
        3, "--max-consecutive-failures", "Stop after this many trials in a row fail in the task's code.")
    heartbeat_interval: int = _option(
        10, "--heartbeat-interval",
        "RDB storage: seconds between a running trial's heartbeats; a trial silent for twice "
        "that long (its process died) is failed and retried.")
    storage_retry: float = _option(
        60, "--storage-retry",
        "Seconds to wait out a storage that went away (a database restart, a lost connection, a "
        "journal file that cannot be locked) before stopping; every call is tried again meanwhile. 0: stop at once.")
    probe: bool = _option(
        False, "--probe",
        "Run bstune probe first (memory, throughput, noise scale) and search the space it narrows; "
        "writes SCRIPT-probe.yaml and SCRIPT-probe.png.",
        commands=(OPTIMIZE,))
    confirm: int = _option(
        0, "--confirm",
        "After the search, train the best --confirm-top configurations again with K other seeds each "
        "(never pruned); the report then shows mean and spread and which are within noise of the best.",
        commands=(OPTIMIZE,), metavar="K")
    confirm_top: int = _option(
        3, "--confirm-top", "How many of the best configurations --confirm trains again.", commands=(OPTIMIZE,))
    retry_disturbed: bool = _option(
        False, "--retry-disturbed",
        "Train a trial's configuration again, once, when it trained at under a fifth "
        "of the throughput its batch size's other trials reached (the machine was busy).")
    design: str | None = _option(None, None)  # "batch": the batch-size study (bstune study-batch)
    debug: bool = _option(False, "--debug", "Show tracebacks instead of one-line errors.")

    def __post_init__(self) -> None:
        if self.task_options is not None:  # a copy: the options do not change with the caller's dict
            object.__setattr__(self, "task_options", dict(self.task_options))
        if self.batch_sizes is not None:
            object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        self._check()

    def _check(self) -> None:
        """Every refusal, before anything is loaded or written."""
        check_positive("--time-budget", self.time_budget)
        if not (self.n_trials == 0 and (self.confirm or self.design)):  # --n-trials 0: confirm or design only
            check_positive("--n-trials", self.n_trials, integer=True)
        check_positive("--timeout", self.timeout)
        check_positive("--micro-batch-size", self.micro_batch_size, integer=True)
        check_option("--confirm", self.confirm, "an integer of at least 0", lambda v: v >= 0)
        check_positive("--confirm-top", self.confirm_top, integer=True)
        check_option("--target", self.target, "a finite number", math.isfinite)
        check_option("--clock", self.clock, "'train' or 'wall'", lambda v: v in CLOCKS, number=False)
        from bstune.pruners import PRUNER_NAMES

        check_option("--pruner", self.pruner, f"one of {', '.join(PRUNER_NAMES)}", lambda v: v in PRUNER_NAMES,
                     number=False)
        check_option("--workers", self.workers, "an integer of at least 1", lambda v: _count(v) and v >= 1)
        check_positive("--max-consecutive-failures", self.max_consecutive_failures, integer=True)
        check_positive("--heartbeat-interval", self.heartbeat_interval, integer=True)
        check_option("--storage-retry", self.storage_retry, "a number of seconds of at least 0",
                     lambda v: math.isfinite(v) and v >= 0)
        for b in self.batch_sizes or ():
            check_positive("--batch-sizes", b, integer=True)
        check_positive("--seeds", self.seeds, integer=True)
        check_positive("--max-trials", self.max_trials, integer=True)
        if self.design is not None:
            check_option("design", self.design, "None or 'batch'", lambda v: v == "batch", number=False)
            check_design_options(self.batch_sizes, self.seeds, self.max_trials or DEFAULT_MAX_TRIALS)

    def replace(self, **changes: Any) -> TuneOptions:
        """A copy with ``changes`` (checked again); an unknown name is a ``TypeError`` naming it."""
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise TypeError(f"unknown tuning option {unknown[0]!r}; the options are the fields of TuneOptions")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as JSON can carry it (paths as strings)."""
        out = {}
        for name in _FIELDS:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TuneOptions:
        """The options ``to_dict`` wrote."""
        return cls().replace(**values)

    @classmethod
    def from_command(cls, command: str, values: Mapping[str, Any], **fixed: Any) -> TuneOptions:
        """The options of ``command`` as the command line gave them (``cli_type`` values parsed),
        with ``fixed`` for what the command sets itself (``study-batch``'s ``design="batch"``)."""
        parsed = dict(fixed)
        for f in command_fields(command):
            value = values[f.name]
            parse = f.metadata["parse"]
            parsed[f.name] = parse(value) if parse is not None and value is not None else value
        return cls().replace(**parsed)


_FIELDS = tuple(f.name for f in dataclasses.fields(TuneOptions))


def command_fields(command: str) -> list[dataclasses.Field[Any]]:
    """The fields that are options of ``command``, in the order ``--help`` lists them."""
    return [f for f in dataclasses.fields(TuneOptions) if command in f.metadata["commands"]]


def option_field(name: str) -> dataclasses.Field[Any]:
    """The field ``name`` of ``TuneOptions`` (for commands that share one of its options)."""
    return next(f for f in dataclasses.fields(TuneOptions) if f.name == name)
