"""The timing loop the benchmarks share: untimed warm-up steps, then timed ones between device syncs."""
from __future__ import annotations

import time
from typing import Callable

import torch


def steps_per_second(step: Callable[[], object], device: torch.device, *, steps: int, warmup: int) -> float:
    """Call ``step()`` ``warmup`` times untimed (compilation, cuDNN autotuning), then ``steps`` times.

    CUDA runs asynchronously, so the device is synchronized before the clock starts and stops.
    """
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start)
