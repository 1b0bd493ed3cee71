"""Building blocks shared by the towers: parameters carry logical axis names.

Every parameter is an `nnx.Param` with `logical_axes` metadata (DESIGN.md,
Conventions); `w2s_vqa.train.sharding` maps those names to mesh axes through one
rules table. Parameters are stored in float32; each block computes in the dtype
it is given (bf16 compute with fp32 master weights), and normalizations and
softmaxes run in float32 as transformers does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

PARAM_DTYPE = jnp.float32
INIT_STD = 0.02

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Sequence[str | None], *, init: str = "normal") -> nnx.Param:
    """A float32 parameter with its logical axis names."""
    if len(shape) != len(axes):
        raise ValueError(f"shape {tuple(shape)} and logical axes {tuple(axes)} differ in rank")
    if init == "normal":
        value = INIT_STD * jax.random.normal(rngs.params(), shape, PARAM_DTYPE)
    elif init == "zeros":
        value = jnp.zeros(shape, PARAM_DTYPE)
    elif init == "ones":
        value = jnp.ones(shape, PARAM_DTYPE)
    else:
        raise ValueError(f"unknown init {init!r}")
    return nnx.Param(value, logical_axes=tuple(axes))


class Linear(nnx.Module):
    """y = x @ kernel + bias, kernel stored [in, out] (the transpose of torch's weight)."""

    def __init__(self, din: int, dout: int, *, axes: tuple[str | None, str | None], bias: bool = True,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel = param(rngs, (din, dout), axes)
        self.bias = param(rngs, (dout,), axes[1:], init="zeros") if bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, axis_name: str, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        self.scale = param(rngs, (dim,), (axis_name,), init="ones")
        self.bias = param(rngs, (dim,), (axis_name,), init="zeros")
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
        return y.astype(self.dtype)


class RMSNorm(nnx.Module):
    """Qwen2's RMSNorm: normalize in float32, cast back, then scale (as transformers orders it)."""

    def __init__(self, dim: int, *, eps: float, axis_name: str, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        self.scale = param(rngs, (dim,), (axis_name,), init="ones")
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * y.astype(self.dtype)


class Embed(nnx.Module):
    def __init__(self, num: int, dim: int, *, axes: tuple[str | None, str | None], dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.embedding = param(rngs, (num, dim), axes)
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits against the embedding table (tied output layer)."""
        return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float) -> jax.Array:
    """Softmax attention with grouped key/value heads.

    q [B,T,N,D], k and v [B,S,K,D] with N a multiple of K; mask broadcastable to
    [B,1,T,S], True where a query may attend. Returns [B,T,N,D].

    Laid out for plain batched matmuls: heads lead, and the G query heads that
    share a key/value head are stacked along the query axis, so both products are
    [B*K] matmuls of [G*T, D] x [D, S] and [G*T, S] x [S, D]. Scores, exponent and
    normalizer are float32; the normalization is applied to the [.., D] output
    rather than the [.., S] probabilities (the same softmax, fewer divisions).
    """
    b, t, n, d = q.shape
    s_len, kv_heads = k.shape[1], k.shape[2]
    groups = n // kv_heads
    q = (q * jnp.asarray(scale, q.dtype)).reshape(b, t, kv_heads, groups, d).transpose(0, 2, 3, 1, 4)
    q = q.reshape(b, kv_heads, groups * t, d)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B,K,S,D]
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, 1, t, s_len))[:, :, None]  # [B,1,1,T,S]
        mask = jnp.broadcast_to(mask, (b, 1, groups, t, s_len)).reshape(b, 1, groups * t, s_len)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    scores = scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
    weights = jnp.exp(scores)
    out = jnp.einsum("bkqs,bksd->bkqd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out / weights.sum(axis=-1, keepdims=True)
    out = out.astype(v.dtype).reshape(b, kv_heads, groups, t, d).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, n, d)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float,
                     block: int) -> jax.Array:
    """`attention` for a causal mask, skipping the key blocks no query of a block can see.

    Queries go in blocks of `block` rows; block i attends to keys [0, end of block i)
    only, which is where its causal mask is nonzero, so about half the score and
    value work of a long sequence is never done. Same result as `attention` with
    the full mask (the skipped keys have zero weight). mask [B,1,T,S], causal and
    padding combined.
    """
    t = q.shape[1]
    if t <= block:
        return attention(q, k, v, mask, scale)
    outs = []
    for lo in range(0, t, block):
        hi = min(lo + block, t)
        outs.append(attention(q[:, lo:hi], k[:, :hi], v[:, :hi], mask[:, :, lo:hi, :hi], scale))
    return jnp.concatenate(outs, axis=1)
