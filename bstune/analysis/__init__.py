"""Analysis of studies: plain data that reports format and plots draw.

``analyze`` turns a study into a ``Report`` (Pareto fronts, hypervolume, a recommendation
per budget, batch-size effects, parameter importance); ``format_report`` writes it as a table,
JSON, CSV or Markdown; ``write_html`` and ``write_png`` draw it; ``publish_report``
saves it where optuna-dashboard shows it. The drawing and dashboard functions load plotly,
matplotlib and optuna-dashboard on first use only.

Examples:
    >>> import optuna
    >>> from bstune.analysis import best_configurations, pareto_indices
    >>> best_configurations(optuna.create_study())
    []
    >>> pareto_indices([1.0, 2.0, 3.0], [0.6, 0.5, 0.9])
    [0, 2]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bstune.analysis._analyze import analyze, default_budgets
from bstune.analysis._format import FORMATS, format_report, print_report
from bstune.analysis._load import existing_storage, load_existing_study
from bstune.analysis._pareto import hypervolume_2d, pareto_indices
from bstune.analysis._report import (
    BatchSizeRow,
    FrontPoint,
    Recommendation,
    Report,
    ScalingFit,
    TrialSummary,
)
from bstune.analysis._summary import ConfigRow, best_configurations

if TYPE_CHECKING:
    from bstune.analysis._dashboard import Published, make_dashboard_server, publish_report
    from bstune.analysis._matplotlib import write_png
    from bstune.analysis._plotly import figures, write_html

__all__ = [
    "FORMATS",
    "BatchSizeRow",
    "ConfigRow",
    "FrontPoint",
    "Published",
    "Recommendation",
    "Report",
    "ScalingFit",
    "TrialSummary",
    "analyze",
    "best_configurations",
    "default_budgets",
    "existing_storage",
    "figures",
    "format_report",
    "hypervolume_2d",
    "load_existing_study",
    "make_dashboard_server",
    "pareto_indices",
    "print_report",
    "publish_report",
    "write_html",
    "write_png",
]

# Heavy dependencies (plotly, matplotlib, optuna-dashboard) load when one of these is first used.
_LAZY = {
    "Published": "bstune.analysis._dashboard",
    "make_dashboard_server": "bstune.analysis._dashboard",
    "publish_report": "bstune.analysis._dashboard",
    "write_png": "bstune.analysis._matplotlib",
    "figures": "bstune.analysis._plotly",
    "write_html": "bstune.analysis._plotly",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bstune.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
