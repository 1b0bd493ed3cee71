"""`w2s-vqa check-parity --hf DIR`: our student against transformers on a checkpoint of yours.

Runs random video pairs (with nonzero motion features) through our model and
through transformers + the PyTorch scorer, prints the largest logit difference
over the text after the second video (where the answer is read) and the KL
divergence of the five-level answer distribution, and exits non-zero when
either passes its tolerance. A converted 7B checkpoint is checked the same way
as the tiny one in the tests.
"""

from __future__ import annotations


import numpy as np

from w2s_vqa import prompt

DEFAULT_LOGIT_TOLERANCE = 1e-3
DEFAULT_KL_TOLERANCE = 1e-6


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def check_parity(hf_dir: str, *, pairs: int = 2, seed: int = 0, num_frames: int | None = None,
                 num_motion_chunks: int | None = None) -> dict:
    """Both implementations on `pairs` random video pairs of `hf_dir`, any LLaVA-OneVision directory
    transformers loads: ours (w2s_vqa.json, motion projector) or a plain Hugging Face one, whose
    frames come from `num_frames` or the defaults and which has no motion tokens."""
    import jax
    import jax.numpy as jnp

    from w2s_vqa.convert import hf
    from w2s_vqa.convert.torch_scorer import TorchScorer

    jax.config.update("jax_default_matmul_precision", "highest")
    hf.check_readable(hf_dir)  # before transformers reads it: one error naming every problem
    scorer = TorchScorer(hf_dir, num_frames=num_frames, num_motion_chunks=num_motion_chunks)
    ours = hf.load_student(hf_dir, num_frames=scorer.num_frames, num_motion_chunks=scorer.num_motion_chunks)
    cfg = ours.cfg
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    pixels = rng.integers(0, 256, (pairs, 2, cfg.num_frames, size, size, 3), dtype=np.uint8)
    motion = rng.normal(size=(pairs, 2, cfg.num_motion_chunks, cfg.motion_dim)).astype(np.float32)

    ids = np.repeat(scorer.prompt.input_ids[None], pairs, axis=0)
    tail = int(np.nonzero(ids[0] == cfg.video_token_index)[0].max()) + 1  # text after the second video
    hidden = ours.hidden_states(jnp.asarray(ids), None, jnp.asarray(pixels), jnp.asarray(motion))
    mine = np.asarray(ours.logits(hidden[:, tail:]), np.float64)
    theirs = scorer.logits(pixels, motion)[:, tail:].double().numpy()

    level_ids = list(scorer.prompt.level_token_ids)
    p, q = _softmax(theirs[:, -1, level_ids]), _softmax(mine[:, -1, level_ids])
    kl = float(np.max(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))
    return {
        "checkpoint": str(hf_dir),
        "pairs": pairs,
        "positions_compared": int(mine.shape[1]),
        "max_abs_logit_diff": float(np.max(np.abs(mine - theirs))),
        "level_kl": kl,
        "preference_ours": prompt.preference(mine[:, -1, level_ids]).tolist(),
        "preference_torch": prompt.preference(theirs[:, -1, level_ids]).tolist(),
    }
