"""Nine cheap, quality-related metrics of one video, for curating a pool (docs/method.md, "Pool").

The method selects its unlabeled pool so that its histograms on quality-related metrics
match a reference set's; it does not list its metrics. These nine follow the ones
KoNViD-1k was sampled on (Hosu et al., QoMEX 2017: blur, colourfulness, contrast,
spatial and temporal information) plus what a crawled pool varies in most (exposure,
sensor noise, compression budget, resolution). Each is computed on luma or RGB frames
decoded by :mod:`w2s_vqa.video`, the decoder ``prepare`` uses, at a working size (frames
taller than ``work_height`` are scaled down, keeping the aspect ratio), so that a 4K
and a 540p copy of one picture measure alike and the cost per video stays bounded.

========================  =========================================================  =====
column                    definition                                                 units
========================  =========================================================  =====
``brightness``            mean luma (ITU-R BT.601), over frames                      0-255
``contrast``              RMS contrast: spatial std of luma, mean over frames        0-255
``colourfulness``         Hasler & Suesstrunk (2003), eq. 3, mean over frames        0-~180
``sharpness``             variance of the luma Laplacian, mean over frames           grey²
``noise``                 Immerkaer (1996) fast noise sigma, mean over frames        0-255
``si``                    spatial information, ITU-T P.910 (2008) §5.1.1: max over   0-255
                          frames of the spatial std of the Sobel magnitude of luma
``ti``                    temporal information, ITU-T P.910 §5.1.2: max over frame   0-255
                          pairs of the spatial std of the luma difference
``bits_per_pixel``        file bits / (width x height x frames), from the container  bits
``megapixels``            displayed width x height / 1e6                             MP
========================  =========================================================  =====

Spatial metrics are taken on one frame per second of the first ``max_seconds``; ``ti``
on each of those frames and the frame that follows it in the stream (P.910 defines TI
between successive frames). A still image gives ``ti`` 0.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from scipy import ndimage

from w2s_vqa import video

METRICS = ("brightness", "contrast", "colourfulness", "sharpness", "noise", "si", "ti", "bits_per_pixel",
           "megapixels")

# Immerkaer's noise-estimation mask: the difference of two Laplacians, which cancels image
# structure to second order and leaves the noise (Immerkaer 1996, "Fast noise variance
# estimation", CVIU 64(2), eq. 3).
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


@dataclasses.dataclass(frozen=True)
class MetricSettings:
    """How frames are taken for the metrics.

    ``work_height``: frames taller than this many pixels are scaled down to it (aspect
    kept, width rounded to an even number). ``max_seconds``: only the first seconds of a
    video are measured (None: all of it).
    """

    work_height: int = 360
    max_seconds: float | None = 10.0

    def __post_init__(self):
        if self.work_height < 16:
            raise ValueError(f"curate.work_height must be at least 16 pixels, got {self.work_height}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"curate.max_seconds must be positive, got {self.max_seconds}")


def spatial_information(y: np.ndarray) -> float:
    """SI of one luma frame ``[H, W]`` (float): the spatial std of its Sobel gradient magnitude.

    ITU-T P.910 (2008) §5.1.1; the frame-wise value whose maximum over time is the clip's SI.
    """
    y = np.asarray(y, np.float64)
    gx = ndimage.sobel(y, axis=1, mode="nearest")
    gy = ndimage.sobel(y, axis=0, mode="nearest")
    # P.910 filters the interior only: drop the border where the 3x3 kernel leaves the frame.
    magnitude = np.hypot(gx, gy)[1:-1, 1:-1]
    return float(magnitude.std()) if magnitude.size else 0.0


def temporal_information(y0: np.ndarray, y1: np.ndarray) -> float:
    """TI of two successive luma frames ``[H, W]``: the spatial std of ``y1 - y0`` (P.910 §5.1.2)."""
    return float((np.asarray(y1, np.float64) - np.asarray(y0, np.float64)).std())


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003), "Measuring colourfulness in natural images", eq. 3, of RGB ``[H, W, 3]``.

    ``rg = R - G``, ``yb = (R + G) / 2 - B``; ``M = sqrt(std_rg² + std_yb²) + 0.3 sqrt(mean_rg² + mean_yb²)``.
    """
    rgb = np.asarray(rgb, np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def noise_sigma(y: np.ndarray) -> float:
    """Immerkaer's (1996) noise standard deviation of a luma frame ``[H, W]``, in grey levels.

    ``sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |y * N|`` over the interior, with N
    the mask :data:`_IMMERKAER`.
    """
    y = np.asarray(y, np.float64)
    if min(y.shape) < 3:
        return 0.0
    response = ndimage.convolve(y, _IMMERKAER, mode="nearest")[1:-1, 1:-1]
    h, w = y.shape
    return float(math.sqrt(math.pi / 2) * np.abs(response).sum() / (6.0 * (w - 2) * (h - 2)))


def sharpness(y: np.ndarray) -> float:
    """Variance of the Laplacian of a luma frame ``[H, W]`` (Pech-Pacheco et al., ICPR 2000), grey² units."""
    return float(ndimage.laplace(np.asarray(y, np.float64), mode="nearest")[1:-1, 1:-1].var())


def frame_metrics(frames: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """The seven pixel metrics of frames ``[T, H, W, 3]`` (uint8 RGB), typically one per second.

    ``pairs`` is ``(earlier, later)``, two arrays of the same shape whose frames follow each
    other in the stream, for ``ti`` (0 without them). Returns a dict over the pixel
    columns of :data:`METRICS`.
    """
    video.check_frames(frames)
    ys = video.luma(frames, np.float64)
    out = {
        "brightness": float(ys.mean()),
        "contrast": float(np.mean([y.std() for y in ys])),
        "colourfulness": float(np.mean([colourfulness(f) for f in frames])),
        "sharpness": float(np.mean([sharpness(y) for y in ys])),
        "noise": float(np.mean([noise_sigma(y) for y in ys])),
        "si": float(max(spatial_information(y) for y in ys)),
        "ti": 0.0,
    }
    if pairs is not None and len(pairs[0]):
        earlier, later = (video.luma(f, np.float64) for f in pairs)
        out["ti"] = float(max(temporal_information(a, b) for a, b in zip(earlier, later)))
    return out


def _work_size(info: video.VideoInfo, work_height: int) -> tuple[int, int] | None:
    if info.height <= work_height:
        return None
    width = max(2, int(round(info.width * work_height / info.height / 2)) * 2)
    return work_height, width


def video_metrics(path: str | os.PathLike, settings: MetricSettings = MetricSettings()) -> dict[str, float]:
    """Every column of :data:`METRICS` for the video at ``path`` (module docstring for each).

    Raises :class:`w2s_vqa.video.VideoError` for a file that does not decode and for a still
    image (a one-frame stream).
    """
    path = os.fspath(path)
    info = video.probe(path)
    if video.is_still_image(info):  # a JPEG or PNG decodes as a one-frame stream: no motion, no frame rate
        raise video.VideoError(path, "still image (one frame), not a video")
    frames, times, _ = video.decode_frames(path, max_seconds=settings.max_seconds,
                                           size=_work_size(info, settings.work_height))
    # The first frame of each second, and its successor in the stream for TI.
    picked = np.unique(np.searchsorted(times, np.arange(0.0, float(times[-1]) + 1e-9, 1.0)))
    picked = picked[picked < len(frames)]
    earlier = picked[picked + 1 < len(frames)]
    out = frame_metrics(frames[picked], (frames[earlier], frames[earlier + 1]))
    num_frames = max(info.num_frames, 1)
    out["bits_per_pixel"] = float(os.path.getsize(path) * 8 / (info.width * info.height * num_frames))
    out["megapixels"] = float(info.width * info.height / 1e6)
    return out
