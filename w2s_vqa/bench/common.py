"""Shared pieces of the benchmarks: timing, measured matmul peak, the JSON line.

Every benchmark measures this machine's own matmul peak in the same run, so its
utilization figures compare like with like; its model FLOPs are train.cost_model's, as a
plan's are; its last printed line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of `fn()`; `fn` must block until its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# The peak is a best case: the fastest of PEAK_REPEATS runs. A median over a few runs
# moved by 15% between runs on the shared development machine, and a low peak would
# overstate every utilization figure divided by it.
PEAK_REPEATS = 15


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    return min(median_seconds(fn, repeats=repeats, warmup=2)[1])


def jax_matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = PEAK_REPEATS) -> float:
    """FLOP/s of the fastest of `repeats` n x n x n matmuls under jit, on JAX's default device."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(jnp.dot)
    return 2 * n**3 / _best_seconds(lambda: f(a, b).block_until_ready(), repeats)


def torch_matmul_peak(n: int = 2048, repeats: int = PEAK_REPEATS) -> float:
    """FLOP/s of the fastest of `repeats` n x n x n matmuls in PyTorch on CPU."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), repeats)


def machine() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}"


def emit(figures: dict) -> None:
    print(json.dumps(figures))
