"""The scorer: the cached-prefix path equals the full forward pair by pair (and the plain
path of score.reference); the vision tower runs once per video; the default batch size
fits the mesh."""

import jax
import numpy as np
import pytest
from flax import nnx

from w2s_vqa import sharding
from w2s_vqa.models import siglip
from w2s_vqa.models import student as student_lib
from w2s_vqa.score import reference
from w2s_vqa.score import scorer as scorer_lib
from w2s_vqa.score.anchors import VIDEO_ARRAYS


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
    want = reference.naive_level_logits(student, prompt, anchors, videos, pairs_per_call=6)
    assert sum(frames_seen) == 8 * k * 2 * f  # the naive path: both videos of every pair
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    anchor_videos = {name: anchors.videos[name] for name in VIDEO_ARRAYS}
    naive_anchors = reference.naive_level_logits(student, prompt, anchors, anchor_videos, pairs_per_call=3)
    np.testing.assert_allclose(scorer.anchor_logits, naive_anchors.transpose(1, 0, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,devices,want", [
    ((1, 1, 1), 1, 8),  # nothing to divide: DEFAULT_BATCH_SIZE itself
    ((2, 2, 2), 8, 8),  # data x fsdp carry the batch: 4 parts divide 8
    ((1, 3, 1), 3, 9),  # 3 parts: 8 rounded up to the next multiple of 3
    ((2, 1, 3), 6, 8),  # tensor replicates the batch: 2 parts
])
def test_the_default_batch_size_is_8_rounded_up_to_the_batch_parts(shape, devices, want):
    mesh = sharding.make_mesh(shape, jax.devices()[:devices])
    assert scorer_lib.DEFAULT_BATCH_SIZE == 8
    assert scorer_lib.default_batch_size(mesh) == want


def test_the_scorer_takes_the_default_batch_size_and_refuses_one_the_mesh_cannot_split(model, anchors):
    student, prompt = model
    mesh = sharding.make_mesh((1, 3, 1), jax.devices()[:3])
    assert scorer_lib.Scorer(student, prompt, anchors, mesh).batch_size == 9
    with pytest.raises(scorer_lib.ScoreError, match=r"batch_size=8 must be a positive multiple of 3, the devices the "
                                                    r"batch is split over \(mesh axes fsdp=3\), and of the 1 "
                                                    r"process\(es\); e.g. 9"):
        scorer_lib.Scorer(student, prompt, anchors, mesh, batch_size=8)
    # A negative size in the same plain words, without the sharding's internal spelling (PartitionSpec).
    with pytest.raises(scorer_lib.ScoreError) as caught:
        scorer_lib.Scorer(student, prompt, anchors, mesh, batch_size=-5)
    assert str(caught.value).startswith("batch_size=-5 must be a positive multiple of 3, the devices")
    assert "P(" not in str(caught.value) and "PartitionSpec" not in str(caught.value)
