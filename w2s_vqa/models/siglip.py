"""SigLIP vision tower (transformers' SiglipVisionModel without the pooling head).

Images arrive channels-last, normalized, [N, H, W, C]. The patch embedding is a
stride-`patch` convolution, computed here as a matmul over non-overlapping patches
(the same arithmetic, and the layout XLA runs fastest); its kernel is stored as a
convolution kernel [p, p, C, D] so the checkpoint mapping stays a transpose.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_vqa.models import stack
from w2s_vqa.models.config import VisionConfig, remat_policy
from w2s_vqa.models.layers import (LayerNorm, Linear, activation, attention, blocked_attention, dense, fused_attention,
                                    param)

# Random towers start as transformers' SiglipPreTrainedModel._init_weights starts them.
XAVIER = "xavier_uniform"


class PatchEmbedding(nnx.Module):
    """The weights of the stride-p convolution, kernel [p, p, C, D]."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs):
        p, c, d = cfg.patch_size, cfg.num_channels, cfg.hidden_size
        self.kernel = param(rngs, (p, p, c, d), (None, None, None, "vision_embed"), init="lecun_normal")
        self.bias = param(rngs, (d,), ("vision_embed",), init="zeros")


class SiglipEmbeddings(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
        self.patch_embedding = PatchEmbedding(cfg, rngs=rngs)
        self.position_embedding = param(rngs, (cfg.num_patches, cfg.hidden_size), (None, "vision_embed"),
                                        std=cfg.hidden_size**-0.5)
        self.cfg = cfg
        self.dtype = dtype

    def __call__(self, images: jax.Array) -> jax.Array:
        n, h, w, c = images.shape
        p, g = self.cfg.patch_size, self.cfg.grid_size
        if h != self.cfg.image_size or w != self.cfg.image_size:
            raise ValueError(f"images are {h}x{w}; the vision tower takes {self.cfg.image_size}x{self.cfg.image_size}")
        # A 'valid' stride-p convolution ignores the border beyond g*p pixels.
        x = images[:, : g * p, : g * p].astype(self.dtype)
        patches = x.reshape(n, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, p * p * c)
        kernel = self.patch_embedding.kernel[...].reshape(p * p * c, -1).astype(self.dtype)
        x = dense(patches, kernel) + self.patch_embedding.bias[...].astype(self.dtype)
        return x + self.position_embedding[...].astype(self.dtype)


class SiglipAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, attention: str = "xla", rngs: nnx.Rngs):
        self.implementation = attention
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = d // self.num_heads
        self.q_proj = Linear(d, d, axes=("vision_embed", "vision_heads"), dtype=dtype, init=XAVIER, rngs=rngs)
        self.k_proj = Linear(d, d, axes=("vision_embed", "vision_heads"), dtype=dtype, init=XAVIER, rngs=rngs)
        self.v_proj = Linear(d, d, axes=("vision_embed", "vision_heads"), dtype=dtype, init=XAVIER, rngs=rngs)
        self.out_proj = Linear(d, d, axes=("vision_heads", "vision_embed"), dtype=dtype, init=XAVIER, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, _ = x.shape
        heads = lambda y: y.reshape(n, t, self.num_heads, self.head_dim)  # noqa: E731
        attend = {"cudnn": fused_attention, "blocked": blocked_attention}.get(self.implementation, attention)
        out = attend(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), None, self.head_dim**-0.5)
        return self.out_proj(out.reshape(n, t, -1))


class SiglipMLP(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
        self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("vision_embed", "vision_mlp"), dtype=dtype,
                          init=XAVIER, rngs=rngs)
        self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, axes=("vision_mlp", "vision_embed"), dtype=dtype,
                          init=XAVIER, rngs=rngs)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class SiglipEncoderLayer(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, attention: str = "xla", rngs: nnx.Rngs):
        norm = dict(eps=cfg.layer_norm_eps, axis_name="vision_embed", dtype=dtype, rngs=rngs)
        self.layer_norm1 = LayerNorm(cfg.hidden_size, **norm)
        self.self_attn = SiglipAttention(cfg, dtype=dtype, attention=attention, rngs=rngs)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, **norm)
        self.mlp = SiglipMLP(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipVisionTower(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype=jnp.float32, remat: str = "none", scan_layers: bool = False,
                 attention: str = "xla", rngs: nnx.Rngs):
        self.cfg = cfg
        self.remat = str(remat_policy(remat))
        self.scan_layers = scan_layers
        self.embeddings = SiglipEmbeddings(cfg, dtype=dtype, rngs=rngs)

        def make_layer(layer_rngs):
            return SiglipEncoderLayer(cfg, dtype=dtype, attention=attention, rngs=layer_rngs)

        # Scanned: one module, every parameter [num_hidden_layers, ...] (models.stack).
        self.layers = (stack.stacked(make_layer, cfg.num_hidden_layers, rngs) if scan_layers else
                       nnx.List([make_layer(rngs) for _ in range(cfg.num_hidden_layers)]))
        # Part of every SigLIP checkpoint; LLaVA-OneVision reads encoder hidden states
        # before it, so it only runs in `__call__` when the last state is requested.
        self.post_layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, axis_name="vision_embed",
                                        dtype=dtype, rngs=rngs)

    def hidden_states(self, images: jax.Array, indices: Sequence[int]) -> list[jax.Array]:
        """Encoder hidden states at `indices` (0 = embeddings, i = after layer i), as
        transformers' `output_hidden_states` numbers them. Layers past the deepest
        requested index are not run."""
        wanted = {i: None for i in indices}
        x = self.embeddings(images)
        if 0 in wanted:
            wanted[0] = x
        if self.scan_layers:  # one scan from each requested state to the next
            done = 0
            for i in sorted(i for i in wanted if i > 0):
                x = stack.scan(self.layers, lambda lyr, h, _: (lyr(h), None), x, remat=self.remat, start=done,
                               stop=i)[0]
                wanted[i], done = x, i
            return [wanted[i] for i in indices]
        for i, layer in enumerate(self.layers[: max(indices)], start=1):
            x = stack.call(layer, lambda lyr, h: lyr(h), x, remat=self.remat)
            if i in wanted:
                wanted[i] = x
        return [wanted[i] for i in indices]

    def __call__(self, images: jax.Array) -> jax.Array:
        """last_hidden_state: the post-layernormed output of the last layer."""
        return self.post_layernorm(self.hidden_states(images, [self.cfg.num_hidden_layers])[0])
