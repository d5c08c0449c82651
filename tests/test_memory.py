"""Out-of-memory recognition, the search for the largest batch that fits, accumulation plans."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bstune import memory
from bstune.errors import BstuneError, InvalidParameterError
from bstune.memory import accumulation_plan, find_max_batch_size, is_oom


def test_is_oom_by_type_first() -> None:
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(MemoryError())
    assert is_oom(RuntimeError("CUDA error: out of memory"))  # older torch, no dedicated type
    assert not is_oom(ValueError("out of memory"))  # the text alone is not enough
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(None)


def _limited(limit: int, tried: list[int]):  # type: ignore[no-untyped-def]
    def step(b: int) -> None:
        tried.append(b)
        if b > limit:
            raise torch.OutOfMemoryError(f"fake: batch {b} above {limit}")

    return step


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(1, 5000), bound=st.integers(1, 6000), start=st.integers(1, 64))
def test_finds_exactly_the_limit(limit: int, bound: int, start: int) -> None:
    start = min(start, bound)
    tried: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "free_memory", lambda: None)  # gc.collect() per try: slow, not under test here
        found = find_max_batch_size(_limited(limit, tried), bound=bound, start=start, log=lambda s: None)
    if limit >= bound:
        assert found.largest == bound and found.first_failure is None and found.limit == bound
    elif limit >= start:
        assert found.largest == limit and found.first_failure == limit + 1
    else:
        assert found.largest == limit  # bisection below a start that did not fit
    assert max(tried) <= bound
    assert [b for b, _ in found.tries] == tried
    assert all(ok == (b <= limit) for b, ok in found.tries)


def test_doubles_then_bisects_and_logs_every_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    freed = []
    monkeypatch.setattr(memory, "free_memory", lambda: freed.append(1))
    tried: list[int] = []
    lines: list[str] = []
    found = find_max_batch_size(_limited(37, tried), bound=1000, safety_margin=0.1, log=lines.append)
    assert tried == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert found.largest == 37 and found.limit == 33 and found.memory_bound
    assert len(freed) == len(tried)  # memory freed after every try
    assert "batch size 32 fits; trying 64" in lines
    assert any(line.startswith("batch size 64 does not fit (fake: batch 64 above 37)") for line in lines)
    assert "bisecting between 32 (fits) and 64 (does not): trying 48" in lines
    assert lines[-1] == "largest batch that fits: 37; with a 10% safety margin: 33"


def test_bound_without_failure_takes_no_margin() -> None:
    found = find_max_batch_size(lambda b: None, bound=100, safety_margin=0.5, log=lambda s: None)
    assert (found.largest, found.limit, found.first_failure) == (100, 100, None)
    assert [b for b, _ in found.tries] == [1, 2, 4, 8, 16, 32, 64, 100]


def test_other_errors_propagate_untouched() -> None:
    def step(b: int) -> None:
        if b > 4:
            raise ValueError("shapes do not match")

    with pytest.raises(ValueError, match="shapes do not match"):
        find_max_batch_size(step, bound=64, log=lambda s: None)


def test_nothing_fits() -> None:
    with pytest.raises(BstuneError, match="not even a batch of 1 fits in memory"):
        find_max_batch_size(_limited(0, []), bound=64, log=lambda s: None)


def test_bad_arguments() -> None:
    with pytest.raises(InvalidParameterError, match="'bound' parameter of find_max_batch_size"):
        find_max_batch_size(lambda b: None, bound=0)
    with pytest.raises(InvalidParameterError, match="'safety_margin' parameter"):
        find_max_batch_size(lambda b: None, bound=8, safety_margin=1.0)
    with pytest.raises(InvalidParameterError, match="'start' parameter"):
        find_max_batch_size(lambda b: None, bound=8, start=9)


def test_accumulation_plan() -> None:
    assert accumulation_plan(1024, 300) == (300, 4)
    assert accumulation_plan(64, None) == (64, 1)
    assert accumulation_plan(64, 64) == (64, 1)
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter of accumulation_plan"):
        accumulation_plan(0, 8)


_WIDE_TASK = """
import numpy as np
from torch import nn


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16384, 64)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x[:12288], y[:12288], x[12288:], y[12288:]


def model(hp):
    # 65,536 hidden units: about 0.5 MiB of activations per sample, so batch 8192 needs several GiB.
    return nn.Sequential(nn.Linear(64, 65536), nn.ReLU(), nn.Linear(65536, 2))
"""


@pytest.mark.gpu
def test_a_real_cuda_out_of_memory_is_recorded_and_the_study_goes_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from optuna.trial import TrialState

    import bstune
    from bstune.task import load_task
    from bstune.train import Trainer

    script = tmp_path / "wide.py"
    script.write_text(_WIDE_TASK)
    task = load_task(script, {})
    space = bstune.SearchSpace.from_dict(
        {
            "name": "wide",
            "batch_size": {"low": 256, "high": 8192, "powers_of_two": True},
            "learning_rate": {"low": 1e-3, "high": 1e-2},
            "epochs": {"low": 1, "high": 1},
        }
    )
    mode = bstune.TimeBudget(1.0)
    study = bstune.create_study(mode, space=space, storage=f"sqlite:///{tmp_path / 'oom.db'}", seed=0)
    for log2 in (13, 8, 13):  # too large; fits; too large again
        study.enqueue_trial({"log2_batch_size": log2, "learning_rate": 3e-3, "epochs": 1})
    objective = bstune.make_objective(task, space, mode, trainer=Trainer(task, device="cuda", seed=0))
    # The allocator's own limit: a real torch.OutOfMemoryError at 1 GiB, whatever the card holds.
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(2**30 / total)
    try:
        bstune.optimize(study, objective, n_trials=3)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    big, small, again = study.trials
    assert big.state == TrialState.PRUNED and big.user_attrs["stop_reason"] == "oom", big.user_attrs
    assert "out of memory" in big.user_attrs["stop_detail"].lower(), big.user_attrs["stop_detail"]
    assert big.constraints["out_of_memory"] == 1.0
    # The memory of the failed trial was given back: the small batch trains within the limit.
    assert small.state == TrialState.COMPLETE, small.user_attrs
    assert 0 < small.user_attrs["peak_memory_bytes"] < 2**30
    # The same batch and model are not tried again.
    assert again.user_attrs["stop_detail"].startswith("not trained: batch 8192"), again.user_attrs
