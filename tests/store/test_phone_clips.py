"""Phone clips in a store: rotated clips are stored upright, variable-frame-rate clips are
sampled at their timestamps on every path, and precomputed motion features are checked."""

import json

import av
import numpy as np
import pandas as pd
import pytest

from tests.video.phone_clips import (PHONE_PICKS, PHONE_TIMES_MS, QUADRANTS, frame_numbers, patch_tkhd_matrix,
                                     quadrant_levels, upright_picture, write_timed_clip)
from w2s_vqa import video
from w2s_vqa.config import load_config
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.prepare import prepare

SETTINGS = ["data.num_frames=4", "data.image_size=16", "data.num_motion_chunks=4", "data.frame_format='raw'"]


def config(*overrides):
    return load_config(None, SETTINGS + list(overrides))


def build(inputs, out, *overrides):
    report = prepare(config(*overrides), str(inputs), str(out), workers=0, progress=False)
    return report, VideoStore(out)


def records(store):
    return {video_id: store.record_bytes(video_id) for video_id in store.ids}


def test_a_rotated_phone_clip_is_stored_upright(tmp_path):
    """A 64x48 MP4 whose tkhd matrix says turn 90 degrees clockwise: the index says 48x64 and
    rotation 90, and the pristine record and every variant show the top of the picture on top."""
    upright = upright_picture(64, 48)
    folder = tmp_path / "videos"
    folder.mkdir()
    video.write_video(folder / "phone.mp4", np.stack([np.rot90(upright)] * 20), 10, options={"crf": 10})
    patch_tkhd_matrix(folder / "phone.mp4", 0, 1, -1, 0)
    _, store = build(folder, tmp_path / "store", "data.distortions='resize:1;stutter:1;h264:1'")
    row = store.index.set_index("id").loc["phone"]
    assert (row["width"], row["height"], row["rotation"]) == (48, 64, 90)
    assert (store.index["rotation"] == 90).all() and store.index["rotation"].dtype == np.int32
    for video_id in store.ids:
        record = store.get(video_id)
        assert record["frame_mask"].tolist() == [True, True, False, False]
        np.testing.assert_allclose(quadrant_levels(record["frames"][0]), QUADRANTS, atol=16, err_msg=video_id)


def test_a_rotated_clip_stores_what_the_same_clip_stored_upright_stores(tmp_path):
    """Frames, variants and frame statistics of a clip with a display rotation equal those of
    the same pictures stored upright (lossless FFV1, so equal to the byte)."""
    rng = np.random.default_rng(3)
    # 16 frames of 32x24 pixels in 4x4 blocks that change every frame.
    upright = np.kron(rng.integers(0, 256, (16, 8, 6, 3), np.uint8), np.ones((1, 4, 4, 1), np.uint8))
    for name, stored, degrees in [("upright", upright, 0), ("rotated", np.rot90(upright, 1, axes=(1, 2)), -90)]:
        (tmp_path / name).mkdir()
        with av.open(str(tmp_path / name / "clip.mkv"), "w") as container:
            stream = container.add_stream("ffv1", rate=8)
            stream.height, stream.width = stored.shape[1:3]
            stream.pix_fmt = "bgr0"
            stream.set_display_rotation(degrees)  # -90 counter-clockwise: turn 90 clockwise to show
            for picture in stored:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), "rgb24")))
            container.mux(stream.encode(None))
    overrides = ("data.distortions='resize:2;jitter:1;stutter:2'", "data.motion_features='frame_stats'")
    _, plain = build(tmp_path / "upright", tmp_path / "plain", *overrides)
    _, turned = build(tmp_path / "rotated", tmp_path / "turned", *overrides)
    assert len(plain.ids) == 4 and records(turned) == records(plain)
    assert plain.index["rotation"].tolist() == [0] * 4 and turned.index["rotation"].tolist() == [90] * 4
    assert (turned.index[["width", "height"]].to_numpy() == [24, 32]).all()


def test_a_variable_frame_rate_clip_is_sampled_at_its_timestamps_with_or_without_distortions(tmp_path):
    """2 s at 30 fps then 2 s at 5 fps, 4 frames: the frames shown at 0.5, 1.5, 2.5 and 3.5 s,
    in the pristine record of a store with distortions (the default) or without, and in the
    variants; frame statistics fill a slot per whole second."""
    folder = tmp_path / "videos"
    folder.mkdir()
    write_timed_clip(folder / "phone.mkv", PHONE_TIMES_MS)
    _, without = build(folder, tmp_path / "without", "data.distortions=''", "data.motion_features='none'")
    _, with_ = build(folder, tmp_path / "with", "data.distortions='stutter:3;resize:1'", "data.motion_features='none'")
    assert with_.record_bytes("phone") == without.record_bytes("phone")
    pristine = with_.get("phone")
    assert pristine["frame_mask"].all() and frame_numbers(pristine["frames"]) == PHONE_PICKS
    for variant in ("phone~stutter-3", "phone~resize-1"):
        assert with_.get(variant)["frame_mask"].all()
    assert with_.index.set_index("id").loc["phone", "duration"] == pytest.approx(3.833, abs=1e-3)

    _, stats = build(folder, tmp_path / "stats", "data.distortions='stutter:3'", "data.motion_features='frame_stats'")
    for video_id in stats.ids:
        assert stats.get(video_id)["motion_mask"].tolist() == [True, True, True, False], video_id
    np.testing.assert_array_equal(stats.get("phone")["frames"], pristine["frames"])


def test_an_audio_track_longer_than_the_video_does_not_stretch_the_record(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_timed_clip(folder / "talk.mp4", [round(1000 * i / 30) for i in range(60)], codec="libx264",
                     audio_seconds=6.0)
    _, store = build(folder, tmp_path / "store", "data.distortions='resize:1'")
    assert store.index["duration"].tolist() == pytest.approx([2.0, 2.0], abs=0.01)
    for video_id in store.ids:
        record = store.get(video_id)
        assert record["frame_mask"].tolist() == record["motion_mask"].tolist() == [True, True, False, False]


# Bad precomputed motion feature files: what each holds, and what its error must say.
BAD_MOTION = {
    "nan": (lambda: np.where(np.arange(6)[:, None] == 2, np.nan, np.ones((6, 256))).astype(np.float32),
            "NaN or infinite values (as float32) in 1 of 6 chunk rows: 2 (row j = second j, counted from 0)"),
    "inf": (lambda: np.where(np.isin(np.arange(6), [0, 5])[:, None], -np.inf, np.zeros((6, 256))),
            "in 2 of 6 chunk rows: 0, 5"),
    "overflow": (lambda: np.full((3, 256), 1e300),  # finite float64, infinite as float32
                 "in 3 of 3 chunk rows: 0, 1, 2"),
    "complex": (lambda: np.ones((4, 256), np.complex64), "dtype complex64 is not a real number type"),
    "text": (lambda: np.full((4, 256), "0.5"), "dtype <U3 is not a real number type"),
    "flat": (lambda: np.ones(256, np.float32), "shape [256], expected [chunks, 256]"),
    "cube": (lambda: np.ones((2, 4, 256), np.float32), "shape [2, 4, 256], expected [chunks, 256]"),
    "narrow": (lambda: np.ones((4, 8), np.float32), "shape [4, 8], expected [chunks, 256]"),
    "empty": (lambda: np.ones((0, 256), np.float32), "shape [0, 256], expected [chunks, 256]"),
    "objects": (lambda: np.array([[0.5] * 256] * 2, dtype=object), "not a readable .npy array"),
}


def test_bad_precomputed_motion_features_skip_their_source_and_name_the_file(tmp_path):
    """NaN, infinity (a float64 beyond float32's range included), a type that is no real
    number, or a wrong shape: the source is skipped, errors.jsonl names the file and the
    chunk rows, report.json counts it; the good sources land, integer features included."""
    clip = tmp_path / "clip.mkv"
    video.write_video(clip, np.zeros((16, 16, 16, 3), np.uint8), 8, codec="ffv1")
    rows = []
    for name, (make, _) in BAD_MOTION.items():
        np.save(tmp_path / f"{name}.npy", make(), allow_pickle=True)
        rows.append({"path": str(clip), "id": name, "source_id": name, "motion": f"{name}.npy"})
    np.save(tmp_path / "good.npy", np.full((2, 256), 0.25, np.float32))
    np.save(tmp_path / "counts.npy", np.full((2, 256), 3, np.int64))
    np.savez(tmp_path / "archive.npz", np.ones((2, 256)))
    (tmp_path / "notes.npy").write_text("motion features")
    expected = {name: reason for name, (_, reason) in BAD_MOTION.items()}
    for name, file, reason in [("good", "good.npy", None), ("counts", "counts.npy", None),
                               ("archive", "archive.npz", "not a .npy array but NpzFile"),
                               ("notes", "notes.npy", "not a readable .npy array"),
                               ("missing", "missing.npy", "no such file")]:
        rows.append({"path": str(clip), "id": name, "source_id": name, "motion": file})
        if reason:
            expected[name] = reason
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)

    report, store = build(tmp_path / "manifest.csv", tmp_path / "store", "data.motion_features='precomputed'",
                          "data.distortions='resize:1'")
    assert sorted(store.ids) == ["counts", "counts~resize-1", "good", "good~resize-1"]
    np.testing.assert_array_equal(store.get("counts~resize-1")["motion"][:2], 3.0)
    errors = {e["id"]: e for e in map(json.loads, (tmp_path / "store" / "errors.jsonl").read_text().splitlines())}
    assert sorted(errors) == sorted(expected)
    for name, reason in expected.items():
        motion_file = tmp_path / dict(zip([r["id"] for r in rows], [r["motion"] for r in rows]))[name]
        assert errors[name]["reason"].startswith(f"MotionFeaturesError: motion features {motion_file}: "), name
        assert reason in errors[name]["reason"], (name, errors[name]["reason"])
        assert errors[name]["path"] == str(clip)
    counts = json.loads((tmp_path / "store" / "report.json").read_text())
    assert (counts["skipped"], counts["videos_written"]) == (len(report.errors), 2) == (len(expected), 2)
