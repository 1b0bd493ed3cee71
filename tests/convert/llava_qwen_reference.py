"""Tiny stand-ins for the paper's released checkpoint, written in the authors' LLaVA-NeXT
layout, and the references they are checked against, written from the sources.

Key names are those the authors' modules give their parameters (github.com/clh124/W2S-VQA,
commit 2c7ca75):
- llava/model/language_model/llava_qwen.py: `self.model = LlavaQwenModel(config)` (a
  Qwen2Model: embed_tokens, layers.{i}.self_attn.{q,k,v,o}_proj with q/k/v biases,
  mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm, norm) and
  `self.lm_head = nn.Linear(hidden, vocab, bias=False)`.
- llava/model/llava_arch.py, LlavaMetaModel.__init__: `self.vision_tower`,
  `self.mm_projector`, `self.slowfast`, `self.slowfast_projector`, `self.image_newline`.
- llava/model/multimodal_encoder/siglip_encoder.py: `self.vision_tower = SigLipVisionModel`
  (`vision_model.embeddings.{patch_embedding, position_embedding}`,
  `vision_model.encoder.layers.{i}.{self_attn.{q,k,v,out}_proj, layer_norm1, layer_norm2,
  mlp.fc1, mlp.fc2}`, `vision_model.post_layernorm`), its last layer deleted
  (`del self.vision_tower.vision_model.encoder.layers[-1:]`), head = Identity.
- llava/model/multimodal_projector/builder.py and slowfast_projector/slowfast_projector.py:
  Sequential(Linear, GELU, Linear) -> `.0.` and `.2.`.
- llava/model/slowfast/builder.py: the trunk's `position_embedding` (2000 x 256) and
  `feature_extraction.*` (pytorchvideo blocks); two of its tensors stand for it here.
The config fields are those of the authors' config.json (same commit), shrunk.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file

from w2s_vqa import prompt

# transformers' conversion table, copied from huggingface/transformers
# src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py
# (KEYS_TO_MODIFY_MAPPING, commit 01080c62) and applied as `convert_state_dict_to_hf` does.
KEYS_TO_MODIFY_MAPPING = {
    "model.vision_tower.": "",
    "model.mm_projector": "multi_modal_projector",
    "model": "model.model",
    "vision_model.model": "vision_model",
    "lm_head": "language_model.lm_head",
    "model.model": "language_model.model",
    "multi_modal_projector.0": "multi_modal_projector.linear_1",
    "multi_modal_projector.2": "multi_modal_projector.linear_2",
    "language_model.model.image_newline": "image_newline",
}

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)
# SigLIP at full depth (3); the stored tower has 2 layers.
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32,
              patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
MOTION_DIM = 256
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_tokenizer(out_dir) -> int:
    """A byte-level BPE tokenizer with Qwen2's chat specials and no <image>/<video> (as the
    authors' Qwen2 tokenizer), each level word one token. Returns its length."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [prompt.RELEASED_QUESTION.replace("<video>", ""), prompt.SYSTEM_PROMPT, "system\nuser\nassistant\n"]
    corpus += [prompt.ANSWER_TEMPLATE.format(level=w) for w in prompt.LEVELS]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=list(SPECIAL),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 50, trainer=trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                   "model_max_length": 32768}, f, indent=2)
    return tok.get_vocab_size(with_added_tokens=True)


def released_config(image_token_index: int, **changes) -> dict:
    """The authors' config.json fields (their config.json at 2c7ca75), with tiny shapes and a
    `vision_config` for the tiny SigLIP (the real one names google/siglip-so400m-patch14-384)."""
    config = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava_qwen",
        "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "use_sliding_window": False, "image_token_index": image_token_index,
        "image_aspect_ratio": "anyres_max_9", "mm_hidden_size": VISION["hidden_size"],
        "mm_newline_position": "one_token", "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_type": "mlp2x_gelu", "mm_resampler_type": None, "mm_spatial_pool_mode": "bilinear",
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_slowfast_projector",
        "mm_use_im_patch_token": False, "mm_use_im_start_end": False, "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2, "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "use_mm_proj": True, "use_pos_skipping": False, "tokenizer_padding_side": "right",
        "vision_config": dict(VISION), **TEXT,
    }
    config.update(changes)
    return config


def released_tensors(seed: int = 0, drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Random float32 tensors under the authors' key names (module docstring), nonzero biases and norms."""
    rng = np.random.default_rng(seed)
    h, i, v = TEXT["hidden_size"], TEXT["intermediate_size"], TEXT["vocab_size"]
    kv = h // TEXT["num_attention_heads"] * TEXT["num_key_value_heads"]
    vh, vi, p = VISION["hidden_size"], VISION["intermediate_size"], VISION["patch_size"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for n in range(TEXT["num_hidden_layers"]):
        q = f"model.layers.{n}."
        shapes.update({q + "self_attn.q_proj.weight": (h, h), q + "self_attn.q_proj.bias": (h,),
                       q + "self_attn.k_proj.weight": (kv, h), q + "self_attn.k_proj.bias": (kv,),
                       q + "self_attn.v_proj.weight": (kv, h), q + "self_attn.v_proj.bias": (kv,),
                       q + "self_attn.o_proj.weight": (h, h), q + "mlp.gate_proj.weight": (i, h),
                       q + "mlp.up_proj.weight": (i, h), q + "mlp.down_proj.weight": (h, i),
                       q + "input_layernorm.weight": (h,), q + "post_attention_layernorm.weight": (h,)})
    s = "model.vision_tower.vision_tower.vision_model."
    grid = VISION["image_size"] // p
    shapes.update({s + "embeddings.patch_embedding.weight": (vh, 3, p, p), s + "embeddings.patch_embedding.bias": (vh,),
                   s + "embeddings.position_embedding.weight": (grid * grid, vh),
                   s + "post_layernorm.weight": (vh,), s + "post_layernorm.bias": (vh,)})
    for n in range(VISION["num_hidden_layers"] - 1):  # the last layer is deleted
        q = f"{s}encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes.update({q + f"self_attn.{proj}.weight": (vh, vh), q + f"self_attn.{proj}.bias": (vh,)})
        shapes.update({q + "layer_norm1.weight": (vh,), q + "layer_norm1.bias": (vh,),
                       q + "layer_norm2.weight": (vh,), q + "layer_norm2.bias": (vh,),
                       q + "mlp.fc1.weight": (vi, vh), q + "mlp.fc1.bias": (vi,),
                       q + "mlp.fc2.weight": (vh, vi), q + "mlp.fc2.bias": (vh,)})
    shapes.update({"model.mm_projector.0.weight": (h, vh), "model.mm_projector.0.bias": (h,),
                   "model.mm_projector.2.weight": (h, h), "model.mm_projector.2.bias": (h,),
                   "model.image_newline": (h,),
                   "model.slowfast_projector.0.weight": (h, MOTION_DIM), "model.slowfast_projector.0.bias": (h,),
                   "model.slowfast_projector.2.weight": (h, h), "model.slowfast_projector.2.bias": (h,),
                   "model.slowfast.position_embedding.weight": (2000, MOTION_DIM),
                   "model.slowfast.feature_extraction.0.multipathway_blocks.0.conv.weight": (64, 3, 1, 7, 7)})
    tensors = {}
    for key, shape in shapes.items():
        if key in drop:
            continue
        if "norm" in key and key.endswith("weight"):
            x = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            x = (0.1 if key.endswith("bias") else 0.2) * rng.standard_normal(shape)
        tensors[key] = x.astype(np.float32)
    return tensors


def write_released(directory, *, seed: int = 0, drop: tuple[str, ...] = (), **config_changes) -> str:
    """A tiny checkpoint directory in the authors' layout: config.json, model.safetensors, tokenizer."""
    directory = str(directory)
    n_tokens = build_tokenizer(directory)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(released_config(n_tokens, **config_changes), f, indent=2)
    save_file(released_tensors(seed, drop), os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return directory


# ----------------------------------------------------------------------------- transformers' side
def transformers_reference(released_dir, out_dir):
    """(LlavaOnevisionForConditionalGeneration, slowfast projector as torch Sequential) from the
    released directory, converted as transformers' script converts: its key table, SigLIP one
    layer shallower, `<image>`/`<video>` at len(tokenizer) and +1, the vocabulary grown by two
    and padded to a multiple of 64 with rows drawn around the mean embedding."""
    from safetensors.numpy import load_file
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    released_dir, out_dir = str(released_dir), str(out_dir)
    config = json.load(open(os.path.join(released_dir, "config.json")))
    original = load_file(os.path.join(released_dir, "model.safetensors"))
    converted, slowfast = {}, {}
    for key, value in original.items():
        if key.startswith("model.slowfast_projector."):
            slowfast[key[len("model.slowfast_projector."):]] = torch.as_tensor(value)
            continue
        if key.startswith("model.slowfast."):
            continue
        for old, new in KEYS_TO_MODIFY_MAPPING.items():
            if old in key:
                key = key.replace(old, new)
        converted[key] = value
    vision = dict(config["vision_config"], num_hidden_layers=config["vision_config"]["num_hidden_layers"] - 1,
                  vision_use_head=False, model_type="siglip_vision_model")
    text = {k: config[k] for k in TEXT} | {"model_type": "qwen2", "rope_theta": config["rope_theta"],
                                            "rms_norm_eps": config["rms_norm_eps"], "tie_word_embeddings": False}
    hf_config = LlavaOnevisionConfig(text_config=text, vision_config=vision, use_image_newline_parameter=True,
                                     image_token_index=config["image_token_index"],
                                     video_token_index=config["image_token_index"] + 1,
                                     vision_feature_layer=-1, vision_feature_select_strategy="full",
                                     tie_word_embeddings=False)
    os.makedirs(out_dir, exist_ok=True)
    hf_config.save_pretrained(out_dir)
    save_file(converted, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        out_dir, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info  # the script's table accounts for every tensor
    vocab = hf_config.text_config.vocab_size
    embeddings = model.get_input_embeddings().weight.data[:vocab]
    mu = embeddings.mean(0)
    sigma = (embeddings - mu).T @ (embeddings - mu) / vocab
    dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=1e-5 * sigma + 1e-8 * torch.eye(len(mu)))
    model.resize_token_embeddings(vocab + 2, pad_to_multiple_of=64)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[vocab:] = torch.stack([dist.sample() for _ in range(weight.shape[0] - vocab)])
    projector = torch.nn.Sequential(torch.nn.Linear(MOTION_DIM, TEXT["hidden_size"]), torch.nn.GELU(),
                                    torch.nn.Linear(TEXT["hidden_size"], TEXT["hidden_size"]))
    projector.load_state_dict(slowfast)
    return model.eval(), projector.eval()


def reference_logits(model, projector, ids: np.ndarray, pixels: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Vocabulary logits [B, L, V] of transformers' model on ids [B, L] whose placeholder runs take
    each video's frame tokens, newline (get_video_features) and projected motion, in order
    (llava_arch.py: `<image>` = frames + newline, the next `<image>` = slowfast_projector(motion)).
    pixels [B, 2, F, H, W, 3] uint8, motion [B, 2, M, 256]."""
    b, nv, f = pixels.shape[:3]
    x = torch.as_tensor(pixels).float() / 255.0
    x = ((x - 0.5) / 0.5).permute(0, 1, 2, 5, 3, 4).reshape(b * nv, f, 3, *pixels.shape[3:5])
    with torch.no_grad():
        video = model.model.get_video_features(x, vision_feature_layer=-1,
                                               vision_feature_select_strategy="full").pooler_output
        moving = projector(torch.as_tensor(motion).reshape(b * nv, motion.shape[2], -1))
        tokens = torch.cat([video, moving], dim=1).reshape(-1, video.shape[-1])
        ids_t = torch.as_tensor(ids).long()
        embeds = model.get_input_embeddings()(ids_t)
        is_video = ids_t == model.config.video_token_index
        embeds = embeds.masked_scatter(is_video[..., None], tokens)
        return model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids_t)).logits.numpy()
