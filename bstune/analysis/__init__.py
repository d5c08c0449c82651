"""Analysis of finished studies: plain data that reports format and plots draw.

Example:
    >>> import optuna
    >>> from bstune.analysis import best_configurations
    >>> best_configurations(optuna.create_study())
    []
"""

from __future__ import annotations

from bstune.analysis._summary import ConfigRow, best_configurations

__all__ = ["ConfigRow", "best_configurations"]
