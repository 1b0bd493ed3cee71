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

Against the plain path (every test-anchor pair a full forward of both videos:
score.reference) this saves, per test video, K - 1 vision-tower passes over its
frames, K over the anchors' frames, and the decoder's work on the prompt's first half
for every pair: the prompt up to the second video is the same for every test video
against one anchor, so its keys and values are computed once per anchor and each pair
runs only the second half (the decoder's own attention, with the cached prefix as
extra keys: Qwen2Attention.after_prefix). The result equals the plain path's (the tests
compare them).

Multi-host: every process runs the same calls; each loads only its slice of each global
batch (contiguous, process p holds rows p*G/P .. (p+1)*G/P), and the level logits come
back to every process, so each returns the whole table.

Scoring stores, folders and manifests (resumable, with the videos skipped and why) is
score.batch; loading a student for scoring is score.student_source.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
import pandas as pd
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from w2s_vqa import prompt as prompt_lib
from w2s_vqa.models import stack as stack_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.score import thurstone
from w2s_vqa.score.anchors import VIDEO_ARRAYS, AnchorSet
from w2s_vqa.score.predict import batch_parts, batch_size_problem, default_batch_sharding

# Columns of a score table, in order: id, [path,] kind, SCORE_COLUMNS, then one P column per anchor.
SCORE_COLUMNS = ("score", "stderr", "low", "high", "latent")
P_PREFIX = "p_vs_"
# Test videos per global batch, before rounding up to what the mesh and the processes divide.
DEFAULT_BATCH_SIZE = 8


class ScoreError(ValueError):
    """Scoring inputs that cannot be used; the message names the file or setting."""


def p_column(anchor_id: str) -> str:
    """The column of P(test video better than anchor `anchor_id`) in a score table."""
    return f"{P_PREFIX}{anchor_id}"


def score_table(ids: Sequence[str], test_logits, anchors: AnchorSet, anchor_logits, *, mode: str = "map",
                paths: Sequence[str] | None = None, kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """The score table of N videos from their level logits (thurstone.scores).

    ids: N video ids; test_logits [N, K, 5] ([t, k]: anchor k first, video t second);
    anchor_logits [K, K, 5] ([i, j]: anchor i first, anchor j second); paths: N source
    paths, or None; kinds: N of "video" / "image" (a still image, w2s_vqa.video.is_still_image),
    default every one "video". Columns: id, path (when given), kind, score, stderr, low,
    high, latent (float64; stderr, low and high are NaN in `paper` mode), then
    p_vs_<anchor id> per anchor (float64, P at temperature 1).
    """
    result = thurstone.scores(anchor_logits, test_logits, anchors.mos, mode=mode)
    table = pd.DataFrame({"id": [str(i) for i in ids]})
    if paths is not None:
        table["path"] = [str(p) for p in paths]
    table["kind"] = [str(k) for k in kinds] if kinds is not None else "video"
    for column in SCORE_COLUMNS:
        table[column] = getattr(result, column)
    for k, anchor_id in enumerate(anchors.ids):
        table[p_column(anchor_id)] = result.p[:, k]
    return table


def default_batch_size(mesh: jax.sharding.Mesh, batch_sharding: NamedSharding | None = None) -> int:
    """DEFAULT_BATCH_SIZE test videos per global batch, rounded up to a multiple of the
    parts the batch is split into (`batch_sharding`, default predict.default_batch_sharding:
    data x fsdp) and of the process count, so that `Scorer` accepts it."""
    sharding = batch_sharding if batch_sharding is not None else default_batch_sharding(mesh)
    unit = math.lcm(batch_parts(sharding), jax.process_count())
    return unit * -(-DEFAULT_BATCH_SIZE // unit)


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
    process count (ScoreError otherwise; default `default_batch_size`). batch_sharding: how a batch lies on the mesh
    (default: predict.default_batch_sharding, data x fsdp).
    """

    def __init__(self, student: student_lib.Student, prompt: prompt_lib.PairPrompt, anchors: AnchorSet,
                 mesh: jax.sharding.Mesh, *, batch_size: int | None = None,
                 batch_sharding: NamedSharding | None = None):
        anchors.check_student(student.cfg)
        self.anchors, self.mesh, self.prompt = anchors, mesh, prompt
        self.batch_sharding = batch_sharding if batch_sharding is not None else default_batch_sharding(mesh)
        if batch_size is None:
            batch_size = default_batch_size(mesh, self.batch_sharding)
        problem = batch_size_problem(batch_size, self.batch_sharding)
        if problem:
            raise ScoreError(f"{problem}; e.g. {default_batch_size(mesh, self.batch_sharding)}")
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

        self._test_step = jax.jit(stack_lib.batch_sharded(test_step, self.batch_sharding),
                                  out_shardings=self.replicated)
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
