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


def cli(cwd, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`w2s-vqa ARGS` in a fresh process (this checkout's package) run in `cwd`. Past `timeout`
    seconds the process is sent SIGABRT, so that faulthandler prints where each thread
    waits, and the test fails with that."""
    import signal

    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "PYTHONFAULTHANDLER": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1", **(env or {})}
    command = [sys.executable, "-m", "w2s_vqa.cli", *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        out, err = process.communicate()
        pytest.fail(f"w2s-vqa {args[0]} ran past {timeout} s:\n{err[-6000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


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


@pytest.fixture(scope="module")
def bucket_run(gcs, pool, tmp_path_factory):  # noqa: F811
    """A 2-step `train` run whose workdir is gs://.../train_run (from a fresh, empty cwd)."""
    cwd = tmp_path_factory.mktemp("cwd")
    run = f"{gcs}/train_run"
    first = last_json(cli(cwd, "train", "--workdir", run, *with_sets(*train_sets(pool, 2))))
    assert first["steps"] == 2 and first["resumed_from"] is None and first["checkpoints"] == f"{run}/checkpoints"
    assert os.listdir(cwd) == []
    return run


def test_train_into_a_bucket_then_continue_there(bucket_run, pool, empty_cwd):  # noqa: F811
    run = bucket_run
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


@pytest.fixture(scope="module")
def anchors(pool, tmp_path_factory):  # noqa: F811
    """Two anchors of the pool, of stand-in MOS (the demo's), as `w2s-vqa anchors` makes them."""
    import numpy as np

    from w2s_vqa.demo.run import standin_mos
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.store.format import VideoStore

    out = tmp_path_factory.mktemp("anchors") / "anchors"
    with VideoStore(pool / "store") as store:
        mos = standin_mos(store.index)
        pick = [int(np.argmin(mos)), int(np.argmax(mos))]
        AnchorSet.from_store(store, store.index["id"].iloc[pick], mos[pick]).save(str(out))
    return out


def test_export_to_a_bucket_then_score_from_it(bucket_run, gcs, pool, anchors, empty_cwd, tmp_path):  # noqa: F811
    out = f"{gcs}/exports/run"
    env = {"W2S_VQA_REMOTE_CACHE": str(tmp_path / "remote_cache")}
    done = cli(empty_cwd, "export", "--checkpoint", bucket_run, "--step", "2", "--out", out, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exported to {out}:" in done.stdout
    names = sorted(p.name for p in epath.Path(out).iterdir())
    assert {"config.json", "w2s_vqa.json", "tokenizer.json"} <= set(names), names
    assert json.loads((epath.Path(out) / "w2s_vqa.json").read_text())["checkpoint"] == bucket_run
    assert json.loads(done.stdout.strip().splitlines()[-1])["out"] == out
    # A second export into the same bucket folder is refused without --overwrite, as a local one is.
    again = cli(empty_cwd, "export", "--checkpoint", bucket_run, "--out", out, env=env)
    assert again.returncode == 2 and f"{out}: not empty; pass --overwrite" in again.stderr

    scores = tmp_path / "scores.csv"
    summary = last_json(cli(empty_cwd, "score", "--hf", out, "--anchors", str(anchors), "--inputs",
                            str(pool / "store"), "--out", str(scores), "--set", "mesh.shape=(1,1,1)",
                            "--set", "mesh.num_devices=1", env=env))
    assert summary["videos"] == 8 and summary["skipped"] == 0
    import pandas as pd

    table = pd.read_csv(scores)
    assert len(table) == 8 and table["score"].notna().all()
    # The local copy the scorer read: the exported files, under the cache named, not the cwd.
    copies = [d for d in os.listdir(tmp_path / "remote_cache") if not d.startswith(".")]
    assert len(copies) == 1 and "config.json" in os.listdir(tmp_path / "remote_cache" / copies[0])


def test_a_store_in_a_bucket_is_refused_in_one_line(gcs, empty_cwd):
    from w2s_vqa.store.format import StoreError, VideoStore

    with pytest.raises(StoreError, match=r"^gs://.*: a video store is ArrayRecord files, read by seeking in files on a "
                                         r"file system; give a local disk or a mounted bucket \(gcsfuse, NFS\), not a "
                                         r"URL$"):
        VideoStore(f"{gcs}/pool/store")
    done = cli(empty_cwd, "train", "--workdir", f"{gcs}/refused", "--set", f"data.store={gcs}/pool/store",
               "--set", "data.pairs=/nonexistent.parquet")
    assert done.returncode == 2
    # gcsfs warns that the emulator has no credentials to read a bucket's type with; the rest is the one line.
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING:gcsfs:")]
    assert lines == [f"w2s-vqa train: error: {gcs}/pool/store: a video store is ArrayRecord files, read by seeking in "
                     "files on a file system; give a local disk or a mounted bucket (gcsfuse, NFS), not a URL"], lines


def test_a_url_without_an_installed_file_system_names_the_package(tmp_path):
    from w2s_vqa import workdir

    with pytest.raises(OSError, match=r"^s3://b/run: s3:// URLs need a file system package: pip install s3fs$"):
        workdir.absolute("s3://b/run")
    with pytest.raises(OSError, match=r"^ftp2://h/x: no file system serves ftp2:// URLs here"):
        workdir.path("ftp2://h/x")
    assert workdir.absolute("rel/dir") == os.path.abspath("rel/dir")  # local paths as os.path always made them


def test_verbs_that_write_locally_refuse_a_url_in_one_line(empty_cwd):
    done = cli(empty_cwd, "curate-metrics", "--inputs", "/nonexistent", "--out", "gs://b/metrics")
    assert done.returncode == 2
    assert done.stderr.strip() == ("w2s-vqa curate-metrics: error: --out gs://b/metrics: `w2s-vqa curate-metrics` "
                                   "writes to local paths only; give a local folder or a mounted bucket (e.g. gcsfuse)")


def test_anchors_and_scores_in_a_bucket_then_a_rerun_resumes_from_it(bucket_run, gcs, pool, empty_cwd,  # noqa: F811
                                                                     tmp_path):
    """`anchors --out gs://`, then `score --anchors gs:// --out gs://.../scores.csv` of a folder of
    videos: the table, skipped list, scored parts and the anchors' matrix land in the bucket, the
    decoded store in the host's scratch folder; the same command again scores nothing anew."""
    from w2s_vqa.demo.run import standin_mos
    from w2s_vqa.store.format import VideoStore

    with VideoStore(pool / "store") as store:
        store.index.assign(mos=standin_mos(store.index))[["id", "mos"]].to_csv(tmp_path / "mos.csv", index=False)
    anchors = f"{gcs}/anchor_sets/a"
    made = last_json(cli(empty_cwd, "anchors", "--store", str(pool / "store"), "--mos", str(tmp_path / "mos.csv"),
                         "--k", "2", "--out", anchors))
    assert made["anchors"] == anchors and made["k"] == 2
    assert {p.name for p in epath.Path(anchors).iterdir()} == {"anchors.json", "videos.npz"}

    out = f"{gcs}/scored/scores.csv"
    env = {"W2S_VQA_REMOTE_CACHE": str(tmp_path / "remote_cache"), "W2S_VQA_SCRATCH": str(tmp_path / "scratch")}
    argv = ["score", "--checkpoint", bucket_run, "--step", "2", "--anchors", anchors, "--inputs", str(pool / "clips"),
            "--out", out, "--set", "mesh.shape=(1,1,1)", "--set", "mesh.num_devices=1"]
    first = last_json(cli(empty_cwd, *argv, env=env))
    assert (first["videos"], first["scored_now"], first["decoded_now"]) == (2, 2, 2)
    assert first["work"] == f"{gcs}/scored/scores.work" and first["skipped_list"] == f"{gcs}/scored/scores.skipped.csv"
    import pandas as pd

    with epath.Path(out).open("r") as f:
        table = pd.read_csv(f)
    assert len(table) == 2 and table["score"].notna().all()
    assert (epath.Path(gcs) / "scored" / "scores.skipped.csv").exists()
    parts = sorted(p.name for p in (epath.Path(first["work"]) / "parts").iterdir())
    assert parts[0] == "run.json" and len(parts) > 1 and all(p.startswith("shard-") for p in parts[1:]), parts
    import fsspec

    # The anchors' matrix for this student. A fresh gcsfs: this process's cached listing of the
    # anchor folder predates the score run.
    assert len(fsspec.filesystem("gs", skip_instance_cache=True).ls(f"{anchors}/matrices")) == 1
    # The decoded store is on this host's disk, under the scratch folder named.
    (scratch,) = os.listdir(tmp_path / "scratch" / "score")
    assert os.path.exists(tmp_path / "scratch" / "score" / scratch / "store" / "store.json")
    again = last_json(cli(empty_cwd, *argv, env=env))
    assert (again["videos"], again["scored_now"], again["decoded_earlier"]) == (2, 0, 2)  # the bucket's parts read


# os.path.abspath on a value that may be a URL makes gs://b/x the local folder "gs:/b/x". Where the
# package still calls it, the value is local by construction: each entry says why.
ABSPATH_ALLOWED = {
    "config/schema.py": "the package's own configs/ folder (__file__)",
    "config/files.py": "a config file's path against a traceback frame's, both local Python files",
    "launch.py": "the repository's folder (__file__)",
    "runtime.py": "a local compilation cache folder (URLs are returned before it)",
    "workdir.py": "absolute(): the local branch, after the URL test",
}


def test_os_path_abspath_only_where_the_path_is_local():
    package = os.path.join(REPO, "w2s_vqa")
    found = {}
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    lines = [i + 1 for i, line in enumerate(f) if re.search(r"os\.path\.abspath\(", line)]
                if lines:
                    found[os.path.relpath(path, package)] = lines
    unexpected = {k: v for k, v in found.items() if k not in ABSPATH_ALLOWED}
    assert not unexpected, f"os.path.abspath on paths that may be URLs (use w2s_vqa.workdir.absolute): {unexpected}"


def test_two_stages_in_a_bucket_workdir_then_a_rerun_finds_them_done(gcs, pool, anchors, empty_cwd, tmp_path):  # noqa: F811
    """`stages --stages 2` with W = gs://...: stage 1 trains into W/stage_1, relabeling scores the
    pool into W/stage_1/relabel, stage 2 trains on W/stage_2/pairs_train.parquet from stage 1's
    checkpoint in the bucket; the same command again finds every step done there."""
    from w2s_vqa.labels import weak_teachers
    from w2s_vqa.store.format import VideoStore

    with VideoStore(pool / "store") as store:
        weak_teachers.score_store(store).to_csv(tmp_path / "teachers.csv", index=False)
    run = f"{gcs}/stages_run"
    sets = with_sets(*train_sets(pool, 2), "stages.num_steps=2", "train.checkpoint_every=2", "stages.val_fraction=0.0",
                     "stages.new_pairs=6", "stages.synthetic_per_kind=2", "stages.gmad_levels=2",
                     f"stages.anchors={anchors}", f"stages.teachers={tmp_path / 'teachers.csv'}")
    summary = last_json(cli(empty_cwd, "stages", "--workdir", run, "--stages", "2", *sets))
    assert summary["workdir"] == run and summary["stopped"] is None
    assert [(s["stage"], s["steps"]) for s in summary["stages"]] == [(1, 2), (2, 2)]
    assert summary["stages"][1]["pairs"] == f"{run}/stage_2/pairs_train.parquet"
    root = epath.Path(run)
    for name in ("stages.json", "results.json", "results.md", "stage_1/relabel/report.json",
                 "stage_1/relabel/new_pairs.parquet", "stage_2/pairs_train.parquet", "stage_2/metrics.jsonl"):
        assert (root / name).exists(), name
    assert sorted(p.name for p in (root / "stage_2" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    import pandas as pd

    from w2s_vqa.labels import pair_table

    pairs = pair_table.read_pairs(f"{run}/stage_2/pairs_train.parquet")
    stage_1 = pd.read_parquet(pool / "pairs.parquet")
    report = json.loads((root / "stage_1/relabel/report.json").read_text())
    assert len(pairs) == len(stage_1) + report["pairs"] and report["pairs"] > 0
    again = last_json(cli(empty_cwd, "stages", "--workdir", run, "--stages", "2", *sets))
    assert again["stopped"] is None
    results = json.loads((root / "results.json").read_text())
    assert [s["trained_now"] for s in results["stages"]] == [False, False]  # both found finished in the bucket


def test_eval_into_a_bucket(bucket_run, gcs, pool, anchors, empty_cwd, tmp_path):  # noqa: F811
    """`eval --out gs://...`: tables, predictions, skipped list and plot in the bucket (results.json
    written last), the scored parts in its work/ folder, the decoded store in this host's scratch."""
    import pandas as pd

    pd.DataFrame({"file": ["bikes.mp4", "carphone_pristine.mp4"], "mos": [2.0, 4.0]}).to_csv(
        tmp_path / "mos.csv", index=False)
    out = f"{gcs}/eval_run"
    env = {"W2S_VQA_SCRATCH": str(tmp_path / "scratch")}
    summary = last_json(cli(empty_cwd, "eval", "--checkpoint", bucket_run, "--step", "2", "--anchors", str(anchors),
                            "--eval-set", "clips", str(pool / "clips"), str(tmp_path / "mos.csv"), "--out", out,
                            "--bootstrap", "0", "--set", "mesh.shape=(1,1,1)", "--set", "mesh.num_devices=1", env=env))
    assert summary["out"] == out and summary["results"] == f"{out}/results.json"
    assert summary["sets"]["clips"]["student"]["scored"] == 2
    root = epath.Path(out)
    for name in ("results.json", "results.md", "predictions.csv", "skipped.csv", "plots/clips.png"):
        assert (root / name).exists(), name
    assert (root / "plots" / "clips.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (root / "predictions.csv").open("r") as f:
        assert sorted(pd.read_csv(f)["file"]) == ["bikes.mp4", "carphone_pristine.mp4"]
    assert any(p.name.startswith("shard-") for p in (root / "work" / "clips" / "parts").iterdir())
    (scratch,) = os.listdir(tmp_path / "scratch" / "score")
    assert os.path.exists(tmp_path / "scratch" / "score" / scratch / "store" / "store.json")


def test_two_processes_train_into_one_bucket_workdir_then_resume(gcs, pool, empty_cwd):  # noqa: F811
    """Two processes (gloo, jax.distributed on 127.0.0.1) train into one gs:// workdir: one
    checkpoint per step (Orbax coordinates the processes' writes, process 0 commits), one
    metrics line per step (process 0 writes the records), and both resume from it."""
    import signal
    import socket

    run = f"{gcs}/two_processes"
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "PYTHONFAULTHANDLER": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}

    def launch(steps):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen(
            [sys.executable, "-m", "w2s_vqa.cli", "train", "--workdir", run, *with_sets(
                *train_sets(pool, steps), "mesh.shape=(1,-1,1)", "mesh.num_devices=0", "distributed.num_processes=2",
                "distributed.cpu_collectives='gloo'", f"distributed.coordinator_address='127.0.0.1:{port}'",
                f"distributed.process_id={rank}")],
            cwd=empty_cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=400))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.send_signal(signal.SIGABRT)
                pytest.fail(f"two-process train ran past 400 s:\n{p.communicate()[1][-6000:]}")
        assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
        return json.loads(outs[0][0].strip().splitlines()[-1])

    first = launch(2)
    assert (first["steps"], first["resumed_from"]) == (2, None)
    root = epath.Path(run)
    assert sorted(p.name for p in (root / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    second = launch(4)
    assert (second["steps"], second["resumed_from"]) == (4, 2)
    import fsspec

    fs = fsspec.filesystem("gs", skip_instance_cache=True)  # this process listed the folder before the resume
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{run}/checkpoints")]
    assert sorted(n for n in names if n.isdigit()) == ["2", "4"]
    with fs.open(f"{run}/metrics.jsonl", "r") as f:
        assert [json.loads(line)["step"] for line in f if line.strip()] == [1, 2, 3, 4]  # written once, by process 0
