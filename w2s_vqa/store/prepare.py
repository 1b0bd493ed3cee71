"""Building a video store: `prepare` (the `w2s-vqa prepare` verb) and its shard writer.

The store's layout and reader are in w2s_vqa.store.format, the inputs in
w2s_vqa.store.sources. Sources are sorted by id and cut into shards of
`data.sources_per_shard` (`shard_tasks`); `write_shard` turns one `ShardTask`
into its shard file and index rows, depending on nothing but the task, so any
runner can call it: `prepare` runs the tasks in this process or a local
process pool, another runner (Apache Beam) may run the same tasks. Each shard
is written under a temporary name and renamed when complete, and every random
choice is seeded from the video id. So the store does not depend on the runner
or worker count, and a killed run, rerun, produces exactly the store an
uninterrupted run would have, as far as the simulators are deterministic.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from w2s_vqa import video, workdir
from w2s_vqa.store import motion as record_motion
from w2s_vqa.store.motion_batch import MotionThroughput
from w2s_vqa.store.format import (ERRORS_FILE, INDEX_COLUMNS, INDEX_DTYPES, INDEX_FILE, REPORT_FILE, STORE_FILE,
                                  STORE_VERSION, WRITER_OPTIONS, StoreError, encode_frames, encode_record,
                                  shard_done_path, shard_path)
from w2s_vqa.store.settings import Settings, SettingsError
from w2s_vqa.store.sources import Source, find_sources
# The variants' spec, ids and seeds live in store.variants; their names stay here for callers.
from w2s_vqa.store.variants import parse_distortions, variant_id, variant_seed  # noqa: F401
from w2s_vqa.video import distort
from w2s_vqa.video import motion as motion_lib


@dataclasses.dataclass(frozen=True)
class StorePlan:
    """What a store holds: records made with `settings` (how a video becomes the student's
    inputs, store.settings), the variants made of each source (`distortions`, seeded by
    `distort_seed`), cut into shards of `sources_per_shard` sources. store.json records it
    (`to_json`) and a rerun must find it unchanged."""

    settings: Settings
    distortions: tuple[tuple[str, int], ...] = ()
    distort_seed: int = 0
    sources_per_shard: int = 1

    @classmethod
    def from_config(cls, config, distortions=None) -> StorePlan:
        """From `config.data`; `distortions` (a spec, see `parse_distortions`) overrides
        data.distortions. Raises StoreError naming the data.* key of a value out of range;
        for data.motion_features="slowfast", ConfigError without data.slowfast_weights and
        WeightsError (w2s_vqa.models.slowfast) for a weights file that does not fit."""
        data = config.data
        if str(data.motion_features) == "slowfast":
            weights, digest = _check_slowfast_weights(data)
        try:
            settings = Settings.from_config(config)
        except SettingsError as e:
            raise StoreError(str(e)) from None
        if settings.motion_features == "slowfast":
            settings = dataclasses.replace(settings, slowfast_weights=weights, slowfast_digest=digest)
        if int(data.sources_per_shard) < 1:
            raise StoreError(f"data.sources_per_shard={data.sources_per_shard}: must be positive")
        return cls(settings, parse_distortions(data.distortions if distortions is None else distortions),
                   int(data.distort_seed), int(data.sources_per_shard))

    def to_json(self) -> dict[str, Any]:
        """store.json's settings: the Settings' fields, the variants as "name:level;...", the
        seed and the shard size."""
        return {**self.settings.to_json(),
                "distortions": ";".join(f"{name}:{level}" for name, level in self.distortions),
                "distort_seed": self.distort_seed, "sources_per_shard": self.sources_per_shard}


def _check_slowfast_weights(data) -> tuple[str, str]:
    """(absolute path, SHA-256) of data.slowfast_weights, whose tensor names and shapes are checked."""
    from w2s_vqa.config import ConfigError
    from w2s_vqa.models import slowfast

    path = str(data.slowfast_weights)
    if not path:
        raise ConfigError("data.motion_features='slowfast' needs data.slowfast_weights: the file "
                          "`w2s-vqa convert-slowfast --checkpoint SLOWFAST_8x8_R50.pyth --out FILE` writes "
                          "(or data.motion_features='precomputed' with features computed beforehand)")
    if int(data.motion_dim) != slowfast.FEATURE_DIM:
        raise StoreError(f"data.motion_dim={data.motion_dim}, but SlowFast features (data.motion_features="
                         f"'slowfast') have {slowfast.FEATURE_DIM} dimensions")
    slowfast.check_weights(path)
    return workdir.absolute(path), workdir.file_digest(path)


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything `write_shard` needs to write shard number `shard` (0-based) into `out_dir`.

    Picklable (frozen dataclasses of strings and numbers), so a task can travel to
    another process or machine; `shard_tasks` makes the tasks of a store.
    """

    out_dir: str
    shard: int
    sources: tuple[Source, ...]
    plan: StorePlan


def shard_tasks(sources: Sequence[Source], store_plan: StorePlan, out_dir: str) -> list[ShardTask]:
    """The store's shards: `sources` (sorted by id, as `find_sources` returns them) cut
    into runs of `store_plan.sources_per_shard`, numbered from 0."""
    step = store_plan.sources_per_shard
    return [ShardTask(os.fspath(out_dir), i, tuple(sources[start:start + step]), store_plan)
            for i, start in enumerate(range(0, len(sources), step))]


@dataclasses.dataclass
class PrepareReport:
    """What a prepare run left in `out_dir`, summed over all shards (finished earlier or now)."""

    out_dir: str
    sources: int = 0
    videos_written: int = 0  # sources whose pristine record landed
    records: int = 0  # pristine + variants
    variants: int = 0
    images: int = 0  # sources that are still images (index media "image"), among videos_written
    shards: int = 0
    shards_resumed: int = 0  # finished by an earlier run and kept
    sources_resumed: int = 0  # sources of those shards: decoded by an earlier run, not again
    videos_resumed: int = 0  # of those sources, the ones whose pristine record landed (not the broken)
    errors: list[dict[str, str]] = dataclasses.field(default_factory=list)
    motion: MotionThroughput = dataclasses.field(default_factory=MotionThroughput)  # this run's SlowFast chunks

    @property
    def errors_path(self) -> str:
        """The store's list of skipped videos and variants, each with its reason (errors.jsonl)."""
        return f"{self.out_dir.rstrip('/')}/{ERRORS_FILE}"

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(collections.Counter(e["reason"] for e in self.errors).most_common())

    def summary(self, max_reasons: int = 10) -> str:
        lines = [f"{self.videos_written}/{self.sources} videos written ({self.images} still images among them), "
                 f"{self.variants} variants, "
                 f"{self.records} records in {self.shards} shards ({self.shards_resumed} kept from an earlier run)",
                 f"skipped: {len(self.errors)}" + (f", each with its reason in {self.errors_path}" if self.errors
                                                   else "")]
        files: dict[str, list[str]] = collections.defaultdict(list)
        for e in self.errors:
            files[e["reason"]].append(e.get("path") or e.get("id", ""))
        reasons = list(self.skipped_by_reason.items())
        lines += [f"  {count} x {reason}: {named_files(files[reason])}" for reason, count in reasons[:max_reasons]]
        if len(reasons) > max_reasons:
            lines.append(f"  ... {len(reasons) - max_reasons} more reasons (see {ERRORS_FILE})")
        if self.motion.chunks:
            lines.append(self.motion.summary())
        return "\n".join(lines)


def named_files(paths: Sequence[str], limit: int = 3) -> str:
    """The first `limit` of `paths` and how many more, for a one-line skip summary:
    "a.mp4, b.mp4, c.mp4 and 4 more"."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def _check_record_ids(inputs: str, sources: Sequence[Source], distortions) -> None:
    """Refuse an input id that equals a variant id of another input (e.g. a manifest row
    "clip~h264-1" next to "clip" with h264:1 variants): the index would hold it twice."""
    ids = {s.id for s in sources}
    clashes = sorted({variant_id(s.id, name, level) for s in sources for name, level in distortions} & ids)
    if clashes:
        raise StoreError(f"{inputs}: {len(clashes)} input id(s) equal the id of a variant prepare makes of "
                         f"another input, e.g. {clashes[:5]}; rename them (variant ids are <id>~<distortion>-<level>)")


def _error(source: Source, video_id: str, exc: BaseException) -> dict[str, str]:
    return {"path": source.path, "id": video_id, "reason": video.skip_reason(exc)}


def _decode_for_distortion(path: str, settings: Settings):
    """The clip for the simulators: (frames uint8 [T, H, W, 3] upright, times float64 [T]
    in seconds, seconds the clip spans, VideoInfo).

    Frames are capped at distort_max_side pixels (longer side of the displayed
    picture, aspect kept) and the first distort_max_seconds: a 10 s 4K clip would
    otherwise take 7.5 GB per worker before the simulators make their copies. The
    span is the stream's duration, or distort_max_seconds when that is shorter.
    """
    info = video.probe(path)
    size = None
    longer = max(info.width, info.height)
    if 0 < settings.distort_max_side < longer:
        scale = settings.distort_max_side / longer
        size = (max(1, round(info.height * scale)), max(1, round(info.width * scale)))
    max_seconds = settings.distort_max_seconds if settings.distort_max_seconds > 0 else None
    frames, times, info = video.decode_frames(path, max_seconds=max_seconds, size=size)
    seconds = info.duration if max_seconds is None else min(info.duration, max_seconds)
    return frames, times, seconds, info


def _source_records(source: Source, settings: Settings, distortions=(), distort_seed: int = 0):
    """Yield (meta, arrays, index row) or an error dict, for the pristine video and each variant.

    The source is decoded once and one distorted copy exists at a time; the
    pristine record is sampled from the same decoded frames as the variants, so
    that decoding differences cannot tell them apart. Every video is sampled at
    the source's presentation timestamps (video module docstring, "Timing"): a
    simulator changes what frames show, never when, so the pristine record equals
    the one a store without distortions holds, for a clip within distort_max_side
    and distort_max_seconds. A still image (video.is_still_image) is sampled by the same
    rule, which gives it one frame, and gets all-zero motion features
    (video.motion.still_image_motion, docs/method.md), its variants too; its index rows
    say media "image". A source that cannot be decoded, or whose precomputed
    motion features are unusable, yields one error; a failing simulator costs its
    variant only.
    """
    size, count = settings.image_size, settings.num_frames
    frame_times = settings.frame_times or "centered"  # which frames (video.sample)
    own_motion = settings.motion_features in ("frame_stats", "slowfast")  # computed from each video's frames
    still = False  # a still image (video.is_still_image): known once the source is opened

    def image_motion(computed):
        # docs/method.md ("Student"): a still image has all-zero motion features; a store
        # without motion ("none") gives images what it gives videos, no motion token.
        if still and settings.motion_features != "none":
            return motion_lib.still_image_motion(settings.num_motion_chunks, settings.motion_dim)
        return motion_lib.repeat_last_chunk(*computed(), settings.motion_min_chunks or 0)

    def video_motion(frames):  # each video's own features, or the source's precomputed ones
        return image_motion(lambda: motion_of(frames))

    def motion_of(frames):
        if settings.motion_features == "frame_stats":
            return motion_lib.frame_statistics(frames, times, seconds, settings.num_motion_chunks,
                                               settings.motion_dim)
        if settings.motion_features == "slowfast":
            return record_motion.slowfast_motion(frames, times, seconds, settings)
        return source_motion

    try:
        precomputed = record_motion.load_precomputed(source, settings)  # before decoding: a bad file costs no decode
        if distortions or own_motion:
            frames, times, seconds, info = _decode_for_distortion(source.path, settings)
            still = video.is_still_image(info)
            pick = {"frame_times": frame_times, "video_fps": float(info.fps)}
            pristine = video.sample_array(frames, times, seconds, count, size, **pick)
            source_motion = record_motion.choose_chunks(precomputed, seconds, settings)
            pristine_motion = video_motion(frames)
        else:  # nothing to distort: sample while decoding, never holding the clip
            *pristine, info = video.sample_frames(source.path, count, size, frame_times=frame_times)
            still = video.is_still_image(info)
            source_motion = pristine_motion = image_motion(
                lambda: record_motion.choose_chunks(precomputed, info.duration, settings))
    except Exception as e:  # any broken input is skipped and reported, never fatal
        yield _error(source, source.id, e)
        return

    common = {"source_id": source.source_id, "fps": float(info.fps), "duration": float(info.duration)}
    extra = {"width": int(info.width), "height": int(info.height), "rotation": int(info.rotation),
             "media": video.media_kind(info), "path": source.path}
    for name, level in [("", 0), *distortions]:
        video_id = variant_id(source.id, name, level) if name else source.id
        try:
            if name:
                distorted = distort.get(name).apply(frames, level, fps=float(info.fps),
                                                    seed=variant_seed(video_id, distort_seed))
                sampled, mask = video.sample_array(distorted, times, seconds, count, size, **pick)
                features, features_mask = video_motion(distorted)
                del distorted
            else:
                sampled, mask = pristine
                features, features_mask = pristine_motion
            arrays = {
                **encode_frames(sampled, mask, settings.frame_format, settings.jpeg_quality),
                "frame_mask": np.asarray(mask, bool),
                "motion": features,
                "motion_mask": features_mask,
            }
        except Exception as e:  # a failing simulator costs this variant only
            yield _error(source, video_id, e)
            continue
        meta = {"id": video_id, "distortion": name, "level": level, **common}
        row = {**meta, "kind": distort.get(name).kind if name else "", "valid_frames": int(mask.sum()), **extra}
        yield meta, arrays, row


def video_records(source: Source, settings: Settings, distortions=(), distort_seed: int = 0):
    """What the store keeps of one source, made as `write_shard` makes it: yields (meta,
    arrays, index row) per record (the pristine video, then each variant of
    `distortions`, seeded by `distort_seed`) or an error dict {path, id, reason} for what could not be made.
    arrays are a record's (`encode_frames` output, frame_mask, motion, motion_mask); the
    TFDS evaluation sets (w2s_vqa.datasets) build their examples through it."""
    return _source_records(source, settings, distortions, distort_seed)


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write shard `task.shard` of the store in `task.out_dir`; a function of the task alone.

    Writes shard-NNNNN.arrayrecord (under a temporary name, renamed when complete),
    then shard-NNNNN.json holding the result, which it also returns: {"shard": int,
    "sources": [source ids], "rows": [index rows, in record order, with "shard" and
    "position"], "errors": [{"path", "id", "reason"} per skipped video or variant]}.
    A broken video or failing simulator becomes an error entry, never an exception.
    Rewriting a shard gives the same bytes, as far as the simulators are deterministic.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    final = shard_path(task.out_dir, task.shard)
    temp = final + workdir.TEMP_SUFFIX  # ArrayRecordWriter writes to a path: its own rename, as workdir's
    rows, errors = [], []
    store_plan = task.plan
    motion_before = dataclasses.replace(record_motion.THROUGHPUT)
    writer = ArrayRecordWriter(temp, WRITER_OPTIONS[store_plan.settings.frame_format])
    try:
        for source in task.sources:
            for item in _source_records(source, store_plan.settings, store_plan.distortions,
                                        store_plan.distort_seed):
                if isinstance(item, dict):
                    errors.append(item)
                    continue
                meta, arrays, row = item
                writer.write(encode_record(meta, arrays))
                rows.append({**row, "shard": task.shard, "position": len(rows)})
    finally:
        writer.close()
    os.replace(temp, final)
    result = {"shard": task.shard, "sources": [s.id for s in task.sources], "rows": rows, "errors": errors}
    workdir.write_json(shard_done_path(task.out_dir, task.shard), result, sort_keys=True)
    # This run's motion-network time: reported, not kept in the shard's record (a shard's
    # files depend on its task alone).
    motion = record_motion.THROUGHPUT
    result["motion"] = MotionThroughput(motion.chunks - motion_before.chunks, motion.seconds - motion_before.seconds,
                                        motion.calls - motion_before.calls).to_json()
    return result


def _load_finished(out_dir: str, shard: int) -> dict[str, Any] | None:
    """The shard's saved result if an earlier run finished it (store.json vouches for the plan)."""
    done = shard_done_path(out_dir, shard)
    if not (os.path.exists(done) and os.path.exists(shard_path(out_dir, shard))):
        return None
    with open(done) as f:
        return json.load(f)


def _plan_digest(sources: Sequence[Source], store_plan: StorePlan) -> str:
    text = json.dumps([store_plan.to_json(), [dataclasses.astuple(s) for s in sources]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def store_record(out_dir: str) -> workdir.RunRecord:
    """store.json as the record of the one store a directory holds: a rerun may only
    continue a store made with the same settings and inputs."""
    return workdir.RunRecord(os.path.join(out_dir, STORE_FILE), differences=workdir.changed_keys)


def refuse_other_store(out_dir: str, existing: dict[str, Any], store_json: dict[str, Any]) -> None:
    """Raise StoreError naming the keys in which `existing` (a store.json) differs from this run's."""
    changed = workdir.changed_keys(existing, store_json)
    if changed:
        raise StoreError(STORE_CHANGED.format(dir=out_dir, changes=", ".join(changed)))


STORE_CHANGED = ("{dir}: holds a store made with other settings or inputs (differs in: {changes}); choose another "
                 "--out or delete it")


def plan(config, inputs: str, out_dir: str, distortions=None
         ) -> tuple[StorePlan, list[Source], list[ShardTask], dict[str, Any]]:
    """What a prepare run of `inputs` into `out_dir` writes, whatever runs it: (the plan,
    sources sorted by id, shard tasks, store.json's content). Touches nothing on disk.

    Raises StoreError for unusable settings, inputs (see `find_sources`) or record
    ids that would clash (an input named like another's variant).
    """
    store_plan = StorePlan.from_config(config, distortions)
    sources = find_sources(inputs, require_motion=store_plan.settings.motion_features == "precomputed")
    _check_record_ids(inputs, sources, store_plan.distortions)
    tasks = shard_tasks(sources, store_plan, out_dir)
    store_json = {"version": STORE_VERSION, **store_plan.to_json(), "num_shards": len(tasks),
                  "plan_digest": _plan_digest(sources, store_plan)}
    return store_plan, sources, tasks, store_json


def prepare(config, inputs: str, out_dir: str, *, workers: int = 1, distortions=None,
            progress: bool = True) -> PrepareReport:
    """Build (or finish building) a video store in `out_dir` from a folder or manifest.

    `distortions` overrides `config.data.distortions`. `workers` <= 1 writes in
    this process; more start that many processes, one shard at a time each.
    Broken videos are skipped and listed in errors.jsonl; raises StoreError only
    for unusable arguments: settings, inputs (see `find_sources`), record ids that
    would clash, or an `out_dir` holding a store made with other settings or inputs.
    """
    settings, sources, tasks, store_json = plan(config, inputs, out_dir, distortions)
    os.makedirs(out_dir, exist_ok=True)
    store_record(out_dir).check(store_json, message=STORE_CHANGED, sep=", ", error=StoreError)

    results: dict[int, dict[str, Any]] = {}
    for task in tasks:
        finished = _load_finished(out_dir, task.shard)
        if finished is not None:
            results[task.shard] = finished
    todo = [t for t in tasks if t.shard not in results]

    from w2s_vqa import progress as progress_lib

    with progress_lib.bar(total=len(sources), initial=sum(len(t.sources) for t in tasks if t.shard in results),
              unit="video", desc="prepare", disable=not progress) as bar:
        if workers <= 1:
            for task in todo:
                results[task.shard] = write_shard(task)
                bar.update(len(task.sources))
        else:
            # spawn, not fork: the caller may hold threads (JAX, tqdm) that fork would copy mid-state.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, max(1, len(todo))), mp_context=context) as pool:
                futures = {pool.submit(write_shard, task): task for task in todo}
                for future in concurrent.futures.as_completed(futures):
                    results[futures[future].shard] = future.result()
                    bar.update(len(futures[future].sources))

    report = _finish(out_dir, [results[t.shard] for t in tasks], num_sources=len(sources))
    report.shards_resumed = len(tasks) - len(todo)
    resumed = [t.shard for t in tasks if t.shard not in {d.shard for d in todo}]
    report.sources_resumed = sum(len(t.sources) for t in tasks if t.shard in resumed)
    report.videos_resumed = sum(1 for shard in resumed for row in results[shard]["rows"] if row["distortion"] == "")
    return report


def _finish(out_dir: str, results: list[dict[str, Any]], *, num_sources: int) -> PrepareReport:
    """Merge the shards' rows into index.parquet, write errors.jsonl and report.json."""
    rows = [row for result in results for row in result["rows"]]
    errors = [error for result in results for error in result["errors"]]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).astype(INDEX_DTYPES)
    with workdir.atomic_open(os.path.join(out_dir, INDEX_FILE), "wb") as f:
        index.to_parquet(f, index=False)
    with workdir.atomic_open(os.path.join(out_dir, ERRORS_FILE)) as f:
        for error in errors:
            f.write(json.dumps(error, sort_keys=True) + "\n")
    report = PrepareReport(
        out_dir=out_dir,
        sources=num_sources,
        videos_written=int((index["distortion"] == "").sum()),
        records=len(index),
        variants=int((index["distortion"] != "").sum()),
        images=int(((index["distortion"] == "") & (index["media"] == video.IMAGE)).sum()),
        shards=len(results),
        errors=errors,
    )
    for result in results:
        report.motion.add(MotionThroughput.from_json(result.get("motion")))
    workdir.write_json(os.path.join(out_dir, REPORT_FILE), {
        "sources": report.sources, "videos_written": report.videos_written, "records": report.records,
        "variants": report.variants, "images": report.images, "shards": report.shards, "skipped": len(errors),
        "skipped_by_reason": report.skipped_by_reason,
    }, sort_keys=True)
    # Leftovers of killed runs: every shard is final now.
    for stale in glob.glob(os.path.join(out_dir, "*" + workdir.TEMP_SUFFIX)):
        os.remove(stale)
    return report
