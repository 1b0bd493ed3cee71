"""Qwen2 decoder: grouped-query attention with q/k/v bias, RoPE, RMSNorm, SwiGLU.

Follows transformers' Qwen2Model: position ids default to 0..L-1 whatever the
padding (as transformers does without a cache), the attention mask combines
causality with the per-token `attention_mask` (0 = key hidden), softmax and
normalization in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_vqa.models import stack
from w2s_vqa.models.config import TextConfig, remat_policy
from w2s_vqa.models.layers import (Embed, Linear, RMSNorm, activation, attention, blocked_attention, causal_attention,
                                    fused_attention)

# Query rows per block of causal attention (see layers.causal_attention).
ATTENTION_BLOCK = 256


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin [B, L, head_dim] for rotate-half RoPE, computed in float32."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, H, D]; rotate-half convention (first half with second half)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None].astype(x.dtype), sin[:, :, None].astype(x.dtype)
    return x * cos + rotated * sin


class Qwen2Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, attention: str = "xla", rngs: nnx.Rngs):
        self.implementation = attention
        d, hd, std = cfg.hidden_size, cfg.head_dim, cfg.initializer_range
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = Linear(d, self.num_heads * hd, axes=("embed", "heads"), dtype=dtype, std=std, rngs=rngs)
        self.k_proj = Linear(d, self.num_kv_heads * hd, axes=("embed", "kv_heads"), dtype=dtype, std=std, rngs=rngs)
        self.v_proj = Linear(d, self.num_kv_heads * hd, axes=("embed", "kv_heads"), dtype=dtype, std=std, rngs=rngs)
        self.o_proj = Linear(self.num_heads * hd, d, axes=("heads", "embed"), bias=False, dtype=dtype, std=std,
                             rngs=rngs)

    def __call__(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = apply_rope(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim), cos, sin)
        k = apply_rope(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.implementation == "cudnn":
            out = fused_attention(q, k, v, mask, self.head_dim**-0.5, causal=True)
        else:
            attend = blocked_attention if self.implementation == "blocked" else attention
            out = causal_attention(q, k, v, mask, self.head_dim**-0.5, ATTENTION_BLOCK, attend)
        return self.o_proj(out.reshape(b, t, -1))

    def keys_values(self, x, cos, sin):
        """k and v [B, T, kv_heads, head_dim] of x [B, T, D], k rotated: what a later
        query attends to (`after_prefix` reads them as a cached prefix)."""
        b, t, _ = x.shape
        k = apply_rope(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), cos, sin)
        return k, self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)

    def after_prefix(self, x, cos, sin, prefix_k, prefix_v, prefix_mask, key_mask):
        """Attention of a continuation [A, B, S, D] after a cached prefix, one per row of A.

        prefix_k, prefix_v [A, P, kv_heads, head_dim] (`keys_values` of the prefix);
        prefix_mask [A, P] and key_mask [B, S] bool, False on hidden keys; cos, sin
        [1, S, head_dim] at the continuation's positions P..P+S-1. Every query sees the
        whole prefix and the continuation causally: the result equals this layer's
        attention over the joined sequence.

        Each of the A x B rows gets its own copy of its prefix's keys and values (small
        beside the scores), so the attention kernel is the one `__call__` runs; query
        blocks of ATTENTION_BLOCK rows skip the continuation's keys no query of the
        block can see, as `causal_attention` does.
        """
        a, b, s, d = x.shape
        p = prefix_k.shape[1]
        flat = x.reshape(a * b, s, d)
        q = apply_rope(self.q_proj(flat).reshape(a * b, s, self.num_heads, self.head_dim), cos, sin)
        k, v = self.keys_values(flat, cos, sin)

        def joined(prefix, own):  # [A, P, K, D] + [A*B, S, K, D] -> [A*B, P+S, K, D]
            prefix = jnp.broadcast_to(prefix[:, None], (a, b, *prefix.shape[1:])).reshape(a * b, *prefix.shape[1:])
            return jnp.concatenate([prefix.astype(own.dtype), own], axis=1)

        k, v = joined(prefix_k, k), joined(prefix_v, v)
        seen = jnp.concatenate([
            jnp.broadcast_to(prefix_mask[:, None, None, :], (a, b, s, p)),
            jnp.broadcast_to(jnp.tril(jnp.ones((s, s), bool))[None] & key_mask[:, None, :], (a, b, s, s)),
        ], axis=-1).reshape(a * b, 1, s, p + s)
        scale = self.head_dim**-0.5
        if self.implementation == "cudnn":
            out = fused_attention(q, k, v, seen, scale)
        else:
            attend = blocked_attention if self.implementation == "blocked" else attention
            out = jnp.concatenate([
                attend(q[:, lo:lo + ATTENTION_BLOCK], k[:, :p + lo + ATTENTION_BLOCK], v[:, :p + lo + ATTENTION_BLOCK],
                       seen[:, :, lo:lo + ATTENTION_BLOCK, :p + lo + ATTENTION_BLOCK], scale)
                for lo in range(0, s, ATTENTION_BLOCK)], axis=1)
        return self.o_proj(out.reshape(a, b, s, -1))


class Qwen2MLP(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
        d, m, std = cfg.hidden_size, cfg.intermediate_size, cfg.initializer_range
        self.gate_proj = Linear(d, m, axes=("embed", "mlp"), bias=False, dtype=dtype, std=std, rngs=rngs)
        self.up_proj = Linear(d, m, axes=("embed", "mlp"), bias=False, dtype=dtype, std=std, rngs=rngs)
        self.down_proj = Linear(m, d, axes=("mlp", "embed"), bias=False, dtype=dtype, std=std, rngs=rngs)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, attention: str = "xla", rngs: nnx.Rngs):
        norm = dict(eps=cfg.rms_norm_eps, axis_name="embed", dtype=dtype, rngs=rngs)
        self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.self_attn = Qwen2Attention(cfg, dtype=dtype, attention=attention, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.mlp = Qwen2MLP(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))

    def after_prefix(self, x, cos, sin, prefix_k, prefix_v, prefix_mask, key_mask):
        """The layer on a continuation [A, B, S, D] after a cached prefix (Qwen2Attention.after_prefix)."""
        x = x + self.self_attn.after_prefix(self.input_layernorm(x), cos, sin, prefix_k, prefix_v, prefix_mask,
                                            key_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2Model(nnx.Module):
    """Embeddings, decoder layers and the final norm (transformers' Qwen2Model)."""

    def __init__(self, cfg: TextConfig, *, dtype=jnp.float32, remat: str = "none", scan_layers: bool = False,
                 attention: str = "xla", rngs: nnx.Rngs):
        self.cfg = cfg
        self.remat = str(remat_policy(remat))
        self.scan_layers = scan_layers
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, axes=("vocab", "embed"), dtype=dtype,
                                  std=cfg.initializer_range, rngs=rngs)

        def make_layer(layer_rngs):
            return Qwen2DecoderLayer(cfg, dtype=dtype, attention=attention, rngs=layer_rngs)

        # Scanned: one module, every parameter [num_layers, ...] (models.stack).
        self.layers = (stack.stacked(make_layer, cfg.num_hidden_layers, rngs) if scan_layers else
                       nnx.List([make_layer(rngs) for _ in range(cfg.num_hidden_layers)]))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="embed", dtype=dtype, rngs=rngs)

    def __call__(self, inputs_embeds: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> jax.Array:
        """Final-normed hidden states [B, L, D] from input embeddings [B, L, D]."""
        b, t, _ = inputs_embeds.shape
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(t), (b, t))
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask.astype(bool)[:, None, None, :]
        x = inputs_embeds
        if self.scan_layers:
            x, _ = stack.scan(self.layers, lambda lyr, h, _: (lyr(h, cos, sin, mask), None), x, remat=self.remat)
            return self.norm(x)
        for layer in self.layers:
            x = stack.call(layer, lambda lyr, h: lyr(h, cos, sin, mask), x, remat=self.remat)
        return self.norm(x)

    # ----------------------------------------------------------------- a cached prompt prefix
    def prefix_keys_values(self, inputs_embeds: jax.Array, attention_mask: jax.Array):
        """(keys, values): every layer's keys and values [A, P, kv_heads, head_dim] of a prefix
        [A, P, D] at positions 0..P-1, attention_mask [A, P] (0 = key hidden): what
        `after_prefix` needs to continue it. Runs the layers as `__call__` does. Unrolled: a
        tuple of one array per layer each; scanned: one array [layers, A, P, ...] each."""
        a, t, _ = inputs_embeds.shape
        positions = jnp.broadcast_to(jnp.arange(t), (a, t))
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta)
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None] & attention_mask.astype(bool)[:, None, None, :]
        def step(layer, x, _):
            return layer(x, cos, sin, mask), layer.self_attn.keys_values(layer.input_layernorm(x), cos, sin)

        if self.scan_layers:
            return stack.scan(self.layers, step, inputs_embeds)[1]
        x, cache = inputs_embeds, []
        for layer in self.layers:
            x, kv = step(layer, x, None)
            cache.append(kv)
        return tuple(k for k, _ in cache), tuple(v for _, v in cache)

    def after_prefix(self, inputs_embeds: jax.Array, key_mask: jax.Array, cache, prefix_mask: jax.Array
                     ) -> jax.Array:
        """Final-normed hidden states [A, B, S, D] of continuations after cached prefixes.

        inputs_embeds [A, B, S, D] or [B, S, D] (the same continuation after every
        prefix); key_mask [B, S] (0 = key hidden); cache: (keys, values), `prefix_keys_values`
        of A prefixes of length P; prefix_mask [A, P]. Row (a, b) equals `__call__` on prefix a
        joined with continuation b, at the continuation's positions P..P+S-1.
        """
        num_prefixes, length = prefix_mask.shape
        if inputs_embeds.ndim == 3:
            inputs_embeds = jnp.broadcast_to(inputs_embeds[None], (num_prefixes, *inputs_embeds.shape))
        s = inputs_embeds.shape[2]
        cos, sin = rope_tables(length + jnp.arange(s)[None], self.cfg.head_dim, self.cfg.rope_theta)
        x, prefix_mask, key_mask = inputs_embeds, prefix_mask.astype(bool), key_mask.astype(bool)

        def step(layer, x, kv):
            return layer.after_prefix(x, cos, sin, kv[0], kv[1], prefix_mask, key_mask), None

        if self.scan_layers:
            x = stack.scan(self.layers, step, x, (jnp.asarray(cache[0]), jnp.asarray(cache[1])))[0]
        else:
            for layer, k, v in zip(self.layers, *cache):
                x = step(layer, x, (k, v))[0]
        return self.norm(x)

