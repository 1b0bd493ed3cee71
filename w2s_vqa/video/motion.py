"""Built-in motion features: frame-difference statistics per one-second chunk.

The student takes one motion token per one-second chunk (docs/method.md, "Student").
The paper's tokens are SlowFast features, which need a pretrained network; a
user brings them precomputed (`data.motion_features = "precomputed"`). Those
describe the source video only, so distorted variants made by `prepare` would
repeat their source's features, and a frozen or shaking copy would look as
smooth as the original. `data.motion_features = "frame_stats"` computes, for
every video of the store including each variant, a small hand-made description
of how the frames change instead: the built-in stand-in for SlowFast, as the
built-in weak teachers stand in for trained quality models.

Per chunk, on the luma of the clip at its native frame rate (reduced by area
averaging so the longer side is at most ANALYSIS_SIDE), at three scales (that
image, and its 2x2 and 4x4 area averages):

    frame difference |Y[t+1] - Y[t]|: quantiles 10/25/50/75/90 % and mean
    two-frame difference |Y[t+2] - Y[t]|: mean

each as log10(value + 1e-3) / 3 (so about -1 to 0), and for the chunk the
fraction of frames identical to the one before (a freeze) and of pixels that
did not change. Only change over time is described, nothing of a single frame.
It is not blind to spatial quality, any more than SlowFast's features are:
noise drawn afresh for every frame is change (flicker), and blur softens the
edges that move. Within a demo source, stronger noise or jitter raises the median
difference, stronger stutter the freezes, and stronger blur lowers the mean
difference (tests/video/test_motion.py; record: docs/2026-11-motion-features.md). `FEATURE_NAMES` lists the columns; the rest of the
`motion_dim` columns are zero.

`data.motion_features = "slowfast"` gives every video the paper's features
instead: `slowfast_chunks` cuts its frames into the chunks SlowFast-R50 reads,
and w2s_vqa.models.slowfast turns each into its 256-d fast-pathway feature.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from w2s_vqa.video.frames import check_frames, check_times, luma
from w2s_vqa.video.sample import chunk_choice

ANALYSIS_SIDE = 256
SCALES = (1, 2, 4)
DIFF_QUANTILES = (10, 25, 50, 75, 90)
_FLOOR = 1e-3

FEATURE_NAMES: tuple[str, ...] = tuple(
    name
    for scale in SCALES
    for name in (
        *(f"diff_q{q}_x{scale}" for q in DIFF_QUANTILES),
        f"diff_mean_x{scale}",
        f"diff2_mean_x{scale}",
    )
) + ("frozen_frames", "unchanged_pixels")


def _luma(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [T, H, W, 3] -> float32 luma [T, H', W'] on 0..1, the longer side at most ANALYSIS_SIDE."""
    y = luma(frames, np.float32) / 255.0
    return _pool(y, math.ceil(max(y.shape[1:]) / ANALYSIS_SIDE))


def _pool(y: np.ndarray, k: int) -> np.ndarray:
    """k x k area average over the last two axes (a ragged border is dropped)."""
    if k <= 1:
        return y
    t, h, w = y.shape
    h, w = max(1, h // k) * k, max(1, w // k) * k
    y = y[:, :h, :w]
    if y.shape[1] < k or y.shape[2] < k:  # smaller than the window: one pixel per frame
        return y.mean(axis=(1, 2), keepdims=True)
    return y.reshape(t, h // k, k, w // k, k).mean(axis=(2, 4))


def _log(x) -> np.ndarray:
    return np.log10(np.asarray(x, np.float64) + _FLOOR) / 3.0


def chunk_statistics(frames: np.ndarray) -> np.ndarray:
    """The FEATURE_NAMES values of one chunk: uint8 RGB [T, H, W, 3], T >= 1."""
    y = _luma(frames)
    values = []
    for scale in SCALES:
        z = _pool(y, scale)
        diff = np.abs(np.diff(z, axis=0)) if len(z) > 1 else np.zeros_like(z)
        diff2 = np.abs(z[2:] - z[:-2]) if len(z) > 2 else diff
        values += [*_log(np.percentile(diff, DIFF_QUANTILES)), _log(diff.mean()), _log(diff2.mean())]
    if len(frames) > 1:
        changed = frames[1:] != frames[:-1]
        frozen = float(np.mean(~changed.reshape(len(changed), -1).any(axis=1)))
        unchanged = float(np.mean(~changed.any(axis=-1)))
    else:
        frozen = unchanged = 0.0
    return np.asarray([*values, frozen, unchanged], np.float32)


def still_image_motion(num_chunks: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The motion features of a still image (`w2s_vqa.video.is_still_image`): float32 zeros
    [num_chunks, dim] and bool mask [num_chunks] True for the first slot only.

    The paper's rule: "A still image has all-zero motion features" (docs/method.md,
    "Student", Motion branch). One slot holds them because a picture lasts less than a
    second and a clip that short has one chunk (`chunk_choice`); the student then reads one
    motion token, the projection of zeros, where a video has one per second. Whatever
    data.motion_features computes for videos, an image gets these (frame statistics of
    one frame, or SlowFast on 32 copies of it, would describe no motion with non-zero
    numbers the paper never fed its student).
    """
    features, mask = np.zeros((num_chunks, dim), np.float32), np.zeros((num_chunks,), bool)
    mask[:1] = True
    return features, mask


def frame_statistics(
    frames: np.ndarray, times: np.ndarray, duration: float, num_chunks: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Motion features float32 [num_chunks, dim] and mask bool [num_chunks] of a clip.

    uint8 RGB [T, H, W, 3] frames shown from `times` (float64 [T], seconds,
    non-decreasing, as `w2s_vqa.video.decode.decode_frames` gives them) in a clip of
    `duration` seconds. The chunks are `w2s_vqa.video.sample.motion_chunks`'s
    (`chunk_choice`); chunk j holds the frames on screen during
    [j, j + 1) s (the one on screen at j s, then those whose presentation
    time falls inside) and the next frame, so that each second's changes,
    its last included, count whatever the frame rate, variable rates
    included. Unused slots are zeros, masked out. Raises ValueError for a
    `dim` too small for FEATURE_NAMES, or times that do not fit the frames.
    """
    check_frames(frames)
    times = check_times(times, len(frames))
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if dim < len(FEATURE_NAMES):
        raise ValueError(f"data.motion_dim={dim} is too small for the {len(FEATURE_NAMES)} frame statistics")
    features, mask = np.zeros((num_chunks, dim), np.float32), np.zeros((num_chunks,), bool)
    eps = 1e-6  # timestamps are rationals rounded to floats: a frame due at j s is on screen at j s
    for slot, chunk in enumerate(chunk_choice(duration, num_chunks)):
        first = max(0, int(np.searchsorted(times, chunk + eps, side="right")) - 1)
        stop = int(np.searchsorted(times, chunk + 1 - eps, side="left")) + 1
        features[slot, : len(FEATURE_NAMES)] = chunk_statistics(frames[first:stop])
        mask[slot] = True
    return features, mask


def repeat_last_chunk(features: np.ndarray, mask: np.ndarray, min_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Motion features [M, D] and mask bool [M] with at least min(min_chunks, M) slots used,
    the slots past the used ones holding a copy of the last used one.

    The authors' released motion (clh124/W2S-VQA 2c7ca75, extract_motion_feature/data_loader.py;
    docs/2026-12-released-model.md): a clip shorter than 8 s gets 8 chunks, its last
    repeated. The used slots come first, as every motion function here fills them;
    `min_chunks` 0 (or a clip with none used) returns them unchanged.
    """
    used = int(np.asarray(mask).sum())
    target = min(int(min_chunks), len(mask))
    if used == 0 or used >= target:
        return features, mask
    features, mask = np.array(features), np.array(mask, bool)
    features[used:target] = features[used - 1]
    mask[used:target] = True
    return features, mask


# The chunks of the authors' SlowFast features (docs/method.md, "Motion branch").
SLOWFAST_FRAMES = 32
SLOWFAST_SIZE = 224
# The authors resize with torchvision's Resize([224, 224]) on PIL images, which is
# PIL's bilinear filter; the student's frames use bicubic (w2s_vqa.video.frames, "Resizing").
SLOWFAST_RESAMPLE = Image.Resampling.BILINEAR


def slowfast_chunks(
    frames: np.ndarray, times: np.ndarray, duration: float, num_chunks: int, *,
    frames_per_chunk: int = SLOWFAST_FRAMES, size: int = SLOWFAST_SIZE, resample=SLOWFAST_RESAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """SlowFast's input chunks of a clip in memory: uint8 [num_chunks, frames_per_chunk, size, size, 3]
    and bool mask [num_chunks].

    `frames` uint8 RGB [T, H, W, 3] are shown from `times` (float64 [T], seconds,
    non-decreasing) in a clip of `duration` seconds. Slot k holds chunk
    `chunk_choice(duration, num_chunks)[k]`: for chunk j, the
    `frames_per_chunk` consecutive frames starting with the first frame at or
    after j seconds, padded by repeating the clip's last frame where it ends
    first, each resized to size x size (aspect not kept) with `resample` (PIL's
    bilinear, as the authors' torchvision Resize). The rule of
    `w2s_vqa.video.sample.motion_chunks`, which reads a file. The authors' chunk j starts at
    frame j * round(fps): the same frame at a constant integer rate. A chunk
    that starts after the last frame (a stream shorter than its duration) and
    unused slots are zeros, masked out. Raises ValueError for bad frames or
    times, a duration that is not positive, or sizes below 1.
    """
    check_frames(frames)
    times = check_times(times, len(frames))
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if min(num_chunks, frames_per_chunk, size) < 1:
        raise ValueError(f"num_chunks, frames_per_chunk and size must be at least 1, got "
                         f"{num_chunks}, {frames_per_chunk}, {size}")
    chunks = np.zeros((num_chunks, frames_per_chunk, size, size, 3), np.uint8)
    mask = np.zeros((num_chunks,), bool)
    eps = 1e-6  # timestamps are rationals rounded to floats: a frame due at j s starts chunk j
    resized: dict[int, np.ndarray] = {}  # chunks overlap below 32 fps: resize each frame once
    for slot, start in enumerate(chunk_choice(duration, num_chunks)):
        first = int(np.searchsorted(times, start - eps, side="left"))
        if first >= len(frames):
            break
        for k, i in enumerate(np.minimum(np.arange(first, first + frames_per_chunk), len(frames) - 1).tolist()):
            if i not in resized:
                frame = frames[i]
                resized[i] = (frame if frame.shape[:2] == (size, size) else
                              np.asarray(Image.fromarray(frame).resize((size, size), resample)))
            chunks[slot, k] = resized[i]
        mask[slot] = True
    return chunks, mask
