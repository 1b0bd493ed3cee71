"""Process-wide settings for running the student's computations on CPU hosts."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of unmapping it.

    XLA:CPU places each execution's temporaries in one large block. Past glibc's
    mmap threshold (at most 32 MiB) malloc maps fresh pages for such a block and
    unmaps them when it is freed, so every call page-faults all of its
    temporaries again: measured on the development machine, `exp` of a 43 MB
    array took 35 ms, 24 of them in page faults, and the `small` train step lost
    1-2.5%. Here every allocation comes from the heap (M_MMAP_MAX 0) and the
    heap is not trimmed, so the pages are faulted once per process. Peak
    resident memory stays at its high-water mark, which a training or
    benchmark process reaches every step anyway.

    The same as starting the process with MALLOC_MMAP_MAX_=0 and
    MALLOC_TRIM_THRESHOLD_=-1 (mallopt(3): -1 turns trimming off). For CPU runs
    (the tiny training, the benchmarks); accelerator hosts keep the allocator's
    defaults. Returns whether it applied: only on Linux with glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


def tune_cpu_host() -> bool:
    """`reuse_freed_memory` where JAX computes on the CPU; call after any
    `jax.distributed.initialize`, as it asks JAX for its backend."""
    import jax

    return jax.default_backend() == "cpu" and reuse_freed_memory()
