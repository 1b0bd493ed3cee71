"""The video store's on-disk format and its reader, `VideoStore`.

Training reads each video many times (once per pair it appears in, every
epoch), so decoding, distorting and sampling happen once, in `w2s-vqa prepare`
(w2s_vqa.store.prepare), and the pipeline only reads fixed-shape frames back by id.
Every Grain worker process imports this module, so it imports nothing beyond
numpy, pandas and (when a shard is first read) array_record; PIL only to decode
JPEG frames.

Layout of a store directory:

    store.json                 settings every record was made with + a digest of the plan
    shard-00000.arrayrecord    records (group_size 1, so any record is one seek away)
    shard-00000.json           that shard's index rows and skipped videos; written
                               after the shard file, so its presence means "shard done"
    index.parquet              all index rows: id -> shard, position + metadata
                               (columns: INDEX_COLUMNS)
    errors.jsonl               one line per skipped video or variant: path, id, reason
    report.json                counts of the finished run

A record is `encode_record`'s self-describing binary layout: a JSON header
(scalar metadata and the dtype/shape of each array) followed by the raw array
bytes. Unlike pickle it executes nothing when read, so stores can be shared;
unlike msgpack it needs no extra dependency, and arrays load zero-copy.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
from typing import Any, Iterable

import numpy as np
import pandas as pd

from w2s_vqa.store.settings import Settings

# 2: frames upright by the display rotation and sampled by presentation timestamps on every path;
# index column rotation.
STORE_VERSION = 2

STORE_FILE = "store.json"
INDEX_FILE = "index.parquet"
ERRORS_FILE = "errors.jsonl"
REPORT_FILE = "report.json"

# index.parquet's columns and the dtypes of its non-string ones (id, source_id,
# distortion, kind and path are strings).
# width x height is the source's displayed size in pixels (after its display rotation), rotation
# the clockwise turn in degrees (0, 90, 180, 270) that made its frames upright
# (w2s_vqa.video.VideoInfo); fps is the nominal frame rate, duration the video stream's own, in seconds.
# media is "video" or "image" (a still image, w2s_vqa.video.is_still_image: one frame, zero motion);
# `media_of` reads it, "video" for an index written before the column.
INDEX_COLUMNS = ("id", "source_id", "distortion", "kind", "level", "shard", "position", "fps", "duration",
                 "valid_frames", "width", "height", "rotation", "media", "path")
INDEX_DTYPES = {"level": "int32", "shard": "int32", "position": "int64", "valid_frames": "int32",
                "width": "int32", "height": "int32", "rotation": "int32", "fps": "float64", "duration": "float64"}

def media_of(index: pd.DataFrame) -> pd.Series:
    """The index's media column ("video" or "image", strings), aligned with `index`; every
    row "video" for an index without it (a store prepared before still images were told
    apart: its images were made as one-frame videos)."""
    if "media" in index:
        return index["media"].fillna("video").astype(str)
    return pd.Series("video", index=index.index, dtype=object)


# Random access wants no readahead: a record is read whole, then the reader seeks elsewhere.
_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
# ArrayRecordWriter options per data.frame_format. zstd:1 costs JPEG records little and
# shrinks their other arrays (the zero motion features of "none" stores). Raw records
# stay uncompressed: reading them fast is the point of "raw".
WRITER_OPTIONS = {"jpeg": "group_size:1,zstd:1", "raw": "group_size:1,uncompressed"}

_RECORD_MAGIC = b"W2SR"
# Arrays a record may hold; anything else in a header is refused rather than interpreted.
_SAFE_DTYPES = frozenset(np.dtype(t).str for t in (np.uint8, np.bool_, np.int32, np.int64, np.float32))


class StoreError(ValueError):
    """A store or its inputs cannot be used; the message names the file and the problem."""


# ---------------------------------------------------------------------------
# Records


def encode_record(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialize JSON-able scalars and numeric arrays; deterministic for equal inputs.

    Layout: b"W2SR", the header length (uint32 little-endian), the header (JSON,
    sorted keys: {"meta": meta, "arrays": [[name, dtype.str, shape], ...]}), then
    each array's C-order bytes in that order. Arrays may be uint8, bool, int32,
    int64 or float32; any other dtype raises TypeError.
    """
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
    """Inverse of `encode_record`; arrays are read-only views into `data`.

    Raises StoreError for bytes that are not a record or name a dtype a record may not hold.
    """
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


class IdIndex:
    """What every reader of videos by id shares (VideoStore, datasets.TfdsVideoSource):
    `index` (a DataFrame with an `id` column, one row per video) and `_rows` (a pd.Index of
    the ids, for lookups)."""

    index: pd.DataFrame
    _rows: pd.Index

    @property
    def ids(self) -> list[str]:
        return self.index["id"].tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._rows

    def unknown_ids(self, ids: Iterable[str]) -> list[str]:
        """The ids among `ids` that this reader does not hold, in first-seen order."""
        ids = pd.unique(np.asarray([str(i) for i in ids], dtype=object))
        return [i for i, row in zip(ids, self._rows.get_indexer(ids)) if row < 0]


class VideoStore(IdIndex):
    """Random access by id to a prepared store.

    Picklable: it pickles as its path, and ArrayRecord readers are opened lazily
    in whichever process reads, so Grain worker processes can share one object.
    Safe to read from several threads of one process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not self.path.strip():  # os.path.join("", STORE_FILE) would look in the working directory
            raise StoreError("no video store given (the path is empty): name the directory `w2s-vqa prepare` "
                             "wrote (in a config: data.store, e.g. --set data.store=DIR)")
        if "://" in self.path:  # never copied silently: a pool's store is hundreds of GB
            raise StoreError(f"{self.path}: a video store is ArrayRecord files, read by seeking in files on a file "
                             "system; give a local disk or a mounted bucket (gcsfuse, NFS), not a URL")
        settings_file = os.path.join(self.path, STORE_FILE)
        index_file = os.path.join(self.path, INDEX_FILE)
        if not os.path.exists(settings_file):
            raise StoreError(f"{self.path}: not a video store (no {STORE_FILE}); build one with `w2s-vqa prepare`")
        if not os.path.exists(index_file):
            raise StoreError(f"{self.path}: store is incomplete (no {INDEX_FILE}); "
                             "rerun `w2s-vqa prepare` to finish it")
        with open(settings_file) as f:
            self.record: dict[str, Any] = json.load(f)  # store.json as written (StorePlan.to_json and more)
        if self.record.get("version") != STORE_VERSION:
            raise StoreError(f"{settings_file}: store version {self.record.get('version')}, "
                             f"this code reads version {STORE_VERSION}")
        self.settings = Settings.from_json(self.record)  # how its videos became student inputs
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
        return int(self.settings.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.settings.image_size)

    @property
    def num_motion_chunks(self) -> int:
        return int(self.settings.num_motion_chunks)

    @property
    def motion_dim(self) -> int:
        return int(self.settings.motion_dim)

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
    """The ArrayRecord file of shard number `shard` (0-based)."""
    return os.path.join(store_dir, f"shard-{shard:05d}.arrayrecord")


def shard_done_path(store_dir: str, shard: int) -> str:
    """The shard's index rows and errors (JSON); it exists only once the shard file is final."""
    return os.path.join(store_dir, f"shard-{shard:05d}.json")
