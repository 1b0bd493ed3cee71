"""Writing video, and the in-memory round trip through a real encoder that the
compression simulators use (:mod:`w2s_vqa.video.distort`).

Frames go in as uint8 RGB ``[T, H, W, 3]``; PyAV's encoders (libx264, libx265,
...) do the work.
"""

from __future__ import annotations

import fractions
import io
import os

import av
import numpy as np

from w2s_vqa.video.decode import VideoError, describe_error
from w2s_vqa.video.frames import check_frames

# Smallest frame side handed to an encoder by encode_decode (see there).
MIN_ENCODE_SIZE = 64


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    options: dict | None = None,
    pix_fmt: str = "yuv420p",
) -> None:
    """Encode uint8 RGB ``[T, H, W, 3]`` frames to ``path``; the container follows the extension.

    The size is written as given: encoders that need even sizes for
    chroma-subsampled formats (libx264 with ``yuv420p``) raise
    :class:`VideoError` on odd ones; :func:`encode_decode` pads instead.
    """
    check_frames(frames)
    path = os.fspath(path)
    try:
        with av.open(path, "w") as container:
            _encode(container, frames, fps, codec, options, pix_fmt)
    except av.FFmpegError as error:
        raise VideoError(path, f"cannot encode with {codec} ({pix_fmt}): {describe_error(error)}") from error


def encode_decode(frames: np.ndarray, fps: float, *, codec: str, options: dict) -> np.ndarray:
    """Round-trip uint8 RGB ``[T, H, W, 3]`` frames through a real encoder, in memory.

    The frames go to ``yuv420p`` (what streaming services deliver) in a
    Matroska buffer and come back as RGB of the input's shape. Frames are
    padded, then cropped back: to even sizes, which ``yuv420p`` encoders
    require, and to at least :data:`MIN_ENCODE_SIZE` on each side, because
    libx265 (as bundled with PyAV 18.1) corrupts its heap, killing the
    process, on some frames under 64 pixels a side. The padding mirrors the
    frame: padding by repeating the edge pixel made x265's output
    non-repeatable, mirroring did not (docs/2026-11-encoder-behaviour.md).
    """
    check_frames(frames)
    count, height, width, _ = frames.shape
    padded_height = max(MIN_ENCODE_SIZE, height + height % 2)
    padded_width = max(MIN_ENCODE_SIZE, width + width % 2)
    padded = np.pad(frames, ((0, 0), (0, padded_height - height), (0, padded_width - width), (0, 0)), mode="symmetric")
    label = f"<in-memory {codec}>"
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format="matroska") as container:
            _encode(container, padded, fps, codec, options, "yuv420p")
        buffer.seek(0)
        with av.open(buffer, "r") as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.FFmpegError as error:
        raise VideoError(label, f"round trip failed: {describe_error(error)}") from error
    if len(decoded) != count:
        raise VideoError(label, f"{count} frames went in but {len(decoded)} came out")
    return np.stack(decoded)[:, :height, :width]


def _encode(
    container: av.container.OutputContainer,
    frames: np.ndarray,
    fps: float,
    codec: str,
    options: dict | None,
    pix_fmt: str,
) -> None:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # NTSC rates arrive as floats (29.97002997...): recover 30000/1001.
    rate = fractions.Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate, options={k: str(v) for k, v in (options or {}).items()})
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    for image in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
    container.mux(stream.encode(None))
