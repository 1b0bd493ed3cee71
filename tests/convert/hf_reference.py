"""Tiny random LLaVA-OneVision models built with transformers: the parity reference."""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

import w2s_vqa
from w2s_vqa.models.config import StudentConfig

TINY_TOKENIZER = os.path.join(os.path.dirname(w2s_vqa.__file__), "assets", "tiny_tokenizer")


def hf_model(cfg: StudentConfig, seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    """transformers' own model for `cfg`, randomly initialized, float32, eager attention."""
    torch.manual_seed(seed)
    config = LlavaOnevisionConfig(**cfg.to_hf_config())
    config._attn_implementation = "eager"
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # Nonzero biases and norms, so a dropped term shows.
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_hf(model, path) -> str:
    model.save_pretrained(path)
    return str(path)


def pixels(rng: np.random.Generator, *shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def to_torch_video(pixel_values: np.ndarray) -> torch.Tensor:
    """[N, F, H, W, C] uint8 -> [N, F, C, H, W] float as SigLIP's processor normalizes."""
    x = torch.as_tensor(pixel_values).float() / 255.0
    return ((x - 0.5) / 0.5).permute(0, 1, 4, 2, 3).contiguous()
