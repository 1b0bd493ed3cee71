"""Runs that survive: resumes on other meshes, device, worker and process counts; kill -9
during asynchronous saves; a lost process; stop signals; resumes with a changed config.

Every run here has the same length (train.num_steps=40), so its schedules are those of
the uninterrupted reference run and the losses step by step must match it.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.train.conftest import train_config
from w2s_vqa import config as config_lib
from w2s_vqa import pipeline
from w2s_vqa.train import loop
from w2s_vqa.train.checkpoint import Checkpointer, resolve_step
from w2s_vqa.train.fingerprint import data_fingerprints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 40
TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax's name for a step directory not yet committed


def logged(workdir) -> list[dict]:
    """metrics.jsonl's whole rows (a kill may cut the last one short)."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows = []
    if os.path.exists(path):
        for line in open(path).read().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def losses(workdir) -> np.ndarray:
    rows = [r for r in logged(workdir) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "one row per step, in order"
    return np.array([r["loss"] for r in rows])


def last_step(workdir) -> int:
    rows = logged(workdir)
    return rows[-1]["step"] if rows else 0


def saved_steps(workdir) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def overrides(pool, *extra) -> list[str]:
    """The conftest's train_config overrides, for a `w2s-vqa train` command line."""
    return [f"data.store='{pool / 'store'}'", f"data.pairs='{pool / 'pairs.parquet'}'", "data.batch_size=8",
            "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=100",
            "train.async_checkpoint=False", f"train.num_steps={STEPS}", *extra]


def train_command(workdir, items) -> list[str]:
    args = [sys.executable, "-m", "w2s_vqa.cli", "train", "--workdir", str(workdir)]
    for item in items:
        args += ["--set", item]
    return args


def environment(tmp_path, devices: int) -> dict:
    # Restarts reuse compiled programs: the persistent cache keeps each start short.
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def wait_for(condition, procs, timeout=300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        ended = [p for p in procs if p.poll() is not None]
        if ended:
            out = ended[0].communicate()[0]
            raise AssertionError(f"a process ended early ({ended[0].returncode}): {(out or b'').decode()[-3000:]}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(pool, tmp_path_factory):
    """The uninterrupted run: one process, 8 devices, mesh (8,1,1): (losses, trainable params)."""
    workdir = tmp_path_factory.mktemp("reference")
    trainer = loop.Trainer(train_config(pool, f"train.num_steps={STEPS}", "mesh.shape=(8,1,1)"), workdir)
    trainer.run()
    return losses(workdir), {k: np.asarray(v) for k, v in trainer.final_state["trainable"].items()}


def test_the_stream_starts_at_any_batch(pool, tmp_path):
    trainer = loop.Trainer(train_config(pool), tmp_path / "run")
    whole = trainer.data_iterator(str(pool / "pairs.parquet"), seed=0, num_epochs=None, augment="views")
    batches = [next(whole) for _ in range(5)]  # 24 pairs, batches of 8: the fifth is in the second epoch
    late = trainer.data_iterator(str(pool / "pairs.parquet"), seed=0, num_epochs=None, augment="views", start=4)
    got = next(late)
    for key in ("pair_index", "pixel_values", "label"):
        np.testing.assert_array_equal(got[key], batches[4][key])


@pytest.mark.slow
def test_resume_on_another_mesh_and_worker_count_continues_the_stream(pool, reference, tmp_path):
    # Saved by (8,1,1) with 2 Grain workers; resumed on (2,2,2) reading in the main process.
    workdir = tmp_path / "run"
    info = loop.Trainer(train_config(pool, f"train.num_steps={STEPS}", "mesh.shape=(8,1,1)", "data.worker_count=2"),
                        workdir).run(until=3)
    assert (info.stopped, info.steps, info.saved_step) == ("until", 3, 3)
    checkpointer = Checkpointer(workdir / "checkpoints", read_only=True)
    stream = checkpointer.restore_stream(3)
    checkpointer.close()
    assert (stream["next_batch"], stream["worker_count"], stream["process_count"]) == (3, 2, 1)

    resumed = loop.Trainer(train_config(pool, f"train.num_steps={STEPS}", "mesh.shape=(2,2,2)"), workdir)
    info = resumed.run()
    assert (info.resumed_from, info.steps, info.stopped) == (3, STEPS, None)
    np.testing.assert_allclose(losses(workdir), reference[0], rtol=1e-5)
    q = resumed.final_state["trainable"]["language_model.layers.0.self_attn.q_proj.kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")  # restored into the new mesh's shardings

    # A process with one device exports the 8-device checkpoint (restored to host memory).
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "w2s_vqa.cli", "export", "--checkpoint", str(workdir), "--step",
                           "latest", "--out", str(out)], cwd=REPO, env=environment(tmp_path, 1),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "w2s_vqa.json").read_text())["step"] == STEPS
    from w2s_vqa.convert import hf

    exported = resumed.codec.to_dict(hf.load_student(str(out)))
    for key, value in resumed.final_state["trainable"].items():
        assert np.array_equal(np.asarray(exported[key]), np.asarray(value)), key


@pytest.mark.slow
def test_kill_minus_nine_during_saves_and_ctrl_c_then_rerun_is_bit_identical(pool, reference, tmp_path):
    # A checkpoint every step, saved asynchronously: at almost any moment a save is under way.
    workdir = tmp_path / "killed"
    command = train_command(workdir, overrides(pool, "mesh.shape=(8,1,1)", "train.checkpoint_every=1",
                                               "train.async_checkpoint=True"))
    env, rng, kills, mid_save = environment(tmp_path, 8), random.Random(0), 0, 0
    while kills < 5:
        resume_step = (saved_steps(workdir) or [0])[-1]
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Once this life has committed a step of its own, kill it at a random moment.
        wait_for(lambda: (saved_steps(workdir) or [0])[-1] > resume_step, [proc])
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, "the run ended before its kill: raise STEPS"
        kills += 1
        mid_save += any(TMP_MARK in name for name in os.listdir(workdir / "checkpoints"))
    assert mid_save >= 1, "no kill landed during a save"

    # Ctrl-C: the step under way is finished and saved, and the run says so.
    resume_step = saved_steps(workdir)[-1]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: saved_steps(workdir)[-1] > resume_step, [proc])  # training, its own step committed
    proc.send_signal(signal.SIGINT)
    out, err = (text.decode() for text in proc.communicate(timeout=120))
    assert proc.returncode == 130, err[-3000:]
    assert "KeyboardInterrupt" not in err and "SIGINT: stopping after this step with a checkpoint" in err
    summary = json.loads(out.strip().splitlines()[-1])
    latest = summary["steps"]
    assert summary["stopped"] == "SIGINT" and summary["resumed_from"] == resume_step
    assert summary["saved_step"] == latest == saved_steps(workdir)[-1] == last_step(workdir) < STEPS
    assert f"stopped by SIGINT at step {latest} of {STEPS}; checkpoint saved: step {latest}" in out
    assert f"To resume, run the same command again (--workdir {workdir})" in out

    # The rerun resumes from the latest complete checkpoint and removes what killed saves left.
    trainer = loop.Trainer(train_config(pool, f"train.num_steps={STEPS}", "mesh.shape=(8,1,1)"), workdir)
    info = trainer.run()
    assert info.resumed_from == latest and info.steps == STEPS
    assert not [name for name in os.listdir(workdir / "checkpoints") if TMP_MARK in name]
    for key, value in reference[1].items():
        assert np.array_equal(np.asarray(trainer.final_state["trainable"][key]), value), key
    np.testing.assert_array_equal(losses(workdir), reference[0])


@pytest.mark.slow
def test_a_lost_process_ends_the_others_and_all_resume_elsewhere(pool, reference, tmp_path):
    workdir = tmp_path / "multi"
    env = environment(tmp_path, 4)
    items = overrides(pool, "mesh.shape=(1,-1,1)", "distributed.num_processes=2", "distributed.cpu_collectives='gloo'",
                      "distributed.heartbeat_timeout_seconds=10", "distributed.initialization_timeout=120")

    def launch(*extra):
        port = _free_port()
        return [subprocess.Popen(train_command(workdir, items + [
            *extra, f"distributed.coordinator_address='127.0.0.1:{port}'", f"distributed.process_id={rank}"]),
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in (0, 1)]

    # 1. Process 1 dies (kill -9) mid-run: process 0 ends, non-zero, within the heartbeat timeout.
    procs = launch("train.checkpoint_every=1")
    wait_for(lambda: (saved_steps(workdir) or [0])[-1] >= 2, procs)
    procs[1].kill()
    lost_at = time.monotonic()
    out = procs[0].communicate(timeout=120)[0].decode()
    waited = time.monotonic() - lost_at
    procs[1].communicate()
    assert procs[0].returncode not in (0, None) and waited < 10 + 30, (waited, out[-3000:])
    assert "another task died" in out  # JAX's coordination service names the loss
    saved = saved_steps(workdir)[-1]  # intact: the rerun resumes from it

    # 2. Both rerun and resume; a SIGINT to process 1 alone stops both at one step, saved.
    procs = launch("train.checkpoint_every=1")
    wait_for(lambda: (saved_steps(workdir) or [0])[-1] >= saved + 2, procs)
    procs[1].send_signal(signal.SIGINT)
    outs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [143, 130], outs[0][-3000:] + outs[1][-3000:]
    summary = json.loads(outs[0].strip().splitlines()[-1])
    assert summary["stopped"] == "signal to another process" and summary["resumed_from"] == saved
    stopped_at = summary["steps"]
    assert saved + 2 <= stopped_at < STEPS and summary["saved_step"] == stopped_at == saved_steps(workdir)[-1]
    assert f"stopped by signal to another process at step {stopped_at} of {STEPS}; checkpoint saved" in outs[0]

    # 3. One process with 8 devices on a (2,2,2) mesh finishes: the losses of one uninterrupted run.
    info = loop.Trainer(train_config(pool, f"train.num_steps={STEPS}", "mesh.shape=(2,2,2)"), workdir).run()
    assert (info.resumed_from, info.steps) == (stopped_at, STEPS)
    np.testing.assert_allclose(losses(workdir), reference[0], rtol=1e-5)


def _fake_checkpoint(trainer, step, metrics=None):
    """A saved step with this trainer's config and stream; its state is a stand-in
    (the checks here read only config, stream and metrics)."""
    stream = {"next_batch": step, **data_fingerprints(trainer.config)}
    trainer.checkpointer.save(step, {"x": np.zeros(2, np.float32)}, stream, config_lib.as_json(trainer.config), metrics)
    trainer.checkpointer.wait()


def test_a_resume_with_another_config_is_refused_in_one_line(pool, tmp_path):
    workdir = tmp_path / "run"
    _fake_checkpoint(loop.Trainer(train_config(pool), workdir), 5)

    # Safe keys change freely; the pair table may move if its content is the same.
    moved = tmp_path / "moved.parquet"
    moved.write_bytes((pool / "pairs.parquet").read_bytes())
    safe = train_config(pool, "train.num_steps=77", "mesh.shape=(2,2,2)", "data.worker_count=3",
                        "train.checkpoint_every=9", "distributed.heartbeat_timeout_seconds=5", f"data.pairs='{moved}'")
    trainer = loop.Trainer(safe, workdir)
    trainer.check_resume(5, data_fingerprints(safe))

    # Another learning rate and seed, and a pair table whose content changed at the same path.
    saved = train_config(pool, "data.batch_size=16", "optim.learning_rate=1e-3", "seed=3", f"data.pairs='{moved}'")
    _fake_checkpoint(loop.Trainer(saved, tmp_path / "run2"), 5)
    from w2s_vqa.labels import pair_table

    table = pipeline.load_pair_table(pool / "pairs.parquet")
    pair_table.write_pairs(table.iloc[::-1].reset_index(drop=True), moved)
    config = train_config(pool, "data.batch_size=16", "optim.learning_rate=2e-3", "seed=4", f"data.pairs='{moved}'")
    trainer = loop.Trainer(config, tmp_path / "run2")
    with pytest.raises(loop.ConfigChangedError) as error:
        trainer.check_resume(5, data_fingerprints(config))
    message = str(error.value)
    assert "\n" not in message and "step 5 was saved with another config" in message
    assert "optim.learning_rate: 0.001 -> 0.002" in message and "seed: 3 -> 4" in message
    assert f"data.pairs: '{moved}' changed since" in message and "data.batch_size" not in message
    assert "--allow-config-change" in message
    # Allowed by name (fnmatch patterns), or all at once.
    for allow in (("optim.*", "seed", "data.pairs"), True):
        loop.Trainer(config, tmp_path / "run2", allow_config_change=allow).check_resume(
            5, data_fingerprints(config))


def test_best_and_latest_steps(pool, tmp_path):
    trainer = loop.Trainer(train_config(pool, "train.keep_last=1", "train.keep_best=2",
                                        f"data.val_pairs='{pool / 'pairs.parquet'}'"), tmp_path / "run")
    metric = trainer.config.train.best_metric
    for step, value in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.9), (5, None)]:
        _fake_checkpoint(trainer, step, None if value is None else {metric: value})
    checkpointer = trainer.checkpointer
    assert checkpointer.all_steps() == [2, 4, 5]  # BestN keeps two best (ties to the later), LatestN one
    assert resolve_step(checkpointer, "best", metric) == 4 == checkpointer.best_step()
    assert resolve_step(checkpointer, "latest", metric) == 5 == resolve_step(checkpointer, None, metric)
    assert resolve_step(checkpointer, "2", metric) == 2
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3; saved steps: \[2, 4, 5\]"):
        resolve_step(checkpointer, 3, metric)
    with pytest.raises(FileNotFoundError, match="no saved step has a value of train.best_metric 'val/ce'"):
        resolve_step(checkpointer, "best", "val/ce")
    with pytest.raises(ValueError, match="give a step number, 'latest' or 'best'"):
        resolve_step(checkpointer, "newest", metric)
