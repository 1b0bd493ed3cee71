"""Luma: one formula (ITU-R BT.601) for the motion features and the weak teachers."""

import numpy as np
from PIL import Image

from w2s_vqa import video


def test_luma_matches_pils_bt601_conversion():
    # PIL's RGB -> "L" is the same ITU-R 601-2 formula, computed in fixed point and rounded.
    frames = np.random.default_rng(0).integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    reference = np.stack([np.asarray(Image.fromarray(frame).convert("L")) for frame in frames])
    y = video.luma(frames)
    assert y.shape == frames.shape[:-1] and y.dtype == np.float32
    assert np.abs(y - reference).max() <= 0.5 + 1e-3
    np.testing.assert_allclose(video.luma(frames.astype(np.float64), np.float64), y, atol=1e-3)
    # White stays white up to rounding: the weighted sum runs through BLAS, whose kernels round
    # differently across CPUs (254.99999999999997 on an AMD EPYC), so not compared exactly.
    np.testing.assert_allclose(video.luma(np.full((1, 1, 1, 3), 255, np.uint8), np.float64)[0, 0, 0], 255.0, rtol=0, atol=1e-9)
