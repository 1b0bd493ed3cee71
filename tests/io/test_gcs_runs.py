"""Runs whose files live in a bucket: the verbs against the GCS emulator (tests/conftest.py
`gcs`), each in a fresh process whose working directory must stay empty (a URL that
became a local folder "gs:" would land there).

`train --workdir gs://...` stopped by train.num_steps and continued; `export --out
gs://...` then `score --hf gs://...`; the workdir's metrics and checkpoints read back
through etils.epath and Orbax; a gs:// store refused in one line; no `os.path.abspath`
in the package outside a short allowlist.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from etils import epath

from tests.train.conftest import pool  # noqa: F401  (the session's small real store)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(cwd, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`w2s-vqa ARGS` in a fresh process (this checkout's package) run in `cwd`."""
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "w2s_vqa.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_sets(pool, steps):  # noqa: F811
    return [f"data.store={pool / 'store'}", f"data.pairs={pool / 'pairs.parquet'}", "data.batch_size=8",
            "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=100",
            "train.async_checkpoint=False", f"train.num_steps={steps}", "mesh.shape=(1,1,1)", "mesh.num_devices=1"]


def with_sets(*items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture
def empty_cwd(tmp_path):
    """A working directory that each test asserts is still empty at its end."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    yield cwd
    assert sorted(os.listdir(cwd)) == [], "a verb wrote into the working directory"


def test_train_into_a_bucket_then_continue_there(gcs, pool, empty_cwd):  # noqa: F811
    run = f"{gcs}/train_run"
    first = last_json(cli(empty_cwd, "train", "--workdir", run, *with_sets(*train_sets(pool, 2))))
    assert first["steps"] == 2 and first["resumed_from"] is None and first["checkpoints"] == f"{run}/checkpoints"
    second = last_json(cli(empty_cwd, "train", "--workdir", run, *with_sets(*train_sets(pool, 4))))
    assert second["steps"] == 4 and second["resumed_from"] == 2
    root = epath.Path(run)
    assert sorted(p.name for p in (root / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # each run's lines, the object rewritten whole
    assert any(p.name.startswith("events.out.tfevents") for p in (root / "tensorboard").iterdir())
    # The checkpoint reads back through Orbax from the bucket, as export and scoring read it.
    from w2s_vqa.train.checkpoint import Checkpointer

    checkpointer = Checkpointer(f"{run}/checkpoints", async_save=False, read_only=True)
    try:
        assert checkpointer.latest_step() == 4
        assert checkpointer.restore_stream(4)["next_batch"] == 4
        assert checkpointer.restore_config(4)["train"]["num_steps"] == 4
    finally:
        checkpointer.close()
