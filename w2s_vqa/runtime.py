"""Process-wide settings: the student's computations on CPU hosts, and JAX's persistent
compilation cache (runtime.* config keys)."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import logging
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


# ----------------------------------------------------------------------------- compilation cache
# runtime.compilation_cache_dir's default: JAX's own setting where one is made (the
# JAX_COMPILATION_CACHE_DIR environment variable, or jax.config.update earlier in the
# process), else `user_cache_dir()`.
AUTO_CACHE_DIR = "auto"
# JAX's loggers for persistent-cache events (jax/_src/compiler.py logs these at DEBUG).
_COMPILER_LOGGER = "jax._src.compiler"
# Verbs that compile for devices this host lacks (compile-only TPU topologies): JAX writes
# those executables to its cache but cannot load them back ("PjRtCompiler must be
# constructed with a Client"), so for them the cache stays off.
COMPILE_ONLY_VERBS = ("plan", "sweep")
_HIT = "Persistent compilation cache hit for "
_MISS = "PERSISTENT COMPILATION CACHE MISS for "
_NOT_WRITTEN = "Not writing persistent cache entry for "


def user_cache_dir() -> str:
    """$XDG_CACHE_HOME/w2s-vqa/jax, or ~/.cache/w2s-vqa/jax (the XDG base directory default)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "w2s-vqa", "jax")


class CacheEvents(logging.Filter):
    """What JAX's persistent compilation cache did in this process, read from the DEBUG
    records of `jax._src.compiler` ("Persistent compilation cache hit for 'jit_step' ...",
    "PERSISTENT COMPILATION CACHE MISS ...", "Not writing persistent cache entry ...").

    Installed as a filter on that logger, whose level it lowers to DEBUG so the records
    are made; records below the logger's former effective level are dropped here, so no
    handler prints more than before. hits / misses / not_written: program names
    (jit_<function>) in the order JAX met them.
    """

    def __init__(self, previous_level: int):
        super().__init__()
        self.previous_level = previous_level
        self.hits: list[str] = []
        self.misses: list[str] = []
        self.not_written: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        for prefix, names in ((_HIT, self.hits), (_MISS, self.misses), (_NOT_WRITTEN, self.not_written)):
            if message.startswith(prefix) and record.args:
                names.append(str(record.args[0]))
        return record.levelno >= self.previous_level

    def summary(self) -> dict:
        """{"hits": [...], "misses": [...], "not_written": [...]} (program names)."""
        return {"hits": list(self.hits), "misses": list(self.misses), "not_written": list(self.not_written)}


_cache_events: CacheEvents | None = None


def cache_events() -> CacheEvents:
    """This process's CacheEvents, installed on first use (idempotent)."""
    global _cache_events
    if _cache_events is None:
        logger = logging.getLogger(_COMPILER_LOGGER)
        _cache_events = CacheEvents(logger.getEffectiveLevel())
        logger.addFilter(_cache_events)
        logger.setLevel(logging.DEBUG)
    return _cache_events


def configure_compilation_cache(directory: str = AUTO_CACHE_DIR, *, min_compile_seconds: float = 1.0,
                                min_entry_bytes: int = 0, max_bytes: int = 16 << 30) -> str | None:
    """Turn on JAX's persistent compilation cache (runtime.* config keys) and return its
    directory, or None where it is off. Call before the first compilation (every verb
    passes through w2s_vqa.cli and main.common.load_config, which call it).

    directory            "auto" (`AUTO_CACHE_DIR`): JAX's own setting where one is made
                         (JAX_COMPILATION_CACHE_DIR, or an earlier jax.config.update in this
                         process; then the thresholds are JAX's too), else `user_cache_dir()`;
                         "" turns the cache off; else a local path or a gs:// URL (JAX reads
                         and writes it through etils.epath, so gcsfs must be installed).
    min_compile_seconds  programs that compiled faster are not written (JAX's
                         jax_persistent_cache_min_compile_time_secs, seconds).
    min_entry_bytes      smaller executables are not written (bytes; 0 = JAX's choice).
    max_bytes            a local cache's size bound: least recently used entries are deleted
                         past it (JAX's jax_compilation_cache_max_size; -1 = no bound;
                         default 16 GiB, as the config's). A gs:// cache is unbounded
                         (JAX's eviction locks a local file).

    Only process 0 writes entries (JAX's rule, against contention on object stores); every
    process reads. Also installs `cache_events`, which the train verb reports from.
    A cache is trusted code: point it only at a directory no one else writes (JAX's
    warning in compilation_cache.set_cache_dir).
    """
    import os

    import jax
    from jax._src import compilation_cache

    cache_events()
    current = jax.config.jax_compilation_cache_dir
    if directory == AUTO_CACHE_DIR:
        if current:
            return current
        directory = user_cache_dir()
    if directory and "://" not in directory:
        directory = os.path.abspath(os.path.expanduser(directory))
    settings = {"jax_compilation_cache_dir": directory or None,
                "jax_persistent_cache_min_compile_time_secs": float(min_compile_seconds),
                "jax_persistent_cache_min_entry_size_bytes": int(min_entry_bytes),
                "jax_compilation_cache_max_size": int(max_bytes) if directory and "://" not in directory else -1}
    if all(getattr(jax.config, key) == value for key, value in settings.items()):
        return directory or None
    for key, value in settings.items():
        jax.config.update(key, value)
    compilation_cache.reset_cache()  # JAX opens its cache once per process: reopen it at the new settings
    return directory or None


def configure_compilation_cache_from(config) -> str | None:
    """`configure_compilation_cache` with a config's runtime.* keys (defaults where absent)."""
    section = config.get("runtime", None) or {}
    return configure_compilation_cache(
        str(section.get("compilation_cache_dir", AUTO_CACHE_DIR)),
        min_compile_seconds=float(section.get("compilation_cache_min_compile_seconds", 1.0)),
        min_entry_bytes=int(section.get("compilation_cache_min_entry_bytes", 0)),
        max_bytes=int(section.get("compilation_cache_max_bytes", 16 << 30)))
