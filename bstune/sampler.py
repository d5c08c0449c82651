"""The start-up sampler: a spread sweep of batch sizes and learning rates, then multivariate TPE."""

from __future__ import annotations

import math

import optuna

from bstune.objectives import Mode, Target
from bstune.space import SearchSpace

__all__ = ["BatchSweep", "batch_sweep", "default_sampler", "spread_quantiles"]


def default_sampler(
    seed: int | None = None,
    n_startup_trials: int | None = None,
    space: SearchSpace | None = None,
    mode: Mode | None = None,
) -> optuna.samplers.BaseSampler:
    """Multivariate TPE; in a time-budget study with a ``space``, after a spread start.

    * Time budget: the first trials follow ``BatchSweep`` (batch sizes from the centre of the
      range outwards, learning rates spread over theirs) and TPE takes over as soon as the sweep is
      done (``n_startup_trials`` defaults to the sweep's length, 7 for batch sizes 16 to 1024).
    * Target (or no space): TPE after ``n_startup_trials`` (default 8) random trials. Until a trial
      reaches the target every trial trains to its end, so a fixed start that misses costs whole
      trials; on recorded curves the random start found the target sooner
      (``benchmarks/RESULTS_search.md``).

    TPE ranks infeasible trials (constraints set by each run) below all others, so missed targets
    and out-of-memory batch sizes repel it.
    """
    sweep = space is not None and not isinstance(mode, Target)
    if n_startup_trials is None:
        n_startup_trials = len(batch_sweep(space)) if sweep else 8  # type: ignore[arg-type]
    tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True)
    return BatchSweep(tpe, space) if sweep else tpe  # type: ignore[arg-type]


def batch_sweep(space: SearchSpace, n: int = 8) -> list[int]:
    """Up to ``n`` batch sizes spread evenly (in log scale) over the space, the middle one first,
    then outwards, the smaller neighbour before the larger.

    The middle of the range first: the extremes (the slowest small batch, the largest batch with
    the fewest steps) are the likeliest to lose, and a study stopped early (by ``--timeout``, say)
    should have trained something sensible. The sweep still reaches both ends.

    Examples:
        >>> from bstune.space import load_space
        >>> batch_sweep(load_space("lstm"))
        [128, 64, 256, 32, 512, 16, 1024]
    """
    if space.powers_of_two:
        sizes = space.batch_sizes()
        k = min(n, len(sizes))
        idx = sorted({round((len(sizes) - 1) * i / max(k - 1, 1)) for i in range(k)})
        picks = [sizes[i] for i in idx]
    else:
        lo, hi = math.log2(space.batch_low), math.log2(space.batch_high)
        picks = sorted({round(2 ** (lo + (hi - lo) * i / max(n - 1, 1))) for i in range(n)})
    mid = (len(picks) - 1) / 2
    order = sorted(range(len(picks)), key=lambda i: (abs(i - mid), i))
    return [picks[i] for i in order]


def spread_quantiles(n: int, base: int = 2) -> list[float]:
    """The first ``n`` points of the van der Corput sequence in ``base``: 1/2, 1/4, 3/4, 1/8, 5/8, ... in base 2.

    Each prefix is spread evenly over (0, 1), so however many sweep trials run, their learning
    rates cover the range; paired with ``batch_sweep``'s order, the smaller batches of the
    sweep get the smaller rates and the larger the larger, as the rate that works grows with the
    batch (Goyal et al. 2017; Hoffer et al. 2017).

    Examples:
        >>> spread_quantiles(5)
        [0.5, 0.25, 0.75, 0.125, 0.625]
    """
    out = []
    for i in range(1, n + 1):
        q, denom = 0.0, 1.0
        while i:
            denom *= base
            i, digit = divmod(i, base)
            q += digit / denom
        out.append(q)
    return out


class BatchSweep(optuna.samplers.BaseSampler):
    """Wrap a sampler so that trials number 0, 1, ... follow a spread start-up design.

    Trial i takes the i-th batch size of ``batch_sweep`` and a learning rate at the i-th
    quantile of ``spread_quantiles`` in log scale over the space's range (the base rate, with
    a scaling rule). Random start-up trials can land on the same batch size several times and on
    rates far from each other's; a spread first look is what a batch-size study needs most. Every
    other parameter, and every later trial, comes from the wrapped sampler. Keyed on the trial
    number, so parallel workers share one sweep and a resumed study does not start it again; a
    trial whose parameters were fixed beforehand (``enqueue_trial``) keeps them.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, space: SearchSpace, n: int = 8) -> None:
        self.base = base
        self.param = "log2_batch_size" if space.powers_of_two else "batch_size"
        sweep = batch_sweep(space, n)
        self.values = [int(math.log2(b)) for b in sweep] if space.powers_of_two else sweep
        self.lr_param = "learning_rate" if space.scaling == "none" else "base_learning_rate"
        lo, hi = math.log(space.lr_low), math.log(space.lr_high)
        self.lr_values = [math.exp(lo + q * (hi - lo)) for q in spread_quantiles(len(self.values))]

    @property
    def n_sweep(self) -> int:
        """How many trials the sweep places: trials number 0 to ``n_sweep - 1``."""
        return len(self.values)

    def _fixed(self, trial: optuna.trial.FrozenTrial, param_name: str) -> float | None:
        if trial.number >= len(self.values):
            return None
        if param_name == self.param:
            return self.values[trial.number]
        if param_name == self.lr_param and trial.number < len(self.lr_values):
            return self.lr_values[trial.number]
        return None

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        params = self.base.sample_relative(study, trial, search_space)
        for name in (self.param, self.lr_param):
            fixed = self._fixed(trial, name)
            if fixed is not None and name in params:
                params = {**params, name: fixed}
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        fixed = self._fixed(trial, param_name)
        if fixed is not None:
            return fixed
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):  # type: ignore[no-untyped-def]
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
