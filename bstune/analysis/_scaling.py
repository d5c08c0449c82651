"""The learning rate against the batch size: ``lr = coefficient * batch_size ** exponent``, fitted by
least squares in log space on the best trial of each batch size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["ScalingFit", "fit_scaling"]


class ScalingFit(NamedTuple):
    """``learning_rate = coefficient * batch_size ** exponent``, fitted on the best trial of each
    batch size by least squares in log space (1 = linear scaling, 0.5 = square root)."""

    exponent: float
    coefficient: float
    r2: float
    stderr: float
    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]

    def predict(self, batch_size: float) -> float:
        return self.coefficient * batch_size**self.exponent


def fit_scaling(batch_sizes: Sequence[int], lrs: Sequence[float]) -> ScalingFit | None:
    pairs = [(b, lr) for b, lr in zip(batch_sizes, lrs, strict=True) if b > 0 and lr > 0 and math.isfinite(lr)]
    if len({b for b, _ in pairs}) < 2:
        return None
    xs = [math.log(b) for b, _ in pairs]
    ys = [math.log(lr) for _, lr in pairs]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    k = sxy / sxx
    a = my - k * mx
    resid = [y - (a + k * x) for x, y in zip(xs, ys, strict=True)]
    ss_res = sum(r * r for r in resid)
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    stderr = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else math.nan
    return ScalingFit(
        exponent=k,
        coefficient=math.exp(a),
        r2=r2,
        stderr=stderr,
        batch_sizes=tuple(b for b, _ in pairs),
        learning_rates=tuple(lr for _, lr in pairs),
    )
