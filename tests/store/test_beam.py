"""`w2s-vqa prepare --runner`: the store written by an Apache Beam pipeline equals the
local path's byte for byte (DirectRunner, two worker processes; good and broken inputs
mixed); a run that fails midway, rerun, writes only the shards it lacks and ends with
the same store, also on a store that lives behind Beam's FileSystems rather than on a
local path; the local path never imports Beam; options and the launch script."""

import os
import subprocess
import sys

import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from w2s_vqa import cli
from w2s_vqa.store import beam as beam_store
from w2s_vqa.store import prepare as store_lib
from w2s_vqa.store.format import StoreError
# The inputs fixture (a real clip, three broken files, three odd valid ones) and the
# settings under which two stores can be compared byte for byte.
from tests.store.test_prepare import DETERMINISTIC, cli_args, config, inputs  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _RemoteFileSystem(LocalFileSystem):
    """URLs "w2s-test-remote://PATH" served from `root`: a store that Beam's FileSystems
    reaches by scheme, as gs:// or s3://, with no network. Beam finds FileSystem
    subclasses by their scheme; this one serves this process only (in_memory runs)."""

    root = ""

    @classmethod
    def scheme(cls):
        return "w2s-test-remote"

    def _local(self, url):  # LocalFileSystem's own methods call these with local paths too
        prefix = "w2s-test-remote://"
        return os.path.join(self.root, url[len(prefix):]) if url.startswith(prefix) else url

    def join(self, base, *paths):
        return "/".join([base.rstrip("/"), *paths])

    def mkdirs(self, path):
        return super().mkdirs(self._local(path))

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(self._local(path))

    def match(self, patterns, limits=None):
        return super().match([self._local(p) for p in patterns], limits)

    def delete(self, paths):
        return super().delete([self._local(p) for p in paths])


@pytest.fixture(scope="module")
def local_store(inputs, tmp_path_factory):
    """The local path's store of `inputs`, one source a shard (7 shards), in this process."""
    out = tmp_path_factory.mktemp("local") / "store"
    report = store_lib.prepare(config(*DETERMINISTIC), str(inputs), str(out), workers=1, progress=False)
    assert (report.shards, report.records, len(report.errors)) == (7, 16, 3)
    return out


def assert_same_store(got, expected):
    """Same files (no temporary file, no plan left behind), each byte for byte."""
    assert sorted(os.listdir(got)) == sorted(os.listdir(expected))
    for name in os.listdir(expected):
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name


@pytest.mark.slow
def test_the_direct_runner_with_two_workers_writes_the_local_store(inputs, local_store, tmp_path, capsys):
    """Index, records, errors and report: the same bytes as the local path's."""
    out = tmp_path / "beam"
    args = cli_args(inputs, out, *DETERMINISTIC, workers=2) + ["--runner", "DirectRunner"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "4/7 videos written (2 still images among them), 12 variants, 16 records in 7 shards (0 kept" in printed
    assert f"skipped: 3, each with its reason in {out}/errors.jsonl" in printed
    assert f"store: {out}" in printed
    assert_same_store(out, local_store)


def test_a_failed_run_reruns_without_redoing_finished_shards(inputs, local_store, tmp_path, monkeypatch):
    """The fourth shard's write raises: the run fails with three shards finished and no
    index; the rerun writes the four others only (the finished files are not touched)
    and the store equals the local path's. The store lives behind FileSystems (written
    locally, then copied), in this process (in_memory) so that write_shard can fail."""
    monkeypatch.setattr(_RemoteFileSystem, "root", str(tmp_path))
    url, out = "w2s-test-remote://store", tmp_path / "store"
    written = []

    def write_shard(task, real=store_lib.write_shard):
        written.append(task.shard)
        if len(written) == 4 and fail:
            raise OSError(f"simulated failure writing shard {task.shard}")
        return real(task)

    monkeypatch.setattr(store_lib, "write_shard", write_shard)
    run = dict(runner="DirectRunner", workers=1)
    fail = True
    with pytest.raises(beam_store.PipelineFailed, match=r"simulated failure writing shard \d+.*3 of 7 shards are "
                                                        r"finished in w2s-test-remote://store and kept: rerun"):
        beam_store.prepare_beam(config(*DETERMINISTIC), str(inputs), url, **run)
    finished = sorted(out.glob("shard-*.json"))
    assert len(finished) == 3 and not (out / "index.parquet").exists() and not (out / "report.json").exists()
    kept = {p: p.stat() for path in finished for p in (path, path.with_suffix(".arrayrecord"))}

    with pytest.raises(StoreError, match="differs in: distortions, plan_digest"):  # store.json is checked there too
        beam_store.prepare_beam(config(*DETERMINISTIC), str(inputs), url, distortions="resize:1", **run)

    fail, first_run = False, list(written)
    written.clear()
    report = beam_store.prepare_beam(config(*DETERMINISTIC), str(inputs), url, **run)
    assert sorted(written) == sorted(set(range(7)) - set(first_run[:3]))
    assert (report.shards_resumed, report.shards, report.videos_written, len(report.errors)) == (3, 7, 4, 3)
    assert_same_store(out, local_store)
    for path, stat in kept.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), path


def test_beam_options_are_checked_by_name_and_value():
    options = beam_store.pipeline_options("DirectRunner", ["direct_num_workers=3", "save_main_session"], workers=2)
    got = options.get_all_options()
    assert (got["direct_running_mode"], got["direct_num_workers"], got["save_main_session"]) == (
        "multi_processing", 3, True)  # the user's option after the defaults wins
    assert beam_store.pipeline_options("DirectRunner", workers=1).get_all_options()["direct_running_mode"] == "in_memory"
    dataflow = beam_store.pipeline_options("DataflowRunner", ["project=p", "region=us-central1",
                                                               "worker_machine_type=n1-highmem-8"]).get_all_options()
    assert (dataflow["runner"], dataflow["project"], dataflow["machine_type"]) == ("DataflowRunner", "p",
                                                                                  "n1-highmem-8")  # an alias
    with pytest.raises(beam_store.BeamOptionError, match="'workers' is not a Beam pipeline option .*num_workers"):
        beam_store.pipeline_options("DirectRunner", ["workers=3"])
    with pytest.raises(beam_store.BeamOptionError, match="--direct_num_workers: invalid int value: 'many'"):
        beam_store.pipeline_options("DirectRunner", ["direct_num_workers=many"])
    with pytest.raises(beam_store.BeamOptionError, match="not one of DirectRunner"):
        beam_store.pipeline_options("LocalRunner")
    with pytest.raises(StoreError, match="--out nosuch://bucket/store: Beam's FileSystems cannot write there"):
        beam_store.prepare_beam(config(), "unused", "nosuch://bucket/store", runner="DirectRunner")


def test_the_local_path_imports_no_beam(inputs, tmp_path):
    code = ("import sys; from w2s_vqa import cli; status = cli.main(sys.argv[1:]); "
            "assert 'apache_beam' not in sys.modules, 'Beam imported'; sys.exit(status)")
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "one_frame.mp4").write_bytes((inputs / "one_frame.mp4").read_bytes())
    done = subprocess.run([sys.executable, "-c", code, *cli_args(folder, tmp_path / "store", "data.distortions=''")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1/1 videos written" in done.stdout
    beam_only = cli_args(folder, tmp_path / "other") + ["--beam-option", "project=p"]
    done = subprocess.run([sys.executable, "-c", code, *beam_only], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "--beam-option needs --runner" in done.stderr


def test_the_dataflow_launch_script_prints_its_command():
    script = os.path.join(REPO, "launch", "beam_dataflow.sh")
    out = subprocess.run(["bash", script, "--dry-run", "my-project", "europe-west4", "/mnt/pool/manifest.csv",
                          "gs://bucket/store", "--set", "data.distortions=resize:1", "--beam-option",
                          "max_num_workers=500"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("w2s-vqa prepare --inputs /mnt/pool/manifest.csv --out gs://bucket/store "
                          "--runner DataflowRunner --beam-option project=my-project --beam-option region=europe-west4 "
                          "--beam-option temp_location=gs://bucket/store-beam-tmp --beam-option setup_file=")
    assert out.rstrip().endswith("--set data.distortions=resize:1 --beam-option max_num_workers=500")
    usage = subprocess.run(["bash", script], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
