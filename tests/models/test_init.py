"""A random student starts where transformers' own random LlavaOnevisionForConditionalGeneration
starts: every tensor with the same distribution (SigLIP's xavier / lecun / 1/sqrt(width)
scheme, Qwen2's and the projector's normal(0.02), the newline's 1/sqrt(hidden)).

A student trained from scratch (the demo) depends on it: with every weight at
normal(0.02), the tiny SigLIP's features hardly vary with the picture and training
sits on a plateau for thousands of steps.
"""

import numpy as np
import torch

from tests.convert import hf_reference as ref
from w2s_vqa.models import config as config_lib
from w2s_vqa.convert import hf
from w2s_vqa.models import student


def test_random_weights_are_distributed_as_transformers_initializes_them(tmp_path):
    # Wide enough that each tensor's spread is estimated within a few percent.
    cfg = config_lib.preset("tiny").replace(
        vision=config_lib.VisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=64, patch_size=8),
        text=config_lib.TextConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   initializer_range=0.1))
    hf.save_student(student.create(cfg, seed=0), tmp_path / "ours", tokenizer_dir=ref.TINY_TOKENIZER)
    loaded = ref.LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "ours")
    ours = {k: v.numpy() for k, v in loaded.state_dict().items()}
    torch.manual_seed(0)
    config = ref.LlavaOnevisionConfig(**cfg.to_hf_config())
    theirs = {k: v.numpy() for k, v in ref.LlavaOnevisionForConditionalGeneration(config).state_dict().items()}
    assert set(ours) == set(theirs)
    wrong = []
    for key, want in theirs.items():
        got = ours[key]
        # Allowances of about five standard errors of each estimate at this tensor's size.
        spread_ok = abs(got.std() - want.std()) <= max(0.15, 5 / np.sqrt(2 * got.size)) * want.std() + 1e-5
        centre_ok = abs(got.mean() - want.mean()) <= 5 * np.sqrt(2 / got.size) * want.std() + 1e-5
        if not (spread_ok and centre_ok):
            wrong.append(f"{key}: ours mean {got.mean():.4g} std {got.std():.4g}, "
                         f"transformers mean {want.mean():.4g} std {want.std():.4g}")
    assert not wrong, "\n".join(wrong)
    # Both schemes are in play: SigLIP's xavier (sqrt(2 / 256) here) and the configured range.
    assert abs(np.std(ours["model.vision_tower.encoder.layers.0.self_attn.q_proj.weight"]) - 0.088) < 0.005
    assert abs(np.std(ours["model.language_model.layers.0.self_attn.q_proj.weight"]) - 0.1) < 0.005
