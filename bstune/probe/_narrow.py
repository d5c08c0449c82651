"""The probe's choices: which batch sizes to measure, with what, and the search space its findings narrow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bstune.memory import BatchSearch
from bstune.probe._result import CRITICAL_FACTOR, TIME_SLACK
from bstune.space import Hyperparams, SearchSpace


def probe_sizes(low: int, high: int) -> list[int]:
    """Powers of two from ``low`` to ``high`` and, in each octave, 2^k + 1 and 3 * 2^(k-1).

    Examples:
        >>> probe_sizes(16, 100)
        [16, 17, 24, 32, 33, 48, 64, 65, 96, 100]
    """
    sizes = {high}
    k = 0
    while 2**k <= high:
        p = 2**k
        for s in (p, p + 1, 3 * p // 2):
            if low <= s <= high and (s > 2 or s == p):
                sizes.add(s)
        k += 1
    return sorted(s for s in sizes if s >= low)


def probe_hyperparams(space: SearchSpace, overrides: Mapping[str, Any] | None = None) -> Hyperparams:
    """The configuration the probe builds its model with.

    Integer extras at the top of their range (widths and depths: the largest model, so the memory
    bounds hold for every trial), float extras at the middle of theirs (geometric for log ranges),
    categorical extras at their first choice; ``overrides`` win. The learning rate is the
    geometric middle of the space's range.
    """
    params: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "categorical":
            params[p.name] = p.choices[0]
        elif p.kind == "int":
            params[p.name] = int(p.high)  # type: ignore[arg-type]
        else:
            lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
            params[p.name] = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
    params.update(overrides or {})
    base = math.sqrt(space.lr_low * space.lr_high)
    return Hyperparams(
        batch_size=space.reference_batch_size,
        learning_rate=space.scaled_learning_rate(base, space.reference_batch_size),
        epochs=1,
        base_learning_rate=base,
        params=params,
    )


def pow2_floor(x: float) -> int:
    return 2 ** max(0, math.floor(math.log2(max(x, 1.0))))


def pow2_ceil(x: float) -> int:
    return 2 ** max(0, math.ceil(math.log2(max(x, 1.0))))


def predicted_cost(throughput: Mapping[int, float], critical: float, sizes: list[int]) -> dict[int, float]:
    """Training seconds to a given result, up to a constant, for each batch size in ``sizes``.

    McCandlish et al. (2018): the steps to a result go as ``1 + B_crit / B``, so the time goes as
    ``(B + B_crit) / throughput(B)``. A size above the largest measured one trains as
    micro-batches of that size, at its throughput. Sizes below the smallest measured are left out.
    """
    if not throughput:
        return {}
    measured = sorted(throughput)
    top = measured[-1]
    out = {}
    for b in sizes:
        if b < measured[0]:
            continue
        thr = throughput.get(b) or (throughput[top] if b > top else None)
        if thr is None:  # between measured sizes: the nearest one below
            thr = throughput[max(m for m in measured if m <= b)]
        out[b] = (b + critical) / thr
    return out


def narrow_space(
    base: SearchSpace,
    *,
    search: BatchSearch,
    critical: float | None,
    n_train: int,
    throughput: Mapping[int, float] | None = None,
) -> tuple[SearchSpace, tuple[str, ...]]:
    """The search space the measurements suggest, and the reasons, one line each.

    Batch bounds: with a noise scale and throughputs, the batch sizes whose predicted time to a
    result (``predicted_cost``) is within ``TIME_SLACK`` of the best one, rounded out to powers
    of two; with a noise scale alone, ``B_crit / 4`` to ``4 * B_crit`` (``CRITICAL_FACTOR``);
    without one (or an infinite one), the base space's. The top is at most the largest power of
    two in the data set, and at least four times the bottom, so the search keeps three sizes. A
    top above what fits in memory trains with gradient accumulation: the space gets
    ``micro_batch_size`` = the memory limit after the safety margin (also when memory bounded the
    search, so evaluation keeps to it). Learning rate, epochs and extras stay as in ``base``.
    """
    reasons = []
    data_top = pow2_floor(n_train)
    finite = critical is not None and math.isfinite(critical) and critical > 0
    cost = {}
    if finite and throughput:
        sizes = sorted({*throughput, *(2**k for k in range(int(math.log2(data_top)) + 1))})
        cost = predicted_cost(throughput, critical, [b for b in sizes if b <= max(data_top, min(throughput))])  # type: ignore[arg-type]
    if cost:
        best = min(cost, key=lambda b: cost[b])
        kept = [b for b, c in cost.items() if c <= TIME_SLACK * cost[best]]
        low, high = pow2_floor(min(kept)), min(pow2_ceil(max(kept)), data_top)
        why = (
            f"predicted time to a result, (B + B_crit) / throughput(B) with B_crit ~ {critical:.0f}, is within "
            f"{TIME_SLACK:g}x of the best (at batch {best}) from {min(kept)} to {max(kept)}; rounded out to powers of two"
            + (f", capped at the data set ({n_train} samples)" if high == data_top else "")
        )
    elif finite:
        low = pow2_floor(critical / CRITICAL_FACTOR)  # type: ignore[operator]
        high = min(pow2_ceil(critical * CRITICAL_FACTOR), data_top)  # type: ignore[operator]
        why = (
            f"from B_crit/{CRITICAL_FACTOR} to {CRITICAL_FACTOR} B_crit (B_crit ~ {critical:.0f}), powers of two"
            + (f", capped at the data set ({n_train} samples)" if high == data_top else "")
        )
    else:
        low, high = base.batch_low, min(base.batch_high, max(data_top, base.batch_low))
        why = "the base space's (no finite noise scale measured)"
    first = (low, high)
    if high < 4 * low:  # keep three powers of two to search
        high = min(4 * low, max(data_top, low))
    low = min(low, max(1, high // 4))
    if (low, high) != first:  # the headline names the range searched, and says why it is wider
        why = f"widened from {first[0]} to {first[1]} to keep three powers of two to search; {why}"
    reasons.append(f"batch sizes {low} to {high}: {why}")
    if not base.powers_of_two:
        low, high = max(1, low), max(low, high)
    micro = None
    if high > search.limit:
        micro = search.limit
        reasons.append(
            f"micro-batch {micro}: batches above it accumulate gradients "
            f"(largest that fits {search.largest}"
            + (", less the safety margin)" if search.memory_bound else ", the bound of the search)")
        )
    elif search.memory_bound:
        # No batch in range needs accumulation, but evaluation chunks must keep to what fits too.
        micro = search.limit
        reasons.append(f"micro-batch {micro}: the memory limit; every batch in range fits, no accumulation")
    else:
        reasons.append(f"no gradient accumulation: {high} fits in memory (up to {search.limit} measured)")
    ref = base.reference_batch_size
    if base.scaling != "none" and not low <= ref <= high:
        # The searched base rate is the rate at the reference; keep the reference meaningful.
        reasons.append(f"learning-rate reference batch size {ref} kept from the base space")
    space = replace(
        base,
        batch_low=low,
        batch_high=high,
        reference_batch_size=ref if base.scaling != "none" else low,
        micro_batch_size=micro,
        name=f"{base.name}-probed",
        description=f"{base.name} narrowed by bstune probe: " + "; ".join(reasons),
        source="<probe>",
    )
    return SearchSpace.from_dict(space.to_dict(), source="<probe>"), tuple(reasons)
