"""The analytic cost model of the student: FLOPs of a forward pass and of a train step,
bytes of a train state and of the activations a step keeps, a roofline step time.

The one count behind every figure that divides FLOPs by time: `w2s-vqa plan`'s roofline
(`roofline`) and the benchmarks' utilization (bench.student, bench.train_step,
bench.score).

FLOPs are counted per matmul, 2 x M x N x K; elementwise work (norms, activations,
softmax, the 2x video pooling) and the level readout (5 rows of the output layer) are
left out, a small fraction of the rest. Attention counts the (query, key) pairs its
kernel computes (`causal_pairs`).

MFU, everywhere in the project: model FLOPs / (step seconds x peak FLOP/s). Model FLOPs
are a step's forward and backward (`step_flops`'s "model": the backward counts the
gradients the step computes; rematerialization is left out, recomputed work not being
useful work). The peak is a chip's published dense bf16 figure in a plan's roofline, and
the matmul peak a benchmark measures on its own machine in the same run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from w2s_vqa.train.hardware import Chip


# ----------------------------------------------------------------------------- FLOPs


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of the student's forward pass, FLOPs over the whole batch.

    part         "vision" (patch embedding and layers), "projector", "motion" or "decoder"
    weights      the parameter path prefix of the block's weights
    linear       its weight matmuls
    attention    its two attention matmuls (scores, values)
    last_matmul  a layer's last matmul (MLP down projection), which a rematerialized
                 backward pass does not recompute (its output is not needed); None for a
                 block that is not a layer
    fresh_input  its input (pixels, motion features) carries no gradient
    joins        further parameter prefixes whose gradients flow from this block on
    """

    part: str
    weights: str
    linear: float
    attention: float = 0.0
    last_matmul: float | None = None
    fresh_input: bool = False
    joins: tuple[str, ...] = ()


def causal_pairs(length: int, attention: str, *, prefix: int = 0) -> int:
    """(query, key) pairs the decoder's causal attention computes for `length` queries
    after `prefix` cached keys that every query sees: query blocks of
    models.qwen2.ATTENTION_BLOCK rows, each against the keys up to its end
    (layers.causal_attention, Qwen2Attention.after_prefix; "xla" and "blocked"), or the
    causal triangle, L (L + 1) / 2, for cuDNN's fused kernel; plus length x prefix."""
    from w2s_vqa.models import qwen2

    seen = length * prefix
    if attention == "cudnn":
        return seen + length * (length + 1) // 2
    block = qwen2.ATTENTION_BLOCK
    if length <= block:
        return seen + length * length
    return seen + sum((min(lo + block, length) - lo) * min(lo + block, length) for lo in range(0, length, block))


def decoder_layer_flops(text_cfg, sequences: int, tokens: int, attended: int) -> tuple[float, float, float]:
    """(weight matmuls, attention matmuls, MLP down projection) FLOPs of one Qwen2 layer
    over `sequences` sequences of `tokens` tokens whose queries meet `attended` (query,
    key) pairs each (`causal_pairs`): Q, K, V, O with grouped K and V, the gated MLP."""
    h, i = text_cfg.hidden_size, text_cfg.intermediate_size
    kv = text_cfg.num_key_value_heads * text_cfg.head_dim
    return (float(sequences * 2 * tokens * (2 * h * h + 2 * h * kv + 3 * h * i)),
            float(sequences * 2 * 2 * attended * h), float(sequences * 2 * tokens * h * i))


def forward_blocks(model_cfg, pairs: int, seq_len: int) -> list[Block]:
    """The forward pass over `pairs` pairs (2 videos each) of `seq_len` tokens, block by
    block in the order it runs them: SigLIP patch embedding and layers (Q, K, V, O
    projections, MLP, the two attention matmuls) up to the deepest feature layer, the
    multimodal and motion projectors, the Qwen2 layers (`decoder_layer_flops`)."""
    from w2s_vqa.models import config as model_config_lib

    v, t = model_cfg.vision, model_cfg.text
    frames, videos = pairs * 2 * model_cfg.num_frames, pairs * 2
    n, d, i_v, h = v.grid_size ** 2, v.hidden_size, v.intermediate_size, t.hidden_size
    vision_run = max(model_config_lib.check_feature_layers(model_cfg.feature_layers, v.num_hidden_layers))
    out = [Block("vision", "vision_tower.embeddings", frames * 2 * n * v.patch_size ** 2 * v.num_channels * d,
                 fresh_input=True)]
    out += [Block("vision", f"vision_tower.layers.{layer}.", frames * 2 * n * (4 * d * d + 2 * d * i_v),
                  frames * 2 * 2 * n * n * d, frames * 2 * n * d * i_v) for layer in range(vision_run)]
    out.append(Block("projector", "multi_modal_projector",
                     frames * 2 * n * (d * len(model_cfg.feature_layers) * h + h * h), joins=("image_newline",)))
    out.append(Block("motion", "motion_projector",
                     videos * model_cfg.num_motion_chunks * 2 * (model_cfg.motion_dim * h + h * h), fresh_input=True,
                     joins=("language_model.embed_tokens",)))
    seen = causal_pairs(seq_len, model_cfg.attention)
    out += [Block("decoder", f"language_model.layers.{layer}.", *decoder_layer_flops(t, pairs, seq_len, seen))
            for layer in range(t.num_hidden_layers)]
    return out


def forward_flops(model_cfg, pairs: int, seq_len: int) -> dict[str, float]:
    """Matmul FLOPs of one forward pass (`forward_blocks`) by part: {"vision",
    "projector", "motion", "decoder", "total"}. With seq_len 0, "total" is the videos'
    tokens alone (vision tower and projectors)."""
    parts = dict.fromkeys(("vision", "projector", "motion", "decoder"), 0.0)
    for block in forward_blocks(model_cfg, pairs, seq_len):
        parts[block.part] += block.linear + block.attention
    return {**parts, "total": sum(parts.values())}


def decoder_flops(model_cfg, sequences: int, tokens: int, *, prefix: int = 0) -> float:
    """Matmul FLOPs of every Qwen2 layer over `sequences` sequences of `tokens` tokens after
    `prefix` cached keys (the scoring path's continuation of a cached prompt prefix;
    prefix 0: a whole sequence)."""
    seen = causal_pairs(tokens, model_cfg.attention, prefix=prefix)
    linear, attention, _ = decoder_layer_flops(model_cfg.text, sequences, tokens, seen)
    return model_cfg.text.num_hidden_layers * (linear + attention)


def _block_flags(keys: Sequence[str], trainable: set[str]) -> Callable[[str], bool]:
    """Which blocks have trainable weights, by parameter path prefix."""
    def any_trainable(prefix):
        return any(k in trainable for k in keys if k.startswith(prefix))
    return any_trainable


def recomputed_flops(remat: str, block: Block) -> float:
    """Matmul FLOPs of a layer's forward that its backward runs again under the remat
    policy `remat` (a models.config.REMAT_NAMES name; `step_flops` says which)."""
    if remat == "full":
        return block.linear + block.attention - block.last_matmul
    if remat in ("minimal", "minimal_offloaded"):
        return block.attention
    return 0.0  # "none", "save_dots"


def step_flops(model_cfg, trainable_keys: Sequence[str] | None, all_keys: Sequence[str], pairs: int,
               seq_len: int) -> dict[str, float]:
    """Matmul FLOPs of one train step over `pairs` pairs (2 videos each) of `seq_len` tokens.

    `trainable_keys` None: every parameter trained (`all_keys` unused). Returns
    {"forward", "backward", "recompute", "model", "total"}: model = forward + backward
    (the MFU convention: rematerialization is not useful work), total = model +
    recompute. Per block of `forward_blocks`:
      backward  the input gradient (as many FLOPs as its forward) where a trainable
                parameter lies upstream, and the weight gradient where its weight is
                trainable; the attention matmuls' two input gradients where any gradient
                flows (frozen parameters are not differentiated: train.optim)
      recompute what model.remat's policy does not keep, where a layer's backward runs
                (models.stack.REMAT_POLICIES): "full", each layer's forward again but
                for its last matmul (MLP down projection), whose output the backward
                pass does not need; "minimal" and "minimal_offloaded" keep every
                projection's output, so only the attention matmuls run again;
                "save_dots" keeps every matmul's output, nothing; "none", nothing
    """
    flag = (lambda prefix: True) if trainable_keys is None else _block_flags(all_keys, set(trainable_keys))
    forward = backward = recompute = 0.0
    upstream = False  # a trainable parameter lies before this point
    for block in forward_blocks(model_cfg, pairs, seq_len):
        weights_trainable = flag(block.weights)
        into_input = upstream and not block.fresh_input
        forward += block.linear + block.attention
        grads_flow = weights_trainable or into_input
        backward += (block.linear * (int(weights_trainable) + int(into_input))
                     + (2 * block.attention if grads_flow else 0.0))
        if block.last_matmul is not None and grads_flow:
            recompute += recomputed_flops(str(model_cfg.remat), block)
        upstream = upstream or weights_trainable or any(flag(p) for p in block.joins)
    return {"forward": forward, "backward": backward, "recompute": recompute, "model": forward + backward,
            "total": forward + backward + recompute}


# ----------------------------------------------------------------------------- bytes


def activation_bytes(model_cfg, trainable_keys: Sequence[str], all_keys: Sequence[str], local_pairs: int,
                     seq_len: int) -> float:
    """An estimate of the activations one device keeps for the backward pass, bytes.

    Per layer whose backward runs, the tensors a transformer layer saves (in the spirit of
    Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models",
    2022, section 4, adapted to these layers), in the compute dtype:
      Qwen2 layer, per sequence:  L x (6 H + 2 KV + 3 I) + heads x P  (norm inputs and
                                  outputs, Q/K/V, attention output, gate/up/product; the
                                  attention probabilities of the P (query, key) pairs
                                  computed, `causal_pairs`; none with cuDNN's kernel)
      SigLIP layer, per frame:    N x (7 D + 2 I) + heads x N^2  (no probabilities with
                                  cuDNN's kernel either)
    Per model.remat policy (models.stack.REMAT_POLICIES), what each layer keeps, plus one
    layer's whole set, rebuilt during its backward, for any policy but "none":
      none               the whole set above
      full               the layer's input alone (L x H, N x D)
      minimal_offloaded  on the device, what "full" keeps ("minimal"'s projections go to
                         host memory)
      minimal            the input and every projection's output (checkpoint name
                         layers.PROJ): L x (4 H + 2 KV + 2 I) (Q, K, V, O, gate, up,
                         down), N x (6 D + I) (Q, K, V, out, fc1, fc2)
      save_dots          "minimal" plus every other matmul's output: the attention
                         scores (heads x P, heads x N^2) and the attention output (L x H,
                         N x D); with cuDNN's fused kernel, whose matmuls are not
                         separate dots, as "minimal"
    `local_pairs` is the batch one device holds; tensor parallelism, which splits heads
    and MLP width, is not divided out: an upper bound. The compiler's temporary bytes are
    the measured counterpart.
    """
    import numpy as np

    trainable = set(trainable_keys)
    flag = _block_flags(all_keys, trainable)
    itemsize = np.dtype(model_cfg.dtype).itemsize
    v, t = model_cfg.vision, model_cfg.text
    frames = local_pairs * 2 * model_cfg.num_frames
    n, d = v.grid_size ** 2, v.hidden_size
    h, kv, L = t.hidden_size, t.num_key_value_heads * t.head_dim, seq_len
    remat = str(model_cfg.remat)
    i_v, i_t = v.intermediate_size, t.intermediate_size
    cudnn = model_cfg.attention == "cudnn"
    # cuDNN's fused kernel (both towers run it) keeps no probabilities: it recomputes them
    # from the row statistics.
    vision_scores = 0 if cudnn else v.num_attention_heads * n * n
    text_scores = 0 if cudnn else t.num_attention_heads * causal_pairs(L, "xla")
    vision_full = frames * (n * (7 * d + 2 * i_v) + vision_scores)
    text_full = local_pairs * (L * (6 * h + 2 * kv + 3 * i_t) + text_scores)
    vision_minimal = frames * n * (6 * d + i_v)
    text_minimal = local_pairs * L * (4 * h + 2 * kv + 2 * i_t)
    kept = {  # policy -> (one vision layer's kept elements, one decoder layer's)
        "none": (vision_full, text_full),
        "full": (frames * n * d, local_pairs * L * h),
        "minimal": (vision_minimal, text_minimal),
        "save_dots": (vision_minimal + (0 if cudnn else frames * (n * d + vision_scores)),
                      text_minimal + (0 if cudnn else local_pairs * (L * h + text_scores))),
    }
    kept["minimal_offloaded"] = kept["full"]
    vision_kept, text_kept = kept[remat]
    vision_runs = flag("vision_tower.")
    text_runs = vision_runs or flag("multi_modal_projector") or flag("motion_projector") or flag("image_newline") \
        or flag("language_model.")
    layers = []
    if vision_runs:
        layers += [(vision_full, vision_kept)] * v.num_hidden_layers
    if text_runs:
        layers += [(text_full, text_kept)] * t.num_hidden_layers
    if not layers:
        return 0.0
    elements = sum(kept for _, kept in layers)
    if remat != "none":
        elements += max(full for full, _ in layers)
    return float(elements * itemsize)


def shard_bytes(struct) -> int:
    """Bytes of one device's shard of an array (a ShapeDtypeStruct or jax.Array with a sharding, or none: whole)."""
    import numpy as np

    shape = struct.sharding.shard_shape(struct.shape) if struct.sharding is not None else struct.shape
    return int(math.prod(shape)) * np.dtype(struct.dtype).itemsize


def state_bytes(abstract_state) -> dict[str, int]:
    """Per-device bytes of a train state (ShapeDtypeStructs with shardings): "parameters"
    (trainable + frozen), "optimizer" (optimizer state and the step counter), from each
    array's shard shape."""
    import jax

    params = sum(shard_bytes(a) for part in ("trainable", "frozen") for a in jax.tree.leaves(abstract_state[part]))
    optimizer = sum(shard_bytes(a) for part in ("opt_state", "step") for a in jax.tree.leaves(abstract_state[part]))
    return {"parameters": params, "optimizer": optimizer}


# ----------------------------------------------------------------------------- roofline


def roofline(chip: Chip | None, flops: float, bytes_accessed: float, collective_moved: float,
             model_flops: float) -> dict[str, float] | None:
    """An estimated step time from published peaks, per device (None without a chip):

        compute_s     max(flops / peak bf16 FLOP/s, bytes accessed / HBM bandwidth)
        collective_s  bytes a device sends in collectives / its one-way ICI bandwidth
                      (half the bidirectional figure), all links in use
        step_s        compute_s + collective_s: no overlap of communication with compute
        mfu           model FLOPs (no rematerialization) / (step_s x peak)

    A roofline, not a measurement: real steps lose time to kernels below peak and to
    collectives on fewer links than all; they gain it from overlap.
    """
    if chip is None or not chip.peak_flops:
        return None
    compute = max(flops / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth if chip.hbm_bandwidth else 0.0)
    collective = collective_moved / (chip.ici_bandwidth / 2) if chip.ici_bandwidth else 0.0
    step = compute + collective
    return {"compute_s": compute, "collective_s": collective, "step_s": step,
            "mfu": model_flops / (step * chip.peak_flops) if step > 0 else 0.0}
