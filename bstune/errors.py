"""The errors bstune raises for bad input, with one message template for all of them.

Every check at the door (a constructor, a file load, a CLI option) raises ``BstuneError`` or a
subclass with a message that names the thing, the rule and the value, so that the CLI can print it
as one line and a library user can catch it as a ``ValueError``. Two templates: a parameter of a
class or function (``invalid``, checked by ``check``, ``check_int``, ``check_choice``) and an option
of a command or a tuning run (``option_error``, checked by ``check_option``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "BstuneError",
    "InvalidParameterError",
    "SpaceError",
    "StorageError",
    "TaskError",
    "check",
    "check_choice",
    "check_int",
    "check_option",
    "invalid",
    "option_error",
]


class BstuneError(ValueError):
    """Bad input a user can fix; the message is one line that says how."""


class InvalidParameterError(BstuneError):
    """A parameter of a function, class or command is out of its range."""


class SpaceError(BstuneError):
    """A search-space file is missing or malformed."""


class TaskError(BstuneError):
    """A task script is missing or lacks what bstune needs from it."""


class StorageError(BstuneError):
    """A storage URL cannot be used."""


def invalid(name: str, owner: str, rule: str, value: Any) -> InvalidParameterError:
    """The one template: ``The 'budget' parameter of TimeBudget must be ... Got 0 instead.``"""
    return InvalidParameterError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")


def check(owner: str, name: str, value: Any, rule: str, ok: Callable[[Any], bool], *,
          kind: type | tuple[type, ...] = (int, float), none: bool = False) -> None:
    """The one check of a number at the door: ``value`` must be a ``kind`` (never a bool) for which
    ``ok`` holds, or ``None`` when ``none``; else :class:`InvalidParameterError` with ``rule``.

    Examples:
        >>> check("Trainer", "eval_share", 0.5, "a number in the range (0, 1]", lambda v: 0 < v <= 1)
        >>> check("Trainer", "eval_share", True, "a number in the range (0, 1]", lambda v: 0 < v <= 1)
        Traceback (most recent call last):
        ...
        bstune.errors.InvalidParameterError: The 'eval_share' parameter of Trainer must be a number in the range (0, 1]. Got True instead.
    """
    if none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
        raise invalid(name, owner, rule, value)


def check_int(owner: str, name: str, value: Any, low: int, *, high: int | None = None, none: bool = False) -> None:
    """``value`` must be an int (not a bool) in ``[low, high]`` (``high`` None: no upper bound),
    or ``None`` when ``none``; the rule reads "an int in the range [1, inf)"."""
    rule = f"an int in the range [{low}, {'inf)' if high is None else f'{high}]'}"
    check(owner, name, value, rule, lambda v: v >= low and (high is None or v <= high), kind=int, none=none)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any], rule: str | None = None) -> None:
    """``value`` must be one of ``choices``; the rule reads "'train' or 'wall'" for two, "one of a,
    b, c" for more, unless ``rule`` says otherwise."""
    if any(type(value) is type(c) and value == c for c in choices):  # 1 is not True, 1.0 is not 1
        return
    if rule is None:
        shown = [repr(c) if isinstance(c, str) else str(c) for c in choices]
        rule = " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(str(c) for c in choices)
    raise invalid(name, owner, rule, value)


def option_error(flag: str, rule: str, value: Any) -> BstuneError:
    """The template of an option: ``--seeds must be an integer of at least 1; got 0`` (numbers as
    ``:g`` prints them, strings quoted)."""
    if isinstance(value, float):
        shown = f"{value:g}"
    else:
        shown = repr(value) if isinstance(value, str) else str(value)
    return BstuneError(f"{flag} must be {rule}; got {shown}")


def check_option(flag: str, value: Any, rule: str, ok: Callable[[Any], bool], *, number: bool = True) -> None:
    """The one check of an option's value: ``None`` passes (not given); else, when ``number``, the
    value must be a real number (never a bool), and ``ok`` must hold; else ``option_error``.

    Examples:
        >>> check_option("--confirm", 2, "an integer of at least 0", lambda v: v >= 0)
        >>> check_option("--confirm", -1, "an integer of at least 0", lambda v: v >= 0)
        Traceback (most recent call last):
        ...
        bstune.errors.BstuneError: --confirm must be an integer of at least 0; got -1
    """
    if value is None:
        return
    if number and (isinstance(value, bool) or not isinstance(value, numbers.Real)) or not ok(value):
        raise option_error(flag, rule, value)
