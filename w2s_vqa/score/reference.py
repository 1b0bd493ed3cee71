"""The plain scoring path: every (anchor, test video) pair a full forward of both videos.

The reference the cached-prefix scorer (score.scorer.Scorer) must equal (tests/score
compare them) and the benchmark's baseline (w2s_vqa.bench.score). Slow on purpose: it
shares nothing between pairs.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import numpy as np
from flax import nnx

from w2s_vqa import prompt as prompt_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.score.anchors import AnchorSet


def naive_level_logits(student: student_lib.Student, prompt: prompt_lib.PairPrompt, anchors: AnchorSet,
                       videos: Mapping[str, np.ndarray], *, pairs_per_call: int = 5,
                       forward: Callable | None = None) -> np.ndarray:
    """The plain path, float32 [N, K, 5]: every (anchor k first, video t second) pair a full
    `Student.level_logits` of both videos, `pairs_per_call` pairs per jitted call on the
    default device. The reference the scorer must equal, and the benchmark's baseline.
    `forward` (params, batch) -> [B, 5] reuses a compiled one (`naive_forward`)."""
    forward = forward or naive_forward(student, prompt)
    params = nnx.split(student)[1]
    n, k = len(videos["frames"]), len(anchors)
    pairs = [(t, a) for t in range(n) for a in range(k)]
    ids, mask = prompt.input_ids[None], np.ones((1, prompt.length), np.int32)
    out = np.zeros((n, k, 5), np.float32)
    for start in range(0, len(pairs), pairs_per_call):
        chunk = pairs[start:start + pairs_per_call]
        chunk = chunk + [chunk[-1]] * (pairs_per_call - len(chunk))
        batch = {"input_ids": np.repeat(ids, pairs_per_call, 0), "attention_mask": np.repeat(mask, pairs_per_call, 0)}
        for name, field in (("pixel_values", "frames"), ("frame_mask", "frame_mask"), ("motion", "motion"),
                            ("motion_mask", "motion_mask")):
            batch[name] = np.stack([np.stack([anchors.videos[field][a], videos[field][t]]) for t, a in chunk])
        logits = np.asarray(forward(params, batch))
        for (t, a), row in zip(chunk, logits):
            out[t, a] = row
    return out


def naive_forward(student: student_lib.Student, prompt: prompt_lib.PairPrompt) -> Callable:
    """jit of (params, batch of MODEL_INPUTS) -> [B, 5] level logits, for `naive_level_logits`."""
    graphdef = nnx.split(student)[0]
    level_ids = tuple(int(i) for i in prompt.level_token_ids)

    def forward(params, batch):
        model = nnx.merge(graphdef, params)
        return model.level_logits(level_ids, **{k: batch[k] for k in student_lib.MODEL_INPUTS})

    return jax.jit(forward)
