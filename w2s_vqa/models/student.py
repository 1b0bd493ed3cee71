"""The student: LLaVA-OneVision's video path plus the paper's motion branch.

Per video (transformers' `LlavaOnevisionModel.get_video_features`): every frame
through SigLIP, hidden states of `vision_feature_layer`, the projector, 2x
bilinear pooling of the patch grid, frames concatenated, one image-newline
vector. Then ours (docs/method.md "Motion branch"): one token per one-second motion
chunk, Linear(256->H) - GELU - Linear(H->H). Those `tokens_per_video` vectors
replace, in order, the `video_token_index` placeholders of each sample.

Shapes are fixed under jit: every sample holds the same number of videos and
placeholders. A video shorter than its frame or chunk slots has a mask; the
tokens of masked slots are hidden from attention (their keys are masked) rather
than removed, so every batch compiles once.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_vqa import prompt
# PIXEL_MEAN, PIXEL_STD: SigLIP's pixel normalization; its home is the JAX-free models/config.py,
# which the PyTorch scorer and the exported processor files read too.
from w2s_vqa.models.config import PIXEL_MEAN, PIXEL_STD, StudentConfig, check_feature_layers
from w2s_vqa.models.layers import Linear, activation, initial_value, param
from w2s_vqa.models.qwen2 import Qwen2Model
from w2s_vqa.models.siglip import SiglipVisionTower
from w2s_vqa.models.stack import LAYER_AXIS

# What Student.level_logits reads of a batch (w2s_vqa.pipeline gives their shapes and dtypes).
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "frame_mask", "motion", "motion_mask")


def normalize_pixels(pixels: jax.Array) -> jax.Array:
    """uint8 RGB in [0, 255] -> float32 as SigLIP's image processor gives them."""
    return (pixels.astype(jnp.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] weights of torch's bilinear resize (align_corners=False, no antialias)."""
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in), np.float64)
    for o in range(size_out):
        src = max((o + 0.5) * scale - 0.5, 0.0)
        lo = min(int(math.floor(src)), size_in - 1)
        hi = min(lo + 1, size_in - 1)
        frac = src - lo
        weights[o, lo] += 1.0 - frac
        weights[o, hi] += frac
    return weights.astype(np.float32)


class Projector(nnx.Module):
    """Linear - activation - Linear, the shape of both the multimodal and the motion projector."""

    def __init__(self, din: int, dout: int, *, act: str, bias: bool, in_axis: str | None, dtype, std: float,
                 rngs: nnx.Rngs):
        self.linear_1 = Linear(din, dout, axes=(in_axis, "mlp"), bias=bias, dtype=dtype, std=std, rngs=rngs)
        self.linear_2 = Linear(dout, dout, axes=("mlp", "embed"), bias=bias, dtype=dtype, std=std, rngs=rngs)
        self.act = activation(act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))


class Student(nnx.Module):
    def __init__(self, cfg: StudentConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.cfg = cfg
        self.dtype = dtype
        v, t = cfg.vision, cfg.text
        self.feature_indices = check_feature_layers(cfg.feature_layers, v.num_hidden_layers)
        towers = dict(dtype=dtype, remat=cfg.remat, scan_layers=cfg.scan_layers, attention=cfg.attention, rngs=rngs)
        self.vision_tower = SiglipVisionTower(v, **towers)
        self.multi_modal_projector = Projector(
            v.hidden_size * len(self.feature_indices), t.hidden_size, act=cfg.projector_hidden_act,
            bias=cfg.multimodal_projector_bias, in_axis="vision_embed", dtype=dtype, std=t.initializer_range, rngs=rngs)
        self.image_newline = param(rngs, (t.hidden_size,), ("embed",), std=t.hidden_size**-0.5)
        self.language_model = Qwen2Model(t, **towers)
        self.lm_head = None if t.tie_word_embeddings else Linear(
            t.hidden_size, t.vocab_size, axes=("embed", "vocab"), bias=False, dtype=dtype, std=t.initializer_range,
            rngs=rngs)
        self.motion_projector = Projector(cfg.motion_dim, t.hidden_size, act="gelu", bias=True, in_axis=None,
                                          dtype=dtype, std=t.initializer_range, rngs=rngs)

    # ---------------------------------------------------------------- video tokens
    def frame_features(self, frames: jax.Array) -> jax.Array:
        """[N, H, W, C] normalized frames -> pooled projected features [N, pooled_grid**2, D]."""
        hidden = self.vision_tower.hidden_states(frames, self.feature_indices)
        x = jnp.concatenate(hidden, axis=-1) if len(hidden) > 1 else hidden[0]
        if self.cfg.vision_feature_select_strategy == "default":
            x = x[:, 1:]
        x = self.multi_modal_projector(x)
        n, _, d = x.shape
        g = self.cfg.vision.grid_size
        pool = jnp.asarray(bilinear_matrix(g, self.cfg.pooled_grid), x.dtype)
        x = jnp.einsum("oh,nhwd,pw->nopd", pool, x.reshape(n, g, g, d), pool)
        return x.reshape(n, -1, d)

    def video_tokens(self, pixel_values: jax.Array, motion: jax.Array | None = None) -> jax.Array:
        """pixel_values [B, V, F, H, W, C] (uint8 or normalized float), motion [B, V, M, 256]
        -> [B, V * tokens_per_video, D]: frame tokens, newline, motion tokens per video."""
        b, nv, f = pixel_values.shape[:3]
        frames = pixel_values.reshape(b * nv * f, *pixel_values.shape[3:])
        if frames.dtype == jnp.uint8:
            frames = normalize_pixels(frames)
        feats = self.frame_features(frames)
        d = feats.shape[-1]
        feats = feats.reshape(b * nv, -1, d)
        newline = jnp.broadcast_to(self.image_newline[...].astype(feats.dtype), (b * nv, 1, d))
        parts = [feats, newline]
        m = self.cfg.num_motion_chunks
        if m:
            if motion is None:
                motion = jnp.zeros((b, nv, m, self.cfg.motion_dim), self.dtype)
            parts.append(self.motion_projector(motion.reshape(b * nv, m, -1)).astype(feats.dtype))
        return jnp.concatenate(parts, axis=1).reshape(b, -1, d)

    def video_token_mask(self, batch: int, num_videos: int, frame_mask=None, motion_mask=None) -> jax.Array:
        """[B, V * tokens_per_video] bool: False on tokens of masked frames and chunks."""
        cfg = self.cfg
        if frame_mask is None:
            frame_mask = jnp.ones((batch, num_videos, cfg.num_frames), bool)
        if motion_mask is None:
            motion_mask = jnp.ones((batch, num_videos, cfg.num_motion_chunks), bool)
        frame_tokens = jnp.repeat(frame_mask.astype(bool), cfg.tokens_per_frame, axis=-1)
        newline = jnp.ones((batch, num_videos, 1), bool)
        return jnp.concatenate([frame_tokens, newline, motion_mask.astype(bool)], axis=-1).reshape(batch, -1)

    # ---------------------------------------------------------------- full forward
    def embed(self, input_ids, attention_mask=None, pixel_values=None, motion=None, frame_mask=None,
              motion_mask=None):
        """Input embeddings with video tokens placed, and the attention mask that hides masked slots."""
        embeds = self.language_model.embed_tokens(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if pixel_values is None:
            return embeds, attention_mask
        b, nv = pixel_values.shape[:2]
        tokens = self.video_tokens(pixel_values, motion).astype(embeds.dtype)
        valid = self.video_token_mask(b, nv, frame_mask, motion_mask)
        embeds, keep = self.place_video_tokens(input_ids, embeds, tokens, valid)
        return embeds, attention_mask * keep.astype(attention_mask.dtype)

    def place_video_tokens(self, input_ids, embeds, tokens, valid) -> tuple[jax.Array, jax.Array]:
        """(embeds with the k-th placeholder of each sample replaced by its k-th video token,
        keep [B, L] bool: False on the placeholders of masked slots).

        input_ids [B, L]; embeds [B, L, D]; tokens [B, T, D] and valid [B, T] bool, the
        sample's videos' tokens in order (at least as many as it has placeholders).
        """
        is_video = input_ids == self.cfg.video_token_index
        # The k-th placeholder of a sample takes that sample's k-th video token.
        slot = jnp.clip(jnp.cumsum(is_video, axis=1) - 1, 0, tokens.shape[1] - 1)
        placed = jnp.take_along_axis(tokens.astype(embeds.dtype), slot[..., None], axis=1)
        embeds = jnp.where(is_video[..., None], placed, embeds)
        keep = jnp.where(is_video, jnp.take_along_axis(valid, slot, axis=1), True)
        return embeds, keep

    def hidden_states(self, input_ids, attention_mask=None, pixel_values=None, motion=None, frame_mask=None,
                      motion_mask=None, position_ids=None):
        embeds, mask = self.embed(input_ids, attention_mask, pixel_values, motion, frame_mask, motion_mask)
        return self.language_model(embeds, mask, position_ids)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Vocabulary logits of hidden states (tied to the embeddings when the config says so)."""
        if self.lm_head is None:
            return self.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def __call__(self, input_ids, attention_mask=None, pixel_values=None, motion=None, frame_mask=None,
                 motion_mask=None, position_ids=None):
        """Vocabulary logits [B, L, V], as LlavaOnevisionForConditionalGeneration gives them."""
        return self.logits(self.hidden_states(input_ids, attention_mask, pixel_values, motion, frame_mask,
                                              motion_mask, position_ids))

    # ---------------------------------------------------------------- readout
    def level_logits(self, level_token_ids: Sequence[int], input_ids, attention_mask=None, pixel_values=None,
                     motion=None, frame_mask=None, motion_mask=None) -> jax.Array:
        """[B, 5] logits of the level tokens at the answer position (the last real token).

        Only five rows of the output layer are used: the readout never builds
        the [B, L, vocab] logits.
        """
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        hidden = self.hidden_states(input_ids, attention_mask, pixel_values, motion, frame_mask, motion_mask)
        length = attention_mask.shape[1]
        last = length - 1 - jnp.argmax(attention_mask[:, ::-1] > 0, axis=1)
        answer = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        return self.level_readout(level_token_ids, answer)

    def level_readout(self, level_token_ids: Sequence[int], answer: jax.Array) -> jax.Array:
        """float32 [..., 5]: the level tokens' logits of final hidden states answer [..., D]."""
        ids = jnp.asarray(level_token_ids)
        if self.lm_head is None:
            rows = self.language_model.embed_tokens.embedding[...][ids]
        else:
            rows = self.lm_head.kernel[...][:, ids].T
        return jnp.dot(answer.astype(jnp.float32), rows.astype(jnp.float32).T)

    def preference(self, level_token_ids: Sequence[int], *args, **kwargs) -> jax.Array:
        """P(second video better than first) per pair, [B]."""
        return prompt.preference(self.level_logits(level_token_ids, *args, **kwargs))

    # ---------------------------------------------------------------- scoring against anchors
    # Scoring compares each test video (second) with K anchors (first). Its video tokens do
    # not depend on the anchor, and the prompt up to the second video does not depend on
    # the test video: `encode_videos` runs the vision tower once per video, `prefix_cache`
    # runs the decoder once per anchor over the prompt up to the second video and keeps
    # its keys and values, and `level_logits_after_prefix` runs only the rest of the
    # prompt, the second video's tokens and the question, for every (anchor, test) pair.
    # Together they give `level_logits` on the joined pair (the scoring tests check it).
    def encode_videos(self, pixel_values, motion=None, frame_mask=None, motion_mask=None
                      ) -> tuple[jax.Array, jax.Array]:
        """Each video's tokens, the vision tower run once per frame.

        pixel_values [N, F, H, W, C] (uint8 or normalized float), motion [N, M, motion_dim],
        frame_mask [N, F] and motion_mask [N, M] bool (None: all valid). Returns tokens
        [N, tokens_per_video, D] in the compute dtype (frame tokens, newline, motion tokens,
        as `video_tokens`) and valid [N, tokens_per_video] bool (`video_token_mask`).
        """
        n = pixel_values.shape[0]
        tokens = self.video_tokens(pixel_values[:, None], None if motion is None else motion[:, None])
        valid = self.video_token_mask(n, 1, None if frame_mask is None else frame_mask[:, None],
                                      None if motion_mask is None else motion_mask[:, None])
        return tokens, valid

    def prefix_cache(self, prefix_ids, first_tokens, first_valid) -> PrefixCache:
        """The decoder's keys and values over the prompt up to the second video, per first video.

        prefix_ids [P] int: the pair prompt's ids before the second video's placeholders
        (`split_pair_prompt`), holding the first video's tokens_per_video placeholders;
        first_tokens [A, T, D], first_valid [A, T]: `encode_videos` of A first videos.
        """
        a = first_tokens.shape[0]
        ids = jnp.broadcast_to(jnp.asarray(prefix_ids)[None], (a, prefix_ids.shape[0]))
        embeds, keep = self.place_video_tokens(ids, self.language_model.embed_tokens(ids), first_tokens, first_valid)
        keys, values = self.language_model.prefix_keys_values(embeds, keep)
        return PrefixCache(keys=keys, values=values, mask=keep)

    def level_logits_after_prefix(self, level_token_ids: Sequence[int], cache: PrefixCache, suffix_ids,
                                  second_tokens, second_valid) -> jax.Array:
        """float32 [A, B, 5]: the level logits of every pair (first video a of the cache,
        second video b), from the cached prefix and the rest of the prompt.

        suffix_ids [S] int: the prompt from the second video's first placeholder on
        (`split_pair_prompt`), which ends at the answer position; second_tokens [B, T, D],
        second_valid [B, T]: `encode_videos` of B second videos. Equals `level_logits` on
        the joined prompt with both videos' pixels and motion.
        """
        b = second_tokens.shape[0]
        ids = jnp.broadcast_to(jnp.asarray(suffix_ids)[None], (b, suffix_ids.shape[0]))
        embeds, keep = self.place_video_tokens(ids, self.language_model.embed_tokens(ids), second_tokens, second_valid)
        hidden = self.language_model.after_prefix(embeds, keep, (cache.keys, cache.values), cache.mask)
        return self.level_readout(level_token_ids, hidden[:, :, -1])


class PrefixCache(NamedTuple):
    """Keys and values of the decoder over a prompt prefix (`Student.prefix_cache`), a pytree.

    keys, values: one [A, P, kv_heads, head_dim] array per decoder layer (keys rotated), or
    with scanned layers one [layers, A, P, kv_heads, head_dim] array each;
    mask [A, P] bool: False on the placeholders of masked video slots.
    """

    keys: tuple
    values: tuple
    mask: jax.Array


def split_pair_prompt(input_ids, video_token_id: int, tokens_per_video: int) -> int:
    """Where the second video's placeholders start in a pair prompt's ids [L]: the prefix
    input_ids[:split] holds the first video's, the rest the second's and the question.

    Raises ValueError unless the prompt holds exactly two runs of tokens_per_video
    placeholders.
    """
    ids = np.asarray(input_ids)
    where = np.flatnonzero(ids == video_token_id)
    t = int(tokens_per_video)
    if len(where) != 2 * t or not (np.diff(where[:t]) == 1).all() or not (np.diff(where[t:]) == 1).all():
        raise ValueError(f"the pair prompt must hold two runs of {t} video placeholders (id {video_token_id}), "
                         f"found {len(where)} placeholders")
    return int(where[t])


def create(cfg: StudentConfig, seed: int = 0, shardings: Mapping[str, jax.sharding.Sharding] | None = None
           ) -> Student:
    """A randomly initialized student, drawn tensor by tensor.

    Each parameter comes from a small compiled program (one per distinct shape
    and initializer, so identical layers share it) that writes it straight into
    its sharding (`shardings`, keyed by dotted parameter path; default
    placement otherwise). One program for the whole model compiles far slower
    at the 0.5b and 7b shapes, and its compile time grows with depth
    (docs/2026-11-gpu-sessions.md).
    Tensor i is drawn with `fold_in(key(seed), i)`, so a seed gives the same
    student whatever the mesh (not across cfg.scan_layers, which numbers the tensors
    otherwise); a stacked tensor's layers are drawn from splits of its key.
    """
    graphdef, state = nnx.split(create_abstract(cfg))
    root = jax.random.key(seed)
    flat = []
    for index, (path, variable) in enumerate(nnx.to_flat_state(state)):
        init, std = variable.get_metadata()["initializer"]
        sharding = (shardings or {}).get(".".join(str(p) for p in path))
        stacked = variable.get_metadata()["logical_axes"][:1] == (LAYER_AXIS,)
        flat.append((path, variable.replace(_drawer(tuple(variable.shape), init, std, sharding, stacked)(root, index))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


@functools.lru_cache(maxsize=None)
def _drawer(shape: tuple[int, ...], init: str, std: float, sharding, stacked: bool = False):
    def draw(root, index):
        key = jax.random.fold_in(root, index)
        if stacked:  # each layer drawn alone: fan-in and fan-out are a layer's, not the stack's
            return jax.vmap(lambda k: initial_value(k, shape[1:], init, std))(jax.random.split(key, shape[0]))
        return initial_value(key, shape, init, std)

    return jax.jit(draw, out_shardings=sharding)


def create_abstract(cfg: StudentConfig) -> Student:
    """The student's structure with ShapeDtypeStructs for leaves: nothing is allocated."""
    return nnx.eval_shape(lambda: Student(cfg, rngs=nnx.Rngs(0)))
