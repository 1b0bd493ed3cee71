"""Time comes from the video stream's presentation timestamps: variable frame rates, audio
tracks longer than the video, and frames in memory sampled by the same rule as files."""

import logging

import av
import numpy as np
import pytest

from tests.video.phone_clips import PHONE_PICKS, PHONE_TIMES_MS, frame_numbers, write_timed_clip
from w2s_vqa import video
from w2s_vqa.video import distort


@pytest.mark.parametrize("name, codec", [("phone.mkv", "ffv1"), ("phone.mp4", "libx264")])
def test_variable_frame_rate_clip_is_sampled_at_its_timestamps(tmp_path, name, codec):
    """Every reader times frames by their presentation timestamps. The MP4 (H.264 with
    B-frames) declares a track duration of 3.5 s although its last frame starts at 3.8 s:
    its packets are believed, not its header."""
    path = write_timed_clip(tmp_path / name, PHONE_TIMES_MS, codec=codec)
    info = video.probe(path)
    assert 3.8 < info.duration < 3.9 and info.num_frames == 70 and info.fps == 30

    frames, times, _ = video.decode_frames(path)
    assert frame_numbers(frames) == list(range(70))
    np.testing.assert_allclose(times, np.asarray(PHONE_TIMES_MS) / 1000, atol=1e-3)

    sampled, mask, _ = video.sample_frames(path, 4, 8)
    assert mask.all() and frame_numbers(sampled) == PHONE_PICKS
    in_memory, memory_mask = video.sample_array(frames, times, info.duration, 4, 8)
    np.testing.assert_array_equal(in_memory, sampled)
    np.testing.assert_array_equal(memory_mask, mask)

    # Three whole seconds, three chunks, each from the first frame at or after its second.
    chunks, chunk_mask = video.motion_chunks(path, 4, frames_per_chunk=3, size=8)
    assert chunk_mask.tolist() == [True, True, True, False]
    assert [frame_numbers(chunk) for chunk in chunks[:3]] == [[0, 1, 2], [30, 31, 32], [60, 61, 62]]


def test_a_distorted_copy_is_sampled_at_the_sources_times(tmp_path):
    """A simulator changes what frames show, not when: stutter's repeated frames keep the
    times of the frames they replace, so the copy fills the same slots as the source."""
    frames, times, info = video.decode_frames(write_timed_clip(tmp_path / "phone.mkv", PHONE_TIMES_MS))
    stuttered = distort.get("stutter").apply(frames, 3, fps=info.fps, seed=0)
    sampled, mask = video.sample_array(stuttered, times, info.duration, 4, 8)
    assert mask.all()
    shown = frame_numbers(stuttered)
    assert frame_numbers(sampled) == [shown[i] for i in PHONE_PICKS]
    assert all(shown[i] <= i for i in PHONE_PICKS)  # a frame kept at or before the source's pick


@pytest.mark.parametrize("name, codec", [("talk.mkv", "ffv1"), ("talk.mp4", "libx264")])
def test_an_audio_track_longer_than_the_video_does_not_stretch_it(tmp_path, caplog, name, codec):
    """2 s of video and 6 s of sound: the clip lasts 2 s, as its video stream says, and
    is not taken for a truncated file."""
    path = write_timed_clip(tmp_path / name, [round(1000 * i / 30) for i in range(60)], codec=codec,
                            audio_seconds=6.0)
    caplog.set_level(logging.WARNING, logger="w2s_vqa.video")
    with av.open(str(path)) as container:
        assert container.duration / av.time_base > 5.5  # the container's duration is the audio's
    info = video.probe(path)
    assert info.duration == pytest.approx(2.0, abs=0.01)
    _, mask, _ = video.sample_frames(path, 8, 8)
    assert mask.tolist() == [True, True] + [False] * 6
    _, chunk_mask = video.motion_chunks(path, 8, frames_per_chunk=2, size=8)
    assert chunk_mask.tolist() == [True, True] + [False] * 6
    assert "truncated" not in caplog.text


def test_decode_frames_keeps_the_first_seconds(tmp_path):
    path = write_timed_clip(tmp_path / "phone.mkv", PHONE_TIMES_MS)
    frames, times, _ = video.decode_frames(path, max_seconds=2.5)
    assert frame_numbers(frames) == list(range(63))  # up to 2.4 s; 2.6 s is past the limit
    assert times[-1] == pytest.approx(2.4)
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        video.decode_frames(path, max_seconds=0)


def test_a_whole_second_clip_in_millisecond_time_base_keeps_its_last_second(tmp_path):
    """Matroska counts milliseconds: 30 frames at 15 fps end at 1.933 + 0.066 = 1.999 s by
    their packets; the track's own DURATION tag (2.000 s) is the same end, unrounded."""
    frames = np.zeros((30, 16, 16, 3), np.uint8)
    video.write_video(tmp_path / "two.mkv", frames, 15, codec="ffv1")
    info = video.probe(tmp_path / "two.mkv")
    assert info.duration == pytest.approx(2.0, abs=1e-9)
    assert video.chunk_choice(info.duration, 4).tolist() == [0, 1]
