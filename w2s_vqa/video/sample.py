"""Sampling frames for the student (the vision tower) and one-second chunks for the
frozen SlowFast motion branch (:func:`motion_chunks`, :func:`chunk_choice`).

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
    frame whose presentation time is ``<= t``. The same rule serves a file
    (:func:`sample_frames`, which streams) and frames in memory with their
    timestamps (:func:`sample_array`), so a clip sampled either way gives the
    same frames.

With ``frame_times="released"`` (``data.frame_times``, store.settings) frames are
chosen by index instead, as the authors' released inference does
(clh124/W2S-VQA 2c7ca75, ``infer_pair.py`` ``load_video``;
docs/2026-12-released-model.md): frame ``k * round(video_fps / sample_fps)``
for ``k = 0 .. n - 1``, ``n = max(1, T // stride)`` for a clip of ``T``
frames. They take every such frame; a store has ``num_frames`` slots, so a
clip with ``n > num_frames`` gets ``num_frames`` of them chosen uniformly
(position ``floor((k + 0.5) * n / num_frames)``, the rule of
:func:`chunk_choice`), and a clip with fewer masks the rest. Frames are
counted in decoding order. The default, ``"centered"``, is the rule above.

Times are those of :mod:`w2s_vqa.video.decode` ("Timing"), and frames are
upright ("Orientation") before they are resized (:mod:`w2s_vqa.video.frames`).
A file is streamed: only the frames its sample times need are kept, already
resized, and decoding stops once the last needed frame has been seen.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import numpy as np

from w2s_vqa.video.decode import TIME_EPS, VideoInfo, open_frames, upright_rgb
from w2s_vqa.video.frames import check_frames, check_times, resize_frame


FRAME_TIMES = ("centered", "released")


def sample_frames(
    path: str | os.PathLike, num_frames: int, size: int, *, fps: float = 1.0, frame_times: str = "centered"
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """``num_frames`` frames at ``fps`` by the module's sampling rule, resized to ``size`` x ``size``.

    ``frame_times``: "centered" (at ``(k + 0.5) / fps`` seconds) or "released" (frame
    ``k * round(video_fps / fps)``, the authors' rule: module docstring). Frames are
    upright (:mod:`w2s_vqa.video.decode`, "Orientation") before they are
    resized. Returns uint8 ``[num_frames, size, size, 3]``, bool ``mask
    [num_frames]`` and the stream's :class:`VideoInfo`. Raises
    :class:`VideoError`, ValueError for an unknown ``frame_times``.
    """
    _check_sampling(num_frames, size, fps, frame_times)
    with open_frames(path) as (info, timed):
        convert = lambda frame: resize_frame(upright_rgb(frame, info), (size, size))  # noqa: E731
        if frame_times == "released":
            indices = released_indices(info.num_frames, info.fps / fps, num_frames)
            picked = _pick_at_indices((frame for _, frame in timed), indices, convert)
        else:
            picked = _pick_at_times(timed, _sample_times(info.duration, num_frames, fps), info.duration, convert)
    frames, mask = _fill_slots(picked, num_frames, size)
    return frames, mask, info


def sample_array(
    frames: np.ndarray,
    times: np.ndarray,
    duration: float,
    num_frames: int,
    size: int,
    *,
    sample_fps: float = 1.0,
    frame_times: str = "centered",
    video_fps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_frames` for frames already in memory (e.g. after a distortion).

    Frame ``i`` of ``frames`` (uint8 ``[T, H, W, 3]``) is shown from
    ``times[i]`` (seconds, ``[T]``, non-decreasing, as :func:`decode_frames`
    returns them) until the next frame's time; the clip lasts ``duration``
    seconds. ``frame_times`` "released" picks frame ``k * round(video_fps /
    sample_fps)`` (module docstring) and needs ``video_fps``, the stream's
    nominal rate (``VideoInfo.fps``). Returns uint8 ``[num_frames, size, size,
    3]`` and bool ``mask [num_frames]``. Raises ValueError for frames and times
    that do not match, an unknown ``frame_times``, or "released" without
    ``video_fps``.
    """
    check_frames(frames)
    times = check_times(times, len(frames))
    _check_sampling(num_frames, size, sample_fps, frame_times)
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if frame_times == "released":
        if not video_fps or video_fps <= 0:
            raise ValueError(f"frame_times='released' needs the video's frame rate (video_fps), got {video_fps}")
        indices = released_indices(len(frames), video_fps / sample_fps, num_frames)
        return _fill_slots(_pick_at_indices(frames, indices, lambda frame: resize_frame(frame, (size, size))),
                           num_frames, size)
    picked = _pick_at_times(
        zip(times.tolist(), frames),
        _sample_times(duration, num_frames, sample_fps),
        duration,
        lambda frame: resize_frame(frame, (size, size)),
    )
    return _fill_slots(picked, num_frames, size)


def chunk_choice(duration: float, num_chunks: int) -> np.ndarray:
    """Which one-second chunks of a `duration`-second clip fill the motion slots.

    max(1, floor(duration)) chunks; with more than `num_chunks`, chunk
    floor((k + 0.5) * n / num_chunks) for slot k, else every chunk in order.
    """
    total = max(1, math.floor(duration + TIME_EPS))
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
    normalisation belongs to the model. Frames are upright and timed by
    their timestamps (:mod:`w2s_vqa.video.decode`, "Timing"). With more than ``num_chunks``
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
    with open_frames(path) as (info, timed):
        starts = chunk_choice(info.duration, num_chunks).astype(np.float64)
        started = 0
        for time, frame in timed:
            while started < len(starts) and time >= starts[started] - TIME_EPS:
                started += 1
            active = [k for k in range(started) if filled[k] < frames_per_chunk]
            if not active:
                if started == len(starts):
                    break
                continue
            rgb = resize_frame(upright_rgb(frame, info), (size, size))
            for k in active:
                chunks[k, filled[k]] = rgb
                filled[k] += 1
    for k in np.flatnonzero((filled > 0) & (filled < frames_per_chunk)):
        chunks[k, filled[k] :] = chunks[k, filled[k] - 1]
    return chunks, filled > 0

def released_indices(total_frames: int, frames_per_sample: float, num_frames: int) -> np.ndarray:
    """The frame indices the "released" rule picks (module docstring), int64 ``[<= num_frames]``.

    ``total_frames``: the clip's frame count T; ``frames_per_sample``: the video's
    frames per sample (its fps at 1 sample a second), rounded to the stride as the
    authors' ``round(fps)``. Indices ``k * stride`` for ``k < max(1, T // stride)``;
    more than ``num_frames`` of them are thinned uniformly.
    """
    stride = max(1, round(frames_per_sample))
    count = max(1, int(total_frames) // stride)
    positions = np.arange(count, dtype=np.int64)
    if count > num_frames:
        positions = np.floor((np.arange(num_frames) + 0.5) * count / num_frames).astype(np.int64)
    return positions * stride


def _pick_at_indices(frames: Iterable[object], indices: np.ndarray, convert: Callable[[object], np.ndarray]
                     ) -> list[np.ndarray]:
    """Converted frames at each of ``indices`` (ascending, distinct) in ``frames``' order;
    shorter when the frames end first. Stops reading after the last index."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    picked: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        if index in wanted:
            picked.append(convert(frame))
            if len(picked) == len(wanted):
                break
    return picked


def _check_sampling(num_frames: int, size: int, fps: float, frame_times: str = "centered") -> None:
    if frame_times not in FRAME_TIMES:
        raise ValueError(f"frame_times must be one of {FRAME_TIMES}, not {frame_times!r}")
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
    end: float,
    convert: Callable[[object], np.ndarray],
) -> list[np.ndarray]:
    """Converted frames on screen at each of ``times`` (ascending); shorter when the stream ends first.

    Only the frame on screen is held, so memory does not grow with the clip;
    a frame shown at several times is converted once. The last frame is on
    screen until ``end``, the end of the clip in seconds.
    """
    picked: list[np.ndarray] = []
    shown = shown_rgb = None

    def take_shown() -> None:
        nonlocal shown_rgb
        if shown_rgb is None:
            shown_rgb = convert(shown)
        picked.append(shown_rgb)

    for time, frame in timed_frames:
        while shown is not None and len(picked) < len(times) and times[len(picked)] < time - TIME_EPS:
            take_shown()
        if len(picked) == len(times):
            return picked
        shown, shown_rgb = frame, None
    if shown is not None:
        while len(picked) < len(times) and (times[len(picked)] <= end + TIME_EPS or not picked):
            take_shown()
    return picked


def _fill_slots(picked: list[np.ndarray], num_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    mask = np.zeros(num_frames, bool)
    if picked:
        frames[: len(picked)] = np.stack(picked)
        mask[: len(picked)] = True
    return frames, mask
