"""Scoring videos: every test video against an anchor set, then Thurstone scores.

    anchors (once per run)  vision tower + projector + motion tokens of the K anchors,
                            the decoder over the prompt up to the second video per
                            anchor (its keys and values kept: Student.prefix_cache),
                            and the K x K anchor level logits
    test videos             a global batch of G videos, sharded over the mesh's batch
                            axes (data x fsdp by default): each video's tokens once
                            (Student.encode_videos), then the rest of the prompt after
                            every anchor's cached prefix (Student.level_logits_after_prefix):
                            [K, G, 5] level logits from one jitted call
    scores                  thurstone.scores: (K + 1) x (K + 1) matrices, MAP or the
                            authors' procedure, one row per video

Against the plain path (every test-anchor pair a full forward of both videos,
`naive_level_logits`) this saves, per test video, K - 1 vision-tower passes over its
frames, K over the anchors' frames, and the decoder's work on the prompt's first half
for every pair: the prompt up to the second video is the same for every test video
against one anchor, so its keys and values are computed once per anchor and each pair
runs only the second half (the decoder's own attention, with the cached prefix as
extra keys: Qwen2Attention.after_prefix). The result equals the plain path's (the tests
compare them).

Multi-host: every process runs the same calls; each loads only its slice of each global
batch (contiguous, process p holds rows p*G/P .. (p+1)*G/P), and the level logits come
back to every process, so each returns the whole table; process 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import pandas as pd
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from w2s_vqa import prompt as prompt_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.score import thurstone
from w2s_vqa.score.anchors import VIDEO_ARRAYS, AnchorSet
from w2s_vqa.score.predict import default_batch_sharding
from w2s_vqa.store.format import STORE_FILE, VideoStore

# Columns of a score table, in order: id, [path,] SCORE_COLUMNS, then one P column per anchor.
SCORE_COLUMNS = ("score", "stderr", "low", "high", "latent")
P_PREFIX = "p_vs_"
# Files of a scoring work directory (resuming): the run's identity and one part per store shard.
RUN_FILE = "run.json"
PART_FILE = "shard-{:05d}.npz"


class ScoreError(ValueError):
    """Scoring inputs that cannot be used; the message names the file or setting."""


def p_column(anchor_id: str) -> str:
    """The column of P(test video better than anchor `anchor_id`) in a score table."""
    return f"{P_PREFIX}{anchor_id}"


def score_table(ids: Sequence[str], test_logits, anchors: AnchorSet, anchor_logits, *, mode: str = "map",
                paths: Sequence[str] | None = None) -> pd.DataFrame:
    """The score table of N videos from their level logits (thurstone.scores).

    ids: N video ids; test_logits [N, K, 5] ([t, k]: anchor k first, video t second);
    anchor_logits [K, K, 5] ([i, j]: anchor i first, anchor j second); paths: N source
    paths, or None. Columns: id, path (when given), score, stderr, low, high, latent
    (float64; stderr, low and high are NaN in `paper` mode), then p_vs_<anchor id> per
    anchor (float64, P at temperature 1).
    """
    result = thurstone.scores(anchor_logits, test_logits, anchors.mos, mode=mode)
    table = pd.DataFrame({"id": [str(i) for i in ids]})
    if paths is not None:
        table["path"] = [str(p) for p in paths]
    for column in SCORE_COLUMNS:
        table[column] = getattr(result, column)
    for k, anchor_id in enumerate(anchors.ids):
        table[p_column(anchor_id)] = result.p[:, k]
    return table


def _place(tree, sharding: NamedSharding):
    """Leaves already spread over the mesh's devices stay; any other goes to `sharding`
    (every process passes the same value)."""
    devices = set(sharding.mesh.devices.flat)

    def one(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding.device_set == devices:
            return leaf
        if jax.process_count() == 1:
            return jax.device_put(leaf, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(one, tree)


def _host(x: jax.Array) -> np.ndarray:
    return np.asarray(jax.device_get(x))


class Scorer:
    """A student, its pair prompt and an anchor set, ready to score batches of videos.

    Construction computes, once: the anchors' tokens, each anchor's cached prompt prefix
    and the anchors' level logits (`anchor_logits`, float32 [K, K, 5], [i, j]: anchor i
    first, anchor j second). `level_logits` then runs test videos.

    student: a Student (parameters placed on the mesh stay there; others are replicated).
    prompt: its PairPrompt (build_pair_prompt). anchors: an AnchorSet whose videos fit the
    student (AnchorError otherwise). mesh: the device mesh. batch_size: the global batch
    of test videos per call, a multiple of the parts the batch is split into and of the
    process count (ScoreError otherwise). batch_sharding: how a batch lies on the mesh
    (default: predict.default_batch_sharding, data x fsdp).
    """

    def __init__(self, student: student_lib.Student, prompt: prompt_lib.PairPrompt, anchors: AnchorSet,
                 mesh: jax.sharding.Mesh, *, batch_size: int = 8, batch_sharding: NamedSharding | None = None):
        anchors.check_student(student.cfg)
        self.anchors, self.mesh, self.prompt = anchors, mesh, prompt
        self.batch_sharding = batch_sharding if batch_sharding is not None else default_batch_sharding(mesh)
        spec = self.batch_sharding.spec[0] if len(self.batch_sharding.spec) else None
        axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
        parts = int(np.prod([mesh.shape[a] for a in axes]))
        processes = jax.process_count()
        if batch_size < 1 or batch_size % parts or batch_size % processes:
            raise ScoreError(f"batch_size={batch_size} must be a positive multiple of the {parts} parts the batch is "
                             f"split into ({self.batch_sharding.spec}) and of the {processes} processes")
        self.batch_size = batch_size
        split = student_lib.split_pair_prompt(prompt.input_ids, prompt.video_token_id, prompt.tokens_per_video)
        prefix_ids, suffix_ids = np.asarray(prompt.input_ids[:split]), np.asarray(prompt.input_ids[split:])
        level_ids = tuple(int(i) for i in prompt.level_token_ids)
        graphdef, state = nnx.split(student)
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.params = _place(state, self.replicated)

        def tokens(model, videos):
            return model.encode_videos(videos["frames"], videos["motion"], videos["frame_mask"],
                                       videos["motion_mask"])

        def anchor_step(params, videos):
            model = nnx.merge(graphdef, params)
            anchor_tokens, valid = tokens(model, videos)
            cache = model.prefix_cache(prefix_ids, anchor_tokens, valid)
            return cache, model.level_logits_after_prefix(level_ids, cache, suffix_ids, anchor_tokens, valid)

        def test_step(params, cache, videos):
            model = nnx.merge(graphdef, params)
            test_tokens, valid = tokens(model, videos)
            return model.level_logits_after_prefix(level_ids, cache, suffix_ids, test_tokens, valid)

        self._test_step = jax.jit(test_step, out_shardings=self.replicated)
        anchor_videos = _place({k: np.asarray(anchors.videos[k]) for k in VIDEO_ARRAYS}, self.replicated)
        self.cache, logits = jax.jit(anchor_step, out_shardings=self.replicated)(self.params, anchor_videos)
        self.anchor_logits = _host(logits).astype(np.float32)

    @property
    def local_batch(self) -> int:
        """Videos per call that this process loads."""
        return self.batch_size // jax.process_count()

    def local_rows(self, batch: int, count: int) -> np.ndarray:
        """int [local_batch]: the indices (0..count-1) of the videos this process loads for
        global batch number `batch` of `count` videos; past the end, the last index again."""
        start = batch * self.batch_size + jax.process_index() * self.local_batch
        return np.minimum(np.arange(start, start + self.local_batch), count - 1)

    def dispatch(self, local_videos: Mapping[str, np.ndarray]) -> jax.Array:
        """Start one global batch: local_videos holds this process's VIDEO_ARRAYS rows
        ([local_batch, ...] each, as a store's records: frames uint8 [.., F, S, S, 3],
        frame_mask bool [.., F], motion float32 [.., M, D], motion_mask bool [.., M]).
        Returns the [K, batch_size, 5] level logits, not yet fetched (`fetch`)."""
        videos = {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(local_videos[k]))
                  for k in VIDEO_ARRAYS}
        return self._test_step(self.params, self.cache, videos)

    @staticmethod
    def fetch(result: jax.Array) -> np.ndarray:
        """float32 [batch_size, K, 5] of a `dispatch` result, on every process."""
        return _host(result).transpose(1, 0, 2).astype(np.float32)

    def level_logits(self, load: Callable[[np.ndarray], Mapping[str, np.ndarray]], count: int,
                     on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 [count, K, 5] level logits of `count` videos ([t, k]: anchor k first, video t second).

        load(indices) returns the VIDEO_ARRAYS of those videos (indices into 0..count-1,
        `local_rows`: only this process's rows of each global batch). The host loads
        batch n + 1 while the devices run batch n. on_batch(videos) is called after each
        global batch with the number of real videos in it.
        """
        out = np.full((count, len(self.anchors), 5), np.nan, np.float32)
        batches = -(-count // self.batch_size)
        pending = None
        for b in range(batches):
            result = self.dispatch(load(self.local_rows(b, count)))
            if pending is not None:
                self._collect(out, *pending, on_batch)
            pending = (b, result)
        if pending is not None:
            self._collect(out, *pending, on_batch)
        return out

    def _collect(self, out, b, result, on_batch):
        start = b * self.batch_size
        real = min(self.batch_size, len(out) - start)
        out[start:start + real] = self.fetch(result)[:real]
        if on_batch is not None:
            on_batch(real)

    def level_logits_of(self, videos: Mapping[str, np.ndarray]) -> np.ndarray:
        """`level_logits` of videos held in memory: VIDEO_ARRAYS with N rows each (every
        process passes all N). Returns float32 [N, K, 5]."""
        count = len(videos["frames"])
        return self.level_logits(lambda rows: {k: np.asarray(videos[k])[rows] for k in VIDEO_ARRAYS}, count)


def naive_level_logits(student: student_lib.Student, prompt: prompt_lib.PairPrompt, anchors: AnchorSet,
                       videos: Mapping[str, np.ndarray], *, pairs_per_call: int = 5,
                       forward: Callable | None = None) -> np.ndarray:
    """The plain path, float32 [N, K, 5]: every (anchor k first, video t second) pair a full
    `Student.level_logits` of both videos, `pairs_per_call` pairs per jitted call on the
    default device. The reference the scorer must equal, and the benchmark's baseline.
    `forward` (params, batch) -> [B, 5] reuses a compiled one (`naive_forward`)."""
    forward = forward or naive_forward(student, prompt)
    params = nnx.split(student)[1]
    n, k = len(videos["frames"]), len(anchors)
    pairs = [(t, a) for t in range(n) for a in range(k)]
    ids, mask = prompt.input_ids[None], np.ones((1, prompt.length), np.int32)
    out = np.zeros((n, k, 5), np.float32)
    for start in range(0, len(pairs), pairs_per_call):
        chunk = pairs[start:start + pairs_per_call]
        chunk = chunk + [chunk[-1]] * (pairs_per_call - len(chunk))
        batch = {"input_ids": np.repeat(ids, pairs_per_call, 0), "attention_mask": np.repeat(mask, pairs_per_call, 0)}
        for name, field in (("pixel_values", "frames"), ("frame_mask", "frame_mask"), ("motion", "motion"),
                            ("motion_mask", "motion_mask")):
            batch[name] = np.stack([np.stack([anchors.videos[field][a], videos[field][t]]) for t, a in chunk])
        logits = np.asarray(forward(params, batch))
        for (t, a), row in zip(chunk, logits):
            out[t, a] = row
    return out


def naive_forward(student: student_lib.Student, prompt: prompt_lib.PairPrompt) -> Callable:
    """jit of (params, batch of MODEL_INPUTS) -> [B, 5] level logits, for `naive_level_logits`."""
    graphdef = nnx.split(student)[0]
    level_ids = tuple(int(i) for i in prompt.level_token_ids)

    def forward(params, batch):
        model = nnx.merge(graphdef, params)
        return model.level_logits(level_ids, **{k: batch[k] for k in student_lib.MODEL_INPUTS})

    return jax.jit(forward)


# ---------------------------------------------------------------------------- stores, folders, manifests
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
    from w2s_vqa.config import defaults
    from w2s_vqa.store.prepare import prepare

    config = (config if config is not None else defaults()).copy_and_resolve_references()
    for key, value in anchors.settings.items():
        if value is not None and key in config.data:
            config.data[key] = value
    config.data.distortions = ""
    store_dir = os.path.join(work_dir, "store")
    if jax.process_index() == 0:
        report = prepare(config, inputs, store_dir, workers=workers, progress=progress)
        skipped = report.errors
    _barrier("prepare")
    if jax.process_index() != 0:
        skipped = _read_errors(store_dir)
    return VideoStore(store_dir), skipped


def _read_errors(store_dir: str) -> list[dict[str, str]]:
    from w2s_vqa.store.format import ERRORS_FILE

    path = os.path.join(store_dir, ERRORS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"w2s_vqa.score.{name}")


def _agree(flags: np.ndarray) -> np.ndarray:
    """Process 0's `flags` on every process (which shards are done, read from its disk)."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(flags.astype(np.int32))).astype(bool)


def _identity(student_key: str, anchors: AnchorSet, store_path: str, prompt: prompt_lib.PairPrompt) -> dict[str, Any]:
    """What a work directory's parts depend on."""
    return {"student": student_key, "anchors": anchors.digest(), "store": os.path.abspath(store_path),
            "prompt": [int(i) for i in prompt.input_ids]}


def _check_run(parts_dir: str, identity: dict[str, Any]) -> None:
    """A work directory serves one run: the same student, anchors and store."""
    path = os.path.join(parts_dir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != identity:
            changed = sorted(k for k in set(existing) | set(identity) if existing.get(k) != identity.get(k))
            raise ScoreError(f"{parts_dir}: holds the scores of another run (differs in: {', '.join(changed)}); "
                             "choose another work directory or delete it")
    elif jax.process_index() == 0:
        os.makedirs(parts_dir, exist_ok=True)
        _write_atomic(path, lambda f: f.write(json.dumps(identity, indent=1, sort_keys=True)))


def _write_atomic(path: str, write, binary: bool = False) -> None:
    temp = path + ".tmp"
    with open(temp, "wb" if binary else "w") as f:
        write(f)
    os.replace(temp, path)


def score_store(scorer: Scorer, store: VideoStore | str, *, mode: str = "map", ids: Sequence[str] | None = None,
                parts_dir: str | None = None, student_key: str = "", progress: bool = False) -> pd.DataFrame:
    """Score the videos of a store (`ids`, default all of its index, in index order): a
    VideoStore, its directory, or another reader with its API (a built TFDS evaluation set,
    w2s_vqa.datasets.TfdsVideoSource).

    Works shard by shard of the store. With `parts_dir`, each shard's level logits are
    saved there when done (shard-NNNNN.npz, by process 0) and a rerun loads them instead
    of scoring them again: a killed run loses at most the shard in progress. parts_dir
    serves one run (RUN_FILE: `student_key`, the anchors' digest, the store); ScoreError
    for another's. A video whose record cannot be read is skipped.

    Returns `score_table`'s table (with the index's `path`), in index order, and in
    `.attrs`: "skipped" (list of {id, path, reason}), "anchor_logits" (nested lists [K, K, 5]),
    "seconds" (wall time of the scoring, loading included) and "scored_now" (videos
    scored in this call, not loaded from parts). Every process returns it.
    """
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
    shards = sorted(index["shard"].unique().tolist())
    if parts_dir:
        _check_run(parts_dir, _identity(student_key, scorer.anchors, store.path, scorer.prompt))
        _barrier("run")
    done = np.asarray([bool(parts_dir) and os.path.exists(os.path.join(parts_dir, PART_FILE.format(s)))
                       for s in shards])
    done = _agree(done)

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
            part = os.path.join(parts_dir, PART_FILE.format(shard)) if parts_dir else None
            if is_done:
                with np.load(part, allow_pickle=False) as data:
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
            shard_failed = _gather_failed(shard_failed)
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
                        mode=mode, paths=paths)
    path_of = dict(zip(index["id"].astype(str), index["path"].fillna("").astype(str))) if "path" in index else {}
    table.attrs["skipped"] = [{"id": i, "path": path_of.get(i, ""), "reason": r} for i, r in sorted(failed.items())]
    table.attrs["anchor_logits"] = scorer.anchor_logits.tolist()  # JSON-able: pandas writes attrs into Parquet
    table.attrs["seconds"] = seconds
    table.attrs["scored_now"] = scored_now
    return table


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


def _gather_failed(failed: dict[str, str]) -> dict[str, str]:
    if jax.process_count() == 1:
        return dict(failed)
    from jax.experimental import multihost_utils

    # Fixed-size exchange: every process sends its JSON, padded to the longest.
    text = json.dumps(failed).encode()
    length = int(np.max(multihost_utils.process_allgather(np.asarray([len(text)], np.int32))))
    buffer = np.zeros((length,), np.uint8)
    buffer[:len(text)] = np.frombuffer(text, np.uint8)
    merged: dict[str, str] = {}
    for row in np.asarray(multihost_utils.process_allgather(buffer)).reshape(jax.process_count(), length):
        merged.update(json.loads(bytes(row).rstrip(b"\0").decode() or "{}"))
    return merged


def score_videos(student: student_lib.Student, prompt: prompt_lib.PairPrompt, anchors: AnchorSet, videos,
                 mesh: jax.sharding.Mesh, *, batch_size: int = 8, mode: str = "map", work_dir: str | None = None,
                 config=None, student_key: str = "", workers: int = 0, progress: bool = False) -> pd.DataFrame:
    """Scores of videos against an anchor set: one row per video, in input order.

    videos: a VideoStore or store directory; a folder of videos or a CSV/JSONL manifest
    (decoded as `w2s-vqa prepare` does, with the anchors' settings: `prepare_inputs`, into
    work_dir/store); or VIDEO_ARRAYS in memory with N rows each plus "ids" (N strings).
    work_dir: with it, store shards and scored parts (work_dir/parts) are kept and a
    rerun resumes; without it, a folder or manifest is prepared in a temporary directory
    that is removed afterwards. config: data.* settings for `prepare_inputs`. Other
    arguments: `Scorer` and `score_store`.

    Returns `score_table`'s table; `.attrs` as `score_store` gives them ("skipped" lists
    videos that could not be decoded or read, with the reason).
    """
    if work_dir and not isinstance(videos, Mapping):  # another run's work directory fails before any compiling
        store_path = (videos.path if isinstance(videos, VideoStore) else os.fspath(videos)) if (
            isinstance(videos, VideoStore) or is_store(os.fspath(videos))) else os.path.join(work_dir, "store")
        parts = os.path.join(work_dir, "parts")
        if os.path.exists(os.path.join(parts, RUN_FILE)):
            _check_run(parts, _identity(student_key, anchors, store_path, prompt))
    scorer = Scorer(student, prompt, anchors, mesh, batch_size=batch_size)
    if isinstance(videos, Mapping):
        start = time.perf_counter()
        logits = scorer.level_logits_of(videos)
        table = score_table(list(videos["ids"]), logits, anchors, scorer.anchor_logits, mode=mode)
        table.attrs.update(skipped=[], anchor_logits=scorer.anchor_logits.tolist(), seconds=time.perf_counter() - start,
                           scored_now=len(table))
        return table
    if isinstance(videos, VideoStore) or is_store(os.fspath(videos)):
        parts = os.path.join(work_dir, "parts") if work_dir else None
        return score_store(scorer, videos, mode=mode, parts_dir=parts, student_key=student_key, progress=progress)
    with (tempfile.TemporaryDirectory(prefix="w2s-vqa-score-") if work_dir is None
          else _Kept(work_dir)) as where:
        store, skipped = prepare_inputs(os.fspath(videos), where, anchors, config, workers=workers,
                                        progress=progress)
        parts = os.path.join(where, "parts") if work_dir else None
        table = score_store(scorer, store, mode=mode, parts_dir=parts, student_key=student_key, progress=progress)
        store.close()
    table.attrs["skipped"] = [{"id": e.get("id", ""), "path": e.get("path", ""), "reason": e.get("reason", "")}
                              for e in skipped] + table.attrs["skipped"]
    return table


@dataclasses.dataclass
class _Kept:
    path: str

    def __enter__(self) -> str:
        os.makedirs(self.path, exist_ok=True)
        return self.path

    def __exit__(self, *exc) -> None:
        return None
