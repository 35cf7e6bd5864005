"""What the benchmarks share: FLOP counting, medians and the device's name."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


class _NoModuleTracker:
    """Stands in for FlopCounterMode's module tracker, which hooks every module's backward: under
    ``autograd.grad`` (the gradient penalty) such a hook on a leaf raises "A leaf node was passed
    to _will_engine_execute_node", so the counter crashes on a WGAN-GP step. We want totals only."""

    parents = {"Global"}

    def __enter__(self) -> _NoModuleTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_flops(function: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of the convolutions and matrix products ``function`` runs, its
    backward and double backward included, by PyTorch's own FLOP formulas."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracker()  # type: ignore[assignment]
    with counter:
        function()
    return counter.get_total_flops()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one call, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"
