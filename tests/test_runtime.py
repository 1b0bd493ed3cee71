"""runtime: large freed blocks are reused, not unmapped and faulted in again, both
malloc's own and those of XLA:CPU computations; which backend JAX will use."""

import os
import subprocess
import sys

import pytest

BLOCK_PAGES = (64 << 20) // 4096  # a 64 MiB block: above glibc's largest mmap threshold

# Allocates and frees a 64 MiB block several times and prints the minor page faults
# of the repeats after the first. malloc itself, as XLA:CPU calls it (NumPy asks the
# kernel for huge pages instead).
MALLOC_PROBE = """
import ctypes, resource, sys
if sys.argv[1] == "on":
    from w2s_vqa import runtime
    assert runtime.reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def touch_and_free(size=64 << 20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# A jitted computation with a 64 MiB result, called 24 times after 4 calls that
# let the heap grow: the minor page faults of those 24 calls.
XLA_PROBE = """
import resource, sys
if sys.argv[1] == "on":
    from w2s_vqa import runtime
    assert runtime.tune_cpu_host()
import jax, jax.numpy as jnp
x = jnp.zeros((16 << 20,), jnp.float32)
add_one = jax.jit(lambda x: x + 1)
for _ in range(4):
    add_one(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(24):
    add_one(x).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(probe: str, mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_without_page_faults():
    assert faults(MALLOC_PROBE, "off") > 2 * BLOCK_PAGES  # the default: every block is mapped afresh
    assert faults(MALLOC_PROBE, "on") < BLOCK_PAGES // 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_xla_cpu_computations_reuse_their_memory():
    # By default the result is allocated on XLA's dispatch thread and mapped afresh
    # every call; tuned, it comes from the heap, which now and then grows by a block
    # (when a result is freed after the next call has begun).
    assert faults(XLA_PROBE, "off") > 20 * BLOCK_PAGES
    assert faults(XLA_PROBE, "on") < 6 * BLOCK_PAGES


def computes_on_cpu(env: dict, start_backend: bool = False) -> bool:
    """runtime.jax_computes_on_cpu() in a fresh process; with start_backend, also
    checked against the backend JAX then starts."""
    probe = ("import jax; from w2s_vqa import runtime; on_cpu = runtime.jax_computes_on_cpu(); "
             "assert not start_backend or on_cpu == (jax.default_backend() == 'cpu'), jax.default_backend(); "
             "print(on_cpu)")
    out = subprocess.run([sys.executable, "-c", f"start_backend = {start_backend}; {probe}"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1] == "True"


def test_the_host_is_known_before_any_backend_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    env = dict(os.environ)
    assert computes_on_cpu({**env, "JAX_PLATFORMS": "cpu"})
    assert not computes_on_cpu({**env, "JAX_PLATFORMS": "cuda,cpu"})
    # An installed CUDA plugin (its metadata is what is read) makes JAX prefer the GPU.
    info = tmp_path / "jax_cuda13_plugin-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jax-cuda13-plugin\nVersion: 0.0.0\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    assert not computes_on_cpu({**env, "PYTHONPATH": path})
    computes_on_cpu(env, start_backend=True)  # and this machine's answer is the backend JAX starts


def test_verbs_print_no_libtpu_start_up_errors_on_a_host_without_tpu_chips(tmp_path):
    """libtpu (the [tpu] extra, for `plan`) on a host without TPU chips: a verb runs on the
    CPU without the plugin's errors about accelerator type and worker hostnames."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    done = subprocess.run([sys.executable, "-m", "w2s_vqa.cli", "export", "--preset", "tiny", "--out",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "TPU_WORKER_HOSTNAMES" not in done.stderr and "TPU accelerator type" not in done.stderr


def test_config_verbs_set_the_compilation_cache_but_compile_only_verbs_leave_it(tmp_path):
    """runtime.compilation_cache_dir reaches JAX through main.common.load_config; plan and
    sweep (TPU executables JAX could not load back) leave JAX's setting as it was."""
    import argparse

    import jax

    from w2s_vqa import runtime
    from w2s_vqa.main import common

    before = {key: getattr(jax.config, key) for key in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size")}
    overrides = [f"runtime.compilation_cache_dir='{tmp_path / 'cache'}'",
                 "runtime.compilation_cache_min_compile_seconds=2.5"]
    try:
        common.load_config(argparse.Namespace(verb="plan", config=None, overrides=overrides))
        assert jax.config.jax_compilation_cache_dir == before["jax_compilation_cache_dir"]
        common.load_config(argparse.Namespace(verb="train", config=None, overrides=overrides))
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5
        assert jax.config.jax_compilation_cache_max_size == 16 << 30  # the config's bound, on a local folder
        assert runtime.configure_compilation_cache("gs://bucket/cache") == "gs://bucket/cache"
        assert jax.config.jax_compilation_cache_max_size == -1  # no eviction on an object store
        assert runtime.configure_compilation_cache("") is None and jax.config.jax_compilation_cache_dir is None
    finally:
        from jax._src import compilation_cache

        for key, value in before.items():
            jax.config.update(key, value)
        compilation_cache.reset_cache()
