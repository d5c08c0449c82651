"""Pruners on the time axis: stop diverging, slow, hopeless and out-of-memory trials early.

Optuna's pruners compare trials at identical integer steps. bstune reports at step = elapsed
training milliseconds, so trials with different batch sizes are compared at equal training time
instead, by interpolating each other trial's best-so-far curve. Every pruner here is an
``optuna.pruners.BasePruner``; they compose with each other and with Optuna's through
``AnyPruner``, and each records why it pruned a trial, which ``bstune.Run`` writes into
the trial's ``stop_detail`` ("pruned by TimeAlignedPruner at step 5120: ...").

This package does not import torch.
"""

from __future__ import annotations

from bstune.pruners._any import AnyPruner
from bstune.pruners._base import ExplainingPruner, PruneReason
from bstune.pruners._divergence import DivergencePruner
from bstune.pruners._factory import PRUNER_NAMES, PRUNERS, default_pruner, make_pruner
from bstune.pruners._gain_bound import GainBoundPruner
from bstune.pruners._halving import AsyncHalvingPruner
from bstune.pruners._oom import known_out_of_memory
from bstune.pruners._slow import SlowTrialPruner
from bstune.pruners._target import TargetTimePruner
from bstune.pruners._time_aligned import TimeAlignedPruner

__all__ = [
    "PRUNERS",
    "PRUNER_NAMES",
    "AnyPruner",
    "AsyncHalvingPruner",
    "DivergencePruner",
    "ExplainingPruner",
    "GainBoundPruner",
    "PruneReason",
    "SlowTrialPruner",
    "TargetTimePruner",
    "TimeAlignedPruner",
    "default_pruner",
    "known_out_of_memory",
    "make_pruner",
]
