"""Frames in memory: the array checks, resizing and luma every video module shares.

Frames are uint8 RGB arrays ``[T, H, W, 3]``; frame times, where kept, are float64
seconds ``[T]`` beside them (:func:`check_times`).

Resizing
    PIL's bicubic filter, everywhere (decoded frames and arrays alike). It is
    the filter LLaVA-OneVision's video processor names
    (``PILImageResampling.BICUBIC``), so the student sees what the parity
    reference would feed it, and PIL's bicubic widens its kernel when
    shrinking (anti-aliasing), which matters when a 4K frame becomes 384x384.
    Frames are squeezed to the target size without preserving the aspect
    ratio, as that processor does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """One uint8 RGB frame ``[H, W, 3]`` resized to ``size = (height, width)`` (as it is for None or its own size)."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    height, width = size
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB ``[T, H, W, 3]`` frames to ``size = (height, width)`` with the module's filter."""
    check_frames(frames)
    return np.stack([resize_frame(frame, size) for frame in frames])


def check_frames(frames: np.ndarray) -> None:
    """Raise ValueError unless ``frames`` is a non-empty uint8 RGB array ``[T, H, W, 3]``."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            "frames must be a uint8 RGB array [T, H, W, 3], got "
            f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}"
        )
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame")


def check_times(times, count: int) -> np.ndarray:
    """``times`` as float64 ``[count]``: finite, non-decreasing frame times in seconds.

    Raises ValueError naming what is wrong (length, a non-finite time, a time
    earlier than its predecessor).
    """
    times = np.asarray(times, np.float64)
    if times.shape != (count,):
        raise ValueError(f"times must be one per frame, shape [{count}], got shape {list(times.shape)}")
    if not np.isfinite(times).all():
        raise ValueError(f"times must be finite; frame {int(np.flatnonzero(~np.isfinite(times))[0])} is not")
    if count > 1 and (np.diff(times) < 0).any():
        raise ValueError(f"times must not decrease; frame {int(np.flatnonzero(np.diff(times) < 0)[0]) + 1} "
                         "is earlier than the one before")
    return times


# ITU-R BT.601 luma weights of R, G and B, the ones JPEG and most classical measures use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(frames: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) of RGB frames ``[..., 3]``.

    Returns ``[...]`` in ``dtype``, in the frames' own units (grey levels 0..255 for
    uint8 frames); the sum is taken in ``dtype``.
    """
    return np.asarray(frames).astype(dtype, copy=False) @ np.asarray(LUMA_WEIGHTS, dtype)
