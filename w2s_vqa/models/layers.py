"""Building blocks shared by the towers: parameters carry logical axis names.

Every parameter is an `nnx.Param` with `logical_axes` metadata (docs/design-decisions.md,
Conventions); `w2s_vqa.sharding` maps those names to mesh axes through one
rules table. Parameters are stored in float32; each block computes in the dtype
it is given (bf16 compute with fp32 master weights), and normalizations and
softmaxes run in float32 as transformers does.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

PARAM_DTYPE = jnp.float32
INIT_STD = 0.02
PROJ = "proj"  # the checkpoint name of every Linear's output

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


RANDOM_INITS = ("normal", "xavier_uniform", "lecun_normal")


def initial_value(key: jax.Array | None, shape: Sequence[int], init: str, std: float = INIT_STD) -> jax.Array:
    """A float32 tensor drawn as transformers' `_init_weights` draws it.

    "normal" (std `std`; Qwen2 and the projectors, initializer_range 0.02),
    "xavier_uniform" (SigLIP's attention and MLP) and "lecun_normal" (SigLIP's
    patch embedding) need `key`; "zeros" and "ones" do not. Fan-in is every axis
    but the last, fan-out the last.
    """
    shape = tuple(shape)
    fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
    if init == "normal":
        return std * jax.random.normal(key, shape, PARAM_DTYPE)
    if init == "xavier_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, PARAM_DTYPE, -limit, limit)
    if init == "lecun_normal":
        # torch's trunc_normal_ at two standard deviations, rescaled to keep variance 1/fan_in.
        value = jax.random.truncated_normal(key, -2.0, 2.0, shape, PARAM_DTYPE)
        return value * math.sqrt(1.0 / fan_in) / 0.87962566103423978
    if init == "zeros":
        return jnp.zeros(shape, PARAM_DTYPE)
    if init == "ones":
        return jnp.ones(shape, PARAM_DTYPE)
    raise ValueError(f"unknown init {init!r}")


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Sequence[str | None], *, init: str = "normal",
          std: float = INIT_STD) -> nnx.Param:
    """A float32 parameter with its logical axis names and its initializer.

    The initializer (`initial_value`'s `init` and `std`) stays on the parameter as
    metadata, so `student.create` can draw each tensor on its own from the
    abstract model.
    """
    if len(shape) != len(axes):
        raise ValueError(f"shape {tuple(shape)} and logical axes {tuple(axes)} differ in rank")
    key = rngs.params() if init in RANDOM_INITS else None
    return nnx.Param(initial_value(key, shape, init, std), logical_axes=tuple(axes), initializer=(init, std))


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [..., in] @ kernel [in, out], as one 2-D matmul over the flattened leading axes.

    The same product as `jnp.dot(x, kernel)`; written 2-D because XLA:CPU runs the
    kernel's gradient of a 3-D product (two contracting axes) far slower
    (docs/2026-11-student-speed.md). Elsewhere the reshape is free.
    """
    return jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])


class Linear(nnx.Module):
    """y = x @ kernel + bias, kernel stored [in, out] (the transpose of torch's weight)."""

    def __init__(self, din: int, dout: int, *, axes: tuple[str | None, str | None], bias: bool = True,
                 dtype=jnp.float32, init: str = "normal", std: float = INIT_STD, rngs: nnx.Rngs):
        self.kernel = param(rngs, (din, dout), axes, init=init, std=std)
        self.bias = param(rngs, (dout,), axes[1:], init="zeros") if bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = dense(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        # What remat "minimal" keeps (models.stack.REMAT_POLICIES); a no-op elsewhere.
        return checkpoint_name(y, PROJ)


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
                 std: float = INIT_STD, rngs: nnx.Rngs):
        self.embedding = param(rngs, (num, dim), axes, std=std)
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits against the embedding table (tied output layer)."""
        return dense(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


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
    b, t, n = q.shape[:3]
    s_len, groups = k.shape[1], n // k.shape[2]
    q, k, v = _heads_leading(q, k, v, scale)
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, 1, t, s_len))[:, :, None]  # [B,1,1,T,S]
        mask = jnp.broadcast_to(mask, (b, 1, groups, t, s_len)).reshape(b, 1, groups * t, s_len)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    scores = scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
    weights = jnp.exp(scores)
    out = jnp.einsum("bkqs,bksd->bkqd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out / weights.sum(axis=-1, keepdims=True)
    return _heads_back(out.astype(v.dtype), t)


def _heads_leading(q, k, v, scale):
    """q [B,T,N,D] -> [B,K,G*T,D] scaled, the G query heads of each key/value head stacked
    on the query axis; k, v [B,S,K,D] -> [B,K,S,D]."""
    b, t, n, d = q.shape
    kv_heads = k.shape[2]
    q = (q * jnp.asarray(scale, q.dtype)).reshape(b, t, kv_heads, n // kv_heads, d).transpose(0, 2, 3, 1, 4)
    return q.reshape(b, kv_heads, -1, d), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def _heads_back(out, t):
    """[B,K,G*T,D] -> [B,T,N,D], undoing `_heads_leading`."""
    b, kv_heads, gt, d = out.shape
    out = out.reshape(b, kv_heads, gt // t, t, d).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, -1, d)


# Query heads per step of `blocked_attention`: few enough that a SigLIP frame's 729x729
# scores per head stay in cache; chosen by measurement (docs/2026-11-student-speed.md).
BLOCKED_HEADS = 4


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float, *,
                      heads_per_step: int = BLOCKED_HEADS) -> jax.Array:
    """`attention` scheduled for CPUs: the same result, a few heads at a time.

    Plain `attention` computes the scores of every head at once and keeps the
    probabilities for the backward pass, so each layer streams them through memory
    several times (a SigLIP frame at 384 px has 729x729 per head). Here a loop
    (`lax.map`) takes the (batch x key/value head) slices of `heads_per_step` query
    heads per step (at least one slice), whose scores stay in cache; the forward pass
    keeps only the output and the softmax's row maximum and normalizer, and the
    backward pass recomputes each step's probabilities (the flash-attention
    recurrence, with every key in one block).

    For one device: the loop runs over the batch and head axes, which a mesh would
    shard. Same arguments and result as `attention`.
    """
    b, t, heads = q.shape[:3]
    s_len, kv_heads = k.shape[1], k.shape[2]
    slices = b * kv_heads
    q, k, v = (x.reshape(slices, *x.shape[2:]) for x in _heads_leading(q, k, v, scale))
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, kv_heads, t, s_len)).reshape(slices, t, s_len)
    # A slice stacks the G query heads of its key/value head: count the step in query heads,
    # so grouped-query layers (Qwen2: G=4 to 7) do not take G times the scores per step.
    per_step = max(1, heads_per_step // (heads // kv_heads))
    step = max(c for c in range(1, min(per_step, slices) + 1) if slices % c == 0)
    out = _blocked(q, k, v, mask, step)
    return _heads_back(out.reshape(b, kv_heads, *out.shape[1:]), t)


def _masked(scores, mask, fill):
    """scores [c,G*T,S] where mask [c,T,S] (shared by the G stacked query heads), else fill."""
    if mask is None:
        return scores
    c, gt, s_len = scores.shape
    t = mask.shape[1]
    return jnp.where(mask[:, None], scores.reshape(c, gt // t, t, s_len), fill).reshape(c, gt, s_len)


def _blocked_scores(q, k, mask):
    """Masked float32 scores of one step: q [c,G*T,D], k [c,S,D], mask [c,T,S] or None."""
    scores = jnp.einsum("cqd,csd->cqs", q, k, preferred_element_type=jnp.float32)
    return _masked(scores, mask, jnp.finfo(jnp.float32).min)


def _blocked_forward(q, k, v, mask):
    scores = _blocked_scores(q, k, mask)
    row_max = scores.max(axis=-1, keepdims=True)
    weights = jnp.exp(scores - row_max)
    norm = weights.sum(axis=-1, keepdims=True)
    out = jnp.einsum("cqs,csd->cqd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32) / norm
    return out.astype(v.dtype), row_max, norm


def _blocked_backward(q, k, v, mask, out, row_max, norm, d_out):
    probs = jnp.exp(_blocked_scores(q, k, mask) - row_max) / norm
    d_out32 = d_out.astype(jnp.float32)
    d_v = jnp.einsum("cqs,cqd->csd", probs.astype(v.dtype), d_out, preferred_element_type=jnp.float32)
    d_probs = jnp.einsum("cqd,csd->cqs", d_out, v, preferred_element_type=jnp.float32)
    d_scores = probs * (d_probs - jnp.sum(d_out32 * out.astype(jnp.float32), axis=-1, keepdims=True))
    # Masked scores are constants: no gradient, even in a row with every key masked.
    d_scores = _masked(d_scores, mask, 0.0).astype(q.dtype)
    d_q = jnp.einsum("cqs,csd->cqd", d_scores, k, preferred_element_type=jnp.float32)
    d_k = jnp.einsum("cqs,cqd->csd", d_scores, q, preferred_element_type=jnp.float32)
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)


def _in_steps(step: int, fn, *arrays):
    """Apply `fn` to `step` leading slices at a time of every array (None passes through)."""
    def split(x):
        return None if x is None else x.reshape(x.shape[0] // step, step, *x.shape[1:])

    def merge(x):
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    results = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in arrays))
    return jax.tree.map(merge, results)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked(q, k, v, mask, step):
    return _in_steps(step, _blocked_forward, q, k, v, mask)[0]


def _blocked_fwd(q, k, v, mask, step):
    out, row_max, norm = _in_steps(step, _blocked_forward, q, k, v, mask)
    return out, (q, k, v, mask, out, row_max, norm)


def _blocked_bwd(step, residuals, d_out):
    d_q, d_k, d_v = _in_steps(step, _blocked_backward, *residuals, d_out)
    return d_q, d_k, d_v, None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float, *,
                    causal: bool = False, implementation: str = "cudnn") -> jax.Array:
    """cuDNN's fused (flash) attention through `jax.nn.dot_product_attention`: NVIDIA
    GPUs, bf16 or fp16 only. Same arguments and result as `attention`; the scores
    never reach memory, and `causal` lets the kernel skip the blocks above the diagonal.

    cuDNN's backward pass needs even query and key lengths (SigLIP's 729 patches are
    odd), so odd ones get one padding row and one key no real query sees: without a
    mask, through the kernel's own sequence lengths; with one, in the mask (an
    additive bias to cuDNN), where the padding row sees one key so its softmax is
    finite. The extra row's output is dropped. `implementation="xla"` runs the
    same path anywhere.
    """
    t, s = q.shape[1], k.shape[1]
    lengths = {}
    if t % 2 or s % 2:
        if mask is None:
            batch = q.shape[0]
            lengths = {"query_seq_lengths": jnp.full((batch,), t, jnp.int32),
                       "key_value_seq_lengths": jnp.full((batch,), s, jnp.int32)}
        else:
            mask = jnp.broadcast_to(mask, (*mask.shape[:2], t, s))
            mask = jnp.pad(mask, ((0, 0), (0, 0), (0, t % 2), (0, s % 2)))
            if t % 2:
                mask = mask.at[:, :, t, 0].set(True)
        q, k, v = (jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, 0), (0, 0))) for x in (q, k, v))
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=causal,
                                       implementation=implementation, **lengths)
    return out[:, :t]


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float,
                     block: int, attend: Callable = attention) -> jax.Array:
    """`attention` for a causal mask, skipping the key blocks no query of a block can see.

    Queries go in blocks of `block` rows; block i attends to keys [0, end of block i)
    only, which is where its causal mask is nonzero, so about half the score and
    value work of a long sequence is never done. Same result as `attention` with
    the full mask (the skipped keys have zero weight). mask [B,1,T,S], causal and
    padding combined; `attend` computes each block (`attention` or `blocked_attention`).
    """
    t = q.shape[1]
    if t <= block:
        return attend(q, k, v, mask, scale)
    outs = []
    for lo in range(0, t, block):
        hi = min(lo + block, t)
        outs.append(attend(q[:, lo:hi], k[:, :hi], v[:, :hi], mask[:, :, lo:hi, :hi], scale))
    return jnp.concatenate(outs, axis=1)
