"""The paper's released checkpoint: LLaVA-NeXT's `llava_qwen` layout with a SlowFast projector.

The authors trained and released their student in their fork of LLaVA-NeXT
(github.com/clh124/W2S-VQA; read here at commit 2c7ca75, the model code said to be
unchanged at 80e456ff, which the snapshot read did not hold; weights
`kkkkkklinhan/llava_qwen_slowfast_w2s_stage3` on the Hugging Face hub). Such a directory holds a config.json of `mm_*` fields (architectures
`LlavaQwenForCausalLM`, model_type `llava_qwen`) and safetensors named as their
modules are. This module recognises it (`is_llava_qwen_dir`; the config translation,
which refuses by name what the student cannot run, is models/llava_qwen_config.py) and
imports its tensors (`load_student`): each name goes through transformers' own
renaming for LLaVA-OneVision (`TRANSFORMERS_RENAMES`) into the names our key table
(convert/hf.py `RULES`) reads, and the SlowFast projector becomes our motion projector.

Sources, read at the commits named:
- clh124/W2S-VQA 2c7ca75 `llava/model/language_model/llava_qwen.py`: LlavaQwenForCausalLM
  = Qwen2ForCausalLM with `self.model = LlavaQwenModel(config)` and an untied `lm_head`:
  keys `model.embed_tokens`, `model.layers.{i}.*` (q/k/v with biases), `model.norm`,
  `lm_head.weight`.
- same, `llava/model/llava_arch.py` (LlavaMetaModel.__init__): `vision_tower`,
  `vision_resampler` (no parameters unless mm_resampler_type), `mm_projector`,
  `slowfast` (an unused SlowFast-R50 trunk: its features come precomputed, so
  `encode_videos` runs only `slowfast_projector`), `slowfast_projector`, and
  `image_newline` when mm_patch_merge_type holds "unpad". The video path
  (`prepare_inputs_labels_for_multimodal`, modalities "video", mm_newline_position
  "one_token"): SigLIP -> mm_projector -> `get_2dPool` (bilinear to ceil(h/2), the only
  pool mode we run) -> frames flattened -> image_newline -> the video's motion
  features through slowfast_projector, as the next `<image>` placeholder's features.
  Only "one_token" appends the motion features; the other newline positions drop them.
- same, `llava/model/multimodal_encoder/siglip_encoder.py` (SigLipVisionTower.load_model):
  SigLIP so400m with its last encoder layer deleted and its head replaced by Identity;
  features are `hidden_states[-1]` of the remaining layers, before post_layernorm (keys
  `model.vision_tower.vision_tower.vision_model.{embeddings, encoder.layers.{i},
  post_layernorm}`). `mm_vision_select_layer` is not read there; -2 of the full tower
  is what it computes, -1 of the stored one.
- same, `llava/model/multimodal_projector/builder.py`: "mlp2x_gelu" = Sequential(Linear
  (mm_hidden_size, hidden_size), GELU, Linear(hidden_size, hidden_size)): keys
  `model.mm_projector.{0,2}`.
- same, `llava/model/slowfast_projector/slowfast_projector.py`: Sequential(Linear(256,
  3584), GELU, Linear(3584, 3584)): keys `model.slowfast_projector.{0,2}`.
- huggingface/transformers `src/transformers/models/llava_onevision/
  convert_llava_onevision_weights_to_hf.py` (commit 01080c62): KEYS_TO_MODIFY_MAPPING,
  applied in order with str.replace to every key (`TRANSFORMERS_RENAMES`); the vocabulary
  grows by `<image>` and `<video>` (ids len(tokenizer) and len(tokenizer) + 1, 151646 and
  151647 for Qwen2) and is padded to a multiple of 64 (152064 -> 152128) with rows drawn
  around the mean embedding. The placeholders' ids lie inside the stored 152064 rows and
  their embeddings are always replaced by video features, and no token has an id past
  152063: we keep the stored rows as they are (logits over every real token are the same).

Nothing here imports JAX at module level (`w2s-vqa export` checks `is_llava_qwen_dir` first).
"""

from __future__ import annotations

import json
import os
from typing import Any

from w2s_vqa.models.llava_qwen_config import config_problems, is_llava_qwen, student_config

# transformers' KEYS_TO_MODIFY_MAPPING (convert_llava_onevision_weights_to_hf.py), in its
# order; every rule replaces every occurrence in the key, as `str.replace` there does.
TRANSFORMERS_RENAMES: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.", ""),
    ("model.mm_projector", "multi_modal_projector"),
    ("model", "model.model"),
    ("vision_model.model", "vision_model"),
    ("lm_head", "language_model.lm_head"),
    ("model.model", "language_model.model"),
    ("multi_modal_projector.0", "multi_modal_projector.linear_1"),
    ("multi_modal_projector.2", "multi_modal_projector.linear_2"),
    ("language_model.model.image_newline", "image_newline"),
)
# The SlowFast projector (Linear, GELU, Linear) -> our motion projector (convert/hf.py MOTION_RULES names).
MOTION_PREFIX = "model.slowfast_projector."
MOTION_RENAMES = {"0": "linear_1", "2": "linear_2"}
# The unused SlowFast trunk (LlavaMetaModel.slowfast): saved with the weights, never run.
DROPPED_PREFIXES = ("model.slowfast.",)


# infer_pair.py reads these vocabulary rows for superior, better, similar, worse, inferior
# (`output_logits.mean(0)[16353]` ...): Qwen2's ids of " superior", " better", ...
AUTHORS_LEVEL_IDS = (16353, 2664, 4428, 10960, 37179)
QWEN2_7B_VOCAB = 152064


def level_id_problems(hf_dir: str, vocab_size: int) -> list[str]:
    """[] when the directory's tokenizer gives the level words the ids the authors read (checked
    for Qwen2-7B's vocabulary only; a stand-in's own tokenizer has its own ids), else the problem."""
    from w2s_vqa import prompt

    if vocab_size != QWEN2_7B_VOCAB or not os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
        return []
    try:
        ids = prompt.level_token_ids(prompt.load_tokenizer(hf_dir))
    except prompt.PromptError as e:
        return [f"tokenizer.json: {e}"]
    if ids != AUTHORS_LEVEL_IDS:
        return [f"tokenizer.json: the level words {prompt.LEVELS} have ids {ids}; the authors read {AUTHORS_LEVEL_IDS}"]
    return []


def is_llava_qwen_dir(hf_dir: str) -> bool:
    """True when `hf_dir` holds a config.json of the authors' layout (False when it has none)."""
    path = os.path.join(os.fspath(hf_dir), "config.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return is_llava_qwen(json.load(f))


def transformers_name(key: str) -> str:
    """The name transformers' conversion script gives a stored key (its table, in order)."""
    for old, new in TRANSFORMERS_RENAMES:
        if old in key:
            key = key.replace(old, new)
    return key


def motion_name(key: str) -> str | None:
    """`model.slowfast_projector.0.weight` -> `linear_1.weight` (MOTION_RULES' names); None otherwise."""
    if not key.startswith(MOTION_PREFIX):
        return None
    layer, _, rest = key[len(MOTION_PREFIX):].partition(".")
    return f"{MOTION_RENAMES[layer]}.{rest}" if layer in MOTION_RENAMES and rest else None


def load_student(hf_dir: str, *, num_frames: int | None = None, num_motion_chunks: int | None = None,
                 dtype: str | None = None, remat: bool | None = None, attention: str | None = None,
                 mesh=None, rules=None, seed: int = 0):
    """A Student with the weights of the authors' `llava_qwen` directory.

    Every stored tensor is accounted for: the language model, SigLIP, mm_projector and
    image_newline through transformers' renaming (`transformers_name`) and our key table
    (convert/hf.py), slowfast_projector -> motion_projector, `model.slowfast.*` dropped.
    Frames and motion chunks default to StudentConfig's. Raises convert.hf.CheckpointError
    listing every config problem and every missing, unexpected or mis-shaped tensor.
    `seed` is unused (nothing is initialized: a checkpoint without its SlowFast projector
    is refused); it is accepted as hf.load_student accepts it.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from safetensors import safe_open

    from w2s_vqa.convert import hf as hf_lib
    from w2s_vqa.models import student as student_lib
    from w2s_vqa.models.config import ConfigError

    del seed
    hf_dir = os.fspath(hf_dir)
    with open(os.path.join(hf_dir, hf_lib.CONFIG_FILE)) as f:
        hf_config = json.load(f)
    problems = list(config_problems(hf_config)) + level_id_problems(hf_dir, hf_config.get("vocab_size", 0))
    ours = {k: v for k, v in dict(num_frames=num_frames, num_motion_chunks=num_motion_chunks, dtype=dtype,
                                  remat=remat, attention=attention).items() if v is not None}
    try:
        cfg = student_config(hf_config, strict=False, **ours)
    except (ConfigError, ValueError) as e:
        raise hf_lib.CheckpointError(hf_dir, problems + [f"config.json: {e}"]) from e

    abstract = student_lib.create_abstract(cfg)
    graphdef, abstract_state = nnx.split(abstract)
    wanted = hf_lib._flat_params(abstract)
    loaded: dict[str, Any] = {}
    sources: dict[str, str] = {}
    dropped = 0

    def place(our_key, value, transform, source):
        target = wanted.get(our_key)
        if target is None:
            problems.append(f"unexpected tensor {source} (maps to {our_key}, which this config does not have)")
            return
        if our_key in loaded:
            problems.append(f"tensor {source} maps to {our_key}, which {sources[our_key]} already gave")
            return
        if transform.shape(value.shape) != tuple(target.shape):
            problems.append(f"mis-shaped tensor {source}: {tuple(value.shape)}, this config expects "
                            f"{hf_lib._hf_shape(target.shape, transform)}")
            return
        sources[our_key] = source
        if problems:  # keep checking names and shapes, move no more data
            loaded[our_key] = None
            return
        array = transform.load(value).astype(jnp.float32)
        sharding = hf_lib._sharding_for(target, mesh, rules)
        loaded[our_key] = jax.device_put(array, sharding) if sharding is not None else array

    for name, keys in hf_lib.weight_files(hf_dir, problems).items():
        with safe_open(os.path.join(hf_dir, name), framework="flax") as f:
            available = set(f.keys())
            for key in keys:
                if key not in available:
                    problems.append(f"{name} lacks {key}, which the index lists there")
                elif key.startswith(DROPPED_PREFIXES):
                    dropped += 1
                elif (motion := motion_name(key)) is not None:
                    mapped = hf_lib.MOTION_KEYS.to_ours(motion)
                    place(mapped[0], f.get_tensor(key), mapped[1], f"{key} in {name}")
                else:
                    mapped = hf_lib.MODEL_KEYS.to_ours(hf_lib.canonical_name(transformers_name(key)))
                    if mapped is None:
                        problems.append(f"unexpected tensor {key} in {name}")
                    elif not (mapped[0] == "lm_head.kernel" and cfg.tie_word_embeddings):
                        place(mapped[0], f.get_tensor(key), mapped[1], f"{key} in {name}")
    for key in sorted(set(wanted) - set(sources)):
        problems.append(f"missing tensor {stored_name(key)} (ours: {key})")
    if problems:
        raise hf_lib.CheckpointError(hf_dir, problems)
    if dropped:
        hf_lib._log.info("%s: dropped %d tensors of the unused SlowFast trunk (model.slowfast.*)", hf_dir, dropped)
    state = nnx.from_flat_state([(path, var.replace(loaded[hf_lib._path_str(path)]))
                                 for path, var in nnx.to_flat_state(abstract_state)])
    return nnx.merge(graphdef, state)


# Our names back to the authors' stored names, for the missing-tensor messages: the inverse
# of TRANSFORMERS_RENAMES on the prefixes it produces.
_STORED_PREFIXES = (
    ("model.language_model.", "model."),
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1", "model.mm_projector.0"),
    ("model.multi_modal_projector.linear_2", "model.mm_projector.2"),
    ("model.image_newline", "model.image_newline"),
    ("lm_head.", "lm_head."),
)


def stored_name(our_key: str) -> str:
    """The authors' stored name of one of our parameters (e.g. motion_projector.linear_1.kernel
    -> model.slowfast_projector.0.weight)."""
    from w2s_vqa.convert import hf as hf_lib

    if our_key.startswith("motion_projector."):
        name = hf_lib.MOTION_KEYS.to_hf(our_key)[0]
        layer, _, rest = name.partition(".")
        return MOTION_PREFIX + {v: k for k, v in MOTION_RENAMES.items()}[layer] + "." + rest
    name = hf_lib.MODEL_KEYS.to_hf(our_key)[0]
    for old, new in _STORED_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


# ----------------------------------------------------------------------------- tokenizer
MEDIA_TOKENS = ("<image>", "<video>")


def media_tokenizer(hf_dir: str, cfg) -> Any:
    """The directory's tokenizer with `<image>` and `<video>` at cfg's ids, added as
    transformers' conversion adds them (special, not normalized). Raises ValueError when
    the tokenizer's length is not cfg.image_token_index (the ids would not be theirs)."""
    import tokenizers

    from w2s_vqa import prompt

    tok = prompt.load_tokenizer(hf_dir)
    if all(tok.token_to_id(t) == i for t, i in zip(MEDIA_TOKENS, (cfg.image_token_index, cfg.video_token_index))):
        return tok
    size = tok.get_vocab_size(with_added_tokens=True)
    if size != cfg.image_token_index:
        raise ValueError(f"{hf_dir}: the tokenizer holds {size} tokens, so <image> would get id {size}, but "
                         f"config.json's image_token_index is {cfg.image_token_index}")
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in MEDIA_TOKENS])
    return tok


def write_export_tokenizer(hf_dir: str, out_dir: str, cfg) -> str:
    """Write into `out_dir` the tokenizer files an export of `hf_dir` copies: tokenizer.json
    with the media tokens (`media_tokenizer`) and the other tokenizer files as they are.
    Returns out_dir."""
    import shutil

    from w2s_vqa.convert.hf import TOKENIZER_FILES

    os.makedirs(out_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
        if name != "tokenizer.json" and os.path.exists(os.path.join(hf_dir, name)):
            shutil.copyfile(os.path.join(hf_dir, name), os.path.join(out_dir, name))
    media_tokenizer(hf_dir, cfg).save(os.path.join(out_dir, "tokenizer.json"))
    return out_dir


