"""Frame-difference motion features: a stand-in for SlowFast where none are computed.

The paper feeds the motion projector one SlowFast-R50 fast-pathway feature per
one-second chunk. Where no such features exist (the demo, a quick experiment),
`data.motion_features = "framediff"` makes a [chunks, motion_dim] descriptor from
the video's own frames at their full rate, computed for every variant from the
distorted frames, so that what frames sampled at 1 fps cannot show (a frame
repeated by stutter, a shaking camera) reaches the student:

    per chunk (one second of frames, each against the frame before it)
    [0, 32)    mean absolute difference of each frame pair (grey, [0, 1], x 10), largest first
    [32, 64)   the same differences as a histogram over 32 log-spaced bins, as fractions
    64         the fraction of pairs that repeat a frame (difference below 1/1000)
    65, 66     mean and standard deviation of the differences (x 10)
    rest       zeros

Differences are taken on grey frames block-averaged to at most 64 pixels a side, so
sensor noise counts little and the cost is negligible next to decoding.
"""

from __future__ import annotations

import numpy as np

MAX_PAIRS = 32
BINS = np.concatenate([[0.0], np.logspace(-4, 0, 32)])  # 32 bins of |difference| in [0, 1]
REPEAT_BELOW = 1e-3
SCALE = 10.0
FEATURES = MAX_PAIRS + (len(BINS) - 1) + 3
MAX_SIDE = 64


def _grey(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [T, h, w] in [0, 1], block-averaged to at most MAX_SIDE a side."""
    grey = frames.astype(np.float32).mean(axis=-1) / 255.0
    t, h, w = grey.shape
    step = max(1, -(-max(h, w) // MAX_SIDE))
    h2, w2 = h // step * step, w // step * step
    if step > 1 and h2 and w2:
        grey = grey[:, :h2, :w2].reshape(t, h2 // step, step, w2 // step, step).mean(axis=(2, 4))
    return grey


def frame_difference_features(frames: np.ndarray, fps: float, num_chunks: int, dim: int
                              ) -> tuple[np.ndarray, np.ndarray]:
    """[num_chunks, dim] float32 features and a [num_chunks] mask (True where the chunk
    has at least one pair of frames). frames: uint8 [T, H, W, 3] at `fps`. A clip
    longer than num_chunks seconds is covered by num_chunks seconds spread uniformly
    over it, as sampled frames are."""
    if dim < FEATURES:
        raise ValueError(f"frame-difference motion features need motion_dim >= {FEATURES}, not {dim}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], not {frames.shape}")
    features = np.zeros((num_chunks, dim), np.float32)
    mask = np.zeros((num_chunks,), bool)
    if len(frames) < 2 or not fps > 0:
        return features, mask
    grey = _grey(frames)
    differences = np.abs(np.diff(grey, axis=0))  # pair i: frame i+1 against frame i
    per_pair = differences.mean(axis=(1, 2))
    seconds = max(1, int(np.ceil(len(frames) / fps)))
    chosen = np.unique(np.round(np.linspace(0, seconds - 1, min(num_chunks, seconds))).astype(int))
    for slot, second in enumerate(chosen):
        lo, hi = int(round(second * fps)), int(round((second + 1) * fps))
        pairs = slice(max(lo - 1, 0), min(hi - 1, len(per_pair)))
        chunk = per_pair[pairs]
        if chunk.size == 0:
            continue
        ordered = np.sort(chunk)[::-1][:MAX_PAIRS]
        features[slot, : len(ordered)] = SCALE * ordered
        histogram, _ = np.histogram(differences[pairs], bins=BINS)
        features[slot, MAX_PAIRS: MAX_PAIRS + len(BINS) - 1] = histogram / max(histogram.sum(), 1)
        tail = MAX_PAIRS + len(BINS) - 1
        features[slot, tail] = np.mean(chunk < REPEAT_BELOW)
        features[slot, tail + 1] = SCALE * chunk.mean()
        features[slot, tail + 2] = SCALE * chunk.std()
        mask[slot] = True
    return features, mask
