"""The prepared video store and the `w2s-vqa prepare` verb that builds it.

Training reads each video many times (once per pair it appears in, every
epoch), so decoding, distorting and sampling happen once, here, and the
pipeline only reads fixed-shape frames back by id.

Layout of a store directory:

    store.json                 settings every record was made with + a digest of the plan
    shard-00000.arrayrecord    records (group_size 1, so any record is one seek away)
    shard-00000.json           that shard's index rows and skipped videos; written
                               after the shard file, so its presence means "shard done"
    index.parquet              all index rows: id -> shard, position + metadata
    errors.jsonl               one line per skipped video or variant: path, id, reason
    report.json                counts of the finished run

A record is `encode_record`'s self-describing binary layout: a JSON header
(scalar metadata and the dtype/shape of each array) followed by the raw array
bytes. Unlike pickle it executes nothing when read, so stores can be shared;
unlike msgpack it needs no extra dependency, and arrays load zero-copy.

Sources are sorted by id and cut into shards of `data.sources_per_shard`; each
shard is written by one worker process under a temporary name and renamed when
complete, and every random choice is seeded from the video id. So the store does
not depend on the worker count, and a killed run, rerun, produces exactly the
store an uninterrupted run would have, as far as the simulators are deterministic.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import hashlib
import io
import json
import math
import multiprocessing
import os
import struct
import sys
import threading
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

STORE_VERSION = 1
# data.motion_features: zeros; the source's own .npy (manifest column "motion"); or
# frame statistics computed for every video, variants included (w2s_vqa.video.motion).
MOTION_FEATURES = ("none", "precomputed", "frame_stats")
FRAME_FORMATS = ("jpeg", "raw")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp")

STORE_FILE = "store.json"
INDEX_FILE = "index.parquet"
ERRORS_FILE = "errors.jsonl"
REPORT_FILE = "report.json"

# Random access wants no readahead: a record is read whole, then the reader seeks elsewhere.
_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
# zstd:1 costs JPEG records little and shrinks their other arrays (zero motion features
# of "none" stores: 22 -> 7 KB per 32x32 record). Raw records stay uncompressed: reading
# them fast is the point of "raw", and zstd would only take 3.5 MB to 2 MB at 384x384x8.
_WRITER_OPTIONS = {"jpeg": "group_size:1,zstd:1", "raw": "group_size:1,uncompressed"}

_RECORD_MAGIC = b"W2SR"
# Arrays a record may hold; anything else in a header is refused rather than interpreted.
_SAFE_DTYPES = frozenset(np.dtype(t).str for t in (np.uint8, np.bool_, np.int32, np.int64, np.float32))


class StoreError(ValueError):
    """A store or its inputs cannot be used; the message names the file and the problem."""


# ---------------------------------------------------------------------------
# Records


def encode_record(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialize JSON-able scalars and numeric arrays; deterministic for equal inputs."""
    specs, payload = [], []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.str not in _SAFE_DTYPES:
            raise TypeError(f"record array '{name}' has unsupported dtype {array.dtype}")
        specs.append([name, array.dtype.str, list(array.shape)])
        payload.append(array.tobytes())
    header = json.dumps({"meta": meta, "arrays": specs}, sort_keys=True, separators=(",", ":")).encode()
    return b"".join([_RECORD_MAGIC, struct.pack("<I", len(header)), header, *payload])


def decode_record(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of `encode_record`; arrays are read-only views into `data`."""
    if data[:4] != _RECORD_MAGIC:
        raise StoreError("not a w2s-vqa record (bad magic bytes)")
    (header_len,) = struct.unpack_from("<I", data, 4)
    offset = 8 + header_len
    header = json.loads(data[8:offset])
    arrays = {}
    for name, dtype, shape in header["arrays"]:
        if dtype not in _SAFE_DTYPES:
            raise StoreError(f"record array '{name}' has unsupported dtype {dtype}")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize
    return header["meta"], arrays


def encode_frames(frames: np.ndarray, mask: np.ndarray, frame_format: str, jpeg_quality: int) -> dict[str, np.ndarray]:
    """Frame arrays of a record. JPEG keeps only valid frames, as one byte string plus sizes.

    JPEG uses 4:4:4 chroma: halving chroma resolution would itself be a visible
    distortion at the small frame sizes the student sees.
    """
    if frame_format == "raw":
        return {"frames": frames}
    from PIL import Image

    blobs = []
    for frame, valid in zip(frames, mask):
        if not valid:
            blobs.append(b"")
            continue
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
        blobs.append(buffer.getvalue())
    return {
        "frames_jpeg": np.frombuffer(b"".join(blobs), np.uint8),
        "frame_sizes": np.asarray([len(b) for b in blobs], np.int32),
    }


def decode_frames(arrays: dict[str, np.ndarray], num_frames: int, image_size: int) -> np.ndarray:
    """uint8 [F, S, S, 3] from either frame format; frames stored empty come back black."""
    if "frames" in arrays:
        return arrays["frames"]
    from PIL import Image

    frames = np.zeros((num_frames, image_size, image_size, 3), np.uint8)
    data = arrays["frames_jpeg"]
    offset = 0
    for i, size in enumerate(arrays["frame_sizes"].tolist()):
        if size:
            with Image.open(io.BytesIO(data[offset:offset + size])) as image:
                frames[i] = np.asarray(image.convert("RGB"))
        offset += size
    return frames


# ---------------------------------------------------------------------------
# Reader


class VideoStore:
    """Random access by id to a prepared store.

    Picklable: it pickles as its path, and ArrayRecord readers are opened lazily
    in whichever process reads, so Grain worker processes can share one object.
    Safe to read from several threads of one process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        settings_file = os.path.join(self.path, STORE_FILE)
        index_file = os.path.join(self.path, INDEX_FILE)
        if not os.path.exists(settings_file):
            raise StoreError(f"{self.path}: not a video store (no {STORE_FILE}); build one with `w2s-vqa prepare`")
        if not os.path.exists(index_file):
            raise StoreError(f"{self.path}: store is incomplete (no {INDEX_FILE}); "
                             "rerun `w2s-vqa prepare` to finish it")
        with open(settings_file) as f:
            self.settings: dict[str, Any] = json.load(f)
        if self.settings.get("version") != STORE_VERSION:
            raise StoreError(f"{settings_file}: store version {self.settings.get('version')}, "
                             f"this code reads version {STORE_VERSION}")
        self.index: pd.DataFrame = pd.read_parquet(index_file)
        self._rows = pd.Index(self.index["id"])
        self._shard = self.index["shard"].to_numpy()
        self._position = self.index["position"].to_numpy()
        self._readers: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    @property
    def num_frames(self) -> int:
        return int(self.settings["num_frames"])

    @property
    def image_size(self) -> int:
        return int(self.settings["image_size"])

    @property
    def num_motion_chunks(self) -> int:
        return int(self.settings["num_motion_chunks"])

    @property
    def motion_dim(self) -> int:
        return int(self.settings["motion_dim"])

    @property
    def ids(self) -> list[str]:
        return self.index["id"].tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._rows

    def unknown_ids(self, ids: Iterable[str]) -> list[str]:
        """The ids among `ids` that the store does not hold, in first-seen order."""
        ids = pd.unique(np.asarray([str(i) for i in ids], dtype=object))
        return [i for i, row in zip(ids, self._rows.get_indexer(ids)) if row < 0]

    def record_bytes(self, video_id: str) -> bytes:
        """The serialized record of `video_id` (see `decode_record`)."""
        row = self._rows.get_indexer([video_id])[0]
        if row < 0:
            raise KeyError(f"{self.path}: no video '{video_id}' in the store")
        shard = int(self._shard[row])
        return self._reader(shard).read([int(self._position[row])])[0]

    def get(self, video_id: str) -> dict[str, Any]:
        """Decoded record: frames uint8 [F,S,S,3], frame_mask bool [F], motion float32 [M,D],
        motion_mask bool [M], and id, source_id, distortion, level, fps, duration."""
        meta, arrays = decode_record(self.record_bytes(video_id))
        return {
            **meta,
            "frames": decode_frames(arrays, self.num_frames, self.image_size),
            "frame_mask": arrays["frame_mask"],
            "motion": arrays["motion"],
            "motion_mask": arrays["motion_mask"],
        }

    def _reader(self, shard: int):
        reader = self._readers.get(shard)
        if reader is None:
            from array_record.python.array_record_module import ArrayRecordReader

            with self._lock:
                reader = self._readers.get(shard)
                if reader is None:
                    reader = ArrayRecordReader(shard_path(self.path, shard), _READER_OPTIONS)
                    self._readers[shard] = reader
        return reader

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()

    def __enter__(self) -> VideoStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard_path(store_dir: str, shard: int) -> str:
    return os.path.join(store_dir, f"shard-{shard:05d}.arrayrecord")


def _shard_done_path(store_dir: str, shard: int) -> str:
    return os.path.join(store_dir, f"shard-{shard:05d}.json")


# ---------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True)
class Source:
    """One input video. `id` names its record; its variants are `variant_id(id, name, level)`.

    `source_id` groups videos of the same content (a reference and its distorted
    versions in a manifest); it defaults to `id` and variants inherit it.
    """

    id: str
    source_id: str
    path: str
    motion: str = ""  # .npy of per-second motion features [chunks, motion_dim], or ""


def parse_distortions(spec: str | Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Variants to make per source, e.g. "resize:1,3,5;h264:1,2;stutter" -> ((resize,1), ...).

    A name without levels means all its levels. Levels are 1-based, as
    `Simulator.apply` takes them. An empty spec means pristine videos only.
    """
    from w2s_vqa.video import distort

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


def find_sources(inputs: str, *, require_motion: bool = False) -> list[Source]:
    """Sources from a folder (recursive, by extension) or a CSV/JSONL manifest, sorted by id.

    Folder ids are paths relative to the folder without extension, so that they
    match the names teacher score tables use.
    """
    inputs = os.fspath(inputs)
    if os.path.isdir(inputs):
        if require_motion:
            raise StoreError(f"{inputs}: data.motion_features='precomputed' needs a manifest with a 'motion' column")
        paths = sorted(p for p in glob.glob(os.path.join(inputs, "**", "*"), recursive=True)
                       if os.path.isfile(p) and p.lower().endswith(VIDEO_EXTENSIONS))
        ids = [os.path.splitext(os.path.relpath(p, inputs))[0].replace(os.sep, "/") for p in paths]
        sources = [Source(id=i, source_id=i, path=p) for i, p in zip(ids, paths)]
    elif os.path.isfile(inputs):
        sources = _read_manifest(inputs, require_motion=require_motion)
    else:
        raise StoreError(f"{inputs}: no such folder or manifest")
    if not sources:
        raise StoreError(f"{inputs}: no videos found (extensions: {' '.join(VIDEO_EXTENSIONS)})")
    counts = collections.Counter(s.id for s in sources)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise StoreError(f"{inputs}: {len(duplicates)} ids name more than one video, e.g. {duplicates[:5]}")
    return sorted(sources, key=lambda s: s.id)


def _read_manifest(path: str, *, require_motion: bool) -> list[Source]:
    lower = path.lower()
    if not lower.endswith((".csv", ".jsonl")):
        raise StoreError(f"{path}: a manifest must be .csv or .jsonl")
    try:
        if lower.endswith(".csv"):
            # Only empty cells are missing: an id such as "NA" stays an id.
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            table = pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as e:
        raise StoreError(f"{path}: cannot read manifest: {e}") from e
    if "path" not in table.columns:
        raise StoreError(f"{path}: manifest needs a 'path' column (has {list(table.columns)})")
    if require_motion and "motion" not in table.columns:
        raise StoreError(f"{path}: data.motion_features='precomputed' needs a 'motion' column")
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p: str) -> str:
        return p if not p or os.path.isabs(p) else os.path.join(base, p)

    sources = []
    for row_number, row in enumerate(table.fillna("").astype(str).to_dict("records"), start=1):
        if not row["path"]:
            raise StoreError(f"{path}: row {row_number} has an empty path")
        video_id = row.get("id") or os.path.splitext(os.path.basename(row["path"]))[0]
        sources.append(Source(id=video_id, source_id=row.get("source_id") or video_id,
                              path=resolve(row["path"]), motion=resolve(row.get("motion", ""))))
    return sources


# ---------------------------------------------------------------------------
# Writing


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

    @classmethod
    def from_config(cls, config, distortions=None) -> Settings:
        data = config.data
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
        return fields


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    out_dir: str
    shard: int
    sources: tuple[Source, ...]
    settings: Settings


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


def _load_motion(source: Source, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """[M, D] features and mask; a longer sequence is subsampled uniformly, as frames are."""
    m, d = settings.num_motion_chunks, settings.motion_dim
    motion, mask = np.zeros((m, d), np.float32), np.zeros((m,), bool)
    if settings.motion_features != "precomputed":  # none, or computed per video from its frames
        return motion, mask
    if not source.motion:
        raise ValueError("no motion features given (data.motion_features='precomputed')")
    features = np.load(source.motion, allow_pickle=False)
    if features.ndim != 2 or features.shape[1] != d or features.shape[0] == 0:
        raise ValueError(f"motion features {source.motion} have shape {features.shape}, expected [chunks, {d}]")
    if len(features) > m:
        features = features[np.round(np.linspace(0, len(features) - 1, m)).astype(int)]
    motion[: len(features)] = features
    mask[: len(features)] = True
    return motion, mask


def _error(source: Source, video_id: str, exc: BaseException) -> dict[str, str]:
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return {"path": source.path, "id": video_id, "reason": f"{type(exc).__name__}: {reason}"}


def _decode_for_distortion(path: str, settings: Settings):
    """The whole clip as uint8 [T, H, W, 3] for the simulators, and its VideoInfo.

    Frames are capped at distort_max_side pixels (longer side, aspect kept) and
    distort_max_seconds: a 10 s 4K clip would otherwise take 7.5 GB per worker
    before the simulators make their copies.
    """
    from w2s_vqa import video

    info = video.probe(path)
    size = None
    longer = max(info.width, info.height)
    if 0 < settings.distort_max_side < longer:
        scale = settings.distort_max_side / longer
        size = (max(1, round(info.height * scale)), max(1, round(info.width * scale)))
    max_frames = None
    if settings.distort_max_seconds > 0:
        max_frames = max(1, math.ceil(settings.distort_max_seconds * info.fps))
    return video.decode_frames(path, max_frames=max_frames, size=size)


def _source_records(source: Source, settings: Settings):
    """Yield (meta, arrays, index row) or an error dict, for the pristine video and each variant.

    The source is decoded once and one distorted copy exists at a time; the
    pristine record is sampled from the same decoded frames as the variants, so
    that decoding differences cannot tell them apart. A source that cannot be
    decoded yields one error; a failing simulator costs its variant only.
    """
    from w2s_vqa import video
    from w2s_vqa.video import distort
    from w2s_vqa.video import motion as motion_lib

    size, count = settings.image_size, settings.num_frames
    frame_stats = settings.motion_features == "frame_stats"

    def video_motion(frames, fps):  # each video's own statistics, or the source's precomputed features
        if frame_stats:
            return motion_lib.frame_statistics(frames, fps, settings.num_motion_chunks, settings.motion_dim)
        return source_motion

    try:
        source_motion = _load_motion(source, settings)
        if settings.distortions or frame_stats:
            frames, info = _decode_for_distortion(source.path, settings)
            pristine = video.sample_array(frames, info.fps, count, size)
            pristine_motion = video_motion(frames, float(info.fps))
        else:  # nothing to distort: sample while decoding, never holding the clip
            *pristine, info = video.sample_frames(source.path, count, size)
            pristine_motion = source_motion
    except Exception as e:  # any broken input is skipped and reported, never fatal
        yield _error(source, source.id, e)
        return

    common = {"source_id": source.source_id, "fps": float(info.fps), "duration": float(info.duration)}
    extra = {"width": int(info.width), "height": int(info.height), "path": source.path}
    for name, level in [("", 0), *settings.distortions]:
        video_id = variant_id(source.id, name, level) if name else source.id
        try:
            if name:
                distorted = distort.get(name).apply(frames, level, fps=float(info.fps),
                                                    seed=variant_seed(video_id, settings.distort_seed))
                sampled, mask = video.sample_array(distorted, float(info.fps), count, size)
                features, features_mask = video_motion(distorted, float(info.fps))
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


def _write_shard(task: _ShardTask) -> dict[str, Any]:
    """Write one shard; returns (and persists next to it) its index rows and errors."""
    from array_record.python.array_record_module import ArrayRecordWriter

    final = shard_path(task.out_dir, task.shard)
    temp = final + ".tmp"
    rows, errors = [], []
    writer = ArrayRecordWriter(temp, _WRITER_OPTIONS[task.settings.frame_format])
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
    _write_json_atomic(_shard_done_path(task.out_dir, task.shard), result)
    return result


def _write_json_atomic(path: str, obj: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _load_finished(out_dir: str, shard: int) -> dict[str, Any] | None:
    """The shard's saved result if an earlier run finished it (store.json vouches for the plan)."""
    done = _shard_done_path(out_dir, shard)
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
            existing = json.load(f)
        if existing != settings_json:
            changed = sorted(k for k in set(existing) | set(settings_json) if existing.get(k) != settings_json.get(k))
            raise StoreError(f"{out_dir}: holds a store made with other settings or inputs (differs in: "
                             f"{', '.join(changed)}); choose another --out or delete it")
    else:
        _write_json_atomic(path, settings_json)


def prepare(config, inputs: str, out_dir: str, *, workers: int = 1, distortions=None,
            progress: bool = True) -> PrepareReport:
    """Build (or finish building) a video store in `out_dir` from a folder or manifest.

    `distortions` overrides `config.data.distortions`. `workers` <= 1 writes in
    this process; more start that many processes, one shard at a time each.
    Broken videos are skipped and listed in errors.jsonl; raises StoreError only
    for unusable arguments.
    """
    settings = Settings.from_config(config, distortions)
    sources = find_sources(inputs, require_motion=settings.motion_features == "precomputed")
    os.makedirs(out_dir, exist_ok=True)
    step = settings.sources_per_shard
    tasks = [_ShardTask(out_dir, i, tuple(sources[start:start + step]), settings)
             for i, start in enumerate(range(0, len(sources), step))]
    _check_or_write_settings(out_dir, {"version": STORE_VERSION, **settings.to_json(),
                                       "num_shards": len(tasks), "plan_digest": _plan_digest(sources, settings)})

    results: dict[int, dict[str, Any]] = {}
    for task in tasks:
        finished = _load_finished(out_dir, task.shard)
        if finished is not None:
            results[task.shard] = finished
    todo = [t for t in tasks if t.shard not in results]

    from tqdm import tqdm

    with tqdm(total=len(sources), initial=sum(len(t.sources) for t in tasks if t.shard in results),
              unit="video", desc="prepare", disable=not progress) as bar:
        if workers <= 1:
            for task in todo:
                results[task.shard] = _write_shard(task)
                bar.update(len(task.sources))
        else:
            # spawn, not fork: the caller may hold threads (JAX, tqdm) that fork would copy mid-state.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, max(1, len(todo))), mp_context=context) as pool:
                futures = {pool.submit(_write_shard, task): task for task in todo}
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
    columns = ["id", "source_id", "distortion", "kind", "level", "shard", "position", "fps", "duration",
               "valid_frames", "width", "height", "path"]
    index = pd.DataFrame(rows, columns=columns).astype(
        {"level": "int32", "shard": "int32", "position": "int64", "valid_frames": "int32",
         "width": "int32", "height": "int32", "fps": "float64", "duration": "float64"})
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
