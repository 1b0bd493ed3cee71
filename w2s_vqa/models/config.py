"""Student configuration: dataclasses, presets, and translation to and from Hugging Face.

`StudentConfig.from_hf_config` reads a LLaVA-OneVision `config.json` dict and
`to_hf_config` writes one that `transformers.LlavaOnevisionConfig` accepts, so a
directory we export loads with `from_pretrained`. The video settings (frames per
video, motion chunks) are ours; they travel in `w2s_vqa.json` beside the export.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

from w2s_vqa import prompt
# One ConfigError for the run config and the student's: the run config is the lower layer.
from w2s_vqa.config import ConfigError  # noqa: F401 (callers catch it as models.config.ConfigError too)
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER

ATTENTION_KERNELS = ("xla", "cudnn", "blocked")
# model.remat: what each layer keeps for its backward pass (the jax.checkpoint policies:
# models.stack.REMAT_POLICIES). "minimal" keeps the projections' outputs, "save_dots" every
# matmul's, "full" only the layer's input; "minimal_offloaded" moves "minimal"'s to host memory.
REMAT_NAMES = ("none", "full", "minimal", "save_dots", "minimal_offloaded")
_LEGACY_REMAT = {"true": "full", "false": "none"}
_log = logging.getLogger(__name__)
_WARNED: set[str] = set()


class RematPolicy(str):
    """A REMAT_NAMES name; false when it is "none", so `if cfg.remat:` still asks "are
    layers rematerialized?" as it did when remat was a boolean."""

    def __bool__(self) -> bool:
        return str(self) != "none"


def remat_policy(value) -> RematPolicy:
    """The policy name of a `model.remat` value: one of REMAT_NAMES, or True / False (and
    their strings, as `--set` gives them) read as "full" / "none" with one deprecation line.
    Raises ConfigError naming the value otherwise."""
    if isinstance(value, RematPolicy):
        return value
    key = str(value).strip().lower()
    if key in _LEGACY_REMAT:
        if key not in _WARNED:  # one line per run, however often a config is read
            _WARNED.add(key)
            _log.warning("model.remat=%s is deprecated: write model.remat=%r", value, _LEGACY_REMAT[key])
        return RematPolicy(_LEGACY_REMAT[key])
    if key not in REMAT_NAMES:
        raise ConfigError(f"model.remat={value!r}: choose one of {', '.join(REMAT_NAMES)}")
    return RematPolicy(key)
HF_CONFIG_FILE = "config.json"  # a Hugging Face model directory's config
# SigLIP's image processor: rescale by 1/255, then normalize every channel with mean 0.5,
# std 0.5 (the student, the PyTorch scorer and an export's processor files all read these).
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower (no pooling head: LLaVA-OneVision reads patch features)."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 26
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 384
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Qwen2 decoder."""

    vocab_size: int = 152128
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    # Std of the normal random init (Qwen2's and the projectors', as transformers sets them).
    initializer_range: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """LLaVA-OneVision video path plus the motion projector, and how a video becomes tokens."""

    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    vision_feature_layer: int | tuple[int, ...] = -1
    vision_feature_select_strategy: str = "full"
    image_token_index: int = 151646
    video_token_index: int = 151647
    # Ours (docs/method.md "Student"): frames per video at 1 fps, one motion token per
    # one-second chunk, each chunk a 256-d SlowFast fast-pathway feature.
    num_frames: int = 8
    num_motion_chunks: int = 10
    motion_dim: int = 256
    # Compute: trainable parameters stay float32 (frozen ones may be held in `dtype`:
    # train.step); activations and matmuls run in `dtype`.
    dtype: str = "float32"
    remat: str = "none"  # REMAT_NAMES; True / False still read as "full" / "none"
    # Layers of each tower stacked on a leading axis and run by one lax.scan (models.stack):
    # one layer body to compile instead of one per layer; parameter paths drop the index.
    scan_layers: bool = False
    # Attention kernel: "xla" (plain batched matmuls; any backend, the parity reference),
    # "cudnn" (the fused flash kernel through jax.nn.dot_product_attention; NVIDIA
    # GPUs, bf16/fp16 compute only) or "blocked" (a few heads at a time with a
    # recomputing backward pass, for CPUs on one device; layers.blocked_attention).
    attention: str = "xla"

    def __post_init__(self):
        object.__setattr__(self, "remat", remat_policy(self.remat))
        if self.attention not in ATTENTION_KERNELS:
            raise ConfigError(f"attention={self.attention!r}: choose one of {', '.join(ATTENTION_KERNELS)}")
        if self.attention == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"attention='cudnn' needs dtype bfloat16 or float16, not {self.dtype!r}")

    @property
    def tie_word_embeddings(self) -> bool:
        return self.text.tie_word_embeddings

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layer = self.vision_feature_layer
        return (layer,) if isinstance(layer, int) else tuple(layer)

    @property
    def pooled_grid(self) -> int:
        """Side of the patch grid after LLaVA-OneVision's 2x bilinear video pooling."""
        return math.ceil(self.vision.grid_size / 2)

    @property
    def tokens_per_frame(self) -> int:
        return self.pooled_grid**2

    @property
    def tokens_per_video(self) -> int:
        """Frame tokens, one image-newline token, then one token per motion chunk."""
        return self.num_frames * self.tokens_per_frame + 1 + self.num_motion_chunks

    def replace(self, **changes) -> "StudentConfig":
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------- Hugging Face
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], *, strict: bool = True, **ours) -> "StudentConfig":
        """From a LLaVA-OneVision config.json dict; `ours` sets frames, motion chunks, dtype.

        With strict=False, unsupported settings are left for the caller to report
        (see `hf_config_problems`) and the shapes are read anyway.
        """
        problems = hf_config_problems(hf)
        if strict and problems:
            raise ConfigError("unsupported config: " + "; ".join(problems))
        v = dict(hf.get("vision_config") or {})
        t = dict(hf.get("text_config") or {})
        rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
        strategy = hf.get("vision_feature_select_strategy", "full")
        defaults_v, defaults_t = VisionConfig(), TextConfig()
        vision = VisionConfig(
            hidden_size=v.get("hidden_size", 768),
            intermediate_size=v.get("intermediate_size", 3072),
            num_hidden_layers=v.get("num_hidden_layers", 12),
            num_attention_heads=v.get("num_attention_heads", 12),
            num_channels=v.get("num_channels", 3),
            image_size=v.get("image_size", 224),
            patch_size=v.get("patch_size", 16),
            layer_norm_eps=v.get("layer_norm_eps", defaults_v.layer_norm_eps),
            hidden_act=v.get("hidden_act", defaults_v.hidden_act),
        )
        heads = t.get("num_attention_heads", 32)
        head_dim = t.get("head_dim")
        if head_dim is not None and head_dim * heads != t.get("hidden_size", 4096):
            raise ConfigError(f"text_config.head_dim={head_dim} with {heads} heads does not give hidden_size")
        text = TextConfig(
            vocab_size=t.get("vocab_size", 151936),
            hidden_size=t.get("hidden_size", 4096),
            intermediate_size=t.get("intermediate_size", 22016),
            num_hidden_layers=t.get("num_hidden_layers", 32),
            num_attention_heads=heads,
            num_key_value_heads=t.get("num_key_value_heads") or heads,
            max_position_embeddings=t.get("max_position_embeddings", 32768),
            rope_theta=float(rope.get("rope_theta", t.get("rope_theta", 10000.0))),
            rms_norm_eps=t.get("rms_norm_eps", defaults_t.rms_norm_eps),
            hidden_act=t.get("hidden_act", "silu"),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings") or t.get("tie_word_embeddings", False)),
            initializer_range=t.get("initializer_range", defaults_t.initializer_range),
        )
        layer = hf.get("vision_feature_layer", -1)
        return cls(
            vision=vision,
            text=text,
            projector_hidden_act=hf.get("projector_hidden_act", "gelu"),
            multimodal_projector_bias=hf.get("multimodal_projector_bias", True),
            vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
            vision_feature_select_strategy=strategy,
            image_token_index=hf.get("image_token_index", hf.get("image_token_id", 151646)),
            video_token_index=hf.get("video_token_index", hf.get("video_token_id", 151647)),
            **ours,
        )

    def to_hf_config(self) -> dict[str, Any]:
        """A config.json dict for transformers' LlavaOnevisionForConditionalGeneration."""
        v, t = self.vision, self.text
        layer = self.vision_feature_layer
        return {
            "architectures": ["LlavaOnevisionForConditionalGeneration"],
            "model_type": "llava_onevision",
            "image_token_index": self.image_token_index,
            "video_token_index": self.video_token_index,
            "projector_hidden_act": self.projector_hidden_act,
            "multimodal_projector_bias": self.multimodal_projector_bias,
            "vision_feature_layer": layer if isinstance(layer, int) else list(layer),
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "tie_word_embeddings": t.tie_word_embeddings,
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers,
                "num_attention_heads": v.num_attention_heads,
                "num_channels": v.num_channels,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "layer_norm_eps": v.layer_norm_eps,
                "hidden_act": v.hidden_act,
                "vision_use_head": False,
            },
            "text_config": {
                "model_type": "qwen2",
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads,
                "max_position_embeddings": t.max_position_embeddings,
                "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta},
                "rms_norm_eps": t.rms_norm_eps,
                "hidden_act": t.hidden_act,
                "tie_word_embeddings": t.tie_word_embeddings,
                "initializer_range": t.initializer_range,
                "use_sliding_window": False,
            },
        }

    def video_settings(self) -> dict[str, Any]:
        """What w2s_vqa.json records beside an export (prompt, levels, video shapes)."""
        return {
            "levels": list(prompt.LEVELS),
            "alpha": list(prompt.ALPHA),
            "system_prompt": prompt.SYSTEM_PROMPT,
            "question": prompt.QUESTION,
            "answer_template": prompt.ANSWER_TEMPLATE,
            "num_frames": self.num_frames,
            "num_motion_chunks": self.num_motion_chunks,
            "motion_dim": self.motion_dim,
            "tokens_per_video": self.tokens_per_video,
        }


def hf_config_problems(hf: dict[str, Any]) -> list[str]:
    """Everything in a config.json that the student cannot honour."""
    problems = []
    architectures = hf.get("architectures") or []
    if hf.get("model_type") != "llava_onevision" or (
        architectures and "LlavaOnevisionForConditionalGeneration" not in architectures
    ):
        problems.append(
            f"config.json: model_type={hf.get('model_type')!r}, architectures={architectures}: "
            "expected a LLaVA-OneVision checkpoint (LlavaOnevisionForConditionalGeneration)"
        )
    v = dict(hf.get("vision_config") or {})
    t = dict(hf.get("text_config") or {})
    if v.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        problems.append(f"config.json: vision_config.model_type={v.get('model_type')!r}: only SigLIP is supported")
    # vision_use_head=true (a SigLIP pooling head) is no problem: LLaVA-OneVision reads
    # patch features and never runs it, so the importer skips its tensors.
    if t.get("model_type", "qwen2") != "qwen2":
        problems.append(f"config.json: text_config.model_type={t.get('model_type')!r}: only Qwen2 is supported")
    if t.get("use_sliding_window", False):
        problems.append("config.json: text_config.use_sliding_window=true is not supported")
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        problems.append(f"config.json: rope type {rope.get('rope_type')!r}: only the default RoPE is supported")
    strategy = hf.get("vision_feature_select_strategy", "full")
    if strategy not in ("full", "default"):
        problems.append(f"config.json: vision_feature_select_strategy={strategy!r}: expected 'full' or 'default'")
    return problems


def _tiny_text(**kw) -> TextConfig:
    # Trained from scratch: weights at 1/sqrt(width) rather than Qwen2's 0.02, which at
    # width 64 leaves attention nearly uniform, so both videos are averaged alike and
    # training sits on a plateau (docs/2026-11-demo-experiments.md).
    return TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=64**-0.5, **kw)


# Token ids of the tiny tokenizer shipped in w2s_vqa/assets/tiny_tokenizer.
TINY_IMAGE_TOKEN, TINY_VIDEO_TOKEN = 3, 4

PRESETS: dict[str, StudentConfig] = {
    # CPU tests and the demo: random weights, seconds per step.
    "tiny": StudentConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8),
        text=_tiny_text(),
        image_token_index=TINY_IMAGE_TOKEN,
        video_token_index=TINY_VIDEO_TOKEN,
        num_frames=4,
        num_motion_chunks=4,
    ),
    # Benchmarks: real image size and patch grid, shallow towers.
    "small": StudentConfig(
        vision=VisionConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6),
        text=TextConfig(vocab_size=512, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
                        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=8192),
        image_token_index=TINY_IMAGE_TOKEN,
        video_token_index=TINY_VIDEO_TOKEN,
        num_frames=4,
        num_motion_chunks=4,
    ),
    # Shapes of the public llava-onevision-qwen2-{0.5b,7b}-ov checkpoints (nothing is downloaded).
    "llava-ov-0.5b": StudentConfig(
        text=TextConfig(vocab_size=152000, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "llava-ov-7b": StudentConfig(),
}


def preset(name: str, **changes) -> StudentConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


def check_feature_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Indices into the tower's hidden states (embeddings = 0), Python-style negatives allowed."""
    resolved = []
    for layer in layers:
        index = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_layers:
            raise ConfigError(f"vision_feature_layer {layer} is outside the tower's {num_layers} layers")
        resolved.append(index)
    return tuple(resolved)


# ----------------------------------------------------------------------------- from a run config
def student_config(config) -> StudentConfig:
    """The student a run config (w2s_vqa.config) describes: `model.preset`'s shapes, or those
    of the Hugging Face directory `model.hf_dir` (its config.json), with the run's video
    shape (data.num_frames, num_motion_chunks, motion_dim) and compute settings (model.dtype,
    remat, attention, scan_layers).

    Raises ValueError when data.image_size differs from the vision tower's input size,
    ConfigError for an unknown preset or an unsupported config.json, OSError when
    model.hf_dir has no config.json.
    """
    import json
    import os

    m, d = config.model, config.data
    ours = dict(num_frames=d.num_frames, num_motion_chunks=d.num_motion_chunks, motion_dim=d.motion_dim,
                dtype=m.dtype, remat=m.remat, attention=m.attention, scan_layers=bool(m.get("scan_layers", False)))
    if m.hf_dir:
        from w2s_vqa.models import llava_qwen_config

        with open(os.path.join(m.hf_dir, HF_CONFIG_FILE)) as f:
            hf = json.load(f)
        # The authors' released LLaVA-NeXT layout has its own config fields.
        read = llava_qwen_config.student_config if llava_qwen_config.is_llava_qwen(hf) else StudentConfig.from_hf_config
        cfg = read(hf, **ours)
    else:
        cfg = preset(m.preset, **ours)
    if cfg.vision.image_size != d.image_size:
        raise ValueError(f"data.image_size={d.image_size} but the vision tower takes {cfg.vision.image_size}")
    return cfg


def tokenizer_dir(config) -> str:
    """The directory whose tokenizer.json a run config uses: model.tokenizer, else the
    Hugging Face directory's, else the tiny tokenizer shipped for the presets."""
    return config.model.get("tokenizer", "") or config.model.hf_dir or TINY_TOKENIZER
