"""Building a video store on Apache Beam: `w2s-vqa prepare --runner RUNNER`.

The same store as `w2s_vqa.store.prepare.prepare`, written by a Beam pipeline, so
that a pool of millions of videos can be prepared by Dataflow, Flink or Spark, and
by the DirectRunner on one machine. The unit of work is the local path's: one
`ShardTask` (data.sources_per_shard sources), written by the same pure function,
`write_shard`. The pipeline:

    ReadFromText(the plan: one line per shard task)
      | Reshuffle            spreads the tasks over the workers (a text source is
                             read by few workers; each task costs minutes)
      | ParDo(_WriteShard)   a finished shard (its done-record and shard file both in
                             out_dir) is left as it is, any other one written by
                             write_shard in a worker-local temporary folder and
                             published into out_dir: shard file first, done-record
                             last; the shard's number goes on
      | ToList | Map(_merge) the shard numbers, on one worker: the done-records read
                             back and merged by the local path's _finish into
                             index.parquet, errors.jsonl, report.json (written last)

Every choice in a record is seeded from its id and a shard's bytes depend on its
task only, so the store equals the local path's for the same inputs and settings,
whatever the runner and the number of workers; a failed or killed run, rerun,
finishes the shards it lacks and keeps the others (a shard is finished exactly when
its done-record exists: the record is published after the shard file, each whole).

Where a store may live: any path Beam's FileSystems reads and writes (local paths,
gs:// with apache-beam[gcp], s3:// with apache-beam[aws], hdfs://, ...). Beam's
layer rather than etils.epath: the workers of every runner already hold it, with
the runner's credentials, and it knows exactly the schemes that runner's extras
install; epath would need gcsfs or s3fs on the workers besides. ArrayRecord's
writer needs a local file, so a shard is written in a local temporary folder and
copied, as ArrayRecord's own Beam writer (array_record.beam.dofns) does. The
inputs (videos, manifest, motion .npy files) are read by plain paths: on a cluster
they must lie on a file system every worker mounts at the same path.

This module imports apache_beam at import time: only `w2s-vqa prepare --runner`
imports it (pip install 'w2s-vqa[beam]').
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from w2s_vqa.store import prepare as prepare_lib
from w2s_vqa.store.format import ERRORS_FILE, INDEX_FILE, REPORT_FILE, STORE_FILE, StoreError
from w2s_vqa.store.sources import Source

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner")
# The plan the pipeline reads: one JSON line per shard task. It lives in the store
# (every worker reaches it there) under a name the final step removes, as it removes
# any other leftover of a killed run.
TASKS_FILE = "beam-tasks.jsonl.tmp"
METRICS_NAMESPACE = "w2s_vqa.prepare"
_COPY_BUFFER = 16 << 20
_READ_THREADS = 16  # done-records read at once by the merge


class BeamOptionError(ValueError):
    """A --beam-option that Beam does not know or cannot parse; the message names it."""


class PipelineFailed(OSError):
    """The Beam pipeline stopped before the store was merged; finished shards are kept."""


def pipeline_options(runner: str, beam_options: Sequence[str] = (), *, workers: int = 1) -> PipelineOptions:
    """Beam's PipelineOptions for `runner` from KEY=VALUE (or KEY, for a flag) strings.

    The DirectRunner gets settings that suit one machine: `workers` > 1 runs that many
    worker processes (direct_running_mode=multi_processing, direct_num_workers=workers),
    otherwise everything runs in this process (in_memory); its workers log warnings and
    errors only. Options given in `beam_options` come after these defaults, so they
    override them.

    Raises BeamOptionError for a runner not in RUNNERS, an option name Beam does not
    define (in any of its option groups: Google Cloud, Flink, Spark, portable, ...),
    and a value Beam's parser refuses, naming the option.
    """
    if runner not in RUNNERS:
        raise BeamOptionError(f"--runner {runner}: not one of {', '.join(RUNNERS)}")
    flags = [f"--runner={runner}"]
    if runner == "DirectRunner":
        flags += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"] if workers > 1 else [
            "--direct_running_mode=in_memory", "--direct_num_workers=1"]
        # Each worker process would log every gRPC channel it opens at INFO.
        flags.append("--default_sdk_harness_log_level=WARNING")
    keys = {}
    for option in beam_options:
        key, has_value, value = option.partition("=")
        key = key.strip().lstrip("-")
        keys[key] = option
        flags.append(f"--{key}={value}" if has_value else f"--{key}")
    options = PipelineOptions(flags)
    # Beam's argparse parser prints its usage and exits on a bad value; say which option instead.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        last = (captured.getvalue().strip().splitlines() or ["cannot parse the options"])[-1]
        raise BeamOptionError(f"--beam-option: {last.split('error: ', 1)[-1]}") from None
    # An unknown flag is kept under its own name; a known one (or an alias such as
    # worker_machine_type) lands under the name of the option it sets.
    known = PipelineOptions([]).get_all_options()
    for key, option in keys.items():
        if key in parsed and key not in known:
            close = sorted(k for k in known if key.lower() in k or k in key.lower())[:5]
            raise BeamOptionError(f"--beam-option {option}: '{key}' is not a Beam pipeline option"
                                  + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return options


def prepare_beam(config, inputs: str, out_dir: str, *, runner: str, beam_options: Sequence[str] = (),
                 workers: int = 1, distortions=None) -> prepare_lib.PrepareReport:
    """Build (or finish building) the store `prepare` builds, as a Beam pipeline on `runner`.

    `out_dir` is a local path or any URL Beam's FileSystems supports (gs://, s3://,
    ...); inputs are local paths every worker reads (module docstring). `workers`
    and `beam_options`: see `pipeline_options`. Blocks until the pipeline is done
    and returns the report read back from the store; shards_resumed counts the
    shards finished before this run.

    Raises StoreError for unusable settings or inputs, a store made with other
    settings (as `prepare`) and an `out_dir` whose file system this installation
    lacks (gs:// without apache-beam[gcp]); OSError for DataflowRunner without
    apache-beam[gcp]; BeamOptionError for bad options; PipelineFailed when the
    pipeline fails (rerun to resume).
    """
    out_dir = os.fspath(out_dir)
    options = pipeline_options(runner, beam_options, workers=workers)
    _check_installed(runner, out_dir)
    store_plan, sources, tasks, store_json = prepare_lib.plan(config, inputs, out_dir, distortions)
    _check_or_write_settings(out_dir, store_json)
    finished_before = _finished_shards(out_dir, len(tasks))
    tasks_path = _join(out_dir, TASKS_FILE)
    with _create(tasks_path) as f:
        for task in tasks:
            line = {"shard": task.shard, "sources": [dataclasses.asdict(s) for s in task.sources]}
            f.write((json.dumps(line, sort_keys=True) + "\n").encode())

    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | "ReadTasks" >> beam.io.ReadFromText(tasks_path)
         | "Spread" >> beam.Reshuffle()
         | "WriteShards" >> beam.ParDo(_WriteShard(out_dir, store_plan))
         | "Gather" >> beam.combiners.ToList()
         | "Merge" >> beam.Map(_merge, out_dir=out_dir, num_shards=len(tasks), num_sources=len(sources)))
    try:
        pipeline.run().wait_until_finish()
    except Exception as e:  # the engine's errors differ by runner; each is a failed run here
        kept = len(_finished_shards(out_dir, len(tasks)))
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise PipelineFailed(f"{runner}: the pipeline failed ({cause}); {kept} of {len(tasks)} shards are "
                             f"finished in {out_dir} and kept: rerun the same command to finish the rest") from e
    report = _read_report(out_dir)
    report.shards_resumed = len(finished_before)
    return report


def _check_installed(runner: str, out_dir: str) -> None:
    """Refuse, before any work, a store location or runner whose Beam extra is missing here."""
    if not _is_local(out_dir):
        try:
            FileSystems.get_filesystem(out_dir)
        except Exception as e:  # Beam raises ValueError or BeamIOError, naming the extra to install
            raise StoreError(f"--out {out_dir}: Beam's FileSystems cannot write there from this installation "
                             f"({e})") from None
    if runner == "DataflowRunner":
        try:
            from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401
        except ImportError as e:
            raise OSError(f"--runner DataflowRunner needs apache-beam[gcp]: pip install 'apache-beam[gcp]=="
                          f"{beam.__version__}' ({e})") from None


class _WriteShard(beam.DoFn):
    """One plan line -> its shard number, once the shard is finished in out_dir (by this
    call, or by an earlier run, then left as it is). Only the number travels on: the
    merge reads the done-records from the store, so no element grows with the pool."""

    def __init__(self, out_dir: str, store_plan: prepare_lib.StorePlan):
        self.out_dir = out_dir
        self.store_plan = store_plan
        self.written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "shards_written")
        self.resumed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "shards_resumed")
        self.records = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records")
        self.skipped = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "skipped")

    def process(self, line: str):
        fields = json.loads(line)
        shard = int(fields["shard"])
        if _is_finished(self.out_dir, shard):  # an earlier run, or an earlier attempt of this bundle
            self.resumed.inc()
            yield shard
            return
        sources = tuple(Source(**s) for s in fields["sources"])
        with tempfile.TemporaryDirectory(prefix="w2s-vqa-shard-") as local:
            # Looked up at call time, so that tests can replace it in this process.
            result = prepare_lib.write_shard(prepare_lib.ShardTask(local, shard, sources, self.store_plan))
            for path in (prepare_lib.shard_path(local, shard), prepare_lib.shard_done_path(local, shard)):
                _publish(path, _join(self.out_dir, os.path.basename(path)))
        self.written.inc()
        self.records.inc(len(result["rows"]))
        self.skipped.inc(len(result["errors"]))
        yield shard


def _merge(shards: list[int], *, out_dir: str, num_shards: int, num_sources: int) -> None:
    """The local path's `_finish` over every shard's done-record, written into out_dir.

    The records are read from the store (many at a time: on an object store each is a
    request) and held together, as the local path holds them: about 1 KB per record.
    """
    if sorted(shards) != list(range(num_shards)):  # a runner that lost an element: merge nothing
        missing = sorted(set(range(num_shards)) - set(shards))
        raise RuntimeError(f"{out_dir}: the merge got {len(shards)} shards, expected {num_shards} once each "
                           f"(missing: {missing[:10]})")
    with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
        results = list(pool.map(lambda shard: json.loads(_read_text(_done_path(out_dir, shard))), range(num_shards)))
    if _is_local(out_dir):  # exactly the local path's merge (it also removes TASKS_FILE with the *.tmp)
        prepare_lib._finish(out_dir, results, num_sources=num_sources)
        return
    with tempfile.TemporaryDirectory(prefix="w2s-vqa-merge-") as local:
        prepare_lib._finish(local, results, num_sources=num_sources)
        for name in (INDEX_FILE, ERRORS_FILE, REPORT_FILE):  # report.json last: the run is complete
            _publish(os.path.join(local, name), _join(out_dir, name))
    FileSystems.delete([_join(out_dir, TASKS_FILE)])


# ---------------------------------------------------------------------------
# The store through Beam's FileSystems (local paths through the os module, as the local path)


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def _join(directory: str, name: str) -> str:
    return os.path.join(directory, name) if _is_local(directory) else FileSystems.join(directory, name)


def _exists(path: str) -> bool:
    return os.path.exists(path) if _is_local(path) else FileSystems.exists(path)


def _read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode()


def _create(path: str):
    """A binary file for writing; on object stores it appears whole when closed."""
    if _is_local(path):
        return open(path, "wb")
    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED)


def _publish(local_path: str, dest: str) -> None:
    """Copy a finished local file to `dest` so that `dest` is never seen half-written:
    locally under a name of its own then renamed (two attempts of one shard never share
    a temporary file); on an object store by an upload, whole when it closes."""
    if _is_local(dest):
        temp = f"{dest}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(local_path, temp)
        os.replace(temp, dest)
        return
    with open(local_path, "rb") as src, _create(dest) as out:
        shutil.copyfileobj(src, out, _COPY_BUFFER)


def _done_path(out_dir: str, shard: int) -> str:
    return _join(out_dir, os.path.basename(prepare_lib.shard_done_path("", shard)))


def _is_finished(out_dir: str, shard: int) -> bool:
    """Whether the shard is finished in out_dir: its done-record and shard file both there,
    the test the local path's `_load_finished` makes."""
    return _exists(_done_path(out_dir, shard)) and _exists(
        _join(out_dir, os.path.basename(prepare_lib.shard_path("", shard))))


def _finished_shards(out_dir: str, num_shards: int) -> list[int]:
    """Shards finished in out_dir, by one listing (cheap on object stores: no request per shard)."""
    pattern = _join(out_dir, "shard-*")
    names = {os.path.basename(m.path) for result in FileSystems.match([pattern]) for m in result.metadata_list}
    return [shard for shard in range(num_shards)
            if {os.path.basename(prepare_lib.shard_path("", shard)),
                os.path.basename(prepare_lib.shard_done_path("", shard))} <= names]


def _check_or_write_settings(out_dir: str, store_json: dict[str, Any]) -> None:
    """The local path's store.json check, through FileSystems for a store elsewhere."""
    if _is_local(out_dir):
        os.makedirs(out_dir, exist_ok=True)
        prepare_lib.store_record(out_dir).check(store_json, message=prepare_lib.STORE_CHANGED, sep=", ",
                                                error=StoreError)
        return
    try:
        FileSystems.mkdirs(out_dir)  # object stores have no folders: a no-op there
    except OSError:  # it exists; any other problem surfaces as the write below fails
        pass
    path = _join(out_dir, STORE_FILE)
    if FileSystems.exists(path):
        prepare_lib.refuse_other_store(out_dir, json.loads(_read_text(path)), store_json)
        return
    with _create(path) as f:
        f.write(json.dumps(store_json, indent=1, sort_keys=True).encode())


def _read_report(out_dir: str) -> prepare_lib.PrepareReport:
    """The PrepareReport of a merged store, from its report.json and errors.jsonl."""
    path = _join(out_dir, REPORT_FILE)
    if not _exists(path):
        raise PipelineFailed(f"{path}: missing after the pipeline finished; rerun the same command")
    counts = json.loads(_read_text(path))
    errors = [json.loads(line) for line in _read_text(_join(out_dir, ERRORS_FILE)).splitlines() if line]
    return prepare_lib.PrepareReport(out_dir=out_dir, sources=counts["sources"],
                                     videos_written=counts["videos_written"], records=counts["records"],
                                     variants=counts["variants"], images=counts.get("images", 0),
                                     shards=counts["shards"], errors=errors)

