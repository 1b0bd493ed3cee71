"""A built TFDS evaluation set read through the video store's reading API.

The scorer (score.batch.score_store) and the training pipeline (pipeline.make_dataset)
read videos through one interface, the one `w2s_vqa.store.format.VideoStore` has:

    index            DataFrame, one row per video: id, source_id, distortion, kind, level,
                     shard, position, fps, duration, valid_frames, width, height, rotation,
                     media, path (+ here: video, mos, mos_std, paper_mos)
    ids, len, in     the ids in index order
    unknown_ids(ids) the ids not held
    get(id)          {frames uint8 [F,S,S,3], frame_mask bool [F], motion float32 [M,D],
                     motion_mask bool [M], id, source_id, distortion, level, fps, duration}
    num_frames, image_size, num_motion_chunks, motion_dim, settings, path
    pickles by its arguments; readers open lazily in the process that reads

`TfdsVideoSource` gives that API over `tfds.data_source`'s random access to the set's
ArrayRecord files, with frames decoded by the store's own `decode_frames`: no second
decoding or batching path. Multi-host reading follows from its users: score_store
loads each process's slice of every global batch by index, as it does from a store.
It is also a Grain source (`len`, `__getitem__(i)` -> the record of example i), and
`mos_table()` gives the set's labels as `score.evaluate` reads a MOS table.

"shard" here is a group of SHARD_SIZE consecutive examples: score_store scores and saves
its work shard by shard, so a killed evaluation resumes within at most one group.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pandas as pd

from w2s_vqa.store.format import IdIndex, decode_frames
from w2s_vqa.store.settings import Settings

SHARD_SIZE = 256


class SourceError(ValueError):
    """A TFDS set that cannot be read (not built, another config's files); the message names it."""


class TfdsVideoSource(IdIndex):
    """Random access by id to a built evaluation set (`w2s_vqa.datasets.builders`).

    name: the set (e.g. "konvid_1k"); config: a config name or VqaConfig; data_dir:
    TFDS's (default ~/tensorflow_datasets); split: "test". Raises SourceError when the
    set is not built there with that config.
    """

    def __init__(self, name: str, config="tiny", *, data_dir: str | None = None, split: str = "test"):
        from w2s_vqa.datasets import builders

        self.name, self.config, self.data_dir, self.split = name, config, data_dir, split
        self._builder = builders.builder(name, config, data_dir=data_dir)
        if not self._builder.is_prepared():
            raise SourceError(f"{name}: config {self._builder.builder_config.name!r} is not built in "
                              f"{self._builder.data_dir_root}; build it first (w2s_vqa.datasets.build or "
                              "`w2s-vqa eval --sets ... --manual-dir DIR`)")
        info = self._builder.info
        meta = dict(info.metadata or {})
        if "index" not in meta:
            raise SourceError(f"{self._builder.data_dir}: metadata.json holds no index (not built by w2s_vqa.datasets)")
        config_obj = self._builder.builder_config
        self.settings = Settings.from_json(meta["settings"])  # how its videos became student inputs
        self.skipped: list[dict[str, str]] = list(meta.get("skipped", []))
        self.subset: str = meta.get("subset", config_obj.subset)
        rows = meta["index"]
        n = len(rows)
        self.index = pd.DataFrame({
            "id": [r["id"] for r in rows], "source_id": [r["id"] for r in rows], "distortion": "", "kind": "",
            "level": np.zeros(n, np.int32), "shard": (np.arange(n) // SHARD_SIZE).astype(np.int32),
            "position": np.arange(n, dtype=np.int64),
            "fps": [float(r["fps"]) for r in rows], "duration": [float(r["duration"]) for r in rows],
            "valid_frames": np.asarray([r["valid_frames"] for r in rows], np.int32),
            "width": np.asarray([r["width"] for r in rows], np.int32),
            "height": np.asarray([r["height"] for r in rows], np.int32),
            "rotation": np.asarray([r["rotation"] for r in rows], np.int32),
            "media": [r.get("media", "video") for r in rows],  # sets built before the field: "video"
            "path": [r["path"] for r in rows], "video": [r["video"] for r in rows],
            "mos": np.asarray([r["mos"] for r in rows], np.float64),
            "mos_std": np.asarray([r["mos_std"] for r in rows], np.float64),
            "paper_mos": np.asarray([r["paper_mos"] for r in rows], np.float64),
        })
        self._rows = pd.Index(self.index["id"])
        self._num_frames, self._image_size = int(config_obj.num_frames), int(config_obj.image_size)
        self._num_motion_chunks, self._motion_dim = int(config_obj.num_motion_chunks), int(config_obj.motion_dim)
        self._source = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ VideoStore's API
    @property
    def path(self) -> str:
        """The built dataset's folder (data_dir/name/config/version)."""
        return os.fspath(self._builder.data_dir)

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def num_motion_chunks(self) -> int:
        return self._num_motion_chunks

    @property
    def motion_dim(self) -> int:
        return self._motion_dim

    def get(self, video_id: str) -> dict[str, Any]:
        """The record of `video_id`, as VideoStore.get returns it, plus mos, mos_std and
        paper_mos (float) and video (its path under the manual folder). KeyError when absent."""
        row = self._rows.get_indexer([video_id])[0]
        if row < 0:
            raise KeyError(f"{self.path}: no video '{video_id}' in the {self.name} set")
        return self[int(row)]

    def __getitem__(self, position: int) -> dict[str, Any]:
        """The record of example `position` (0-based, index order): a Grain source's item."""
        example = self._data_source()[int(position)]
        arrays = {k: example[k] for k in ("frames", "frames_jpeg", "frame_sizes") if k in example}
        text = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in
                (("id", example["id"]), ("video", example["video"]))}
        return {
            "id": text["id"], "source_id": text["id"], "distortion": "", "level": 0,
            "fps": float(example["fps"]), "duration": float(example["duration"]),
            "frames": decode_frames(arrays, self.num_frames, self.image_size),
            "frame_mask": np.asarray(example["frame_mask"], bool),
            "motion": np.asarray(example["motion"], np.float32),
            "motion_mask": np.asarray(example["motion_mask"], bool),
            "mos": float(example["mos"]), "mos_std": float(example["mos_std"]),
            "paper_mos": float(example["paper_mos"]), "video": text["video"],
        }

    def mos_table(self) -> pd.DataFrame:
        """The set's labels as score.evaluate reads a MOS table: file (the id), mos (the set's
        own), row (from 1, index order), path (the video's absolute path when built),
        mos_std and paper_mos."""
        table = self.index[["id", "mos", "path", "mos_std", "paper_mos"]].rename(columns={"id": "file"})
        table.insert(2, "row", np.arange(1, len(table) + 1))
        return table.reset_index(drop=True)

    def _data_source(self):
        source = self._source
        if source is None:
            with self._lock:
                if self._source is None:
                    self._source = self._builder.as_data_source(split=self.split)
                source = self._source
        return source

    def close(self) -> None:
        with self._lock:
            self._source = None

    def __enter__(self) -> TfdsVideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        return {"name": self.name, "config": self.config, "data_dir": self.data_dir, "split": self.split}

    def __setstate__(self, state):
        self.__init__(state["name"], state["config"], data_dir=state["data_dir"], split=state["split"])

    def __repr__(self) -> str:
        return f"TfdsVideoSource({self.name!r}, {self._builder.builder_config.name!r}, {len(self)} videos, {self.path})"
