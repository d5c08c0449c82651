"""Search spaces: the YAML files, their validation, and turning a trial into hyperparameters.

A search space names the range of the batch size, the learning rate and the number of epochs, any
extra model parameters, and how the learning rate follows the batch size::

    batch_size: {low: 8, high: 512, powers_of_two: true, micro_batch_size: 128}
    learning_rate: {low: 1.0e-4, high: 1.0e-1, scaling: sqrt, reference_batch_size: 32}
    epochs: {low: 1, high: 8}
    params:
      hidden: {type: int, low: 32, high: 256, log: true}
      dropout: {type: float, low: 0.0, high: 0.5}

With ``scaling: linear`` or ``sqrt`` the sampler searches the *base* rate (the rate at the
reference batch size), and the rate a trial trains with is ``base * (batch / reference) ** k``
with k = 1 or 1/2 (Goyal et al. 2017; Hoffer et al. 2017). Both rates are recorded on the trial.

The optional ``batch_size.micro_batch_size`` is the largest batch put through the model at once
(``bstune probe`` writes it from the memory it measured): larger effective batches train with
gradient accumulation over micro-batches of that size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bstune.errors import SpaceError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "RESERVED_PARAMS",
    "SCALING_EXPONENTS",
    "Hyperparams",
    "SearchSpace",
    "builtin_spaces",
    "load_space",
    "suggest",
]

SCALING_EXPONENTS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}

#: The Optuna parameters of a bstune search space itself; a space's own ``params`` may not use them.
RESERVED_PARAMS = frozenset({"batch_size", "log2_batch_size", "learning_rate", "base_learning_rate", "epochs"})


@dataclass(frozen=True)
class Hyperparams:
    """The configuration one trial trains with.

    Attributes:
        batch_size: The effective batch size (samples per optimizer step).
        learning_rate: The rate to train with, after scaling to the batch size.
        epochs: The planned number of passes over the training data.
        base_learning_rate: The sampled rate before scaling (equal to ``learning_rate``
            without a scaling rule).
        params: Extra model parameters from the space's ``params`` section.
    """

    batch_size: int
    learning_rate: float
    epochs: int
    base_learning_rate: float
    params: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "base_learning_rate": self.base_learning_rate,
            **dict(self.params),
        }


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "int" | "float" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build one with ``load_space`` or ``from_dict``.

    Examples:
        >>> space = SearchSpace.from_dict({"batch_size": {"low": 16, "high": 256},
        ...                                "learning_rate": {"low": 1e-3, "high": 1e-1},
        ...                                "epochs": {"low": 1, "high": 4}})
        >>> space.batch_sizes()
        [16, 32, 64, 128, 256]
    """

    batch_low: int
    batch_high: int
    powers_of_two: bool
    lr_low: float
    lr_high: float
    scaling: str
    reference_batch_size: int
    epochs_low: int
    epochs_high: int
    params: tuple[_Param, ...] = ()
    name: str = "custom"
    description: str = ""
    source: str = "<dict>"
    micro_batch_size: int | None = None

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "<dict>", name: str | None = None) -> SearchSpace:
        """Validate a parsed YAML mapping; raise ``SpaceError`` naming the first bad field."""
        v = _Validator(source)
        top = v.mapping(raw, "the file")
        v.only(top, {"name", "description", "batch_size", "learning_rate", "epochs", "params"}, "the top level")

        bs = v.mapping(v.required(top, "batch_size"), "batch_size")
        v.only(bs, {"low", "high", "powers_of_two", "micro_batch_size"}, "batch_size")
        b_low = v.integer("batch_size.low", bs.get("low"), minimum=1)
        b_high = v.integer("batch_size.high", bs.get("high"), minimum=1)
        v.ordered("batch_size", b_low, b_high)
        p2 = v.boolean("batch_size.powers_of_two", bs.get("powers_of_two", True))
        if p2 and not any(b_low <= 2**k <= b_high for k in range(64)):
            raise v.error("batch_size", f"must contain a power of two when powers_of_two is true; got [{b_low}, {b_high}]")
        micro = bs.get("micro_batch_size")
        if micro is not None:
            micro = v.integer("batch_size.micro_batch_size", micro, minimum=1)

        lr = v.mapping(v.required(top, "learning_rate"), "learning_rate")
        v.only(lr, {"low", "high", "scaling", "reference_batch_size"}, "learning_rate")
        lr_low = v.number("learning_rate.low", lr.get("low"), positive=True)
        lr_high = v.number("learning_rate.high", lr.get("high"), positive=True)
        v.ordered("learning_rate", lr_low, lr_high)
        scaling = lr.get("scaling", "none")
        if scaling not in SCALING_EXPONENTS:
            raise v.error("learning_rate.scaling", f"must be one of none, linear, sqrt; got {scaling!r}")
        ref_default = b_low if scaling == "none" else None
        ref = lr.get("reference_batch_size", ref_default)
        if ref is None:
            raise v.error("learning_rate.reference_batch_size", f"is required with scaling {scaling!r}")
        ref = v.integer("learning_rate.reference_batch_size", ref, minimum=1)

        ep = v.mapping(v.required(top, "epochs"), "epochs")
        v.only(ep, {"low", "high"}, "epochs")
        e_low = v.integer("epochs.low", ep.get("low"), minimum=1)
        e_high = v.integer("epochs.high", ep.get("high"), minimum=1)
        v.ordered("epochs", e_low, e_high)

        params = []
        raw_params = v.mapping(top.get("params") or {}, "params")
        for pname, spec in raw_params.items():
            if pname in RESERVED_PARAMS:
                raise v.error(f"params.{pname}", "is reserved for bstune's own parameters; choose another name")
            params.append(v.param(str(pname), spec))

        return cls(
            batch_low=b_low,
            batch_high=b_high,
            powers_of_two=p2,
            lr_low=lr_low,
            lr_high=lr_high,
            scaling=scaling,
            reference_batch_size=ref,
            epochs_low=e_low,
            epochs_high=e_high,
            params=tuple(params),
            name=str(top.get("name", name or "custom")),
            description=str(top.get("description", "")),
            source=source,
            micro_batch_size=micro,
        )

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data: what is stored on the study and what a space file holds."""
        batch: dict[str, Any] = {"low": self.batch_low, "high": self.batch_high, "powers_of_two": self.powers_of_two}
        if self.micro_batch_size is not None:  # absent unless set, so older spaces compare equal
            batch["micro_batch_size"] = self.micro_batch_size
        return {
            "name": self.name,
            "description": self.description,
            "batch_size": batch,
            "learning_rate": {
                "low": self.lr_low,
                "high": self.lr_high,
                "scaling": self.scaling,
                "reference_batch_size": self.reference_batch_size,
            },
            "epochs": {"low": self.epochs_low, "high": self.epochs_high},
            "params": {p.name: p.to_dict() for p in self.params},
        }

    # ------------------------------------------------------------- suggesting

    def batch_sizes(self) -> list[int]:
        """The powers of two in range (for ``powers_of_two: true``), else the bounds."""
        if not self.powers_of_two:
            return [self.batch_low, self.batch_high]
        return [2**k for k in range(64) if self.batch_low <= 2**k <= self.batch_high]

    def scaled_learning_rate(self, base: float, batch_size: int) -> float:
        """The rate a batch of ``batch_size`` trains with, given the base rate at the reference."""
        k = SCALING_EXPONENTS[self.scaling]
        return base * (batch_size / self.reference_batch_size) ** k

    def suggest(self, trial: optuna.Trial) -> Hyperparams:
        """Draw one configuration from ``trial`` and record what it means on the trial.

        Powers of two are searched as the integer ``log2_batch_size``, so the sampler keeps their
        order. The effective batch size and the learning rate actually used are stored as user
        attributes, so every reader (dashboard, report) sees them whatever the parametrisation.
        """
        if self.powers_of_two:
            sizes = self.batch_sizes()
            k = trial.suggest_int("log2_batch_size", int(math.log2(sizes[0])), int(math.log2(sizes[-1])))
            batch = 2**k
        else:
            batch = trial.suggest_int("batch_size", self.batch_low, self.batch_high, log=True)
        lr_name = "learning_rate" if self.scaling == "none" else "base_learning_rate"
        base = trial.suggest_float(lr_name, self.lr_low, self.lr_high, log=True)
        epochs = trial.suggest_int("epochs", self.epochs_low, self.epochs_high)
        extras = {p.name: p.suggest(trial) for p in self.params}
        hp = Hyperparams(
            batch_size=batch,
            learning_rate=self.scaled_learning_rate(base, batch),
            epochs=epochs,
            base_learning_rate=base,
            params=extras,
        )
        trial.set_user_attr("batch_size", hp.batch_size)
        trial.set_user_attr("learning_rate", hp.learning_rate)
        trial.set_user_attr("planned_epochs", hp.epochs)
        return hp


def suggest(trial: optuna.Trial, space: SearchSpace | str | Path) -> Hyperparams:
    """Draw batch size, learning rate, epochs and extras for ``trial`` from ``space``.

    Examples:
        >>> import optuna, bstune
        >>> study = optuna.create_study()
        >>> hp = bstune.suggest(study.ask(), "default")
        >>> hp.batch_size & (hp.batch_size - 1)  # a power of two
        0
    """
    if not isinstance(space, SearchSpace):
        space = load_space(space)
    return space.suggest(trial)


# ------------------------------------------------------------------- files


def _builtin_dir() -> Path:
    """Where the built-in spaces are: inside the installed package, else the source tree."""
    packaged = Path(str(resources.files("bstune"))) / "search_spaces"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "search_spaces"


def builtin_spaces() -> dict[str, Path]:
    """The names of the shipped search spaces and their files."""
    d = _builtin_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def load_space(name_or_path: str | Path | Mapping[str, Any]) -> SearchSpace:
    """Load a space by built-in name (``"lstm"``), by path to a YAML file, or from a mapping.

    Raises:
        SpaceError: The file is missing, not YAML, or a field breaks its rule; the message names
            the file, the field, the rule and the value.
    """
    if isinstance(name_or_path, Mapping):
        return SearchSpace.from_dict(name_or_path)
    import yaml

    text = str(name_or_path)
    builtins = builtin_spaces()
    path = Path(text)
    if text in builtins and not path.exists():
        path = builtins[text]
    elif not path.exists():
        names = ", ".join(builtins) or "none found"
        raise SpaceError(f"search space {text!r}: no such file, and not a built-in space ({names})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"search space {path}: cannot read it ({e})") from e
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise SpaceError(f"search space {path}: not valid YAML{at}") from e
    return SearchSpace.from_dict(raw, source=str(path), name=path.stem)


class _Validator:
    """Checks for one file; every error names the file, the field, the rule and the value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, fieldname: str, rule: str) -> SpaceError:
        return SpaceError(f"search space {self.source}: field '{fieldname}' {rule}")

    def mapping(self, value: Any, fieldname: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(fieldname, f"must be a mapping; got {value!r}")
        return dict(value)

    def required(self, top: Mapping[str, Any], key: str) -> Any:
        if key not in top:
            raise self.error(key, "is required but missing")
        return top[key]

    def only(self, m: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in m:
            if key not in allowed:
                raise self.error(
                    f"{where}.{key}" if where != "the top level" else str(key),
                    f"is not a known field (known: {', '.join(sorted(allowed))})",
                )

    def number(self, fieldname: str, value: Any, *, positive: bool = False) -> float:
        # PyYAML reads 1e-4 (no dot) as a string; accept it as people write it.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(fieldname, f"must be a finite number; got {value!r}")
        if positive and value <= 0:
            raise self.error(fieldname, f"must be greater than 0; got {value!r}")
        return float(value)

    def integer(self, fieldname: str, value: Any, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(fieldname, f"must be an integer; got {value!r}")
        if value < minimum:
            raise self.error(fieldname, f"must be at least {minimum}; got {value!r}")
        return value

    def boolean(self, fieldname: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(fieldname, f"must be true or false; got {value!r}")
        return value

    def ordered(self, fieldname: str, low: float, high: float) -> None:
        if low > high:
            raise self.error(fieldname, f"must have low <= high; got low={low!r}, high={high!r}")

    def param(self, pname: str, spec: Any) -> _Param:
        where = f"params.{pname}"
        spec = self.mapping(spec, where)
        kind = spec.get("type")
        if kind == "categorical":
            self.only(spec, {"type", "choices"}, where)
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self.error(f"{where}.choices", f"must be a non-empty list; got {choices!r}")
            return _Param(pname, "categorical", choices=tuple(choices))
        if kind not in ("int", "float"):
            raise self.error(f"{where}.type", f"must be one of int, float, categorical; got {kind!r}")
        self.only(spec, {"type", "low", "high", "log", "step"}, where)
        log = self.boolean(f"{where}.log", spec.get("log", False))
        if kind == "int":
            low: float = self.integer(f"{where}.low", spec.get("low"), minimum=1 if log else -(2**62))
            high: float = self.integer(f"{where}.high", spec.get("high"), minimum=-(2**62))
        else:
            low = self.number(f"{where}.low", spec.get("low"), positive=log)
            high = self.number(f"{where}.high", spec.get("high"), positive=log)
        self.ordered(where, low, high)
        step = spec.get("step")
        if step is not None:
            step = self.number(f"{where}.step", step, positive=True)
            if log:
                raise self.error(f"{where}.step", "cannot be combined with log: true")
        return _Param(pname, kind, low=low, high=high, log=log, step=step)
