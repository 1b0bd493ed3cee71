"""PyTorch inference on an exported student directory: P(second video better).

For users who take the trained student back to PyTorch. transformers'
LlavaOnevisionForConditionalGeneration computes the video features exactly as
it always does; the motion tokens, which transformers does not know, are
projected here and placed after each video's newline token, and the whole
sequence goes to the model through `inputs_embeds`.

Needs the `torch` extra (torch and transformers).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import LlavaOnevisionForConditionalGeneration

from w2s_vqa import prompt
from w2s_vqa.convert.hf import MOTION_FILE, SETTINGS_FILE
from w2s_vqa.models.config import HF_CONFIG_FILE, StudentConfig
# SigLIP's pixel normalization; its home is models/student.py, which the JAX student uses.
from w2s_vqa.models.student import PIXEL_MEAN, PIXEL_STD


class TorchScorer:
    """transformers' LLaVA-OneVision plus our motion projector, on any directory transformers loads.

    Frames and motion chunks come from the arguments, else from w2s_vqa.json (our
    export writes it), else from StudentConfig's defaults; a directory without
    motion_projector.safetensors (a plain Hugging Face checkpoint) has no motion
    tokens. Raises FileNotFoundError for a missing config.json or tokenizer.json,
    ValueError for motion chunks asked of a directory without a motion projector.
    """

    def __init__(self, hf_dir: str, *, num_frames: int | None = None, num_motion_chunks: int | None = None,
                 dtype: torch.dtype = torch.float32, device: str = "cpu", attn_implementation: str = "eager"):
        self.hf_dir = os.fspath(hf_dir)
        self.settings = _read_json(os.path.join(self.hf_dir, SETTINGS_FILE), missing_ok=True)
        config_json = _read_json(os.path.join(self.hf_dir, HF_CONFIG_FILE), missing_ok=False)
        motion_path = os.path.join(self.hf_dir, MOTION_FILE)
        has_motion = os.path.exists(motion_path)
        num_frames = num_frames if num_frames is not None else self.settings.get("num_frames")
        if num_motion_chunks is None:
            num_motion_chunks = self.settings.get("num_motion_chunks") if has_motion else 0
        if num_motion_chunks and not has_motion:
            raise ValueError(f"{motion_path}: missing, so the student has no motion tokens; "
                             f"num_motion_chunks={num_motion_chunks} cannot be honoured")
        ours = {k: v for k, v in dict(num_frames=num_frames, num_motion_chunks=num_motion_chunks,
                                      motion_dim=self.settings.get("motion_dim")).items() if v is not None}
        self.cfg = StudentConfig.from_hf_config(config_json, strict=False, **ours)
        self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            self.hf_dir, dtype=dtype, attn_implementation=attn_implementation).to(device).eval()
        self.device, self.dtype = device, dtype
        hidden = self.model.config.text_config.hidden_size
        self.motion_projector = torch.nn.Sequential(
            torch.nn.Linear(self.cfg.motion_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
        if has_motion:
            weights = load_file(motion_path)
            self.motion_projector.load_state_dict({
                "0.weight": weights["linear_1.weight"], "0.bias": weights["linear_1.bias"],
                "2.weight": weights["linear_2.weight"], "2.bias": weights["linear_2.bias"]})
        self.motion_projector.to(device=device, dtype=dtype).eval()
        self.num_frames = self.cfg.num_frames
        self.num_motion_chunks = self.cfg.num_motion_chunks
        self.tokens_per_frame = self.cfg.tokens_per_frame
        tokenizer = prompt.load_tokenizer(self.hf_dir)
        self.prompt = prompt.build_pair_prompt(tokenizer, video_token_id=self.cfg.video_token_index,
                                               tokens_per_video=self.cfg.tokens_per_video)

    @torch.no_grad()
    def logits(self, pixel_values: np.ndarray, motion: np.ndarray | None = None,
               frame_mask: np.ndarray | None = None, motion_mask: np.ndarray | None = None) -> torch.Tensor:
        """pixel_values [B, 2, F, H, W, 3] uint8, motion [B, 2, M, 256] -> vocabulary logits [B, L, V]
        over the pair prompt (`self.prompt.input_ids`)."""
        b, nv, f = pixel_values.shape[:3]
        m = self.num_motion_chunks
        if f != self.num_frames:
            raise ValueError(f"pixel_values hold {f} frames per video; the student takes {self.num_frames}")
        config = self.model.config
        pixels = torch.as_tensor(np.asarray(pixel_values), device=self.device)
        pixels = (pixels.to(self.dtype) / 255.0 - PIXEL_MEAN) / PIXEL_STD
        pixels = pixels.reshape(b * nv, f, *pixels.shape[3:]).permute(0, 1, 4, 2, 3)
        video = self.model.model.get_video_features(
            pixels, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy).pooler_output
        parts = [video]
        if m:
            motion = np.zeros((b, nv, m, self.cfg.motion_dim), np.float32) if motion is None else motion
            motion = torch.as_tensor(np.asarray(motion), device=self.device, dtype=self.dtype)
            parts.append(self.motion_projector(motion.reshape(b * nv, m, -1)))
        tokens = torch.cat(parts, dim=1).reshape(-1, video.shape[-1])

        ids = torch.as_tensor(np.repeat(self.prompt.input_ids[None], b, axis=0), device=self.device).long()
        embeds = self.model.get_input_embeddings()(ids)
        is_video = ids == config.video_token_index
        embeds = embeds.masked_scatter(is_video[..., None], tokens.to(embeds.dtype))

        frame_mask = np.ones((b, nv, f), bool) if frame_mask is None else np.asarray(frame_mask, bool)
        motion_mask = np.ones((b, nv, m), bool) if motion_mask is None else np.asarray(motion_mask, bool)
        valid = np.concatenate([np.repeat(frame_mask, self.tokens_per_frame, axis=-1),
                                np.ones((b, nv, 1), bool), motion_mask], axis=-1).reshape(b, -1)
        attention_mask = torch.ones_like(ids)
        attention_mask[is_video] = torch.as_tensor(valid.reshape(-1), device=self.device).long()

        return self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits

    def level_logits(self, *args, **kwargs) -> np.ndarray:
        """Logits [B, 5] of the level tokens at the answer position (the prompt's last token)."""
        logits = self.logits(*args, **kwargs)[:, -1]
        level_ids = torch.as_tensor(self.prompt.level_token_ids, device=self.device)
        return logits[:, level_ids].float().cpu().numpy()

    def preference(self, *args, **kwargs) -> np.ndarray:
        """P(second video better than first) per pair, [B]."""
        return prompt.preference(self.level_logits(*args, **kwargs).astype(np.float64))


def _read_json(path: str, *, missing_ok: bool) -> dict:
    if not os.path.exists(path):
        if missing_ok:
            return {}
        raise FileNotFoundError(f"{path}: missing; expected a Hugging Face LLaVA-OneVision directory")
    with open(path) as f:
        return json.load(f)
