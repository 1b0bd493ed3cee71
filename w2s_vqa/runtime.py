"""Process-wide settings for running the student's computations on CPU hosts."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# Distributions that give JAX an accelerator backend, which it then prefers to the CPU
# (libtpu only where TPU chips are attached: `jax_computes_on_cpu`).
_ACCELERATOR_DISTRIBUTIONS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm")
_TPU_DISTRIBUTION = "libtpu"


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of unmapping it.

    XLA:CPU places each execution's temporaries in one large block. Past glibc's
    mmap threshold (at most 32 MiB) malloc maps fresh pages for such a block and
    unmaps them when it is freed, so every call page-faults all of its
    temporaries again, which can take longer than the computation itself
    (docs/2026-11-cpu-runtime.md). Here every allocation comes
    from the heap (M_MMAP_MAX 0) and the heap is not trimmed, so its pages are
    faulted once per process. Peak resident memory stays at its high-water mark,
    which a training or benchmark process reaches every step anyway.

    This holds for the main thread's heap. glibc gives other threads arenas of
    their own, whose heaps hold at most 64 MiB: a larger block there is mapped
    afresh whatever M_MMAP_MAX says, which is why `tune_cpu_host` also has XLA
    run computations on the calling thread.

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


def jax_computes_on_cpu() -> bool:
    """Whether JAX's default backend is the CPU, decided without starting a backend
    (which reads `tune_cpu_host`'s dispatch setting when it starts, and which
    `jax.distributed.initialize` must precede): JAX_PLATFORMS (jax.config's
    jax_platforms) when set, else whether an accelerator plugin (jax-cuda*,
    jax-rocm*) is installed, or libtpu on a host with TPU chips (libtpu alone, as the
    `[tpu]` extra installs it for `w2s-vqa plan`'s compile-only devices, leaves JAX on
    the CPU)."""
    import jax

    platforms = jax.config.jax_platforms
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    installed = [(dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()]
    if any(name.startswith(_ACCELERATOR_DISTRIBUTIONS) for name in installed):
        return False
    return not (any(name.startswith(_TPU_DISTRIBUTION) for name in installed) and _tpu_chips_attached())


def _tpu_chips_attached() -> bool:
    """Whether TPU chips sit on this host's PCI bus, by JAX's own test (the one its Cloud
    TPU start-up makes before loading libtpu); True where that test is unavailable."""
    try:
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except (ImportError, AttributeError, OSError):
        return True


def skip_tpu_plugin_without_chips() -> bool:
    """Keep JAX off libtpu's plugin on a host without TPU chips (libtpu installed by the
    `[tpu]` extra for `w2s-vqa plan`'s compile-only devices): there the plugin's start-up
    only prints errors about TPU_ACCELERATOR_TYPE and worker hostnames before JAX falls
    back to the CPU. Sets jax_platforms to "cpu" when JAX_PLATFORMS is unset, libtpu is
    installed, no GPU plugin is, and no TPU chip is attached; returns whether it did.
    Must run before anything starts a JAX backend (compile-only TPU devices still work)."""
    import jax

    if jax.config.jax_platforms:
        return False
    installed = [(dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()]
    if any(name.startswith(_ACCELERATOR_DISTRIBUTIONS) for name in installed):
        return False
    if not any(name.startswith(_TPU_DISTRIBUTION) for name in installed) or _tpu_chips_attached():
        return False
    jax.config.update("jax_platforms", "cpu")
    return True


def tune_cpu_host() -> bool:
    """Settings for computing on the CPU, applied only where JAX does. Call it
    first, before anything starts JAX's backend, which reads the second.

    1. `reuse_freed_memory`.
    2. XLA:CPU runs each computation on the calling thread instead of
       dispatching it to a thread of its own (jax_cpu_enable_async_dispatch
       off; computations over several devices stay asynchronous). That thread's
       temporaries come from the main heap, which (1) keeps; a dispatch thread
       maps and faults them in again on every call (above). The price is that
       Python no longer runs ahead of the computation, a small cost to the
       demo's short steps (figures: docs/2026-11-cpu-runtime.md).
    Returns whether they applied.
    """
    if not jax_computes_on_cpu():
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return reuse_freed_memory()
