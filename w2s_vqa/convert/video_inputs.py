"""A video file -> the student's inputs, as `w2s-vqa prepare` makes a pristine record, without JAX.

For the PyTorch side (`TorchScorer`), which must see exactly what the JAX scorer sees:
the JAX scorer prepares video files into a store (`w2s_vqa.store.prepare`, no variants)
and reads the records back; this module follows the same steps with the same functions of
`w2s_vqa.video`, and tests/convert/test_torch_side.py checks that the arrays equal the
store's records, raw and JPEG. The steps (store/prepare.py `_source_records`, pristine
video):

    motion_features "frame_stats"   the clip decoded upright with its longer side at most
                                    decode_max_side pixels (0: native) and its first
                                    decode_max_seconds seconds (0: all); frames sampled
                                    from it (video.sample_array); motion =
                                    video.motion.frame_statistics of the decoded clip
    "none", "precomputed"           frames sampled while decoding (video.sample_frames);
                                    motion zeros and masked ("none"), or rows of the
                                    video's own per-second features chosen by
                                    video.chunk_choice ("precomputed")
    frame_format "jpeg"             each valid frame through JPEG at jpeg_quality with
                                    4:4:4 chroma and back (PIL), as the store keeps it
    a still image                   (video.is_still_image: a JPEG, PNG, any one-frame
                                    stream) one frame by the same sampling rule, and
                                    all-zero motion features unless motion_features is
                                    "none" (video.motion.still_image_motion, docs/method.md)

Settings (store.settings.Settings, or a record of its fields) come from an anchor
directory's anchors.json "settings" or an export's w2s_vqa.json
(`export_files.input_settings`); decoding caps a record lacks default to
config.defaults()'s data.distort_max_side and distort_max_seconds.
"""

from __future__ import annotations

import io
import os
from typing import Any, Mapping

import numpy as np

from w2s_vqa import video
from w2s_vqa.store.settings import Settings
from w2s_vqa.video import motion as motion_lib

# The arrays of one video, in a store record's names and shapes.
ARRAYS = ("frames", "frame_mask", "motion", "motion_mask")
REQUIRED = ("num_frames", "image_size", "num_motion_chunks", "motion_dim", "motion_features")


def _cap(value, data_key: str):
    if value is not None:
        return value
    from w2s_vqa.config import defaults

    return defaults().data[data_key]


def video_inputs(path: str | os.PathLike, settings: Mapping[str, Any], *,
                 features: np.ndarray | None = None) -> dict[str, Any]:
    """The student's inputs for one video file: {"frames": uint8 [F, S, S, 3], "frame_mask":
    bool [F], "motion": float32 [M, D], "motion_mask": bool [M], "media": "video" or "image"
    (a still image, video.is_still_image, made by the paper's rule: module docstring)}.

    settings: a Settings or a record of its fields (Settings.from_json) holding the
    REQUIRED ones; frame_format defaults to "raw", jpeg_quality to 95, the decoding caps
    to config.defaults()'s. features: the video's
    per-second motion features float32 [seconds, D], required when motion_features is
    "precomputed". frame_times picks the frames (video.sample_frames; "centered" when not
    recorded) and motion_min_chunks pads motion (video.motion.repeat_last_chunk; 0 when not
    recorded), as store.prepare does. Raises video.VideoError for a file that cannot be decoded, ValueError
    for missing settings, an unknown motion kind, or missing or mis-shaped features.
    """
    settings = settings if isinstance(settings, Settings) else Settings.from_json(settings)
    missing = [k for k in REQUIRED if getattr(settings, k) is None]
    if missing:
        raise ValueError(f"video input settings lack {missing} (have {sorted(settings)})")
    count, size = settings.num_frames, settings.image_size
    chunks, dim = settings.num_motion_chunks, settings.motion_dim
    kind = settings.motion_features
    frame_times = settings.frame_times or "centered"  # which frames (video.sample)
    motion, motion_mask = np.zeros((chunks, dim), np.float32), np.zeros((chunks,), bool)
    if kind == "frame_stats":
        max_side = int(_cap(settings.distort_max_side, "distort_max_side"))
        max_seconds = float(_cap(settings.distort_max_seconds, "distort_max_seconds"))
        info = video.probe(path)
        longer = max(info.width, info.height)
        shape = None
        if 0 < max_side < longer:
            scale = max_side / longer
            shape = (max(1, round(info.height * scale)), max(1, round(info.width * scale)))
        limit = max_seconds if max_seconds > 0 else None
        decoded, times, info = video.decode_frames(path, max_seconds=limit, size=shape)
        seconds = info.duration if limit is None else min(info.duration, limit)
        frames, frame_mask = video.sample_array(decoded, times, seconds, count, size, frame_times=frame_times,
                                                video_fps=float(info.fps))
        if not video.is_still_image(info):  # a still image's motion is set below
            motion, motion_mask = motion_lib.frame_statistics(decoded, times, seconds, chunks, dim)
    elif kind in ("none", "precomputed"):
        frames, frame_mask, info = video.sample_frames(path, count, size, frame_times=frame_times)
        if kind == "precomputed":
            if features is None:
                raise ValueError(f"{path}: motion_features='precomputed' needs the video's own features [seconds, "
                                 f"{dim}] (features=...)")
            features = np.asarray(features, np.float32)
            if features.ndim != 2 or features.shape[1] != dim or not len(features):
                raise ValueError(f"{path}: motion features of shape {features.shape}, expected [seconds >= 1, {dim}]")
            chosen = features[video.chunk_choice(min(info.duration, len(features)), chunks)]
            motion[: len(chosen)], motion_mask[: len(chosen)] = chosen, True
    else:
        raise ValueError(f"motion_features={kind!r}: expected frame_stats, none or precomputed")
    motion, motion_mask = motion_lib.repeat_last_chunk(motion, motion_mask, settings.motion_min_chunks or 0)
    if video.is_still_image(info) and kind != "none":  # as store.prepare makes a still image's record
        motion, motion_mask = motion_lib.still_image_motion(chunks, dim)
    if (settings.frame_format or "raw") == "jpeg":
        frames = _jpeg_round_trip(frames, frame_mask, settings.jpeg_quality or 95)
    return {"frames": frames, "frame_mask": np.asarray(frame_mask, bool), "motion": motion,
            "motion_mask": np.asarray(motion_mask, bool), "media": video.media_kind(info)}


def _jpeg_round_trip(frames: np.ndarray, mask: np.ndarray, quality: int) -> np.ndarray:
    """Each valid frame encoded as the store does (PIL JPEG, 4:4:4 chroma) and decoded; the
    rest black, as a store record gives them back."""
    from PIL import Image

    out = np.zeros_like(frames)
    for i, (frame, valid) in enumerate(zip(frames, mask)):
        if valid:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=quality, subsampling=0)
            with Image.open(io.BytesIO(buffer.getvalue())) as image:
                out[i] = np.asarray(image.convert("RGB"))
    return out
