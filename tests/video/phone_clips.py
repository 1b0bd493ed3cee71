"""Clips a phone makes, written with PyAV for the tests: display rotations (an MP4 `tkhd`
matrix patched as phones write it) and variable frame rates (each frame's own timestamp)."""

import fractions
import struct

import av
import numpy as np

# Flat grey levels of the four quadrants of an upright picture: top-left, top-right,
# bottom-left, bottom-right. Flat blocks survive H.264 nearly unchanged, and four
# different levels tell every turn and mirror apart (top half bright, bottom dark).
QUADRANTS = (255, 170, 85, 0)


def upright_picture(height, width):
    """uint8 RGB [height, width, 3]: the four QUADRANTS levels."""
    picture = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    for (rows, columns), level in zip([(slice(0, h), slice(0, w)), (slice(0, h), slice(w, None)),
                                       (slice(h, None), slice(0, w)), (slice(h, None), slice(w, None))], QUADRANTS):
        picture[rows, columns] = level
    return picture


def quadrant_levels(frame):
    """Mean grey level of each quadrant of uint8 [H, W, 3], in QUADRANTS order."""
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    return [float(frame[r, c].mean()) for r, c in [(slice(0, h), slice(0, w)), (slice(0, h), slice(w, None)),
                                                    (slice(h, None), slice(0, w)), (slice(h, None), slice(w, None))]]


def patch_tkhd_matrix(path, a, b, c, d):
    """Set the rotation part of the video track's `tkhd` matrix, as a phone writes it.

    ISO/IEC 14496-12 `tkhd`: after the box header, version (1 byte) and flags (3),
    times and ids (20 bytes in version 0, 32 in version 1), 16 reserved/layer/volume
    bytes, then the matrix {a, b, u, c, d, v, x, y, w}, a..d in 16.16 fixed point,
    big-endian. [0 1; -1 0] is a phone held upright: show the picture turned 90
    degrees clockwise.
    """
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4
    assert data.count(b"tkhd") == 1
    version = data[at]
    matrix = at + 4 + (32 if version == 1 else 20) + 16
    for offset, value in zip((0, 4, 12, 16), (a, b, c, d)):
        struct.pack_into(">i", data, matrix + offset, value * 65536)
    path.write_bytes(bytes(data))


# A clockwise turn that makes the stored picture upright, and its tkhd matrix (a, b, c, d).
PHONE_MATRICES = {90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}

MS = fractions.Fraction(1, 1000)
# 2 s at 30 fps, then 2 s at 5 fps: 70 frames, the last at 3.8 s.
PHONE_TIMES_MS = [round(1000 * i / 30) for i in range(60)] + [2000 + 200 * i for i in range(10)]
# With 4 frames asked, the slots are at 0.5, 1.5, 2.5 and 3.5 s: the frames shown then started
# at 0.5, 1.5, 2.4 and 3.4 s. Counting frames at the nominal 30 fps instead gives a clip of
# 70 / 30 = 2.3 s, two slots, and frame 75 for 2.5 s, which does not exist.
PHONE_PICKS = [15, 45, 62, 67]


def write_timed_clip(path, times_ms, *, codec="ffv1", size=16, audio_seconds=0.0):
    """Frame i is a flat grey of 3 * i shown at times_ms[i]; optionally a silent AAC track."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.height = stream.width = size
        stream.pix_fmt = "yuv420p" if codec == "libx264" else "yuv444p"
        stream.codec_context.time_base = MS
        audio = container.add_stream("aac", rate=8000) if audio_seconds else None
        for index, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 3 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = time_ms, MS
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        for index in range(int(audio_seconds * 8000 / 1024)):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 8000, index * 1024
            container.mux(audio.encode(samples))
        if audio:
            container.mux(audio.encode(None))
    return path


def frame_numbers(frames):
    """Which frame of write_timed_clip each uint8 [T, H, W, 3] frame is, from its grey level."""
    return np.rint(frames[:, :, :, 0].mean(axis=(1, 2)) / 3).astype(int).tolist()
