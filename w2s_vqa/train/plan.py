"""Ahead-of-time plans of the train step: what each device holds, computes and sends.

`plan(config, target)` builds the very step `w2s-vqa train` runs (train.step.
build_train_step: the same shardings, donation, remat, dtype and global batch) over
abstract state and batch (ShapeDtypeStructs: nothing is allocated, no checkpoint is
read), compiles it for a target, and reads back per device:

    memory       the compiler's argument / output / aliased / temporary / generated-code
                 bytes (`Compiled.memory_analysis()`); total = argument + output - alias
                 + temp + code, against the chip's memory (fits, margin)
    analytic     parameter, optimizer-state and batch bytes from the shardings and
                 shapes; an activation estimate (`activation_bytes`)
    flops        the analytic count (`step_flops`) and the compiler's
                 (`Compiled.cost_analysis()`, which counts a loop body once)
    collectives  bytes each kind of collective moves, read from the compiled HLO
                 (`collective_bytes`)
    estimate     a roofline step time and MFU (`roofline`): an estimate, not a
                 measurement

Targets (`parse_target`):
    v5p-64, v6e-8, v4-16, v5e-4, v5p:2x4x4 ...  a TPU slice (TOPOLOGIES), compiled for
        libtpu's compile-only devices on this CPU machine (`pip install '.[tpu]'`);
    cpu:N   N simulated CPU devices (no extra needed; compiled in a subprocess with
            XLA_FLAGS=--xla_force_host_platform_device_count=N when this process has
            another number of CPU devices);
    local   this process's own devices (a GPU host: its accelerators).

A compile that runs out of device memory is a result (`fits` false, "does not fit:
needs X GiB of Y GiB"), not an exception. So is a state that cannot fit before any
compilation (its parameters, optimizer state and batch alone exceed the chip): the
planner says so without compiling.

`python -m w2s_vqa.train.plan` plans one point read as JSON from stdin ({"config":
..., "target": ..., "prompt_length": ...}) and prints the plan as one JSON line: the
fresh process a sweep (train.sweep) or a cpu:N plan runs each point in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any, Sequence

GIB = 2**30
GB = 1e9



def format_bytes(value: float) -> str:
    """Bytes in the unit that suits them: '1.25 GiB', '310.40 MiB', '96.00 KiB', '12 B'."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


# ----------------------------------------------------------------------------- chips


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip's published figures.

    hbm_bytes      memory per chip, bytes
    peak_flops     dense bf16 FLOP/s per chip
    hbm_bandwidth  bytes/s per chip
    ici_bandwidth  bidirectional inter-chip interconnect bytes/s per chip (all links)
    source         where the figures come from
    """

    kind: str
    hbm_bytes: float
    peak_flops: float
    hbm_bandwidth: float
    ici_bandwidth: float
    source: str
    # libtpu's device configuration: v4 and v5p chips hold two TensorCores that JAX
    # drives as one device ("megacore"); v5e and v6e chips hold one.
    chip_config: str = "default"


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 32 * GIB, 275e12, 1200 * GB, 6 * 90 * GB,
               "Cloud TPU docs, 'TPU v4' (275 TFLOPs bf16; 32 GiB HBM2 at 1200 GBps); ICI: 'How to Scale "
               "Your Model', chapter 'How to Think About TPUs' (6 links x 9e10 B/s bidirectional)",
               chip_config="megacore"),
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2765 * GB, 1200 * GB,
                "Cloud TPU docs, 'TPU v5p' (459 TFLOPs bf16; 95 GiB HBM2e at 2765 GBps; bidirectional ICI "
                "1200 GBps per chip)", chip_config="megacore"),
    # The docs write "16 GB" and "32 GB"; the chips hold 16 and 32 GiB: libtpu's compiler
    # reports 15.75 GiB of a v5e's HBM available to a program, more than 16e9 bytes.
    "v5e": Chip("v5e", 16 * GIB, 197e12, 819 * GB, 400 * GB,
                "Cloud TPU docs, 'TPU v5e' (197 TFLOPs bf16; 16 GB HBM2 at 819 GBps; bidirectional ICI "
                "400 GBps per chip)"),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1638 * GB, 800 * GB,
                "Cloud TPU docs, 'TPU v6e' (918 TFLOPs bf16; 32 GB HBM at 1638 GBps; bidirectional ICI "
                "800 GBps per chip)"),
}

# NVIDIA GPUs by jax's device_kind, for `local` plans on a GPU host: dense bf16 tensor-core
# peak (without sparsity), HBM and NVLink bandwidth from NVIDIA's data sheets (H100 SXM,
# H200 SXM, A100 SXM 80GB). Memory comes from the device itself (memory_stats).
GPUS: dict[str, Chip] = {
    "H100": Chip("H100", 80 * GB, 989e12, 3350 * GB, 900 * GB, "NVIDIA H100 Tensor Core GPU data sheet (SXM)"),
    "H200": Chip("H200", 141 * GB, 989e12, 4800 * GB, 900 * GB, "NVIDIA H200 Tensor Core GPU data sheet (SXM)"),
    "A100": Chip("A100", 80 * GB, 312e12, 2039 * GB, 600 * GB, "NVIDIA A100 Tensor Core GPU data sheet (SXM 80GB)"),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice by its Cloud name: chip, libtpu topology string, hosts."""

    name: str  # "v5p-64"
    chip: Chip
    shape: tuple[int, ...]  # chips along each torus axis, (2, 4, 4)
    chips_per_host: tuple[int, int, int]  # libtpu's chips_per_host_bounds

    @property
    def num_chips(self) -> int:
        return math.prod(self.shape)

    @property
    def hosts(self) -> int:
        return max(1, self.num_chips // math.prod(self.chips_per_host))

    @property
    def libtpu_name(self) -> str:
        """libtpu's topology name: "v5:2x4x4" (v5p's chips are "v5"), "v6e:8x8"."""
        prefix = {"v5p": "v5"}.get(self.chip.kind, self.chip.kind)
        return f"{prefix}:{'x'.join(str(s) for s in self.shape)}"


# Slice shapes, chips per axis, as the Cloud TPU docs' configuration tables list them
# ('TPU v4', 'TPU v5p': 3D tori named by TensorCores, two per chip; 'TPU v5e', 'TPU v6e':
# 2D tori named by chips).
_SHAPES_3D = [(2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8),
              (8, 8, 16), (8, 16, 16), (16, 16, 16), (16, 16, 24)]
_SHAPES_2D = [(1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)]


def _topologies() -> dict[str, Topology]:
    table = {}
    for kind in ("v4", "v5p"):
        for shape in _SHAPES_3D:
            if kind == "v4" and math.prod(shape) > 4096:
                continue  # a v4 pod has 4096 chips
            # Four chips per host (a 2x2x1 tray), per the docs' hosts column.
            table[f"{kind}-{2 * math.prod(shape)}"] = Topology(f"{kind}-{2 * math.prod(shape)}", CHIPS[kind], shape,
                                                               (2, 2, 1))
    for kind in ("v5e", "v6e"):
        for shape in _SHAPES_2D:
            n = math.prod(shape)
            # Up to 8 chips: one host; larger slices: hosts of 4 chips (2x2).
            host = (shape[0], shape[1], 1) if n <= 8 else (2, 2, 1)
            table[f"{kind}-{n}"] = Topology(f"{kind}-{n}", CHIPS[kind], shape, host)
    return table


TOPOLOGIES: dict[str, Topology] = _topologies()
_ALIASES = {"v5litepod": "v5e"}


class PlanError(ValueError):
    """A target, mesh or batch the planner cannot use; the message says what to change."""


def tpu_topology(name: str) -> Topology:
    """A TPU slice by Cloud name ("v5p-64", "v5litepod-8", "v6e-16") or chip:shape
    ("v5p:2x4x4", "v6e:4x4"). Raises PlanError for anything else, listing the names."""
    text = name.strip().lower()
    for alias, kind in _ALIASES.items():
        text = text.replace(alias, kind)
    if text in TOPOLOGIES:
        return TOPOLOGIES[text]
    match = re.fullmatch(r"(v4|v5p|v5e|v6e):(\d+(?:x\d+)+)", text)
    if match:
        kind, dims = match.group(1), tuple(int(x) for x in match.group(2).split("x"))
        want = 3 if kind in ("v4", "v5p") else 2
        if len(dims) != want or 0 in dims:
            raise PlanError(f"topology {name!r}: {kind} slices have {want} axes (e.g. "
                            f"{'2x4x4' if want == 3 else '4x4'})")
        n = math.prod(dims)
        host = (2, 2, 1) if want == 3 else ((dims[0], dims[1], 1) if n <= 8 else (2, 2, 1))
        if want == 3 and n < 4:
            host = (dims[0], dims[1], dims[2])
        return Topology(name, CHIPS[kind], dims, host)
    raise PlanError(f"unknown target {name!r}: a TPU slice ({', '.join(sorted(TOPOLOGIES, key=_topology_order))}; "
                    "or chip:shape such as v5p:2x4x4), cpu:N, or local")


def _topology_order(name: str):
    kind, _, count = name.partition("-")
    return kind, int(count)


# ----------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a plan compiles: kind "tpu" (a Topology), "cpu" (N simulated devices), "local"."""

    kind: str
    name: str
    topology: Topology | None = None
    num_devices: int = 0

    def to_text(self) -> str:
        return self.name


def parse_target(text: str) -> Target:
    """"cpu:8", "local", or a TPU slice name (`tpu_topology`). Raises PlanError."""
    text = str(text).strip()
    match = re.fullmatch(r"cpu:(\d+)", text)
    if match:
        n = int(match.group(1))
        if n < 1:
            raise PlanError(f"target {text!r}: at least one CPU device")
        return Target("cpu", text, num_devices=n)
    if text == "local":
        return Target("local", text)
    topology = tpu_topology(text)
    return Target("tpu", topology.name, topology=topology, num_devices=topology.num_chips)


def topology_table() -> list[dict[str, Any]]:
    """Every named TPU slice with its chip's figures, for `w2s-vqa plan --topologies`."""
    rows = []
    for name in sorted(TOPOLOGIES, key=_topology_order):
        t = TOPOLOGIES[name]
        rows.append({"name": name, "chip": t.chip.kind, "topology": t.libtpu_name, "chips": t.num_chips,
                     "hosts": t.hosts, "chips_per_host": math.prod(t.chips_per_host),
                     "hbm_gib_per_chip": t.chip.hbm_bytes / GIB, "peak_bf16_tflops": t.chip.peak_flops / 1e12,
                     "hbm_gbps": t.chip.hbm_bandwidth / GB, "ici_gbps_bidirectional": t.chip.ici_bandwidth / GB})
    return rows


# libtpu looks for a Cloud TPU VM's metadata when it starts; on any other machine it
# prints warnings about TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES that do not
# concern a compile-only topology. Naming a single local worker silences them. libtpu
# also takes /tmp/libtpu_lockfile so that one process owns the host's chips; compile-only
# devices own nothing, and several plans (a test run, a sweep) may load it at once.
LIBTPU_QUIET_ENV = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0",
                    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


def tpu_devices(topology: Topology) -> list:
    """libtpu's compile-only devices of `topology` (no TPU needed). Raises PlanError when
    libtpu is not installed."""
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise PlanError(f"planning for {topology.name} needs libtpu: pip install 'w2s-vqa[tpu]' "
                        "(libtpu 0.0.42.*, the release that pairs with jax 0.10.2)") from None
    for key, value in LIBTPU_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{topology.chip.kind}-{topology.num_chips}")
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.libtpu_name,
                                        chip_config_name=topology.chip.chip_config,
                                        chips_per_host_bounds=topology.chips_per_host, num_slices=1)
    devices = list(desc.devices)
    if len(devices) != topology.num_chips:
        raise PlanError(f"libtpu made {len(devices)} devices for {topology.name} ({topology.libtpu_name}); "
                        f"expected {topology.num_chips}")
    return devices


# ----------------------------------------------------------------------------- the prompt


def prompt_shape(config, model_cfg) -> tuple[int, tuple[int, ...], str]:
    """(prompt length L, the five level token ids, where L came from), as the training
    loop builds the prompt: the tokenizer of `models.config.tokenizer_dir(config)`.

    When that tokenizer is not on this machine (model.hf_dir names a pod's path), the
    length is estimated with the tiny tokenizer shipped for the presets: its text
    tokens plus the model's 2 x tokens_per_video video tokens. The video tokens are
    exact and dominate (3158 of the 7B config's tokens); Qwen2's own tokenizer splits
    the chat text into fewer pieces than the tiny one, so the estimate errs long, on the
    side of memory.
    """
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa.models import config as model_config_lib

    directory = model_config_lib.tokenizer_dir(config)
    source = f"tokenizer {directory}"
    try:
        tokenizer = prompt_lib.load_tokenizer(directory)
    except FileNotFoundError:
        tokenizer = prompt_lib.load_tokenizer(model_config_lib.TINY_TOKENIZER)
        source = (f"estimate: {directory} has no tokenizer.json here; text tokens of the tiny tokenizer "
                  "plus the video tokens")
    pair = prompt_lib.build_pair_prompt(tokenizer, video_token_id=model_cfg.video_token_index,
                                        tokens_per_video=model_cfg.tokens_per_video)
    return pair.length, pair.level_token_ids, source


# ----------------------------------------------------------------------------- analytic counts


def _block_flags(keys: Sequence[str], trainable: set[str]):
    """Which blocks have trainable weights, by parameter path prefix."""
    def any_trainable(prefix):
        return any(k in trainable for k in keys if k.startswith(prefix))
    return any_trainable


def step_flops(model_cfg, trainable_keys: Sequence[str], all_keys: Sequence[str], pairs: int,
               seq_len: int) -> dict[str, float]:
    """Matmul FLOPs of one train step over `pairs` pairs (2 videos each) of `seq_len` tokens.

    Returns {"forward", "backward", "recompute", "model", "total"}: model = forward +
    backward (the MFU convention: rematerialization is not useful work), total = model +
    recompute. Counted per matmul (2 x M x N x K; elementwise work left out):
      forward   SigLIP patch embedding and layers (Q, K, V, O projections, MLP, the two
                attention matmuls), the multimodal and motion projectors, and the Qwen2
                layers (Q, K, V, O with grouped K/V, gated MLP, attention over the keys
                each query block sees: `causal_pairs`)
      backward  per matmul, the input gradient (as many FLOPs as its forward) where a
                trainable parameter lies upstream, and the weight gradient where its weight
                is trainable; the attention matmuls' two input gradients where any gradient
                flows (frozen parameters are not differentiated: train.optim)
      recompute with model.remat, each layer's forward again where its backward runs,
                but for its last matmul (MLP down projection), whose output the backward
                pass does not need
    The level readout (5 rows of the output layer) and the 2x video pooling are left
    out: they are a small fraction of these.
    """
    from w2s_vqa.models import config as model_config_lib

    trainable = set(trainable_keys)
    flag = _block_flags(all_keys, trainable)
    v, t = model_cfg.vision, model_cfg.text
    frames = pairs * 2 * model_cfg.num_frames
    videos = pairs * 2
    n, d, i_v = v.grid_size ** 2, v.hidden_size, v.intermediate_size
    vision_run = max(model_config_lib.check_feature_layers(model_cfg.feature_layers, v.num_hidden_layers))
    h, kv, i_t, L = t.hidden_size, t.num_key_value_heads * t.head_dim, t.intermediate_size, seq_len

    # (forward weight matmuls, forward attention matmuls, weights trainable, gradient flows into the input,
    #  rematerialized: FLOPs of the last matmul, which is not recomputed, or None) per block, in the
    #  order the forward pass runs them.
    remat = model_cfg.remat
    blocks = []
    patch_w = flag("vision_tower.embeddings")
    blocks.append((frames * 2 * n * v.patch_size ** 2 * v.num_channels * d, 0.0, patch_w, False, None))
    upstream = patch_w  # a trainable parameter lies before this point
    for layer in range(vision_run):
        w = flag(f"vision_tower.layers.{layer}.")
        lin = frames * 2 * n * (4 * d * d + 2 * d * i_v)
        att = frames * 2 * 2 * n * n * d
        blocks.append((lin, att, w, upstream, frames * 2 * n * d * i_v if remat else None))
        upstream = upstream or w
    w = flag("multi_modal_projector")
    d_in = d * len(model_cfg.feature_layers)
    blocks.append((frames * 2 * n * (d_in * h + h * h), 0.0, w, upstream, None))
    upstream = upstream or w or flag("image_newline")
    w = flag("motion_projector")
    blocks.append((videos * model_cfg.num_motion_chunks * 2 * (model_cfg.motion_dim * h + h * h), 0.0, w, False,
                   None))
    upstream = upstream or w or flag("language_model.embed_tokens")
    seen = causal_pairs(L, model_cfg.attention)
    for layer in range(t.num_hidden_layers):
        w = flag(f"language_model.layers.{layer}.")
        lin = pairs * 2 * L * (2 * h * h + 2 * h * kv + 3 * h * i_t)
        att = pairs * 2 * 2 * seen * h
        blocks.append((lin, att, w, upstream, pairs * 2 * L * h * i_t if remat else None))
        upstream = upstream or w

    forward = backward = recompute = 0.0
    for lin, att, weights_trainable, into_input, last_matmul in blocks:
        forward += lin + att
        grads_flow = weights_trainable or into_input
        backward += lin * (int(weights_trainable) + int(into_input)) + (2 * att if grads_flow else 0.0)
        if last_matmul is not None and grads_flow:
            recompute += lin + att - last_matmul
    return {"forward": forward, "backward": backward, "recompute": recompute, "model": forward + backward,
            "total": forward + backward + recompute}


def causal_pairs(length: int, attention: str) -> int:
    """(query, key) pairs the decoder's causal attention computes over `length` tokens:
    query blocks of models.qwen2.ATTENTION_BLOCK rows, each against the keys up to its
    end (layers.causal_attention; "xla" and "blocked"), or the causal triangle,
    L (L + 1) / 2, for cuDNN's fused kernel."""
    from w2s_vqa.models import qwen2

    if attention == "cudnn":
        return length * (length + 1) // 2
    block = qwen2.ATTENTION_BLOCK
    if length <= block:
        return length * length
    return sum((min(lo + block, length) - lo) * min(lo + block, length) for lo in range(0, length, block))


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
      SigLIP layer, per frame:    N x (7 D + 2 I) + heads x N^2
    With model.remat only each layer's input is kept (L x H, N x D) plus one layer's set,
    rebuilt during its backward. `local_pairs` is the batch one device holds; tensor
    parallelism, which splits heads and MLP width, is not divided out: an upper bound.
    The compiler's temporary bytes are the measured counterpart.
    """
    import numpy as np

    trainable = set(trainable_keys)
    flag = _block_flags(all_keys, trainable)
    itemsize = np.dtype(model_cfg.dtype).itemsize
    v, t = model_cfg.vision, model_cfg.text
    frames = local_pairs * 2 * model_cfg.num_frames
    n, d = v.grid_size ** 2, v.hidden_size
    h, kv, L = t.hidden_size, t.num_key_value_heads * t.head_dim, seq_len
    vision_full = frames * (n * (7 * d + 2 * v.intermediate_size) + v.num_attention_heads * n * n)
    vision_input = frames * n * d
    # cuDNN's fused kernel keeps no probabilities (it recomputes them from the row statistics).
    probabilities = 0 if model_cfg.attention == "cudnn" else t.num_attention_heads * causal_pairs(L, "xla")
    text_full = local_pairs * (L * (6 * h + 2 * kv + 3 * t.intermediate_size) + probabilities)
    text_input = local_pairs * L * h
    vision_runs = flag("vision_tower.")
    text_runs = vision_runs or flag("multi_modal_projector") or flag("motion_projector") or flag("image_newline") \
        or flag("language_model.")
    layers = []
    if vision_runs:
        layers += [(vision_full, vision_input)] * v.num_hidden_layers
    if text_runs:
        layers += [(text_full, text_input)] * t.num_hidden_layers
    if not layers:
        return 0.0
    if model_cfg.remat:
        elements = sum(inp for _, inp in layers) + max(full for full, _ in layers)
    else:
        elements = sum(full for full, _ in layers)
    return float(elements * itemsize)


def _shard_bytes(struct) -> int:
    import numpy as np

    shape = struct.sharding.shard_shape(struct.shape) if struct.sharding is not None else struct.shape
    return int(math.prod(shape)) * np.dtype(struct.dtype).itemsize


def state_bytes(abstract_state) -> dict[str, int]:
    """Per-device bytes of a train state (ShapeDtypeStructs with shardings): "parameters"
    (trainable + frozen), "optimizer" (optimizer state and the step counter), from each
    array's shard shape."""
    import jax

    params = sum(_shard_bytes(a) for part in ("trainable", "frozen") for a in jax.tree.leaves(abstract_state[part]))
    optimizer = sum(_shard_bytes(a) for part in ("opt_state", "step") for a in jax.tree.leaves(abstract_state[part]))
    return {"parameters": params, "optimizer": optimizer}


# ----------------------------------------------------------------------------- collectives

_ITEMSIZE = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3": 1,
             "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
             "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}
_SHAPE = re.compile(r"\b(" + "|".join(sorted(_ITEMSIZE, key=len, reverse=True)) + r")\[([0-9,]*)\]")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.+?)\s+(?P<op>(?:" + "|".join(COLLECTIVES) +
                 r"|ragged-all-to-all)(?:-start)?)\(")


def _arrays(type_text: str) -> list[tuple[str, int]]:
    """(dtype, bytes) of every array in an HLO type: one shape or a tuple of them."""
    out = []
    for dtype, dims in _SHAPE.findall(type_text):
        count = math.prod(int(x) for x in dims.split(",") if x) if dims else 1
        out.append((dtype, count * _ITEMSIZE[dtype]))
    return out


def _group_size(line: str, num_devices: int) -> int:
    """Participants per group of a collective, from its replica_groups in any of XLA's
    three spellings: explicit ({{0,1},{2,3}}), iota ([2,4]<=[8]) or mesh
    (mesh['axis_0'=4,'axis_1'=2] {'axis_0'})."""
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if mesh:
        sizes = dict((name, int(size)) for name, size in re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
        chosen = re.findall(r"'([^']+)'", mesh.group(2))
        return math.prod(sizes[a] for a in chosen) if chosen else 1
    iota = re.search(r"replica_groups=\[([0-9,]+)\]<=", line)
    if iota:
        dims = [int(x) for x in iota.group(1).split(",")]
        return math.prod(dims[1:]) if len(dims) > 1 else dims[0]
    explicit = re.search(r"replica_groups=\{(\{[0-9,]*\})?", line)
    if explicit:
        first = explicit.group(1)
        if first and first != "{}":
            return len([x for x in first.strip("{}").split(",") if x])
    return num_devices


def collective_bytes(hlo_text: str, num_devices: int) -> dict[str, dict[str, float]]:
    """Per kind of collective in a compiled (partitioned) HLO module: {"count", "bytes",
    "moved"} per device, and "total" summed over kinds.

    bytes  the data the op carries (all-gather: its gathered result; reduce-scatter:
           its scattered result; the rest: their result)
    moved  what one device sends with the bandwidth-optimal ring algorithms, for a
           group of n: all-gather S (n-1)/n, reduce-scatter S (n-1), all-reduce
           2 S (n-1)/n, all-to-all S (n-1)/n, collective-permute S

    Ops inside a loop body count once, as in cost analysis. Async pairs count at
    their -start op.
    """
    kinds = {k: {"count": 0, "bytes": 0.0, "moved": 0.0} for k in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _OP.match(line)
        if not match:
            continue
        op = match.group("op")
        kind = op[: -len("-start")] if op.endswith("-start") else op
        kind = "all-to-all" if kind == "ragged-all-to-all" else kind
        arrays = _arrays(match.group("type"))
        if op in ("all-gather-start", "collective-permute-start"):
            # (operands..., results...[, u32 contexts]): the results are the second half.
            data = [b for dtype, b in arrays if not (dtype == "u32" and b == 4)]
            data = data[len(data) // 2:] if len(data) > 1 else data
        else:
            data = [b for _, b in arrays]
        size = float(sum(data))
        n = _group_size(line, num_devices)
        moved = {"all-gather": size * (n - 1) / n, "reduce-scatter": size * (n - 1),
                 "all-reduce": 2 * size * (n - 1) / n, "all-to-all": size * (n - 1) / n,
                 "collective-permute": size}[kind] if n > 0 else 0.0
        kinds[kind]["count"] += 1
        kinds[kind]["bytes"] += size
        kinds[kind]["moved"] += moved
    kinds["total"] = {key: sum(kinds[k][key] for k in COLLECTIVES) for key in ("count", "bytes", "moved")}
    return kinds


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


# ----------------------------------------------------------------------------- plan

_OOM = re.compile(r"(?:RESOURCE_EXHAUSTED|[Rr]an out of memory|Out of memory|exceeds the memory)")
# XLA's two spellings of an out-of-memory verdict: "Used 110.97G of 95.74G hbm" and "the total
# memory required for HLO temporaries (76.32G) exceeds available HBM (15.75G)".
_OOM_FIGURES = (re.compile(r"Used\s+([0-9.]+)([KMGT]?)i?B?\s+of\s+([0-9.]+)([KMGT]?)i?B?"),
                re.compile(r"required for ([\w ]+?) \(([0-9.]+)([KMGT]?)i?B?\) exceeds available \w+ "
                           r"\(([0-9.]+)([KMGT]?)i?B?\)"))
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def oom_figures(message: str) -> tuple[float, float, str] | None:
    """(bytes needed, bytes available, what needs them: "" or e.g. "HLO temporaries") from
    an XLA out-of-memory error, or None where it gives no figures."""
    used = _OOM_FIGURES[0].search(message)
    if used:
        return float(used.group(1)) * _UNITS[used.group(2)], float(used.group(3)) * _UNITS[used.group(4)], ""
    required = _OOM_FIGURES[1].search(message)
    if required:
        return (float(required.group(2)) * _UNITS[required.group(3)],
                float(required.group(4)) * _UNITS[required.group(5)], required.group(1))
    return None


def _host_memory() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _device_chip(target: Target, devices) -> tuple[Chip | None, float]:
    """(the chip's figures or None, memory per device in bytes) of a target's devices."""
    if target.kind == "tpu":
        return target.topology.chip, target.topology.chip.hbm_bytes
    device = devices[0]
    if device.platform == "cpu":
        # Simulated devices share the host's memory.
        return None, _host_memory() / len(devices)
    chip = next((c for kind, c in GPUS.items() if kind in device.device_kind), None)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    capacity = float((stats or {}).get("bytes_limit", 0)) or (chip.hbm_bytes if chip else 0.0)
    return chip, capacity


def _devices_for(target: Target):
    import jax

    if target.kind == "tpu":
        return tpu_devices(target.topology)
    if target.kind == "cpu":
        devices = jax.devices("cpu")
        if len(devices) != target.num_devices:
            raise PlanError(f"this process has {len(devices)} CPU devices, not {target.num_devices}: "
                            "plan() runs cpu:N in a subprocess then")
        return devices
    return jax.devices()


def _cpu_devices_here() -> int | None:
    """How many CPU devices this process has, or None when JAX has not started a CPU
    backend and can still be told a count (never for an imported, initialized JAX)."""
    import jax

    try:
        return len(jax.devices("cpu"))
    except RuntimeError:
        return None


def _unused_batch_entries(lowered, abstract_state, batch) -> list[str]:
    """Batch entries jit pruned from the compiled step's arguments because the step does
    not read them (jax keeps the kept inputs' indices in the lowering's compile args; []
    where this jax does not say)."""
    import jax

    try:
        kept = lowered._lowering.compile_args["kept_var_idx"]
    except (AttributeError, KeyError, TypeError):
        return []
    offset = len(jax.tree.leaves(abstract_state))
    names = list(batch)  # a dict flattens in sorted key order
    return [name for i, name in enumerate(sorted(names)) if offset + i not in kept]


def _check_mesh(config, mesh, batch_sharding) -> None:
    from w2s_vqa.train import step as step_lib

    shards = step_lib.batch_shards(batch_sharding)
    pairs = int(config.data.batch_size)
    if pairs % shards:
        raise PlanError(f"data.batch_size={pairs} does not split over the {shards} batch shards of mesh "
                        f"{dict(mesh.shape)} (the rules table's batch axes): choose a batch size divisible by "
                        f"{shards} or a mesh with fewer data x fsdp devices")


def plan(config, target: Target | str, *, prompt_length: int | None = None, compile: bool = True) -> dict[str, Any]:
    """Compile `config`'s train step for `target` ahead of time and report per device.

    Returns a JSON-ready dict: target, device kind and count, mesh, the config's model
    settings and prompt length, "fits" (bool), "status" ("fits", "does not fit: needs X
    GiB of Y GiB", ...), "memory" (compiler bytes and capacity), "analytic" (bytes from
    shapes and shardings), "flops", "collectives", "compile_s" and "estimate"
    (`roofline`, or None where the chip's peaks are unknown). All byte and FLOP figures
    are per device.

    Raises PlanError for an unknown target, a mesh the target's devices cannot form or a
    batch the mesh cannot split (each naming what to change), and what the config's
    readers raise (ConfigError naming the key). A cpu:N target with another number of
    CPU devices in this process is planned in a subprocess (`plan_in_subprocess`).
    With compile=False only the analytic figures are given ("compiled" false, "fits"
    None): seconds for any model.
    """
    target = parse_target(target) if isinstance(target, str) else target
    if target.kind == "cpu":
        here = _cpu_devices_here()
        if here != target.num_devices:
            return plan_in_subprocess(config, target, prompt_length=prompt_length, compile=compile)
    from w2s_vqa import sharding as sharding_lib
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.train import step as step_lib

    model_cfg = model_config_lib.student_config(config)
    if prompt_length is None:
        length, level_ids, length_source = prompt_shape(config, model_cfg)
    else:
        length, level_ids, length_source = int(prompt_length), (0, 1, 2, 3, 4), "given"
        length_needed = 2 * model_cfg.tokens_per_video + 1
        if length < length_needed:
            raise PlanError(f"prompt length {length}: the two videos alone take {length_needed - 1} tokens")
    devices = _devices_for(target)
    try:
        mesh = sharding_lib.mesh_from_config(config, devices=devices)
    except ValueError as e:
        raise PlanError(f"mesh.shape={tuple(config.mesh.shape)} on {target.name} ({len(devices)} devices): {e}") \
            from None
    chip, capacity = _device_chip(target, devices)

    ts = step_lib.build_train_step(config, mesh, level_ids)
    _check_mesh(config, mesh, ts.batch_sharding)
    batch = step_lib.abstract_batch(config, length, ts.batch_sharding)
    state = state_bytes(ts.abstract_state)
    batch_bytes = sum(_shard_bytes(a) for a in batch.values())
    pairs = int(config.data.batch_size)
    local_pairs = pairs // step_lib.batch_shards(ts.batch_sharding)
    layout = ts.layout
    flops = step_flops(model_cfg, layout.trainable_keys, layout.codec.keys, pairs, length)
    n_dev = mesh.devices.size
    parameters_global = sum(math.prod(s) for s in layout.codec.shapes.values())
    trainable_global = sum(math.prod(layout.codec.shapes[k]) for k in layout.trainable_keys)
    result: dict[str, Any] = {
        "target": target.name, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
        "devices": n_dev, "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "hosts": target.topology.hosts if target.topology else 1,
        "model": {"preset": config.model.preset, "hf_dir": config.model.hf_dir, "dtype": model_cfg.dtype,
                  "remat": bool(model_cfg.remat), "attention": model_cfg.attention,
                  "parameters": parameters_global, "trainable_parameters": trainable_global},
        "batch_size": pairs, "pairs_per_device": local_pairs, "prompt_length": length,
        "prompt_length_source": length_source,
        "chip": dataclasses.asdict(chip) if chip else None,
        "analytic": {"parameters": state["parameters"], "optimizer": state["optimizer"], "batch": batch_bytes,
                     "arguments": state["parameters"] + state["optimizer"] + batch_bytes,
                     "activations_estimate": activation_bytes(model_cfg, layout.trainable_keys, layout.codec.keys,
                                                              local_pairs, length)},
        "flops": {"analytic_step": flops["total"], "analytic_model": flops["model"],
                  "analytic_per_device": flops["total"] / n_dev, "analytic_model_per_device": flops["model"] / n_dev},
        "memory": {"capacity": capacity},
    }

    if result["analytic"]["arguments"] > capacity > 0 and target.kind != "cpu":
        need = result["analytic"]["arguments"]
        return {**result, "compiled": False, "fits": False,
                "status": f"does not fit: the parameters, optimizer state and batch alone need "
                          f"{format_bytes(need)} of {format_bytes(capacity)} per device (not compiled)",
                "collectives": None, "compile_s": 0.0, "estimate": None}

    if not compile:
        return {**result, "compiled": False, "fits": None, "status": "not compiled: analytic figures only",
                "collectives": None, "compile_s": 0.0, "estimate": None}

    start = time.perf_counter()
    lowered = ts.step.lower(ts.abstract_state, batch)
    unused = _unused_batch_entries(lowered, ts.abstract_state, batch)
    if unused:
        # jit drops inputs the step never reads (e.g. `target` without soft targets): they
        # are not the compiled step's arguments.
        used_batch = sum(_shard_bytes(a) for k, a in batch.items() if k not in unused)
        result["analytic"].update({"batch": used_batch, "batch_unused": unused,
                                   "arguments": state["parameters"] + state["optimizer"] + used_batch})
    try:
        compiled = lowered.compile()
    except Exception as e:  # the compiler's out-of-memory verdict is a result
        message = str(e)
        if not _OOM.search(message):
            raise
        figures = oom_figures(message)
        status = (f"does not fit: needs {format_bytes(figures[0])} of {format_bytes(figures[1])}"
                  f"{f' for {figures[2]}' if figures[2] else ''} (the compiler's figures)"
                  if figures else "does not fit: " + message.strip().splitlines()[0][:300])
        return {**result, "compiled": False, "fits": False, "status": status,
                "memory": {**result["memory"], **({"needed": figures[0], "compiler_capacity": figures[1]}
                                                  if figures else {})},
                "collectives": None, "compile_s": time.perf_counter() - start, "estimate": None}
    compile_s = time.perf_counter() - start

    mem = compiled.memory_analysis()
    memory = {"argument": int(mem.argument_size_in_bytes), "output": int(mem.output_size_in_bytes),
              "alias": int(mem.alias_size_in_bytes), "temp": int(mem.temp_size_in_bytes),
              "generated_code": int(mem.generated_code_size_in_bytes)}
    memory["total"] = (memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
                       + memory["generated_code"])
    memory["capacity"] = capacity
    memory["margin"] = capacity - memory["total"] if capacity else None
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    collectives = collective_bytes(compiled.as_text(), n_dev)
    compiler_flops = float(cost.get("flops", 0.0))
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    result["flops"].update({"compiler_per_device": compiler_flops, "bytes_accessed_per_device": bytes_accessed})
    fits = memory["margin"] is None or memory["margin"] >= 0
    status = (f"fits: {format_bytes(memory['total'])} of {format_bytes(capacity)}" if fits
              else f"does not fit: needs {format_bytes(memory['total'])} of {format_bytes(capacity)}")
    estimate = roofline(chip, max(compiler_flops, result["flops"]["analytic_per_device"]), bytes_accessed,
                        collectives["total"]["moved"], result["flops"]["analytic_model_per_device"])
    return {**result, "compiled": True, "fits": fits, "status": status, "memory": memory,
            "collectives": collectives, "compile_s": compile_s, "host_peak_bytes": _host_peak_bytes(),
            "estimate": estimate}


def _host_peak_bytes() -> int | None:
    """This process's peak resident memory so far (the compile's, in a fresh process), bytes."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
    except (ImportError, OSError):
        return None


# ----------------------------------------------------------------------------- in a fresh process


def environment_for(target: Target) -> dict[str, str]:
    """This process's environment as a process planning for `target` needs it before JAX
    starts: the CPU backend for compile-only targets, N devices for cpu:N, libtpu quiet."""
    env = dict(os.environ)
    if target.kind in ("cpu", "tpu"):
        env["JAX_PLATFORMS"] = "cpu"
    if target.kind == "cpu":
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={target.num_devices}".strip()
    if target.kind == "tpu":
        for key, value in LIBTPU_QUIET_ENV.items():
            env.setdefault(key, value)
    return env


def plan_in_subprocess(config, target: Target | str, *, prompt_length: int | None = None, compile: bool = True,
                       timeout: float | None = None) -> dict[str, Any]:
    """`plan` in a fresh Python process (its memory is freed when it exits; cpu:N gets its
    device count). Raises PlanError with the child's last error line when it fails,
    subprocess.TimeoutExpired after `timeout` seconds."""
    target = parse_target(target) if isinstance(target, str) else target
    request = json.dumps({"config": json.loads(config.to_json()), "target": target.name,
                          "prompt_length": prompt_length, "compile": compile})
    proc = subprocess.run([sys.executable, "-m", "w2s_vqa.train.plan"], input=request, capture_output=True,
                          text=True, env=environment_for(target), timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode < 0:
        # SIGKILL from outside is most often the kernel's out-of-memory killer: compiling a
        # large model's step holds much of a small host's memory (README gives figures).
        hint = " (the kernel's out-of-memory killer, most often: free host memory or plan fewer points at once)" \
            if proc.returncode == -9 else ""
        raise PlanError(f"planning for {target.name} was killed by signal {-proc.returncode}{hint}")
    if proc.returncode != 0 or not lines:
        errors = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = errors[-1] if errors else f"exit status {proc.returncode}"
        raise PlanError(last[len("error: "):] if last.startswith("error: ") else
                        f"planning for {target.name} failed: {last}")
    return json.loads(lines[-1])


def _main() -> int:
    import ml_collections

    request = json.loads(sys.stdin.read())
    config = ml_collections.ConfigDict(request["config"])
    target = parse_target(request["target"])
    try:
        result = plan(config, target, prompt_length=request.get("prompt_length"),
                      compile=request.get("compile", True))
    except ValueError as e:  # PlanError, ConfigError: the message is the user's to read
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
