"""The errors bstune raises for bad input, with one message template for all of them.

Every check at the door (a constructor, a file load, a CLI option) raises ``BstuneError`` or a
subclass with a message that names the thing, the rule and the value, so that the CLI can print it
as one line and a library user can catch it as a ``ValueError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BstuneError",
    "InvalidParameterError",
    "SpaceError",
    "StorageError",
    "TaskError",
    "invalid",
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
