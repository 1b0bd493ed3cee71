"""Scoring: the cached-prefix path equals the full forward pair by pair; the vision tower
runs once per video; a mesh of 8 devices and two processes score what one device does;
`w2s-vqa score` on a folder skips and reports broken videos and resumes."""

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

from tests.train.conftest import pool  # noqa: F401 (a fixture)
from w2s_vqa import cli
from w2s_vqa import prompt as prompt_lib
from w2s_vqa import sharding
from w2s_vqa.convert import hf
from w2s_vqa.models import config as config_lib
from w2s_vqa.models import siglip
from w2s_vqa.models import student as student_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
from w2s_vqa.score import scorer as scorer_lib
from w2s_vqa.score.anchors import VIDEO_ARRAYS, AnchorSet
from w2s_vqa.store.format import VideoStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANCHOR_IDS = ("bikes~resize-5", "carphone_pristine~resize-3", "bikes")


def tiny_student_and_prompt():
    """The tiny preset with seed 3 (what the two-process worker builds too) and its prompt."""
    cfg = config_lib.preset("tiny")
    tokenizer = prompt_lib.load_tokenizer(TINY_TOKENIZER)
    return student_lib.create(cfg, seed=3), prompt_lib.build_pair_prompt(
        tokenizer, video_token_id=cfg.video_token_index, tokens_per_video=cfg.tokens_per_video)


@pytest.fixture(scope="module")
def model():
    return tiny_student_and_prompt()


@pytest.fixture(scope="module")
def anchors(pool, tmp_path_factory):  # noqa: F811
    directory = tmp_path_factory.mktemp("anchors")
    AnchorSet.from_store(VideoStore(pool / "store"), ANCHOR_IDS, [20.0, 50.0, 80.0]).save(directory)
    return AnchorSet.load(str(directory))


def _random_videos(n, seed, cfg):
    rng = np.random.default_rng(seed)
    f, s, m = cfg.num_frames, cfg.vision.image_size, cfg.num_motion_chunks
    videos = {"frames": rng.integers(0, 256, (n, f, s, s, 3), dtype=np.uint8), "frame_mask": np.ones((n, f), bool),
              "motion": rng.normal(size=(n, m, cfg.motion_dim)).astype(np.float32),
              "motion_mask": np.ones((n, m), bool)}
    videos["frame_mask"][0, 2:] = False  # a short clip: masked frame and motion slots
    videos["motion_mask"][0, 2:] = False
    videos["motion_mask"][n - 1, 3:] = False
    return videos


def test_the_cached_prefix_gives_the_full_forward_of_every_pair(model):
    student, prompt = model
    first, second = _random_videos(2, 0, student.cfg), _random_videos(3, 1, student.cfg)
    split = student_lib.split_pair_prompt(prompt.input_ids, prompt.video_token_id, prompt.tokens_per_video)
    graphdef, params = nnx.split(student)

    @jax.jit
    def after_prefix(params, first, second):
        model = nnx.merge(graphdef, params)
        tokens = [model.encode_videos(v["frames"], v["motion"], v["frame_mask"], v["motion_mask"])
                  for v in (first, second)]
        cache = model.prefix_cache(prompt.input_ids[:split], *tokens[0])
        return model.level_logits_after_prefix(prompt.level_token_ids, cache, prompt.input_ids[split:], *tokens[1])

    @jax.jit
    def full(params, batch):
        return nnx.merge(graphdef, params).level_logits(prompt.level_token_ids, **batch)

    got = np.asarray(after_prefix(params, first, second))
    pairs = [(a, b) for a in range(2) for b in range(3)]
    batch = {name: np.stack([np.stack([first[key][a], second[key][b]]) for a, b in pairs])
             for name, key in (("pixel_values", "frames"), ("motion", "motion"), ("frame_mask", "frame_mask"),
                               ("motion_mask", "motion_mask"))}
    batch["input_ids"] = np.repeat(prompt.input_ids[None], len(pairs), 0)
    want = np.asarray(full(params, batch))
    for row, (a, b) in enumerate(pairs):
        np.testing.assert_allclose(got[a, b], want[row], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="two runs of 21 video placeholders"):
        student_lib.split_pair_prompt(prompt.input_ids[:split + 3], prompt.video_token_id, prompt.tokens_per_video)


def test_the_vision_tower_runs_once_per_video_and_scores_equal_the_naive_path(model, anchors, monkeypatch):
    student, prompt = model
    frames_seen = []
    original = siglip.SiglipVisionTower.hidden_states

    def counted(self, pixel_values, *args, **kwargs):  # counts at run time, inside jit too
        jax.debug.callback(lambda n: frames_seen.append(int(n)), pixel_values.shape[0])
        return original(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(siglip.SiglipVisionTower, "hidden_states", counted)
    f, k = student.cfg.num_frames, len(anchors)
    scorer = scorer_lib.Scorer(student, prompt, anchors, sharding.make_mesh((1, 1, 1), jax.devices()[:1]),
                               batch_size=4)
    assert sum(frames_seen) == k * f  # the anchors, once per run
    videos = _random_videos(8, 2, student.cfg)
    got = scorer.level_logits_of(videos)
    assert sum(frames_seen) == k * f + 8 * f  # then each test video once, not once per anchor
    del frames_seen[:]
    want = scorer_lib.naive_level_logits(student, prompt, anchors, videos, pairs_per_call=6)
    assert sum(frames_seen) == 8 * k * 2 * f  # the naive path: both videos of every pair
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    anchor_videos = {name: anchors.videos[name] for name in VIDEO_ARRAYS}
    naive_anchors = scorer_lib.naive_level_logits(student, prompt, anchors, anchor_videos, pairs_per_call=3)
    np.testing.assert_allclose(scorer.anchor_logits, naive_anchors.transpose(1, 0, 2), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def on_one_device(model, anchors, pool):  # noqa: F811
    student, prompt = model
    return scorer_lib.score_videos(student, prompt, anchors, str(pool / "store"),
                                   sharding.make_mesh((1, 1, 1), jax.devices()[:1]), batch_size=8)


def _same_scores(got, want):
    pd.testing.assert_series_equal(got["id"], want["id"])
    columns = [c for c in want.columns if c not in ("id", "path")]
    np.testing.assert_allclose(got[columns].to_numpy(float), want[columns].to_numpy(float), rtol=1e-4, atol=1e-5)


def test_a_mesh_of_8_devices_scores_what_one_does(model, anchors, pool, on_one_device):  # noqa: F811
    # data x fsdp carry the batch (2 x 2 parts), tensor replicates it; the two-process test runs fsdp alone.
    student, prompt = model
    mesh = sharding.make_mesh((2, 2, 2))
    got = scorer_lib.score_videos(student, prompt, anchors, str(pool / "store"), mesh, batch_size=8)
    _same_scores(got, on_one_device)
    assert got["id"].tolist() == VideoStore(pool / "store").ids
    assert list(got.columns) == ["id", "path", "score", "stderr", "low", "high", "latent",
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
