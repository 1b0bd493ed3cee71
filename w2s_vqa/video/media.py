"""Still images against videos: what an input is called, by one test (a stream of one frame).

Used by `prepare`, `score`, `eval`, curation and TorchScorer through w2s_vqa.video.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from w2s_vqa.video.decode import VideoInfo


# What `media_kind` calls an input: a video, or a still image (a JPEG, PNG, ... or any stream
# of one frame), which the student reads by docs/method.md's rule for images (one frame,
# all-zero motion features: w2s_vqa.video.motion.still_image_motion).
VIDEO, IMAGE = "video", "image"
MEDIA_KINDS = (VIDEO, IMAGE)


def is_still_image(info: VideoInfo) -> bool:
    """Whether the stream `info` describes is a still image: one frame (packet) in all.

    FFmpeg opens a JPEG, PNG, BMP, TIFF or WebP picture as a video stream of one frame
    (a nominal 25 fps, 0.04 s), so a picture in a folder of videos decodes like a clip; the
    frame count tells them apart whatever the container or extension. A one-frame video
    file is a still image by this rule too: it holds no motion either. The one test of
    "still image" in the package (`prepare`, `score`, `eval`, curation, TorchScorer).
    """
    return info.num_frames <= 1


# The reason a still image left out of a score table (images="skip", the default of `score`,
# `eval` and TorchScorer) is listed with; `is_image_reason` recognizes it.
IMAGE_REASON = "still image (one frame), not a video: left out by images='skip' (`--images score` scores it)"


def is_image_reason(reason: str) -> bool:
    """Whether a skipped entry's reason is IMAGE_REASON (a still image left out), not a failure."""
    return str(reason).startswith("still image (one frame)")


def media_kind(info: VideoInfo) -> str:
    """IMAGE for a still image (`is_still_image`), else VIDEO."""
    return IMAGE if is_still_image(info) else VIDEO
