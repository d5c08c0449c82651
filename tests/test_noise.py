"""The gradient noise scale: the two-batch estimator against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bstune.errors import InvalidParameterError
from bstune.noise import measure_noise_scale, noise_scale_from_norms


def test_from_norms_recovers_exact_expectations() -> None:
    # E|G_B|^2 = |G|^2 + tr(Sigma) / B, exactly, at every step.
    g2, tr = 0.25, 40.0
    est = noise_scale_from_norms([g2 + tr / 4] * 3, [g2 + tr / 64] * 3, 4, 64)
    assert est.grad_sq == pytest.approx(g2)
    assert est.trace_sigma == pytest.approx(tr)
    assert est.b_simple == pytest.approx(160.0)
    assert est.running == pytest.approx((160.0,) * 3)  # bias-corrected averages of constants


def test_from_norms_burn_in_leaves_the_first_steps_out() -> None:
    # The first two steps are far from the rest (a model near its initialisation).
    small = [2.0 + 10 / 4] * 2 + [0.5 + 10 / 4] * 4
    big = [2.0 + 10 / 64] * 2 + [0.5 + 10 / 64] * 4
    all_steps = noise_scale_from_norms(small, big, 4, 64)
    later = noise_scale_from_norms(small, big, 4, 64, burn_in_fraction=0.5)
    assert later.n_burn_in == 3 and later.n_steps == 6
    assert later.b_simple == pytest.approx(20.0)
    assert all_steps.b_simple == pytest.approx(10 / 1.0)
    assert later.running[-1] > later.running[0]  # the moving estimate follows the change
    with pytest.raises(InvalidParameterError, match="'burn_in_fraction' parameter of noise_scale_from_norms"):
        noise_scale_from_norms(small, big, 4, 64, burn_in_fraction=1.0)


def test_from_norms_averages_before_dividing() -> None:
    # One step alone gives a |G|^2 of zero; the average of both steps does not.
    est = noise_scale_from_norms([10.0, 10.0], [1.0, 3.0], 1, 10)
    assert math.isinf(est.running[0])
    assert est.grad_sq == pytest.approx((0.0 + (30 - 10) / 9) / 2)
    assert est.b_simple == pytest.approx(est.trace_sigma / est.grad_sq)


def test_from_norms_rejects_bad_sizes() -> None:
    with pytest.raises(InvalidParameterError, match="'b_big' parameter of noise_scale_from_norms"):
        noise_scale_from_norms([1.0], [1.0], 8, 8)
    with pytest.raises(InvalidParameterError, match="'small_sq' parameter"):
        noise_scale_from_norms([1.0, 2.0], [1.0], 8, 16)


@pytest.mark.parametrize(("d", "delta_norm", "sigma"), [(10, 1.0, 1.0), (20, 0.5, 2.0)])
def test_measure_recovers_linear_regression_closed_form(d: int, delta_norm: float, sigma: float) -> None:
    """y = x.w* + eps, x ~ N(0, I_d), eps ~ N(0, sigma^2), squared loss at w = w* + delta.

    The per-sample gradient is g = 2 x (x.delta - eps), so G = 2 delta and
    Sigma = 4 ((|delta|^2 + sigma^2) I + delta delta^T): B_simple = d (1 + sigma^2/|delta|^2) + 1.
    """
    gen = torch.Generator().manual_seed(0)
    w_star = torch.randn(d, generator=gen)
    delta = torch.randn(d, generator=gen)
    delta *= delta_norm / delta.norm()
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta).unsqueeze(0))

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, d, generator=gen)
        y = x @ w_star + sigma * torch.randn(n, generator=gen)
        return x, y.unsqueeze(1)

    expected = d * (1 + sigma**2 / delta_norm**2) + 1
    est = measure_noise_scale(model, nn.MSELoss(), sample, b_small=8, b_big=512, n_steps=200)
    assert est.n_steps == 200 and est.n_burn_in == 0
    assert est.grad_sq == pytest.approx(4 * delta_norm**2, rel=0.2)
    assert est.trace_sigma == pytest.approx(4 * (d * (delta_norm**2 + sigma**2) + delta_norm**2), rel=0.2)
    assert est.b_simple == pytest.approx(expected, rel=0.2)
    # Without an optimizer the parameters stay where they were.
    assert torch.allclose(model.weight[0], w_star + delta)


def test_measure_with_optimizer_trains_and_stops_at_time_limit() -> None:
    from bstune.testing import FakeClock

    gen = torch.Generator().manual_seed(1)
    model = nn.Linear(4, 1)
    before = model.weight.detach().clone()
    clock = FakeClock()

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        clock.advance(1.0)
        x = torch.randn(n, 4, generator=gen)
        return x, x.sum(1, keepdim=True)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = measure_noise_scale(
        model, nn.MSELoss(), sample, b_small=4, b_big=18, n_steps=100, optimizer=opt, time_limit=3.0, clock=clock
    )
    assert est.n_steps == 3
    assert est.b_big == 16  # rounded down to a multiple of b_small
    assert not torch.allclose(model.weight, before)
    with pytest.raises(InvalidParameterError, match="'b_big' parameter of measure_noise_scale"):
        measure_noise_scale(model, nn.MSELoss(), sample, b_small=4, b_big=7, n_steps=1)
