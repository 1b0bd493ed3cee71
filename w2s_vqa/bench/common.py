"""Shared pieces of the benchmarks: timing, measured matmul peak, model FLOPs.

Every benchmark measures this machine's own matmul peak in the same run, so its
utilization figures compare like with like; its last printed line is one JSON
object with the figures.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from typing import Callable

from w2s_vqa.models.config import StudentConfig


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


def student_forward_flops(cfg: StudentConfig, pairs: int, seq_len: int) -> float:
    """Matmul FLOPs of one forward pass over `pairs` pairs (2 videos each) of `seq_len` tokens.

    Counts every matmul (projections, attention scores and values, MLPs, the
    level readout); elementwise work is left out, as MFU conventionally does.
    """
    v, t = cfg.vision, cfg.text
    frames = pairs * 2 * cfg.num_frames
    n = v.grid_size**2
    d, i = v.hidden_size, v.intermediate_size
    layers_run = max(cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, tuple) else
                     (cfg.vision_feature_layer,))
    vision_layers = v.num_hidden_layers + 1 + layers_run if layers_run < 0 else layers_run
    per_layer = 2 * n * (4 * d * d + 2 * d * i) + 2 * 2 * n * n * d
    vision = frames * (2 * n * v.patch_size**2 * v.num_channels * d + vision_layers * per_layer)
    projector = frames * 2 * n * (d * len(cfg.feature_layers) * t.hidden_size + t.hidden_size**2)
    motion = pairs * 2 * cfg.num_motion_chunks * 2 * (cfg.motion_dim * t.hidden_size + t.hidden_size**2)
    h, hd = t.hidden_size, t.head_dim
    kv = t.num_key_value_heads * hd
    text_layer = 2 * seq_len * (h * h + 2 * h * kv + h * h + 3 * h * t.intermediate_size) + 2 * 2 * seq_len**2 * h
    text = pairs * t.num_hidden_layers * text_layer
    return float(vision + projector + motion + text)


def machine() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}"


def emit(figures: dict) -> None:
    print(json.dumps(figures))
