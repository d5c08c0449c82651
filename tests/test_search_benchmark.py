"""The search benchmark's statistics (``benchmarks/search.py``): what its comparison table says."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "search.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("bstune_search_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _runs(strategy: str, rows: list[list[float]]) -> list[tuple]:
    return [("names", "budget", strategy, seed, r, 10, 0.0) for seed, r in enumerate(rows)]


def test_comparison_counts_every_pair_and_marks_only_a_clear_loss(search) -> None:
    inf = math.inf
    ours = _runs("bstune default", [[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    theirs = _runs("tpe", [[2.0, 1.0, inf, 0.0], [2.0, 1.0, inf, 0.0], [4.0, 1.0, inf, 0.0]])
    better = _runs("grid", [[0.0] * 4 for _ in range(12)])
    out = search.comparison(ours + theirs + better, "budget", "names", "bstune default", ["tpe", "grid"])
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()[2:]}
    # 10%, the 9 pairs: (1<2, 1<2, 1<4), (2=2, 2=2, 2<4), (3>2, 3>2, 3<4): 5 lower, 2 ties
    cells = [c.strip() for c in rows["tpe"].split("|")[2:6]]
    assert cells[0].startswith(f"{(5 + 0.5 * 2) / 9:.2f} (")
    assert cells[1].startswith("1.00 (") and cells[2].startswith("1.00 (")  # "not yet" is the worst regret
    assert cells[3] == "0.50 (1.00)"  # all equal: no difference, and no test to run
    assert "**" not in rows["tpe"]
    # Ours never lower than a grid that is always at 0: a clear loss where ours is above it.
    grid = [c.strip() for c in rows["grid"].split("|")[2:6]]
    assert grid[0].startswith("**0.00 (") and grid[1] == "0.50 (1.00)"
    assert rows["grid"].rstrip().endswith("| 12 |")
    assert search.comparison(theirs, "budget", "names", "bstune default", ["tpe"]) is None
