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


import pytest  # noqa: E402

GCS_BUCKET = "w2s-vqa-test"  # the bucket the gcs fixture creates


@pytest.fixture(scope="session")
def gcs():
    """A GCS emulator (gcp-storage-emulator, in memory, tests/io/gcs_emulator.py) on 127.0.0.1 at a free port, in a
    process of its own, with the bucket GCS_BUCKET; yields "gs://GCS_BUCKET".

    While it runs, STORAGE_EMULATOR_HOST (read by gcsfs, hence etils.epath, and by
    google-cloud-storage) and TENSORSTORE_GCS_HTTP_URL (tensorstore, hence Orbax) point at
    it, in this process and the subprocesses it starts; GOOGLE_AUTH_TOKEN_FOR_TESTING gives
    tensorstore a token, so it looks for no Google credentials. Stopped, and the
    environment restored, at the end of the session."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:  # a port free now; the emulator binds it next
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # tests/io/gcs_emulator.py: the emulator with the generation headers tensorstore reads. Its
    # log goes to a file: a pipe nobody reads fills up and stops the server mid-request.
    import tempfile

    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "tests.io.gcs_emulator", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--in-memory", "--default-bucket", GCS_BUCKET, "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=log,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                log.seek(0)
                pytest.fail(f"the GCS emulator did not start on {url}: {log.read().decode()[-2000:]}")
            time.sleep(0.2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        patch.setenv("TENSORSTORE_GCS_HTTP_URL", url)
        patch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
        try:
            yield f"gs://{GCS_BUCKET}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
