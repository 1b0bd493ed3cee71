"""The GCS emulator fixture (tests/conftest.py `gcs`) serves what gs:// paths go through:
etils.epath (gcsfs) writes and lists objects, and Orbax (tensorstore) saves a checkpoint
there and restores it. The gs:// tests of workdirs, exports and scores build on it."""

import os

import numpy as np


def test_epath_writes_reads_and_lists_objects_on_the_emulator(gcs):
    from etils import epath

    root = epath.Path(gcs) / "epath"
    (root / "a" / "x.txt").write_text("hello")
    (root / "b.bin").write_bytes(b"\x00\x01")
    assert (root / "a" / "x.txt").read_text() == "hello"
    assert (root / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in root.iterdir()) == ["a", "b.bin"]
    assert not (root / "missing").exists()


def test_orbax_saves_and_restores_a_checkpoint_on_the_emulator(gcs):
    import orbax.checkpoint as ocp
    from etils import epath

    tree = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.asarray(7, np.int32)}
    directory = epath.Path(gcs) / "orbax" / "run"
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=2)) as manager:
        manager.save(3, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()
    with ocp.CheckpointManager(directory) as manager:
        assert manager.all_steps() == [3]
        restored = manager.restore(3, args=ocp.args.StandardRestore(tree))
    np.testing.assert_array_equal(restored["w"], tree["w"])  # integers and exact floats: stored bit for bit
    assert int(restored["step"]) == 7
    # The arrays are tensorstore's objects in the bucket (OCDBT data files under d/), listed
    # here through gcsfs, and nothing went to a local folder named "gs:".
    import fsspec

    objects = fsspec.filesystem("gs").find(f"{directory}/3")
    assert any("/d/" in name for name in objects), objects
    assert not os.path.exists("gs:") and not os.path.exists(os.path.join(os.getcwd(), "gs:"))


CACHE_PROBE = """
import sys
import jax, jax.numpy as jnp
from w2s_vqa import runtime
assert runtime.configure_compilation_cache(sys.argv[1], min_compile_seconds=0) == sys.argv[1]
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(sorted(set(runtime.cache_events().hits)), sorted(set(runtime.cache_events().misses)))
"""


def test_the_compilation_cache_on_a_gs_url_serves_a_second_process(gcs):
    """runtime.compilation_cache_dir=gs://...: JAX writes through etils.epath, and a fresh
    process loads the program from the bucket (JAX's cache-hit log record)."""
    import subprocess
    import sys

    from etils import epath

    url = f"{gcs}/jax_cache"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = [subprocess.run([sys.executable, "-c", CACHE_PROBE, url], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first_hits, first_misses = runs[0].stdout.strip().splitlines()[-1].split("] [")
    assert "jit__lambda" in first_misses and "jit__lambda" not in first_hits
    second_hits = runs[1].stdout.strip().splitlines()[-1].split("] [")[0]
    assert "jit__lambda" in second_hits
    assert any(p.name.startswith("jit__lambda-") for p in epath.Path(url).iterdir())
