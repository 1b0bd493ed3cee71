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
