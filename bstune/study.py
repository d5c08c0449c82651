"""Studies: sampler defaults, creating or resuming, and the optimize loop (storages: ``bstune.storage``).

bstune writes ordinary Optuna studies. ``create_study`` records what the study means (mode,
budget or target, clock, search space, bstune version) in its user attributes, and refuses to resume
a study that was made for something else, so nothing is overwritten by mistake.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from bstune._version import __version__
from bstune.errors import BstuneError, invalid
from bstune.memory import accumulation_plan, free_memory, is_oom
from bstune.objectives import Mode, Target, mode_from_attrs
from bstune.pruners import known_out_of_memory
from bstune.run import CurvePoint, Run
from bstune.space import SearchSpace
from bstune.storage import DEFAULT_STORAGE, mask_url, outage_seconds, resolve_storage, retry_trial
from bstune.task import Task

__all__ = [
    "DEFAULT_STORAGE",
    "create_study",
    "BatchSweep",
    "batch_sweep",
    "spread_quantiles",
    "default_sampler",
    "make_objective",
    "mask_url",
    "optimize",
    "resolve_storage",
    "is_feasible",
    "retry_trial",
]

def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial met its constraints (a missed target or out of memory does not)."""
    return all(v <= 0.0 for v in trial.constraints.values())


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


def create_study(
    mode: Mode,
    *,
    space: SearchSpace | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    load_if_exists: bool = True,
    seed: int | None = None,
) -> optuna.Study:
    """Create a study for ``mode``, or resume the one of that name if it was made for the same thing.

    Args:
        mode: ``TimeBudget`` or ``Target``; sets the direction.
        space: The search space, recorded on the study.
        storage: A storage URL or object; ``None`` keeps the study in memory.
        study_name: The study's name; resumed if it exists and ``load_if_exists``.
        sampler: Defaults to ``default_sampler`` for the mode: TPE, in budget mode after a
            sweep of batch sizes and learning rates.
        pruner: Defaults to no pruning (``bstune optimize`` uses ``bstune.default_pruner``).
        load_if_exists: Resume an existing study of that name instead of failing.
        seed: The default sampler's seed.

    Raises:
        BstuneError: The named study exists but was made for another mode, budget, target or
            search space (it is left untouched), or the target lies outside the range of accuracy.

    Examples:
        >>> import bstune
        >>> study = bstune.create_study(bstune.TimeBudget(5))
        >>> study.direction.name, study.user_attrs["mode"]
        ('MAXIMIZE', 'time_budget')
    """
    if isinstance(mode, Target):
        mode.check_range()
    storage_obj = resolve_storage(storage)
    attrs: dict[str, Any] = {**mode.to_attrs(), "bstune_version": __version__}
    if space is not None:
        attrs["space"] = space.to_dict()
    try:
        study = optuna.create_study(
            storage=storage_obj,
            study_name=study_name,
            sampler=sampler or default_sampler(seed, space=space, mode=mode),
            pruner=pruner or optuna.pruners.NopPruner(),
            direction=mode.study_direction,
            load_if_exists=load_if_exists,
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise BstuneError(f"study {study_name!r} already exists; choose another --study-name") from None
    except ValueError as e:  # direction mismatch on resume
        raise BstuneError(f"study {study_name!r}: {e}") from None
    existing = study.user_attrs
    if existing.get("mode"):
        _check_same(study.study_name, existing, attrs)
    else:
        if study.trials:
            raise BstuneError(
                f"study {study.study_name!r} already has trials and was not made by bstune; choose another --study-name"
            )
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        study.set_user_attr("intermediate_name", mode.intermediate_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([mode.value_name])
    return study


def _check_same(name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    old_mode, new_mode = mode_from_attrs(old), mode_from_attrs(new)
    if old_mode != new_mode:
        raise BstuneError(
            f"study {name!r} was made for {_describe(old)}, not {_describe(new)}; "
            "choose another --study-name to keep both"
        )
    if "space" in new and "space" in old and old["space"] != new["space"]:
        raise BstuneError(
            f"study {name!r} was made with search space {old['space'].get('name')!r} and different bounds; "
            "choose another --study-name to keep both"
        )


def _describe(attrs: dict[str, Any]) -> str:
    if attrs.get("mode") == "time_budget":
        return f"a time budget of {attrs['budget']:g} s"
    within = f" within {attrs['limit']:g} s per trial" if attrs.get("limit") is not None else ""
    return f"the target {attrs.get('metric_name', 'metric')} {attrs.get('target'):g}{within}"


def make_objective(
    task: Task | Callable[..., None],
    space: SearchSpace,
    mode: Mode,
    *,
    trainer: Any | None = None,
    clock: Callable[[], float] | None = None,
    on_report: Callable[[optuna.Trial, CurvePoint], None] | None = None,
    micro_batch_size: int | None = None,
    retry_disturbed: bool = False,
) -> Callable[[optuna.Trial], float]:
    """The Optuna objective for a task: suggest, train inside a ``Run``, return its value.

    ``task`` is a loaded ``Task`` or a plain ``train(hp, run)`` function. A task
    with ``data`` and ``model`` trains with ``trainer`` (the built-in one by default). A task with
    its own loop finds the batch to put through the model at once in ``run.micro_batch_size``: the
    effective batch, or ``micro_batch_size`` (else the space's) when that is smaller.

    Out of memory is an outcome: the trial is recorded with its batch size, marked infeasible
    (constraint violated) and pruned; memory is freed and the study goes on. A later trial of the
    same model whose micro-batch is at least as large is recorded the same way without training
    (``bstune.pruners.known_out_of_memory``).

    A trial that trained far slower than its batch size's other trials is marked disturbed when it
    ends (``bstune.analysis._disturbed``); with ``retry_disturbed`` its configuration is queued
    again, once.
    """
    if isinstance(task, Task):
        train_fn = task.get("train")
        if train_fn is None:
            if trainer is None:
                from bstune.train import Trainer

                trainer = Trainer(task, micro_batch_size=space.micro_batch_size)
            train_fn = trainer
    else:
        train_fn = task
    device = getattr(trainer, "device_name", None) or _guess_device()
    sync = getattr(trainer, "sync", None) or _guess_sync()

    def objective(trial: optuna.Trial) -> float:
        waited_before = outage_seconds()
        hp = space.suggest(trial)
        # The built-in trainer splits a batch itself; a train() function (a Lightning or Hugging Face
        # script among them) reads the micro-batch from run.micro_batch_size.
        default_micro = lambda b: accumulation_plan(b, micro_batch_size or space.micro_batch_size)[0]  # noqa: E731
        micro = getattr(trainer, "micro_batch_for", default_micro)(hp.batch_size)
        report_cb = (lambda p: on_report(trial, p)) if on_report is not None else None
        run = Run(
            trial,
            mode,
            hp,
            clock=clock or _perf_counter,
            sync=sync,
            device=device,
            micro_batch_size=micro,
            on_report=report_cb,
        )
        try:
            with run:
                known = known_out_of_memory(trial, hp.batch_size, micro)
                if known is not None:  # not trained blindly again: recorded as out of memory
                    run.stop("oom", f"not trained: {known}")
                    raise optuna.TrialPruned(run.stop_detail)
                train_fn(hp, run)
                if not run.curve:
                    raise RuntimeError("train() returned without calling run.report(metric)")
        except Exception as e:
            if not is_oom(e):
                _note_storage_wait(trial, waited_before)
                _check_disturbed(trial, retry_disturbed)
                raise
            free_memory()
            raise optuna.TrialPruned(f"out of memory at batch size {hp.batch_size}") from None
        _note_storage_wait(trial, waited_before)
        _check_disturbed(trial, retry_disturbed)
        return run.value

    return objective


def _note_storage_wait(trial: optuna.Trial, before: float) -> None:
    """Record the seconds the trial waited for its storage (``storage_wait_s``): its reports were
    held until the storage came back. Training time does not include them; wall time does."""
    waited = outage_seconds() - before
    if waited > 0 and isinstance(trial, optuna.Trial):
        trial.set_user_attr("storage_wait_s", round(waited, 2))


def _check_disturbed(trial: optuna.Trial, retry: bool) -> None:
    """Mark ``trial`` disturbed when it trained far slower than its batch size's other trials, and
    with ``retry`` queue its configuration again (once: a retry is not retried)."""
    from bstune.analysis._disturbed import DISTURBED_ATTR, RETRY_ATTR, SLOW_RATIO, disturbance

    if not isinstance(trial, optuna.Trial):
        return  # a FixedTrial or a bare trial: no study to compare with
    study = trial.study
    others = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    me = study._storage.get_trial(trial._trial_id)
    d = disturbance(me, others)
    if d is None or d.ratio >= SLOW_RATIO:
        return
    trial.set_user_attr(DISTURBED_ATTR, {"throughput": round(d.throughput, 3), "reference": round(d.reference, 3),
                                         "ratio": round(d.ratio, 4), "others": d.others})
    if retry and me.user_attrs.get(RETRY_ATTR) is None:
        study.enqueue_trial(dict(me.params), user_attrs={RETRY_ATTR: trial.number})


def _perf_counter() -> float:
    import time

    return time.perf_counter()


def _guess_device() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def _guess_sync() -> Callable[[], None] | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.synchronize
    return None


class _StopAfterFailures:
    """Stop the study after ``n`` consecutive failed trials instead of burning the budget."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.streak = 0
        self.tripped = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.streak = self.streak + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        if self.streak >= self.n:
            self.tripped = True
            study.stop()


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    max_consecutive_failures: int = 3,
) -> None:
    """Run ``objective`` on ``study`` for ``n_trials`` more trials or ``timeout`` seconds.

    A trial whose code raises is recorded as failed (with the end of its traceback in its user
    attributes) and the study goes on; after ``max_consecutive_failures`` failures in a row it stops
    with a ``BstuneError`` naming the last error.
    """
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise invalid("n_trials", "optimize", "an int in the range [1, inf)", n_trials)
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise invalid("timeout", "optimize", "a number of seconds greater than 0", timeout)
    if max_consecutive_failures < 1:
        raise invalid("max_consecutive_failures", "optimize", "an int in the range [1, inf)", max_consecutive_failures)
    guard = _StopAfterFailures(max_consecutive_failures)
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout,
        callbacks=[*callbacks, guard],
        catch=(Exception,),
        gc_after_trial=False,
    )
    if guard.tripped:
        last = study.trials[-1]
        detail = last.user_attrs.get("stop_detail") or "see the trial's user attributes"
        raise BstuneError(
            f"stopped after {guard.n} failed trials in a row; the last one (#{last.number}) raised: {detail}"
        )
