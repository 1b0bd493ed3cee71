"""The authors' LLaVA-NeXT `llava_qwen` config.json (mm_* fields) as a StudentConfig.

Read from their code (github.com/clh124/W2S-VQA, commit 2c7ca75; convert/llava_next.py
cites each file): what each `mm_*` field makes their video path do, and which values our
student runs the same way. convert/llava_next.py imports the weights; this module only
reads and translates the config, so `models.config.student_config` can read a
`model.hf_dir` of that layout.
"""

from __future__ import annotations

from typing import Any

# What makes a config.json the authors' layout.
ARCHITECTURE = "LlavaQwenForCausalLM"
MODEL_TYPE = "llava_qwen"

# SigLIP towers by `mm_vision_tower` name, as SigLipVisionConfig holds them (full depth;
# the stored tower has one layer less). A stand-in may carry its own `vision_config`.
SIGLIP_TOWERS: dict[str, dict[str, Any]] = {
    "google/siglip-so400m-patch14-384": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                             num_attention_heads=16, image_size=384, patch_size=14,
                                             layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
}
SLOWFAST_DIM = 256  # slowfast_projector's input width (the fast pathway's channels)


def is_llava_qwen(hf_config: dict) -> bool:
    """True for a config.json of the authors' LLaVA-NeXT layout."""
    return hf_config.get("model_type") == MODEL_TYPE or ARCHITECTURE in (hf_config.get("architectures") or [])


def vision_fields(hf: dict) -> dict[str, Any] | None:
    """SigLIP fields of the stored tower (its full depth less the deleted last layer); None
    when the tower is unknown."""
    fields = hf.get("vision_config") or SIGLIP_TOWERS.get(hf.get("mm_vision_tower", ""))
    if fields is None:
        return None
    fields = dict(fields)
    fields["num_hidden_layers"] = int(fields["num_hidden_layers"]) - 1
    return fields


def config_problems(hf: dict) -> list[str]:
    """Everything in the authors' config.json that the student cannot run as their code does."""
    problems = []

    def refuse(key, why):
        problems.append(f"config.json: {key}={hf.get(key)!r}: {why}")

    if vision_fields(hf) is None:
        refuse("mm_vision_tower", f"unknown vision tower; known: {sorted(SIGLIP_TOWERS)} (or a vision_config)")
    elif int(hf.get("mm_hidden_size", -1)) != int(vision_fields(hf)["hidden_size"]):
        refuse("mm_hidden_size", f"the vision tower's width is {vision_fields(hf)['hidden_size']}")
    if hf.get("mm_projector_type", "linear") != "mlp2x_gelu":
        refuse("mm_projector_type", "only 'mlp2x_gelu' (Linear, GELU, Linear) is supported")
    if hf.get("mm_vision_select_layer", -2) != -2:
        refuse("mm_vision_select_layer", "the authors' SigLIP tower reads the layer before its last (-2); "
                                         "nothing else is what their code runs")
    if hf.get("mm_vision_select_feature", "patch") != "patch":
        refuse("mm_vision_select_feature", "only 'patch' (every SigLIP patch) is supported")
    merge = str(hf.get("mm_patch_merge_type", "flat"))
    if not (merge.startswith("spatial") and "unpad" in merge):
        refuse("mm_patch_merge_type", "only 'spatial...unpad' types give each video its image_newline and "
                                      "motion tokens")
    if hf.get("mm_newline_position", "one_token") != "one_token":
        refuse("mm_newline_position", "only 'one_token' appends the motion tokens (llava_arch.py)")
    if hf.get("mm_spatial_pool_mode") != "bilinear":
        refuse("mm_spatial_pool_mode", "only 'bilinear' pooling (to ceil(grid / 2)) is supported")
    for key in ("mm_use_im_start_end", "mm_use_im_patch_token", "add_faster_video"):
        if hf.get(key):
            refuse(key, "not supported (only false)")
    if hf.get("mm_resampler_type"):
        refuse("mm_resampler_type", "a vision resampler is not supported")
    if hf.get("rope_scaling"):
        refuse("rope_scaling", "LlavaQwenForCausalLM sets it to None; only the default RoPE is supported")
    if hf.get("use_sliding_window"):
        refuse("use_sliding_window", "not supported")
    return problems


def student_config(hf: dict, *, strict: bool = True, **ours):
    """The StudentConfig of the authors' config.json; `ours` sets frames, motion chunks, dtype...

    Translation: Qwen2 fields -> text; `mm_vision_tower` (or `vision_config`) -> vision, one
    layer less than the named tower, read at its last layer (vision_feature_layer -1,
    strategy "full" for mm_vision_select_feature "patch"); mm_projector_type "mlp2x_gelu" ->
    GELU projector with biases; `image_token_index` (the tokenizer's length) and the next id
    -> the `<image>` and `<video>` placeholders, as transformers' conversion adds them.
    Raises models.config.ConfigError naming every unsupported field when `strict`.
    """
    from w2s_vqa.models.config import ConfigError, StudentConfig, TextConfig, VisionConfig

    problems = config_problems(hf)
    if strict and problems:
        raise ConfigError("unsupported config: " + "; ".join(problems))
    v = vision_fields(hf) or SIGLIP_TOWERS["google/siglip-so400m-patch14-384"]
    defaults_t = TextConfig()
    heads = hf.get("num_attention_heads", 32)
    text = TextConfig(
        vocab_size=hf.get("vocab_size", 152064),
        hidden_size=hf.get("hidden_size", 3584),
        intermediate_size=hf.get("intermediate_size", 18944),
        num_hidden_layers=hf.get("num_hidden_layers", 28),
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        rms_norm_eps=hf.get("rms_norm_eps", defaults_t.rms_norm_eps),
        hidden_act=hf.get("hidden_act", "silu"),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        initializer_range=hf.get("initializer_range", defaults_t.initializer_range),
    )
    vision = VisionConfig(**{k: v[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                               "num_attention_heads", "image_size", "patch_size")},
                          layer_norm_eps=v.get("layer_norm_eps", 1e-6),
                          hidden_act=v.get("hidden_act", "gelu_pytorch_tanh"))
    image_token = int(hf.get("image_token_index", 151646))
    motion_dim = ours.pop("motion_dim", SLOWFAST_DIM)
    if motion_dim != SLOWFAST_DIM:
        raise ConfigError(f"motion_dim={motion_dim}: the authors' slowfast_projector takes {SLOWFAST_DIM}-d "
                          "SlowFast fast-pathway features")
    try:
        return StudentConfig(vision=vision, text=text, projector_hidden_act="gelu", multimodal_projector_bias=True,
                             vision_feature_layer=-1, vision_feature_select_strategy="full",
                             image_token_index=image_token, video_token_index=image_token + 1,
                             motion_dim=motion_dim, **ours)
    except TypeError as e:
        raise ConfigError(str(e)) from e
