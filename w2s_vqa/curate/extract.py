"""The metrics table of a pool: :func:`w2s_vqa.curate.metrics.video_metrics` over many videos.

Inputs are what ``prepare`` reads (a folder, a CSV/JSONL manifest) or a built video store
(its pristine sources, by the paths its index recorded). The work is cut into parts of
``part_size`` videos; each finished part is one JSON file in ``OUT/parts/``, written whole
(w2s_vqa.workdir), so a killed run resumes where it stopped and a rerun with
other settings is refused. Videos that do not decode are skipped, counted and listed in
``OUT/skipped.csv`` with the reason; they never stop the run.

Layout of ``OUT``::

    curate_metrics.json   the settings and the input list's digest this table was made with
    parts/part-00000.json one finished part: its rows and its skipped videos
    metrics.parquet       one row per video: id, source_id, path and the METRICS columns
    skipped.csv           id, path, reason of each video left out
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
from typing import Any, Sequence

import pandas as pd

from w2s_vqa import progress as progress_lib
from w2s_vqa import video, workdir
from w2s_vqa.curate.metrics import METRICS, MetricSettings, video_metrics
from w2s_vqa.store.format import INDEX_FILE, STORE_FILE, StoreError
from w2s_vqa.store.sources import Source, find_sources
from w2s_vqa import workdir as workdir_lib

RECORD_FILE = "curate_metrics.json"
TABLE_FILE = "metrics.parquet"
SKIPPED_FILE = "skipped.csv"
PARTS_DIR = "parts"
ID_COLUMNS = ("id", "source_id", "path")


@dataclasses.dataclass
class MetricsReport:
    """What one run of :func:`compute_metrics` did: counts, the table's path and the skipped videos."""

    table: str
    videos: int
    measured: int
    skipped: list[dict[str, str]]
    parts_resumed: int

    def summary(self) -> str:
        from w2s_vqa.store.prepare import named_files

        reasons: dict[str, list[str]] = {}
        for row in self.skipped:
            reasons.setdefault(row["reason"].split(":")[0], []).append(row.get("path") or row.get("id", ""))
        # "COUNT x REASON: files", as prepare's summary (store.prepare.PrepareReport.summary) counts them.
        by_reason = "; ".join(f"{len(p)} x {r}: {named_files(p)}" for r, p in sorted(reasons.items())) or "none"
        where = f"; each with its reason in {os.path.join(os.path.dirname(self.table), SKIPPED_FILE)}" \
            if self.skipped else ""
        return (f"metrics: {self.measured} of {self.videos} videos measured, {len(self.skipped)} skipped "
                f"({by_reason}{where}), {self.parts_resumed} part(s) from an earlier run")


def pool_sources(inputs: str) -> list[Source]:
    """The videos of a folder, a manifest, or a video store's pristine sources.

    Raises :class:`w2s_vqa.store.format.StoreError` for a missing input or an empty one.
    """
    if os.path.isdir(inputs) and os.path.exists(os.path.join(inputs, STORE_FILE)):
        index_path = os.path.join(inputs, INDEX_FILE)
        if not os.path.exists(index_path):
            raise StoreError(f"{inputs}: store is incomplete (no {INDEX_FILE}); finish it with `w2s-vqa prepare`")
        index = pd.read_parquet(index_path, columns=["id", "source_id", "distortion", "path"])
        pristine = index[index["distortion"] == ""]
        if pristine.empty:
            raise StoreError(f"{inputs}: the store holds no source video")
        return [Source(id=r.id, source_id=r.source_id, path=r.path) for r in pristine.itertuples()]
    return find_sources(inputs)


def measure_part(sources: Sequence[Source], settings: MetricSettings) -> dict[str, Any]:
    rows, skipped = [], []
    for source in sources:
        try:
            values = video_metrics(source.path, settings)
        except (video.VideoError, OSError, ValueError) as e:
            skipped.append({"id": source.id, "path": source.path, "reason": str(e).replace(f"{source.path}: ", "")})
            continue
        # Absolute: the selection made from this table is a manifest read from another folder.
        rows.append({"id": source.id, "source_id": source.source_id, "path": workdir_lib.absolute(source.path), **values})
    return {"rows": rows, "skipped": skipped}


def _record(sources: Sequence[Source], settings: MetricSettings, part_size: int) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(f"{s.id}\t{s.path}" for s in sources).encode()).hexdigest()
    return {"settings": dataclasses.asdict(settings), "part_size": part_size, "inputs_sha256": digest,
            "videos": len(sources)}


def part_path(out: str, part: int) -> str:
    """Where part number ``part`` of a metrics run in ``out`` is written."""
    return os.path.join(out, PARTS_DIR, f"part-{part:05d}.json")


def plan(inputs: str, out: str, settings: MetricSettings, part_size: int) -> tuple[list[Source], list[list[Source]]]:
    """The sources of ``inputs`` and their parts; creates ``out`` and records (or checks) the run's settings."""
    if part_size < 1:
        raise ValueError(f"part_size must be at least 1, got {part_size}")
    inside = os.path.realpath(out)
    if os.path.isdir(inputs) and (inside + os.sep).startswith(os.path.realpath(inputs) + os.sep):
        raise ValueError(f"--out {out} lies inside the inputs {inputs}: its files would be measured as videos "
                         "on the next run; choose a folder outside it")
    sources = pool_sources(inputs)
    os.makedirs(os.path.join(out, PARTS_DIR), exist_ok=True)
    workdir.RunRecord(os.path.join(out, RECORD_FILE)).check(
        _record(sources, settings, part_size), error=ValueError,
        message="{dir}: holds metrics made with other settings or inputs ({changes}); use another --out or delete it")
    return sources, [sources[i: i + part_size] for i in range(0, len(sources), part_size)]


def compute_metrics(inputs: str, out: str, *, settings: MetricSettings = MetricSettings(), workers: int = 1,
                    part_size: int = 64, progress: bool = True) -> MetricsReport:
    """Measure every video of ``inputs`` into ``out/metrics.parquet`` (module docstring: layout).

    ``workers`` > 1 runs that many processes, one part at a time each. Resumes the finished
    parts of an earlier run with the same inputs and settings. Raises StoreError for unusable
    inputs, ValueError for ``out`` holding another run's metrics or ``part_size`` below 1.
    """
    sources, parts = plan(inputs, out, settings, part_size)
    results: dict[int, dict[str, Any]] = {}
    for i in range(len(parts)):
        if os.path.exists(part_path(out, i)):
            with open(part_path(out, i)) as f:
                results[i] = json.load(f)
    resumed = len(results)
    todo = [i for i in range(len(parts)) if i not in results]

    def finish(i: int, result: dict[str, Any]) -> None:
        workdir.write_json(part_path(out, i), result, indent=None)
        results[i] = result

    with progress_lib.bar(total=len(sources), initial=sum(len(parts[i]) for i in results), unit="video",
                          desc="metrics", disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                finish(i, measure_part(parts[i], settings))
                bar.update(len(parts[i]))
        else:
            # spawn: the caller may hold threads that fork would copy mid-state.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                futures = {pool.submit(measure_part, parts[i], settings): i for i in todo}
                for future in concurrent.futures.as_completed(futures):
                    finish(futures[future], future.result())
                    bar.update(len(parts[futures[future]]))

    rows = [row for i in range(len(parts)) for row in results[i]["rows"]]
    skipped = [row for i in range(len(parts)) for row in results[i]["skipped"]]
    table = pd.DataFrame(rows, columns=list(ID_COLUMNS) + list(METRICS))
    table_path = os.path.join(out, TABLE_FILE)
    with workdir.atomic_open(table_path, "wb") as f:
        table.to_parquet(f, index=False)
    with workdir.atomic_open(os.path.join(out, SKIPPED_FILE)) as f:
        pd.DataFrame(skipped, columns=["id", "path", "reason"]).to_csv(f, index=False)
    return MetricsReport(table=table_path, videos=len(sources), measured=len(rows), skipped=skipped,
                         parts_resumed=resumed)


def read_or_measure(path: str, out: str, metrics: Sequence[str], *, settings: MetricSettings = MetricSettings(),
                    workers: int = 1, what: str = "table") -> pd.DataFrame:
    """A metrics table: read from ``path`` (.parquet, or .csv/.tsv holding a metric column), or
    measured from the videos ``path`` names (folder, manifest, store) into ``out`` (resumable).

    Raises StoreError / ValueError as :func:`compute_metrics` and
    :func:`w2s_vqa.tables.read_csv` do.
    """
    from w2s_vqa.curate.select import CurateError
    from w2s_vqa.tables import read_csv

    if os.path.isfile(path) and path.lower().endswith(".parquet"):
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise CurateError(f"{what} {path}: not a readable Parquet table ({e})") from e
    if os.path.isfile(path) and path.lower().endswith((".csv", ".tsv", ".txt")):
        table = read_csv(path, what=f"{what} table", error=CurateError)
        if any(m in table.columns for m in metrics):
            return table
    report = compute_metrics(path, out, settings=settings, workers=workers)
    print(report.summary())
    if report.skipped:
        print(f"skipped videos: {os.path.join(out, SKIPPED_FILE)}")
    return pd.read_parquet(report.table)
