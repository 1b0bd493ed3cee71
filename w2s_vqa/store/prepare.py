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
import functools
import glob
import hashlib
import json
import multiprocessing
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from w2s_vqa import video
from w2s_vqa.store.format import (ERRORS_FILE, FRAME_FORMATS, INDEX_COLUMNS, INDEX_DTYPES, INDEX_FILE,
                                  MOTION_FEATURES, REPORT_FILE, STORE_FILE, STORE_VERSION, WRITER_OPTIONS,
                                  StoreError, encode_frames, encode_record, shard_done_path, shard_path)
from w2s_vqa.store.sources import Source, find_sources
from w2s_vqa.video import distort
from w2s_vqa.video import motion as motion_lib


def parse_distortions(spec: str | Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Variants to make per source, e.g. "resize:1,3,5;h264:1,2;stutter" -> ((resize,1), ...).

    A name without levels means all its levels. Levels are 1-based, as
    `Simulator.apply` takes them. An empty spec means pristine videos only.
    Raises StoreError naming every unknown name, bad level and repeated variant at once.
    """
    items = spec.split(";") if isinstance(spec, str) else spec
    variants, problems = [], []
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, _, levels_text = item.partition(":")
        name = name.strip()
        if name not in distort.SIMULATORS:
            problems.append(f"unknown distortion '{name}' (known: {', '.join(sorted(distort.SIMULATORS))})")
            continue
        count = len(distort.get(name).levels)
        try:
            levels = [int(x) for x in levels_text.split(",") if x.strip()] or list(range(1, count + 1))
        except ValueError:
            problems.append(f"'{item}': levels must be integers")
            continue
        bad = [level for level in levels if not 1 <= level <= count]
        if bad:
            problems.append(f"'{item}': {name} has levels 1..{count}, not {bad}")
        variants += [(name, level) for level in levels if 1 <= level <= count]
    duplicates = [v for v, n in collections.Counter(variants).items() if n > 1]
    if duplicates:
        problems.append(f"variants listed twice: {duplicates}")
    if problems:
        raise StoreError("data.distortions: " + "; ".join(problems))
    return tuple(variants)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that determines the records; stored as store.json and checked on resume."""

    num_frames: int
    image_size: int
    num_motion_chunks: int
    motion_dim: int
    frame_format: str
    jpeg_quality: int
    motion_features: str
    distortions: tuple[tuple[str, int], ...]
    distort_seed: int
    distort_max_side: int
    distort_max_seconds: float
    sources_per_shard: int
    # motion_features="slowfast": the weights file (absolute path) and its SHA-256, else "".
    # store.json records the digest, not the path: a moved file continues its store.
    slowfast_weights: str
    slowfast_digest: str

    @classmethod
    def from_config(cls, config, distortions=None) -> Settings:
        """From `config.data`; `distortions` (a spec, see `parse_distortions`) overrides
        data.distortions. Raises StoreError naming the data.* key of a value out of range;
        for data.motion_features="slowfast", ConfigError without data.slowfast_weights and
        WeightsError (w2s_vqa.models.slowfast) for a weights file that does not fit."""
        data = config.data
        slowfast_weights = slowfast_digest = ""
        if str(data.motion_features) == "slowfast":
            slowfast_weights, slowfast_digest = _check_slowfast_weights(data)
        settings = cls(
            num_frames=int(data.num_frames),
            image_size=int(data.image_size),
            num_motion_chunks=int(data.num_motion_chunks),
            motion_dim=int(data.motion_dim),
            frame_format=str(data.frame_format),
            jpeg_quality=int(data.jpeg_quality),
            motion_features=str(data.motion_features),
            distortions=parse_distortions(data.distortions if distortions is None else distortions),
            distort_seed=int(data.distort_seed),
            distort_max_side=int(data.distort_max_side),
            distort_max_seconds=float(data.distort_max_seconds),
            sources_per_shard=int(data.sources_per_shard),
            slowfast_weights=slowfast_weights,
            slowfast_digest=slowfast_digest,
        )
        if settings.frame_format not in FRAME_FORMATS:
            raise StoreError(f"data.frame_format must be one of {FRAME_FORMATS}, not '{settings.frame_format}'")
        if settings.motion_features not in MOTION_FEATURES:
            raise StoreError(f"data.motion_features must be one of {', '.join(MOTION_FEATURES)}, "
                             f"not '{settings.motion_features}'")
        if min(settings.num_frames, settings.image_size, settings.num_motion_chunks,
               settings.motion_dim, settings.sources_per_shard) < 1:
            raise StoreError("data.num_frames, image_size, num_motion_chunks, motion_dim and "
                             "sources_per_shard must be positive")
        if not 1 <= settings.jpeg_quality <= 100:
            raise StoreError(f"data.jpeg_quality must be in 1..100, not {settings.jpeg_quality}")
        return settings

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["distortions"] = ";".join(f"{name}:{level}" for name, level in self.distortions)
        del fields["slowfast_weights"]
        if self.motion_features != "slowfast":  # stores of the other kinds keep their store.json
            del fields["slowfast_digest"]
        return fields


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
    return os.path.abspath(path), _file_digest(path)


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything `write_shard` needs to write shard number `shard` (0-based) into `out_dir`.

    Picklable (frozen dataclasses of strings and numbers), so a task can travel to
    another process or machine; `shard_tasks` makes the tasks of a store.
    """

    out_dir: str
    shard: int
    sources: tuple[Source, ...]
    settings: Settings


def shard_tasks(sources: Sequence[Source], settings: Settings, out_dir: str) -> list[ShardTask]:
    """The store's shards: `sources` (sorted by id, as `find_sources` returns them) cut
    into runs of `settings.sources_per_shard`, numbered from 0."""
    step = settings.sources_per_shard
    return [ShardTask(os.fspath(out_dir), i, tuple(sources[start:start + step]), settings)
            for i, start in enumerate(range(0, len(sources), step))]


@dataclasses.dataclass
class PrepareReport:
    """What a prepare run left in `out_dir`, summed over all shards (finished earlier or now)."""

    out_dir: str
    sources: int = 0
    videos_written: int = 0  # sources whose pristine record landed
    records: int = 0  # pristine + variants
    variants: int = 0
    shards: int = 0
    shards_resumed: int = 0  # finished by an earlier run and kept
    errors: list[dict[str, str]] = dataclasses.field(default_factory=list)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(collections.Counter(e["reason"] for e in self.errors).most_common())

    def summary(self, max_reasons: int = 10) -> str:
        lines = [f"{self.videos_written}/{self.sources} videos written, {self.variants} variants, "
                 f"{self.records} records in {self.shards} shards ({self.shards_resumed} kept from an earlier run)",
                 f"skipped: {len(self.errors)}"]
        reasons = list(self.skipped_by_reason.items())
        lines += [f"  {count} x {reason}" for reason, count in reasons[:max_reasons]]
        if len(reasons) > max_reasons:
            lines.append(f"  ... {len(reasons) - max_reasons} more reasons (see {ERRORS_FILE})")
        return "\n".join(lines)


def variant_id(video_id: str, distortion: str, level: int) -> str:
    """Id of a variant, e.g. "clip~h264-3": the dash keeps "h264-3" apart from "h2643"."""
    return f"{video_id}~{distortion}-{level}"


def variant_seed(video_id: str, distort_seed: int) -> int:
    """A seed that depends on the id only, so results do not depend on order or worker."""
    digest = hashlib.sha256(f"{distort_seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class MotionFeaturesError(ValueError):
    """A precomputed motion feature file that cannot be used; the message names the file."""


def _load_motion(source: Source, settings: Settings) -> np.ndarray | None:
    """The source's precomputed motion features float32 [chunks, D], row j for second j
    (rows counted from 0); None unless data.motion_features is "precomputed".

    Raises MotionFeaturesError naming the file for: no file given, a file that is
    missing or not a .npy array, a shape other than [chunks >= 1, data.motion_dim],
    a dtype that is not a real number (bool, integer or float), and values that are
    NaN or infinite as float32 (a float64 beyond float32's range included), listing
    the rows that hold them: training would otherwise stop later on a non-finite loss.
    """
    if settings.motion_features != "precomputed":  # none, or computed per video from its frames
        return None
    if not source.motion:
        raise MotionFeaturesError("no motion features given (data.motion_features='precomputed'); "
                                  "set the manifest's 'motion' column")
    name = f"motion features {source.motion}"
    try:
        features = np.load(source.motion, allow_pickle=False)
    except FileNotFoundError:
        raise MotionFeaturesError(f"{name}: no such file") from None
    except (OSError, ValueError, EOFError) as e:  # not .npy, truncated, or an object array (pickle refused)
        raise MotionFeaturesError(f"{name}: not a readable .npy array ({e})") from None
    if not isinstance(features, np.ndarray):  # an .npz archive loads as a mapping
        raise MotionFeaturesError(f"{name}: not a .npy array but {type(features).__name__}")
    d = settings.motion_dim
    if features.ndim != 2 or features.shape[1] != d or features.shape[0] == 0:
        raise MotionFeaturesError(f"{name}: shape {list(features.shape)}, expected [chunks, {d}] "
                                  "(one row per second, at least one; data.motion_dim columns)")
    if features.dtype.kind not in "biuf":
        raise MotionFeaturesError(f"{name}: dtype {features.dtype} is not a real number type "
                                  "(bool, integer or float)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, reported below
        features = features.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad_rows):
        shown = ", ".join(map(str, bad_rows[:10].tolist())) + (", ..." if len(bad_rows) > 10 else "")
        raise MotionFeaturesError(f"{name}: NaN or infinite values (as float32) in {len(bad_rows)} of "
                                  f"{len(features)} chunk rows: {shown} (row j = second j, counted from 0)")
    return features


def _choose_motion(features: np.ndarray | None, seconds: float, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Motion float32 [M, D] and mask bool [M] from per-second `features` (or zeros for None).

    The chunks are those `video.chunk_choice` picks, the rule frame statistics
    and SlowFast chunks follow, over the first `seconds` of the clip (the span
    its frames were sampled from) or the rows the file has, if fewer. So for a
    file with one row per whole second, the chosen seconds are the ones
    data.motion_features='frame_stats' would describe.
    """
    m, d = settings.num_motion_chunks, settings.motion_dim
    motion, mask = np.zeros((m, d), np.float32), np.zeros((m,), bool)
    if features is None:
        return motion, mask
    chosen = features[video.chunk_choice(min(seconds, len(features)), m)]
    motion[: len(chosen)] = chosen
    mask[: len(chosen)] = True
    return motion, mask


@functools.lru_cache(maxsize=1)
def _slowfast_extractor(path: str, digest: str, max_batch: int):
    """The SlowFast fast pathway of `path`, loaded once per process (each prepare worker)."""
    # Worker processes share one accelerator: each takes the memory it uses, not the 75%
    # JAX reserves by default (unless the user says otherwise; read when the backend starts).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from w2s_vqa.models import slowfast

    if _file_digest(path) != digest:
        raise StoreError(f"{path}: data.slowfast_weights changed since this prepare run started")
    return slowfast.Extractor(slowfast.load(path), max_batch=max_batch)


def _slowfast_motion(frames: np.ndarray, times: np.ndarray, seconds: float,
                     settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Motion float32 [M, 256] and mask bool [M] of one video: SlowFast-R50's fast-pathway
    feature of each chunk `motion_lib.slowfast_chunks` cuts from its own frames."""
    chunks, mask = motion_lib.slowfast_chunks(frames, times, seconds, settings.num_motion_chunks)
    features = np.zeros((settings.num_motion_chunks, settings.motion_dim), np.float32)
    used = int(mask.sum())  # the used slots come first
    if used:
        extractor = _slowfast_extractor(settings.slowfast_weights, settings.slowfast_digest,
                                        settings.num_motion_chunks)
        features[:used] = extractor(chunks[:used])
    return features, mask


def _check_record_ids(inputs: str, sources: Sequence[Source], settings: Settings) -> None:
    """Refuse an input id that equals a variant id of another input (e.g. a manifest row
    "clip~h264-1" next to "clip" with h264:1 variants): the index would hold it twice."""
    ids = {s.id for s in sources}
    clashes = sorted({variant_id(s.id, name, level) for s in sources for name, level in settings.distortions} & ids)
    if clashes:
        raise StoreError(f"{inputs}: {len(clashes)} input id(s) equal the id of a variant prepare makes of "
                         f"another input, e.g. {clashes[:5]}; rename them (variant ids are <id>~<distortion>-<level>)")


def _error(source: Source, video_id: str, exc: BaseException) -> dict[str, str]:
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return {"path": source.path, "id": video_id, "reason": f"{type(exc).__name__}: {reason}"}


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


def _source_records(source: Source, settings: Settings):
    """Yield (meta, arrays, index row) or an error dict, for the pristine video and each variant.

    The source is decoded once and one distorted copy exists at a time; the
    pristine record is sampled from the same decoded frames as the variants, so
    that decoding differences cannot tell them apart. Every video is sampled at
    the source's presentation timestamps (video module docstring, "Timing"): a
    simulator changes what frames show, never when, so the pristine record equals
    the one a store without distortions holds, for a clip within distort_max_side
    and distort_max_seconds. A source that cannot be decoded, or whose precomputed
    motion features are unusable, yields one error; a failing simulator costs its
    variant only.
    """
    size, count = settings.image_size, settings.num_frames
    own_motion = settings.motion_features in ("frame_stats", "slowfast")  # computed from each video's frames

    def video_motion(frames):  # each video's own features, or the source's precomputed ones
        if settings.motion_features == "frame_stats":
            return motion_lib.frame_statistics(frames, times, seconds, settings.num_motion_chunks,
                                               settings.motion_dim)
        if settings.motion_features == "slowfast":
            return _slowfast_motion(frames, times, seconds, settings)
        return source_motion

    try:
        precomputed = _load_motion(source, settings)  # before decoding: a bad file costs no decode
        if settings.distortions or own_motion:
            frames, times, seconds, info = _decode_for_distortion(source.path, settings)
            pristine = video.sample_array(frames, times, seconds, count, size)
            source_motion = _choose_motion(precomputed, seconds, settings)
            pristine_motion = video_motion(frames)
        else:  # nothing to distort: sample while decoding, never holding the clip
            *pristine, info = video.sample_frames(source.path, count, size)
            source_motion = pristine_motion = _choose_motion(precomputed, info.duration, settings)
    except Exception as e:  # any broken input is skipped and reported, never fatal
        yield _error(source, source.id, e)
        return

    common = {"source_id": source.source_id, "fps": float(info.fps), "duration": float(info.duration)}
    extra = {"width": int(info.width), "height": int(info.height), "rotation": int(info.rotation),
             "path": source.path}
    for name, level in [("", 0), *settings.distortions]:
        video_id = variant_id(source.id, name, level) if name else source.id
        try:
            if name:
                distorted = distort.get(name).apply(frames, level, fps=float(info.fps),
                                                    seed=variant_seed(video_id, settings.distort_seed))
                sampled, mask = video.sample_array(distorted, times, seconds, count, size)
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


def video_records(source: Source, settings: Settings):
    """What the store keeps of one source, made as `write_shard` makes it: yields (meta,
    arrays, index row) per record (the pristine video, then each variant of
    settings.distortions) or an error dict {path, id, reason} for what could not be made.
    arrays are a record's (`encode_frames` output, frame_mask, motion, motion_mask); the
    TFDS evaluation sets (w2s_vqa.datasets) build their examples through it."""
    return _source_records(source, settings)


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
    temp = final + ".tmp"
    rows, errors = [], []
    writer = ArrayRecordWriter(temp, WRITER_OPTIONS[task.settings.frame_format])
    try:
        for source in task.sources:
            for item in _source_records(source, task.settings):
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
    _write_json_atomic(shard_done_path(task.out_dir, task.shard), result)
    return result


def _write_json_atomic(path: str, obj: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _load_finished(out_dir: str, shard: int) -> dict[str, Any] | None:
    """The shard's saved result if an earlier run finished it (store.json vouches for the plan)."""
    done = shard_done_path(out_dir, shard)
    if not (os.path.exists(done) and os.path.exists(shard_path(out_dir, shard))):
        return None
    with open(done) as f:
        return json.load(f)


def _plan_digest(sources: Sequence[Source], settings: Settings) -> str:
    text = json.dumps([settings.to_json(), [dataclasses.astuple(s) for s in sources]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_or_write_settings(out_dir: str, settings_json: dict[str, Any]) -> None:
    """A rerun may only continue a store made with the same settings and inputs."""
    path = os.path.join(out_dir, STORE_FILE)
    if os.path.exists(path):
        with open(path) as f:
            _refuse_other_settings(out_dir, json.load(f), settings_json)
    else:
        _write_json_atomic(path, settings_json)


def _refuse_other_settings(out_dir: str, existing: dict[str, Any], settings_json: dict[str, Any]) -> None:
    """Raise StoreError naming the keys in which a store's store.json differs from this run's."""
    if existing != settings_json:
        changed = sorted(k for k in set(existing) | set(settings_json) if existing.get(k) != settings_json.get(k))
        raise StoreError(f"{out_dir}: holds a store made with other settings or inputs (differs in: "
                         f"{', '.join(changed)}); choose another --out or delete it")


def plan(config, inputs: str, out_dir: str, distortions=None
         ) -> tuple[Settings, list[Source], list[ShardTask], dict[str, Any]]:
    """What a prepare run of `inputs` into `out_dir` writes, whatever runs it: (settings,
    sources sorted by id, shard tasks, store.json's content). Touches nothing on disk.

    Raises StoreError for unusable settings, inputs (see `find_sources`) or record
    ids that would clash (an input named like another's variant).
    """
    settings = Settings.from_config(config, distortions)
    sources = find_sources(inputs, require_motion=settings.motion_features == "precomputed")
    _check_record_ids(inputs, sources, settings)
    tasks = shard_tasks(sources, settings, out_dir)
    store_json = {"version": STORE_VERSION, **settings.to_json(), "num_shards": len(tasks),
                  "plan_digest": _plan_digest(sources, settings)}
    return settings, sources, tasks, store_json


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
    _check_or_write_settings(out_dir, store_json)

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
    return report


def _finish(out_dir: str, results: list[dict[str, Any]], *, num_sources: int) -> PrepareReport:
    """Merge the shards' rows into index.parquet, write errors.jsonl and report.json."""
    rows = [row for result in results for row in result["rows"]]
    errors = [error for result in results for error in result["errors"]]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).astype(INDEX_DTYPES)
    index.to_parquet(os.path.join(out_dir, INDEX_FILE) + ".tmp", index=False)
    os.replace(os.path.join(out_dir, INDEX_FILE) + ".tmp", os.path.join(out_dir, INDEX_FILE))
    with open(os.path.join(out_dir, ERRORS_FILE), "w") as f:
        for error in errors:
            f.write(json.dumps(error, sort_keys=True) + "\n")
    report = PrepareReport(
        out_dir=out_dir,
        sources=num_sources,
        videos_written=int((index["distortion"] == "").sum()),
        records=len(index),
        variants=int((index["distortion"] != "").sum()),
        shards=len(results),
        errors=errors,
    )
    _write_json_atomic(os.path.join(out_dir, REPORT_FILE), {
        "sources": report.sources, "videos_written": report.videos_written, "records": report.records,
        "variants": report.variants, "shards": report.shards, "skipped": len(errors),
        "skipped_by_reason": report.skipped_by_reason,
    })
    # Leftovers of killed runs: every shard is final now.
    for stale in glob.glob(os.path.join(out_dir, "*.tmp")):
        os.remove(stale)
    return report
