"""``bstune probe``: memory, throughput and the critical batch size, measured before the search.

On the task's own model, data and device (built by the ``Trainer``, so the
probe measures the very step a trial runs), ``run_probe`` measures

* the largest batch that fits: doubling, then bisection, with a safety margin, bounded by the data
  set size and a maximum (``bstune.memory.find_max_batch_size``);
* throughput (samples per second, one warm-up step left out, the device synchronised around the
  timed steps) and the peak memory of a training step, for powers of two and for sizes between
  them (2^k + 1 and 3 * 2^(k-1), such as 17 and 48), so the table shows whether powers of two are
  faster on this hardware;
* the gradient noise scale B_simple (``bstune.noise``), the estimate of the critical batch size;

and narrows the search space from what it found (``narrow_space``). ``probe_table``,
``plot_probe`` and ``write_space`` only render the ``ProbeResult``.

Memory. On CUDA the peak is ``torch.cuda.max_memory_allocated`` and the limit is the device's
memory: running out raises ``torch.OutOfMemoryError``. On the CPU nothing raises before the
operating system kills the process, so the probe keeps to a budget (``memory_limit``, by default
half the memory available when it starts): the peak of a step is the model's resting state
(parameters, gradients, optimizer state) plus the largest excess of tensor allocations during the
step, read from the torch profiler's memory events; a size whose peak, measured or extrapolated
linearly from the last size that fitted, exceeds the budget counts as out of memory.
``memory_limit`` on CUDA stands for a smaller card: a size whose measured peak exceeds it counts as
out of memory there too.
"""

from __future__ import annotations

from bstune.probe._measure import run_probe
from bstune.probe._narrow import narrow_space, predicted_cost, probe_hyperparams, probe_sizes
from bstune.probe._render import plot_probe, probe_table, summary_lines, write_space
from bstune.probe._result import BatchMeasurement, ProbeResult

__all__ = [
    "BatchMeasurement",
    "ProbeResult",
    "narrow_space",
    "plot_probe",
    "predicted_cost",
    "probe_hyperparams",
    "probe_sizes",
    "probe_table",
    "run_probe",
    "summary_lines",
    "write_space",
]
