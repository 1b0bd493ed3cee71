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

from w2s_vqa.models.config import TextConfig
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


class Qwen2Model(nnx.Module):
    """Embeddings, decoder layers and the final norm (transformers' Qwen2Model)."""

    def __init__(self, cfg: TextConfig, *, dtype=jnp.float32, remat: bool = False, attention: str = "xla",
                 rngs: nnx.Rngs):
        self.cfg = cfg
        self.remat = remat
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, axes=("vocab", "embed"), dtype=dtype,
                                  std=cfg.initializer_range, rngs=rngs)
        self.layers = nnx.List([Qwen2DecoderLayer(cfg, dtype=dtype, attention=attention, rngs=rngs)
                                for _ in range(cfg.num_hidden_layers)])
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
        for layer in self.layers:
            if self.remat:
                x = nnx.remat(lambda lyr, h, c, s, m: lyr(h, c, s, m))(layer, x, cos, sin, mask)
            else:
                x = layer(x, cos, sin, mask)
        return self.norm(x)

