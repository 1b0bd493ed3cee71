"""Display rotation: phone clips come out upright, as FFmpeg's autorotate and players show them."""

import av
import numpy as np
import pytest

from tests.video.phone_clips import PHONE_MATRICES, QUADRANTS, patch_tkhd_matrix, quadrant_levels, upright_picture
from w2s_vqa import video


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_phone_clip_comes_out_upright(tmp_path, rotation):
    """A 64x48 MP4 whose tkhd matrix says turn `rotation` degrees clockwise: read as a
    player shows it (48x64 for a quarter turn), top of the picture on top, for every reader."""
    upright = upright_picture(*((64, 48) if rotation % 180 else (48, 64)))
    stored = np.rot90(upright, k=rotation // 90)  # turned counter-clockwise, as the sensor recorded it
    assert stored.shape[:2] == (48, 64)
    path = tmp_path / "phone.mp4"
    video.write_video(path, np.stack([stored] * 10), 10, options={"crf": 10})
    patch_tkhd_matrix(path, *PHONE_MATRICES[rotation])

    info = video.probe(path)
    assert (info.width, info.height, info.rotation, info.mirrored) == (*upright.shape[1::-1], rotation, False)
    frames, times, _ = video.decode_frames(path)
    assert frames.shape == (10, *upright.shape)
    np.testing.assert_allclose(quadrant_levels(frames[0]), QUADRANTS, atol=4)
    sampled, mask, _ = video.sample_frames(path, 1, 16)  # squeezed to 16x16 after turning
    assert mask.all()
    np.testing.assert_allclose(quadrant_levels(sampled[0]), QUADRANTS, atol=12)
    chunks, _ = video.motion_chunks(path, 1, frames_per_chunk=2, size=16)
    np.testing.assert_allclose(quadrant_levels(chunks[0, 0]), QUADRANTS, atol=12)


def test_an_unrotated_clip_is_left_alone(tmp_path):
    upright = upright_picture(48, 64)
    path = tmp_path / "plain.mp4"
    video.write_video(path, np.stack([upright] * 3), 10, options={"crf": 10})
    patch_tkhd_matrix(path, 1, 0, 0, 1)
    info = video.probe(path)
    assert (info.width, info.height, info.rotation, info.mirrored) == (64, 48, 0, False)
    np.testing.assert_allclose(quadrant_levels(video.decode_frames(path)[0][0]), QUADRANTS, atol=4)


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("vflip", [False, True])
@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_every_orientation_of_a_display_matrix(tmp_path, degrees, hflip, vflip):
    """The eight orientations (turns and mirrors, as EXIF names them) that PyAV writes as
    a display matrix: `degrees` counter-clockwise, then the mirrors (PyAV's
    VideoStream.set_display_rotation). Lossless FFV1, so the upright frame is exact."""
    upright = np.kron(np.random.default_rng(0).integers(0, 256, (8, 6, 3), np.uint8), np.ones((4, 4, 1), np.uint8))
    stored = upright[::-1] if vflip else upright  # undo the display transform, last step first
    stored = stored[:, ::-1] if hflip else stored
    stored = np.ascontiguousarray(np.rot90(stored, k=-degrees // 90))
    path = tmp_path / "oriented.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.height, stream.width = stored.shape[:2]
        stream.pix_fmt = "bgr0"  # RGB: no colour conversion to blur the comparison
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        container.mux(stream.encode(None))
    frames, _, info = video.decode_frames(path)
    assert (info.height, info.width) == upright.shape[:2] == (32, 24)
    np.testing.assert_array_equal(frames[0], upright)
    assert info.rotation in (0, 90, 180, 270)
