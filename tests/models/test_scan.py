"""Scanned layers and remat policies change how the student runs, not what it computes.

The reference is the unrolled student (itself checked against transformers in
tests/convert/test_parity.py, which also runs scanned): the same weights, stacked by
models.stack, give the same logits and gradients. float32 at the highest matmul
precision (tests/conftest.py); the tolerance 1e-5 covers the reassociation XLA may
choose differently for a loop body and for unrolled copies.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models.test_student import pair_batch
from w2s_vqa.models import config as config_lib
from w2s_vqa.models import stack, student

TOL = 1e-5


def flat_params(model) -> dict:
    return {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def scanned_twin(model):
    """The scanned student holding `model`'s weights."""
    abstract = student.create_abstract(model.cfg.replace(scan_layers=True))
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    params = stack.to_layout(flat_params(model), [".".join(map(str, p)) for p, _ in flat])
    flat = [(p, v.replace(params[".".join(map(str, p))])) for p, v in flat]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def loss_and_grads(model, level_ids, batch):
    def loss(m):
        return m.preference(level_ids, **batch).mean()

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
    return value, {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(grads)}


def close(a, b, tol=TOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))


def test_scanned_parameters_are_stacked_on_an_unsharded_layer_axis():
    cfg = config_lib.preset("tiny", scan_layers=True)
    model = student.create(cfg, seed=0)
    kernel = model.language_model.layers.self_attn.q_proj.kernel
    assert kernel.shape == (cfg.text.num_hidden_layers, cfg.text.hidden_size, cfg.text.hidden_size)
    assert kernel.get_metadata()["logical_axes"] == ("layers", "embed", "heads")
    from w2s_vqa import sharding
    assert sharding.logical_to_spec(("layers", "embed", "heads"))[0] is None
    # Each layer drawn on its own: two layers differ, and both have a layer's spread (fan-in
    # of one layer), not the stack's.
    w = np.asarray(model.vision_tower.layers.mlp.fc1.kernel[...])
    assert not np.allclose(w[0], w[1])
    limit = np.sqrt(6.0 / (cfg.vision.hidden_size + cfg.vision.intermediate_size))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.8 * limit


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_scanned_and_unrolled_give_the_same_logits(preset):
    cfg = config_lib.preset(preset, num_frames=1, num_motion_chunks=2)
    unrolled = student.create(cfg, seed=3)
    scanned = scanned_twin(unrolled)
    assert scanned.cfg.scan_layers and not unrolled.cfg.scan_layers
    pp, batch = pair_batch(cfg, batch=1, size=cfg.vision.image_size)
    a = unrolled.level_logits(pp.level_token_ids, **batch)
    b = scanned.level_logits(pp.level_token_ids, **batch)
    assert close(b, a) <= TOL


def test_scanned_and_unrolled_give_the_same_gradients():
    cfg = config_lib.preset("tiny")
    unrolled = student.create(cfg, seed=5)
    scanned = scanned_twin(unrolled)
    pp, batch = pair_batch(cfg)
    v1, g1 = loss_and_grads(unrolled, pp.level_token_ids, batch)
    v2, g2 = loss_and_grads(scanned, pp.level_token_ids, batch)
    assert abs(float(v1) - float(v2)) <= TOL
    g1 = stack.to_layout(g1, g2)
    assert sorted(g1) == sorted(g2)
    for key in g2:
        assert close(g2[key], g1[key]) <= TOL, key


def test_the_prefix_cache_of_a_scanned_student_gives_the_joined_logits():
    cfg = config_lib.preset("tiny")
    unrolled = student.create(cfg, seed=6)
    scanned = scanned_twin(unrolled)
    pp, batch = pair_batch(cfg, batch=1)
    split = student.split_pair_prompt(pp.input_ids, cfg.video_token_index, cfg.tokens_per_video)
    ids = np.asarray(pp.input_ids)
    videos = batch["pixel_values"][0]
    motion = batch["motion"][0]
    tokens, valid = scanned.encode_videos(videos, motion)
    cache = scanned.prefix_cache(ids[:split], tokens[:1], valid[:1])
    assert cache.keys.shape[0] == cfg.text.num_hidden_layers  # one stacked array
    after = scanned.level_logits_after_prefix(pp.level_token_ids, cache, ids[split:], tokens[1:], valid[1:])
    joined = unrolled.level_logits(pp.level_token_ids, jnp.asarray(ids)[None], None, videos[None], motion[None])
    assert close(after[0, 0], joined[0]) <= 1e-4  # the cached path's own tolerance (tests/score)


@functools.cache
def without_remat(scan: bool):
    """(pair prompt, batch, loss, gradients) of the tiny student with remat "none"."""
    cfg = config_lib.preset("tiny", scan_layers=scan)
    pp, batch = pair_batch(cfg)
    return (pp, batch, *loss_and_grads(student.create(cfg, seed=1), pp.level_token_ids, batch))


# Every policy inside the scan; the unrolled loop's per-layer checkpoint with one policy.
@pytest.mark.parametrize("policy, scan", [("full", False), ("minimal", False), ("full", True), ("minimal", True),
                                          ("save_dots", True), ("minimal_offloaded", True)])
def test_each_remat_policy_gives_the_loss_and_gradients_of_none(policy, scan):
    pp, batch, v1, g1 = without_remat(scan)
    cfg = config_lib.preset("tiny", scan_layers=scan)
    remat = student.create(cfg.replace(remat=policy), seed=1)
    assert remat.cfg.remat == policy and remat.language_model.remat == policy
    try:
        v2, g2 = loss_and_grads(remat, pp.level_token_ids, batch)
    except Exception as e:  # noqa: BLE001 (XLA's own error type)
        if policy == "minimal_offloaded" and jax.default_backend() == "cpu":
            pytest.skip(f"host offload is not supported by XLA:CPU ({type(e).__name__})")
        raise
    assert abs(float(v1) - float(v2)) <= TOL
    for key in g1:
        assert close(g2[key], g1[key]) <= TOL, key


def test_remat_booleans_still_read_with_one_deprecation_line(caplog):
    config_lib._WARNED.clear()
    with caplog.at_level("WARNING"):
        assert config_lib.preset("tiny", remat=True).remat == "full"
        assert config_lib.preset("tiny", remat=True).remat == "full"
        assert config_lib.preset("tiny", remat="False").remat == "none"
    assert not config_lib.preset("tiny").remat and config_lib.preset("tiny", remat="minimal").remat
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(lines) == 2 and "model.remat='full'" in lines[0], lines
    with pytest.raises(config_lib.ConfigError, match="model.remat='sometimes'"):
        config_lib.preset("tiny", remat="sometimes")


def _compiled_step_temp_bytes(scan: bool) -> int:
    """The compiler's temporary bytes per device of the tiny train step on 8 devices, the
    batch split 8 ways over fsdp (the parameters' axis too), remat `full`."""
    from tests.train.test_step import tiny_prompt
    from w2s_vqa import sharding
    from w2s_vqa.config import load_config
    from w2s_vqa.train import step as step_lib

    config = load_config(None, ["mesh.shape=(1,8,1)", "data.batch_size=8", f"model.scan_layers={scan}",
                                "model.remat=full"])
    prompt = tiny_prompt(config)
    ts = step_lib.build_train_step(config, sharding.mesh_from_config(config), prompt.level_token_ids)
    compiled = ts.step.lower(ts.abstract_state, step_lib.abstract_batch(config, prompt.length)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (tests/conftest.py sets 8 host devices)")
def test_scanned_layers_compute_on_their_own_pairs_under_fsdp(monkeypatch):
    # Inside the scan XLA does not carry the batch split over from the loop's inputs; left
    # alone it split the activations along the FSDP parameters' embedding axis and computed
    # every pair on every device (the 0.5B on a v5e-8: 24 GiB of temporaries against 13.8
    # unrolled). stack.batch_sharded holds each layer's carry to the batch's split.
    unrolled, scanned = _compiled_step_temp_bytes(False), _compiled_step_temp_bytes(True)
    assert scanned <= unrolled, (scanned, unrolled)
    monkeypatch.setattr(stack, "batch_sharded", lambda fn, sharding: fn)
    assert _compiled_step_temp_bytes(True) > unrolled  # the failure the constraint prevents
