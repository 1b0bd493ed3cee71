"""Scoring many videos against an anchor set: a store, a folder or manifest, or arrays in memory.

    score_videos    what `w2s-vqa score` runs: a store is scored as it is; a folder of
                    videos or a manifest is first decoded into a store with the anchors'
                    settings (prepare_inputs); arrays in memory are scored directly
    score_store     a store (or a built TFDS set), shard by shard; with a parts folder,
                    each finished shard's level logits are kept and a rerun loads them
    ScoreResult     the score table, the videos skipped and why, the anchors' matrix,
                    the wall time and how many videos were scored in this call

A work directory serves one run: parts/run.json records the student, the anchors' digest,
the store and the prompt, and another run is refused (ScoreError). A video whose record
cannot be read or whose file cannot be decoded costs itself only: it is left out of the
table and listed in `ScoreResult.skipped`.

Still images (a JPEG or PNG among the videos, any one-frame stream: w2s_vqa.video.is_still_image;
the store's index says media "image") are told apart: `images="skip"` (the default) leaves
them out of the table and lists each in `skipped` with IMAGE_REASON, so that thumbnails in
a dataset folder never enter an SRCC unseen; `images="score"` scores them by the paper's
rule for images, one frame and all-zero motion features (docs/method.md, "Student"; the
store made them so, store.prepare), with kind "image" in the table.

Multi-host: every process runs the same calls and returns the same result; process 0
writes the parts and decodes folders; which shards are done is read on process 0 and
broadcast, and which videos failed is gathered from every process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import pandas as pd

from w2s_vqa import multihost
from w2s_vqa import prompt as prompt_lib
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.score.anchors import VIDEO_ARRAYS, AnchorSet
from w2s_vqa.score.scorer import Scorer, ScoreError, score_table
from w2s_vqa.store.format import STORE_FILE, VideoStore, media_of
from w2s_vqa.video.decode import IMAGE, IMAGE_REASON, is_image_reason

# Files of a scoring work directory (resuming): the run's identity and one part per store shard.
RUN_FILE = "run.json"
PART_FILE = "shard-{:05d}.npz"
# Columns of a list of skipped videos (ScoreResult.skipped, `w2s-vqa score`'s .skipped.csv).
SKIPPED_COLUMNS = ("id", "path", "reason")
# What becomes of still images: left out and listed (the default), or scored as images.
IMAGES_CHOICES = ("skip", "score")
DEFAULT_IMAGES = "skip"


def check_images(images: str) -> str:
    """`images` if it is one of IMAGES_CHOICES; ScoreError otherwise."""
    if images not in IMAGES_CHOICES:
        raise ScoreError(f"images={images!r}: expected one of {', '.join(IMAGES_CHOICES)}")
    return images


@dataclasses.dataclass
class ScoreResult:
    """What scoring a batch of videos gives; every process gets the same.

    table: `score.scorer.score_table`'s table, one row per video scored, in input order
    (id, path when known, kind "video" or "image", score, stderr, low, high, latent,
    p_vs_<anchor id>).
    skipped: one {id, path, reason} (strings; path "" when unknown) per video left out
    because its file could not be decoded or its record read, or because it is a still
    image and images="skip" (reason IMAGE_REASON).
    anchor_logits: float32 [K, K, 5], the anchors' level logits ([i, j]: anchor i first,
    anchor j second), as `Scorer.anchor_logits`.
    seconds: wall time of the scoring in seconds, reading the store included, decoding the
    inputs not (`prepare_seconds`).
    scored_now: videos scored in this call; the rest of the table came from the parts
    of an earlier run.
    decoded_now, decoded_earlier: of a folder or manifest, the videos (and still images)
    decoded in this call and those an earlier run had decoded into a finished store shard
    (kept, not decoded again); files that failed to decode and manifest rows without a
    file are not counted in either (they are in `skipped`); 0 and 0 for a store or arrays,
    which are not decoded.
    prepare_seconds: of a folder or manifest, the wall time of decoding them (`prepare`,
    kept shards included); 0 for a store or arrays. `seconds` + `prepare_seconds` is the
    whole call.
    """

    table: pd.DataFrame
    skipped: list[dict[str, str]]
    anchor_logits: np.ndarray
    seconds: float
    scored_now: int
    decoded_now: int = 0
    decoded_earlier: int = 0
    prepare_seconds: float = 0.0

    def skipped_table(self) -> pd.DataFrame:
        """`skipped` as a table with SKIPPED_COLUMNS (no rows when nothing was skipped)."""
        return pd.DataFrame(self.skipped, columns=list(SKIPPED_COLUMNS))

    @property
    def images_scored(self) -> int:
        """Still images in the table (kind "image")."""
        return int((self.table["kind"] == "image").sum()) if "kind" in self.table else 0

    @property
    def images_skipped(self) -> int:
        """Still images left out (images="skip"), among `skipped`."""
        return sum(1 for e in self.skipped if is_image_reason(e.get("reason", "")))


def decode_dir(work_dir: str) -> str:
    """Where a work folder's decoded store lives: inside a local work folder; for one in a
    bucket (gs://...), a local folder of the host named by the URL (workdir.scratch_dir),
    because a store is ArrayRecord files read by seeking. The scored parts stay in the
    bucket: a rerun on another host decodes again but scores only the shards not done."""
    return work_dir if workdir_lib.is_local(work_dir) else workdir_lib.scratch_dir(work_dir, "score")


def is_store(path: str) -> bool:
    """Whether `path` is a video store directory (it holds store.json)."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, STORE_FILE))


def prepare_inputs(inputs: str, work_dir: str, anchors: AnchorSet, config=None, *, workers: int = 0,
                   progress: bool = False) -> tuple[VideoStore, list[dict[str, str]]]:
    """A folder of videos or a manifest, decoded as the anchors were (`w2s-vqa prepare`'s
    path: the same sampling, frame format and motion features, no variants), into the
    store work_dir/store. Resumable: a rerun keeps the shards already written.

    config: a run config for the rest of data.* (sources_per_shard, distort_max_*);
    default config.defaults(). Returns (store, skipped), skipped a list of {path, id,
    reason} for videos that could not be decoded. Raises StoreError for unusable inputs
    (w2s_vqa.store.prepare.prepare).
    """
    store, skipped, _ = _prepare_counted(inputs, work_dir, anchors, config, workers=workers, progress=progress)
    return store, skipped


def input_config(anchors: AnchorSet, config=None):
    """The config a folder or manifest is decoded with (`prepare_inputs`): `config`
    (default config.defaults()) with the anchors' input settings in place of its data.*
    keys of the same names, and no variants (data.distortions ""): test videos are decoded
    as the anchors were, whatever `config` says of those keys."""
    from w2s_vqa.config import defaults

    config = (config if config is not None else defaults()).copy_and_resolve_references()
    for key, value in anchors.settings.items():
        if value is not None and key in config.data:
            config.data[key] = value
    config.data.distortions = ""
    return config


def _prepare_counted(inputs: str, work_dir: str, anchors: AnchorSet, config=None, *, workers: int = 0,
                     progress: bool = False) -> tuple[VideoStore, list[dict[str, str]], tuple[int, int]]:
    """`prepare_inputs`, and (files decoded now, files an earlier run decoded) on every process."""
    from w2s_vqa.store.prepare import prepare

    config = input_config(anchors, config)
    store_dir = os.path.join(work_dir, "store")
    counts = np.zeros(2, np.int64)
    if jax.process_index() == 0:
        report = prepare(config, inputs, store_dir, workers=workers, progress=progress)
        skipped = report.errors
        # Videos actually decoded: files that failed and manifest rows without a file are in `skipped`.
        counts[:] = (report.videos_written - report.videos_resumed, report.videos_resumed)
    multihost.barrier("score.prepare")
    counts = multihost.broadcast(counts)
    if jax.process_index() != 0:
        skipped = _read_errors(store_dir)
    return VideoStore(store_dir), skipped, (int(counts[0]), int(counts[1]))


def _read_errors(store_dir: str) -> list[dict[str, str]]:
    from w2s_vqa.store.format import ERRORS_FILE

    path = os.path.join(store_dir, ERRORS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _identity(student_key: str, anchors: AnchorSet, store_path: str, prompt: prompt_lib.PairPrompt) -> dict[str, Any]:
    """What a work directory's parts depend on."""
    return {"student": student_key, "anchors": anchors.digest(), "store": workdir_lib.absolute(store_path),
            "prompt": [int(i) for i in prompt.input_ids]}


def _check_run(parts_dir: str, identity: dict[str, Any]) -> None:
    """A work directory serves one run: the same student, anchors and store."""
    path = workdir_lib.join(parts_dir, RUN_FILE)
    if workdir_lib.exists(path):
        existing = workdir_lib.read_json(path)
        if existing != identity:
            changed = sorted(k for k in set(existing) | set(identity) if existing.get(k) != identity.get(k))
            raise ScoreError(f"{parts_dir}: holds the scores of another run (differs in: {', '.join(changed)}); "
                             "choose another work directory or delete it")
    elif jax.process_index() == 0:
        workdir_lib.makedirs(parts_dir)
        _write_atomic(path, lambda f: f.write(json.dumps(identity, indent=1, sort_keys=True)))


def _write_atomic(path: str, write, binary: bool = False) -> None:
    with workdir_lib.atomic_open(path, "wb" if binary else "w") as f:  # a local file or an object (gs://)
        write(f)


def score_store(scorer: Scorer, store: VideoStore | str, *, mode: str = "map", ids: Sequence[str] | None = None,
                parts_dir: str | None = None, student_key: str = "", progress: bool = False,
                images: str = DEFAULT_IMAGES) -> ScoreResult:
    """Score the videos of a store (`ids`, default all of its index, in index order): a
    VideoStore, its directory, or another reader with its API (a built TFDS evaluation set,
    w2s_vqa.datasets.TfdsVideoSource).

    Works shard by shard of the store. With `parts_dir`, each shard's level logits are
    saved there when done (shard-NNNNN.npz, by process 0) and a rerun loads them instead
    of scoring them again: a killed run loses at most the shard in progress. parts_dir
    serves one run (RUN_FILE: `student_key`, the anchors' digest, the store); ScoreError
    for another's. A video whose record cannot be read is skipped. `images`: "skip" leaves
    the store's still images (index media "image", `format.media_of`) out before any
    scoring, "score" scores them (module docstring).

    Returns a ScoreResult: its table (with the index's `path`, and `kind` from its media)
    in index order, its skipped list the videos whose record could not be read, then the
    still images left out. Every process returns it. Raises ScoreError for a store whose
    videos are not made like the anchors', ids the store lacks, a parts_dir of another
    run, or an unknown `images`.
    """
    check_images(images)
    # A store directory, or any reader with VideoStore's API (w2s_vqa.datasets.TfdsVideoSource).
    store = VideoStore(store) if isinstance(store, (str, os.PathLike)) else store
    if store.num_frames != scorer.anchors.videos["frames"].shape[1] or store.image_size != \
            scorer.anchors.videos["frames"].shape[2] or store.num_motion_chunks != \
            scorer.anchors.videos["motion"].shape[1] or store.motion_dim != scorer.anchors.videos["motion"].shape[2]:
        raise ScoreError(f"{store.path}: the store's videos ({store.num_frames} frames of {store.image_size} px, "
                         f"{store.num_motion_chunks} x {store.motion_dim} motion) are not made like the anchors' "
                         f"({tuple(scorer.anchors.videos['frames'].shape[1:3])}, "
                         f"{tuple(scorer.anchors.videos['motion'].shape[1:])}); prepare them with the anchors' settings")
    index = store.index
    if ids is not None:
        wanted = [str(i) for i in ids]
        unknown = store.unknown_ids(wanted)
        if unknown:
            raise ScoreError(f"{store.path}: no video {', '.join(map(repr, unknown[:10]))} in the store "
                             f"({len(unknown)} unknown)")
        index = index.set_index("id").loc[wanted].reset_index()
    index = index.reset_index(drop=True)
    index["media"] = media_of(index).to_numpy()
    left_out = index[index["media"] == IMAGE] if images == "skip" else index.iloc[:0]
    index = index.drop(left_out.index).reset_index(drop=True)
    shards = sorted(index["shard"].unique().tolist())
    if parts_dir:
        _check_run(parts_dir, _identity(student_key, scorer.anchors, store.path, scorer.prompt))
        multihost.barrier("score.run")
    done = np.asarray([bool(parts_dir) and workdir_lib.exists(workdir_lib.join(parts_dir, PART_FILE.format(s)))
                       for s in shards])
    done = multihost.broadcast(done)

    from w2s_vqa import progress as progress_lib

    logits = np.full((len(index), len(scorer.anchors), 5), np.nan, np.float32)
    failed: dict[str, str] = {}
    start, scored_now = time.perf_counter(), 0
    total = len(index)
    with progress_lib.bar(total=total, unit="video", desc="score",
                          disable=not progress or jax.process_index() != 0) as bar:
        for shard, is_done in zip(shards, done):
            rows = np.flatnonzero(index["shard"].to_numpy() == shard)
            shard_ids = index["id"].iloc[rows].astype(str).tolist()
            part = workdir_lib.join(parts_dir, PART_FILE.format(shard)) if parts_dir else None
            if is_done:
                with workdir_lib.path(part).open("rb") as f, np.load(f, allow_pickle=False) as data:
                    if data["ids"].tolist() == shard_ids:
                        logits[rows] = data["logits"]
                        failed.update(zip(data["failed_ids"].tolist(), data["failed_reasons"].tolist()))
                        bar.update(len(rows))
                        continue
            shard_failed: dict[str, str] = {}

            def load(indices, shard_ids=shard_ids, shard_failed=shard_failed):
                return _load_videos(store, [shard_ids[i] for i in indices], shard_failed)

            logits[rows] = scorer.level_logits(load, len(rows), on_batch=bar.update)
            # Every process loads other rows: which of them failed is gathered.
            shard_failed = {k: v for part in multihost.gather_json(shard_failed) for k, v in part.items()}
            failed.update(shard_failed)
            scored_now += len(rows)
            if part and jax.process_index() == 0:
                names = sorted(shard_failed)
                _write_atomic(part, lambda f: np.savez(
                    f, ids=np.asarray(shard_ids), logits=logits[rows], failed_ids=np.asarray(names, dtype=str),
                    failed_reasons=np.asarray([shard_failed[n] for n in names], dtype=str)), binary=True)
    seconds = time.perf_counter() - start
    keep = ~index["id"].astype(str).isin(list(failed)).to_numpy()
    kept = index[keep]
    paths = kept["path"].fillna("").astype(str).tolist() if "path" in kept else None
    table = score_table(kept["id"].astype(str).tolist(), logits[keep], scorer.anchors, scorer.anchor_logits,
                        mode=mode, paths=paths, kinds=kept["media"].tolist())
    path_of = dict(zip(index["id"].astype(str), index["path"].fillna("").astype(str))) if "path" in index else {}
    skipped = [{"id": i, "path": path_of.get(i, ""), "reason": r} for i, r in sorted(failed.items())]
    skipped += [{"id": str(i), "path": str(p) if isinstance(p, str) else "", "reason": IMAGE_REASON}
                for i, p in zip(left_out["id"], left_out["path"] if "path" in left_out else [""] * len(left_out))]
    return ScoreResult(table, skipped, scorer.anchor_logits, seconds, scored_now)


def _load_videos(store: VideoStore, ids: Sequence[str], failed: dict[str, str]) -> dict[str, np.ndarray]:
    """The VIDEO_ARRAYS of `ids` from the store; a record that cannot be read becomes zeros
    (its result is dropped) and is added to `failed` with the reason."""
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in VIDEO_ARRAYS}
    good = None
    records = []
    for video_id in ids:
        try:
            record = store.get(video_id)
            good = record
        except Exception as e:  # a damaged record costs its video only
            failed[video_id] = f"{type(e).__name__}: {e}"
            record = None
        records.append(record)
    if good is None:
        good = {"frames": np.zeros((store.num_frames, store.image_size, store.image_size, 3), np.uint8),
                "frame_mask": np.ones((store.num_frames,), bool),
                "motion": np.zeros((store.num_motion_chunks, store.motion_dim), np.float32),
                "motion_mask": np.ones((store.num_motion_chunks,), bool)}
    for record in records:
        for k in VIDEO_ARRAYS:
            arrays[k].append(np.asarray((record or good)[k]))
    return {k: np.stack(v) for k, v in arrays.items()}


def score_videos(student: student_lib.Student, prompt: prompt_lib.PairPrompt, anchors: AnchorSet, videos,
                 mesh: jax.sharding.Mesh, *, batch_size: int | None = None, mode: str = "map",
                 work_dir: str | None = None, config=None, student_key: str = "", workers: int = 0,
                 progress: bool = False, images: str = DEFAULT_IMAGES) -> ScoreResult:
    """Scores of videos against an anchor set: one row per video, in input order.

    videos: a VideoStore or store directory; a folder of videos or a CSV/JSONL manifest
    (decoded as `w2s-vqa prepare` does, with the anchors' settings: `prepare_inputs`, into
    work_dir/store); or VIDEO_ARRAYS in memory with N rows each plus "ids" (N strings) and
    optionally "media" (N of "video" / "image"; default all "video"), scored as given.
    images: "skip" (default) or "score" still images (module docstring).
    work_dir: with it, store shards and scored parts (work_dir/parts) are kept and a
    rerun resumes; without it, a folder or manifest is prepared in a temporary directory
    that is removed afterwards. config: data.* settings for `prepare_inputs`. Other
    arguments: `Scorer` and `score_store`.

    Returns a ScoreResult whose table has one row per video scored, in input order, and
    whose skipped list holds the videos that could not be decoded (first) or read, then
    the still images left out.
    Raises ScoreError (`Scorer`, `score_store`) and StoreError (`prepare_inputs`).
    """
    check_images(images)
    if work_dir and not isinstance(videos, Mapping):  # another run's work directory fails before any compiling
        store_path = (videos.path if isinstance(videos, VideoStore) else os.fspath(videos)) if (
            isinstance(videos, VideoStore) or is_store(os.fspath(videos))) else os.path.join(
            decode_dir(work_dir), "store")
        parts = workdir_lib.join(work_dir, "parts")
        if workdir_lib.exists(workdir_lib.join(parts, RUN_FILE)):
            _check_run(parts, _identity(student_key, anchors, store_path, prompt))
    scorer = Scorer(student, prompt, anchors, mesh, batch_size=batch_size)
    if isinstance(videos, Mapping):
        start = time.perf_counter()
        logits = scorer.level_logits_of(videos)
        table = score_table(list(videos["ids"]), logits, anchors, scorer.anchor_logits, mode=mode,
                            kinds=list(videos["media"]) if "media" in videos else None)
        return ScoreResult(table, [], scorer.anchor_logits, time.perf_counter() - start, len(table))
    if isinstance(videos, VideoStore) or is_store(os.fspath(videos)):
        parts = workdir_lib.join(work_dir, "parts") if work_dir else None
        return score_store(scorer, videos, mode=mode, parts_dir=parts, student_key=student_key, progress=progress,
                           images=images)
    if work_dir:
        workdir_lib.makedirs(work_dir)
    with (tempfile.TemporaryDirectory(prefix="w2s-vqa-score-") if not work_dir
          else contextlib.nullcontext(decode_dir(work_dir))) as where:
        start = time.perf_counter()
        store, skipped, (decoded_now, decoded_earlier) = _prepare_counted(
            os.fspath(videos), where, anchors, config, workers=workers, progress=progress)
        prepare_seconds = time.perf_counter() - start
        parts = workdir_lib.join(work_dir, "parts") if work_dir else None
        result = score_store(scorer, store, mode=mode, parts_dir=parts, student_key=student_key, progress=progress,
                             images=images)
        store.close()
    undecoded = [{k: str(e.get(k) or "") for k in SKIPPED_COLUMNS} for e in skipped]
    return dataclasses.replace(result, skipped=undecoded + result.skipped, decoded_now=decoded_now,
                               decoded_earlier=decoded_earlier, prepare_seconds=prepare_seconds)

