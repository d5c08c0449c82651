"""The gradient noise scale, bstune's estimate of the critical batch size.

McCandlish et al. (2018), "An Empirical Model of Large-Batch Training": with G the true gradient
and Sigma the per-sample gradient covariance, the simple noise scale

    B_simple = tr(Sigma) / |G|^2

predicts the critical batch size, where larger batches stop paying: below it, doubling the batch
halves the steps to a result; well above it, steps hardly fall. A batch of size B gives a gradient
estimate whose squared norm has expectation ``|G|^2 + tr(Sigma) / B``, so two batch sizes
``b_small < b_big`` give unbiased estimates of both terms (their appendix A):

    |G|^2     ~ (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / b_small - 1 / b_big)

Single-step estimates are noisy (even negative), so the two are averaged over steps separately and
only then divided. When the steps train the model, the noise scale moves (it grows as the gradient
shrinks); ``burn_in_fraction`` leaves the first steps out of the average, so the estimate describes
where training has got to rather than the random initialisation. Here the big batch is ``k`` micro-batches of ``b_small``: ``|G_small|^2`` is the
mean squared norm of the ``k`` micro-batch gradients, ``|G_big|^2`` the squared norm of their mean.
The big batch never goes through the model at once, so it may exceed what fits in memory.

The noise scale grows as training goes on (the gradient shrinks faster than its noise), so an
estimate taken early in training is a lower bound for later phases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bstune.errors import invalid

if TYPE_CHECKING:
    import torch

__all__ = ["NoiseScale", "measure_noise_scale", "noise_scale_from_norms"]


@dataclass(frozen=True)
class NoiseScale:
    """A gradient noise scale estimate and what it was computed from.

    Attributes:
        b_simple: ``trace_sigma / grad_sq``; ``inf`` when the gradient estimate is not positive
            (all noise, no signal: the critical batch size is beyond what was measured).
        trace_sigma: Estimate of tr(Sigma), the summed per-sample gradient variance.
        grad_sq: Estimate of |G|^2, the squared norm of the true gradient.
        b_small: The small batch size.
        b_big: The big batch size.
        n_steps: Steps measured.
        n_burn_in: Leading steps left out of the averages.
        running: Per step, ``B_simple`` from exponential moving averages of the two estimates
            (decay ``EMA_DECAY``): how the noise scale moved while it was measured.
    """

    b_simple: float
    trace_sigma: float
    grad_sq: float
    b_small: int
    b_big: int
    n_steps: int
    n_burn_in: int = 0
    running: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "b_simple": self.b_simple,
            "trace_sigma": self.trace_sigma,
            "grad_sq": self.grad_sq,
            "b_small": self.b_small,
            "b_big": self.b_big,
            "n_steps": self.n_steps,
            "n_burn_in": self.n_burn_in,
        }


def _ratio(s: float, g: float) -> float:
    return s / g if g > 0 else math.inf


#: Decay of the moving averages behind ``NoiseScale.running`` (about a five-step window).
EMA_DECAY = 0.8


def noise_scale_from_norms(
    small_sq: Sequence[float],
    big_sq: Sequence[float],
    b_small: int,
    b_big: int,
    *,
    burn_in_fraction: float = 0.0,
) -> NoiseScale:
    """B_simple from per-step squared gradient norms at two batch sizes (the two-batch estimator).

    Args:
        small_sq: Per step, ``|G_small|^2`` (or the mean of several such squared norms).
        big_sq: Per step, ``|G_big|^2``.
        b_small: The small batch size.
        b_big: The big batch size, larger than ``b_small``.
        burn_in_fraction: Fraction of the leading steps left out of the averages (at least one
            step is always kept).

    Examples:
        >>> # |G|^2 = 1 and tr(Sigma) = 64: E|G_B|^2 = 1 + 64 / B
        >>> noise_scale_from_norms([1 + 64 / 8], [1 + 64 / 256], 8, 256).b_simple
        64.0
    """
    if b_small < 1 or b_big <= b_small:
        raise invalid("b_big", "noise_scale_from_norms", f"an int greater than b_small={b_small}", b_big)
    if len(small_sq) != len(big_sq) or not small_sq:
        raise invalid("small_sq", "noise_scale_from_norms", "a non-empty sequence as long as big_sq", len(small_sq))
    if not 0.0 <= burn_in_fraction < 1.0:
        raise invalid("burn_in_fraction", "noise_scale_from_norms", "a number in the range [0, 1)", burn_in_fraction)
    g_est = [(b_big * b2 - b_small * s2) / (b_big - b_small) for s2, b2 in zip(small_sq, big_sq, strict=True)]
    s_est = [(s2 - b2) / (1.0 / b_small - 1.0 / b_big) for s2, b2 in zip(small_sq, big_sq, strict=True)]
    running = []
    ema_s = ema_g = 0.0
    for i, (s, g) in enumerate(zip(s_est, g_est, strict=True)):
        # Bias-corrected moving averages: the first steps are not pulled towards zero.
        ema_s = EMA_DECAY * ema_s + (1 - EMA_DECAY) * s
        ema_g = EMA_DECAY * ema_g + (1 - EMA_DECAY) * g
        correction = 1 - EMA_DECAY ** (i + 1)
        running.append(_ratio(ema_s / correction, ema_g / correction))
    n = len(small_sq)
    skip = min(int(n * burn_in_fraction), n - 1)
    trace_sigma = sum(s_est[skip:]) / (n - skip)
    grad_sq = sum(g_est[skip:]) / (n - skip)
    return NoiseScale(
        b_simple=_ratio(trace_sigma, grad_sq),
        trace_sigma=trace_sigma,
        grad_sq=grad_sq,
        b_small=b_small,
        b_big=b_big,
        n_steps=n,
        n_burn_in=skip,
        running=tuple(running),
    )


def measure_noise_scale(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    b_small: int,
    b_big: int,
    n_steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    time_limit: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
    burn_in_fraction: float = 0.0,
) -> NoiseScale:
    """Measure B_simple on ``model`` over up to ``n_steps`` steps.

    Each step draws ``b_big`` samples (``sample(b_big)``), computes the gradient of each of its
    ``b_big // b_small`` micro-batches, and records the two squared norms. With an ``optimizer``
    the model then takes a step with the big batch's gradient, so the estimate follows training;
    without one the parameters stay put (the estimate at one point, as in the tests).

    Args:
        model: The model; its trainable parameters define the gradient.
        loss_fn: A mean-reduced loss, ``loss_fn(model(x), y)``.
        sample: Returns ``(x, y)`` of a given number of samples, on the model's device.
        b_small: The micro-batch size.
        b_big: The big batch size; rounded down to a multiple of ``b_small``.
        n_steps: The most steps to take.
        optimizer: Steps the model with the big-batch gradient when given.
        autocast: A context manager factory for the forward pass (mixed precision).
        time_limit: Stop after this many seconds (checked after each step, with ``sync``).
        clock: A monotonic clock in seconds.
        sync: Waits for queued device work before the clock is read.
        burn_in_fraction: Fraction of the leading steps left out of the averages (with an
            optimizer: the steps nearest the initialisation).
    """
    import torch

    if b_small < 1:
        raise invalid("b_small", "measure_noise_scale", "an int in the range [1, inf)", b_small)
    k = b_big // b_small
    if k < 2:
        raise invalid("b_big", "measure_noise_scale", f"at least 2 * b_small = {2 * b_small}", b_big)
    if n_steps < 1:
        raise invalid("n_steps", "measure_noise_scale", "an int in the range [1, inf)", n_steps)
    b_big = k * b_small
    params = [p for p in model.parameters() if p.requires_grad]
    small_sq: list[torch.Tensor] = []
    big_sq: list[torch.Tensor] = []
    t0 = clock()
    for _ in range(n_steps):
        x, y = sample(b_big)
        total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        sq = torch.zeros((), device=total[0].device)
        for i in range(k):
            model.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(x[i * b_small : (i + 1) * b_small]), y[i * b_small : (i + 1) * b_small])
            loss.backward()
            for acc, p in zip(total, params, strict=True):
                if p.grad is not None:
                    g = p.grad.float()
                    sq += g.pow(2).sum()
                    acc += g
        mean_sq = torch.zeros((), device=sq.device)
        for acc in total:
            acc /= k
            mean_sq += acc.pow(2).sum()
        small_sq.append(sq / k)
        big_sq.append(mean_sq)
        if optimizer is not None:
            for acc, p in zip(total, params, strict=True):
                p.grad = acc.to(p.dtype)
            optimizer.step()
        if time_limit is not None:
            if sync is not None:
                sync()  # sync point: the limit is on finished work
            if clock() - t0 >= time_limit:
                break
    model.zero_grad(set_to_none=True)
    small = torch.stack(small_sq).tolist()  # sync point
    big = torch.stack(big_sq).tolist()
    return noise_scale_from_norms(small, big, b_small, b_big, burn_in_fraction=burn_in_fraction)
