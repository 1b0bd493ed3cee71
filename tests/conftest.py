"""Test set-up: 8 simulated CPU devices, float32 matmuls at full precision."""

import os

# Before jax is imported anywhere: sharding tests need several devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache (which every verb turns on, runtime.compilation_cache_dir
# "auto") in a folder of this test process, not the user's ~/.cache; subprocesses inherit it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="w2s_vqa_test_jax_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
